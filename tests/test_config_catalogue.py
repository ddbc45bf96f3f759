"""The config catalogue without trl: the saved TRL keys match the installed TRL, check values as the live
annotations do, and a config error answers from the command line before torch is imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from decpo.config import ConfigError, load_config
from decpo.config.catalogue import (
    HEAVY_SECTIONS,
    TRL_KEYS_FILE,
    KeySpec,
    catalogue,
    precheck,
    saved_specs,
    trl_keys_json,
)
from decpo.config.run_config import FIELDS, live_specs

from conftest import REPO

SMOKE = str(REPO / "configs" / "smoke.yaml")

# values a YAML file or an override can give, of every shape `check_value` tells apart
PROBES = [None, True, False, 0, 1, -3, 0.5, "1e-3", "abc", "no", "auto", "cosine", "adamw_torch", "steps",
          "bfloat16", [], [1, 2], ["q_proj"], "q_proj", {"a": 1}, {"a": "b"}]  # fmt: skip


def test_the_saved_trl_keys_are_those_of_the_installed_trl():
    """Fails when TRL (or decpo's model/train sections) gains, loses or retypes a key: then run
    `python -m decpo.config.run_config` to rewrite decpo/config/trl_keys.json."""
    assert TRL_KEYS_FILE.read_text() == trl_keys_json(live_specs())


def test_the_catalogue_has_every_key_in_order():
    assert list(catalogue()) == list(FIELDS)


def _outcome(spec: KeySpec, key: str, value):
    try:
        return ("ok", spec.check(key, value))
    except ConfigError as e:
        return ("error", str(e))


def test_the_saved_annotations_accept_refuse_and_convert_as_the_live_ones():
    saved, live = saved_specs(), live_specs()
    checked = 0
    for key in saved:
        assert key.split(".", 1)[0] in HEAVY_SECTIONS
        for value in PROBES:
            assert _outcome(saved[key], key, value) == _outcome(live[key], key, value), (key, value)
            checked += 1
    assert checked > 100 * len(PROBES) // 2


@pytest.mark.parametrize(
    "overrides, match",
    [
        (["objective.betta=0.1"], "did you mean train.beta"),
        (["train.beta=abc"], "'train.beta' expects a number"),
        (["train.lr_scheduler_type=cosinus"], "'train.lr_scheduler_type' expects one of"),
        (["model.lora_r=1.5"], "'model.lora_r' expects an integer"),
        (["experiment.seeds=[]"], "experiment.seeds is empty"),
        (["experiment.seeds=[1, 1]"], "lists a seed twice"),
        (["experiment.curve_steps=[3, 2]"], "strictly increasing"),
        (["probe.sites=7"], "probe.sites"),
        (["train.max_steps=0"], "train.max_steps must be >= 1, or -1"),
        (["train.max_steps=-2"], "train.max_steps must be >= 1, or -1"),
        (["train.per_device_train_batch_size=0"], "train.per_device_train_batch_size must be >= 1"),
        (["train.per_device_eval_batch_size=0"], "train.per_device_eval_batch_size must be >= 1"),
        (["train.gradient_accumulation_steps=0"], "train.gradient_accumulation_steps must be >= 1"),
        (["train.logging_steps=0"], "train.logging_steps must be >= 1"),
        (["train.max_length=0"], "train.max_length must be >= 1"),
        (["train.learning_rate=0"], "train.learning_rate must be > 0"),
        (["train.reg_form=cosin"], "train.reg_form must be one of .*did you mean 'cosine'"),
        (["train.reg_weight=-1"], "train.reg_weight must be >= 0"),
        (
            [
                "objective.name=decpo",
                "train.reg_weight=auto",
                "train.per_device_train_batch_size=1",
                "train.reg_rows=chosen",
            ],
            "train.per_device_train_batch_size=1 with train.reg_rows='chosen'",
        ),
        (
            [
                "objective.name=decpo",
                "train.reg_weight=auto",
                "train.per_device_eval_batch_size=1",
                "train.reg_tokens=prompt_last",
            ],
            "train.per_device_eval_batch_size=1 with train.reg_tokens=prompt_last",
        ),
        (["objective.name=dpoo"], "objective.name must be one of .*did you mean 'dpo'"),
        (["experiment.methods=[dpo, decpoo]"], "experiment.methods must be one of .*did you mean 'decpo'"),
        (["model.lora_r=0"], "model.lora_r must be >= 1"),
        (["model.lora_alpha=0"], "model.lora_alpha must be > 0"),
        (["model.lora_dropout=-0.1"], r"model.lora_dropout must be in \[0, 1\)"),
    ],
)
def test_the_precheck_refuses_what_load_config_refuses(overrides, match):
    with pytest.raises(ConfigError, match=match):
        precheck(SMOKE, overrides)
    with pytest.raises(ConfigError, match=match):
        load_config(SMOKE, overrides)


@pytest.mark.parametrize(
    "overrides",
    [
        ["train.max_steps=-1"],
        ["train.max_length=null"],
        ["train.per_device_train_batch_size=1"],  # both sides: 2 rows
        ["objective.name=dpo", "train.per_device_train_batch_size=1", "train.reg_rows=chosen"],  # no penalty
        ["train.reg_weight=0", "train.per_device_train_batch_size=1", "train.reg_tokens=prompt_last"],
        ["model.lora_dropout=0"],
        ["model.use_peft=false", "model.lora_r=0"],  # no adapter: its rank is not read
    ],
)
def test_the_precheck_accepts_the_boundaries_load_config_accepts(overrides):
    """The train checks on the saved defaults refuse nothing the live sections accept."""
    precheck(SMOKE, overrides)
    load_config(SMOKE, overrides)


def test_the_precheck_passes_the_shipped_presets():
    for path in sorted((REPO / "configs").rglob("*.yaml")):
        if "accelerate" in path.parts:
            continue
        precheck(path, ())


# `decpo <argv>` in a fresh interpreter: its exit code and error, and the heavy libraries it imported
PROBE = """
import json, sys
from decpo.cli import main
rc = main(sys.argv[1:])
print(json.dumps([rc, [m for m in ("torch", "transformers", "trl") if m in sys.modules]]), file=sys.stderr)
"""


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "objective.betta=0.1"],
        ["run", "--seeds", "1,1"],
        ["run", "--config", SMOKE, "train.learning_rate=fast"],
        ["sweep", "--layers", "3", "experiment.seeds=[]"],
        ["run", "--config", "configs/nope.yaml"],
        ["train", "train.max_steps=0"],
        ["train", "train.learning_rate=0"],
        ["train", "train.max_length=0"],
        ["train", "train.per_device_train_batch_size=1", "train.reg_rows=chosen"],
        ["run", "--methods", "dpoo"],
        ["sweep", "--layers", "3", "objective.name=dpoo"],
        ["train", "model.lora_r=0"],
        ["run", "--config", SMOKE, "model.lora_dropout=1"],
        ["probe", "--texts", "synthetc"],  # flag values of probe and eval too
        ["probe", "--texts", "synthetc", "--measure", "sparse_probing"],
        ["eval", "--task", "reading", "--model", "default", "--synthetic-answer", "bad"],
        ["eval", "--task", "toxcity", "--model", "default"],  # a task name, before the task modules load
        # a block the model lacks, where its blocks are counted without transformers: the tiny model, a local
        # folder's config.json (./model below: 2 blocks)
        ["train", "--config", SMOKE, "train.reg_layers=[2]"],
        ["train", "--config", SMOKE, "model.model_name_or_path=./model", "train.reg_layers=[-3]"],
        ["run", "--config", SMOKE, "model.model_name_or_path=./model", "train.reg_layers=[5]"],
        ["sweep", "--config", SMOKE, "--layers", "0-3", "model.model_name_or_path=./model"],
    ],
)
def test_a_config_error_answers_before_torch_is_imported(argv, tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text(json.dumps({"num_hidden_layers": 2}))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    # in a fresh folder: should a check fail to refuse, the command's default output folder is made there
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        cwd=tmp_path,
    )
    rc, heavy = json.loads(done.stderr.strip().splitlines()[-1])
    assert rc == 2 and "decpo: error:" in done.stderr
    assert heavy == []
