"""The command line's own errors: data and model specs that are missing, an unreachable Hub, YAML tags in
overrides, `config-keys --config`, and no empty output folder left by a failed start."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from decpo.cli import main
from decpo.config import ConfigError, parse_override
from decpo.data import DataError
from decpo.data.tasks import resolve_data_dir
from decpo.models import ModelError, load_model, load_tokenizer

from conftest import REPO

SMOKE = str(REPO / "configs" / "smoke.yaml")


def test_missing_data_message_names_an_option_that_each_command_takes(monkeypatch):
    monkeypatch.delenv("DECPO_DATA_DIR", raising=False)
    with pytest.raises(DataError) as e:
        resolve_data_dir(None)
    message = str(e.value)
    assert "data.data_dir=" in message and "(decpo train/run" in message
    assert "--data-dir <folder> (decpo eval/pairs" in message and "DECPO_DATA_DIR" in message
    assert "pass --data-dir" not in message  # `decpo train` has no such option


@pytest.mark.parametrize("spec", ["/nonexistent", "./nonexistent-model", "~/nonexistent-model", "a/b/c"])
@pytest.mark.parametrize("load", [load_model, load_tokenizer])
def test_a_model_spec_that_looks_like_a_path_says_no_such_directory(spec, load):
    with pytest.raises(ModelError, match="no such directory: ") as e:
        load(spec)
    assert f"no such directory: {spec}" in str(e.value)
    # and what to do: a run's model is its final/ folder, made by decpo train
    assert str(e.value).endswith(f"train it first (decpo train --output-dir {spec}), or check the path")


def test_a_missing_run_s_final_folder_names_the_run_to_train(tmp_path):
    with pytest.raises(ModelError) as e:
        load_model(str(tmp_path / "runs" / "dpo" / "final"))
    assert f"train it first (decpo train --output-dir {tmp_path / 'runs' / 'dpo'}), or check" in str(e.value)


def test_an_invalid_hub_id_is_a_model_error():
    with pytest.raises(ModelError, match="neither a local folder nor a valid Hugging Face Hub id"):
        load_model("not a model")


# a Hub id that is in no local cache
MISSING_ID = "decpo-tests/no-such-model"
HUB_PROBE = f"""
import time
from decpo.models import ModelError, load_model, load_tokenizer
for load in (load_tokenizer, load_model):
    t0 = time.perf_counter()
    try:
        load({MISSING_ID!r})
    except ModelError as e:
        print(f"{{time.perf_counter() - t0:.2f}}s", e)
"""


@pytest.mark.parametrize(
    "env, where",
    [
        ({"HF_HUB_OFFLINE": "1"}, "HF_HUB_OFFLINE is set"),
        ({"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9"}, "(http://127.0.0.1:9) is unreachable"),
    ],
)
def test_a_hub_id_without_network_fails_at_once_naming_the_model_and_where_it_was_looked_for(
    tmp_path, env, where
):
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO / "src"),
        "HF_HOME": str(tmp_path / "hf"),  # an empty cache
        "TRANSFORMERS_OFFLINE": env["HF_HUB_OFFLINE"],
        **env,
    }
    out = subprocess.run(
        [sys.executable, "-c", HUB_PROBE], env=env, capture_output=True, text=True, timeout=300
    )
    lines = out.stdout.splitlines()
    assert len(lines) == 2, out.stdout + out.stderr  # tokenizer and model, each a ModelError
    for line in lines:
        seconds, message = line.split(" ", 1)
        assert float(seconds[:-1]) < 5, line  # not a minute of retries
        assert MISSING_ID in message and "local Hugging Face cache" in message and where in message
    assert "Retrying" not in out.stderr


def test_a_yaml_tag_in_an_override_is_a_config_error_not_a_traceback(tmp_path, capsys):
    tag = "model.model_name_or_path=!!python/object/apply:os.system ['echo hacked']"
    with pytest.raises(ConfigError, match="not valid YAML"):
        parse_override(tag)
    assert main(["train", "--config", SMOKE, "--output-dir", str(tmp_path / "run"), tag]) == 2
    out = capsys.readouterr()
    assert "not valid YAML" in out.err and "Traceback" not in out.err and "hacked" not in out.out


def test_config_keys_shows_a_presets_values(capsys):
    assert main(["config-keys", "--config", SMOKE]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "model.model_name_or_path = 'tiny-random-llama' (default 'default')  #" in "\n".join(lines)
    assert any(line.startswith("train.max_steps = 4 (default 30)") for line in lines)
    assert any(line.startswith("train.beta = 0.1  #") for line in lines)  # unchanged: no note
    assert main(["config-keys"]) == 0
    assert (
        "model.model_name_or_path = 'default' (decpo's default; trl.ModelConfig's is None: "
        in capsys.readouterr().out
    )


@pytest.mark.parametrize(
    "override, message",
    [
        ("data.path=/nonexistent/pairs.jsonl", "/nonexistent/pairs.jsonl"),  # missing data
        (
            "model.model_name_or_path=/nonexistent",
            "no such directory",
        ),  # missing model (after config.yaml is written)
        ("train.reg_layers=[9]", "layer 9 does not exist"),  # a config that does not fit the model
    ],
)
def test_a_failed_start_leaves_no_output_folder_it_created(tmp_path, capsys, override, message):
    out = tmp_path / "new" / "run"
    assert main(["train", "--config", SMOKE, "--output-dir", str(out), override]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "new").exists()

    existing = tmp_path / "existing"
    existing.mkdir()
    assert main(["train", "--config", SMOKE, "--output-dir", str(existing), override]) == 2
    assert existing.is_dir()  # a folder that was there before stays


def test_a_failed_start_of_decpo_run_leaves_no_output_folder(tmp_path, capsys):
    out = tmp_path / "exp"
    assert (
        main(["run", "--config", SMOKE, "--output-dir", str(out), "model.model_name_or_path=/nonexistent"])
        == 2
    )
    assert "no such directory" in capsys.readouterr().err
    assert not out.exists()


def test_an_unknown_eval_task_stops_decpo_run_before_any_training(tmp_path, capsys, monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("a training started")

    monkeypatch.setattr("decpo.experiment.stages.train", no_training)
    out = tmp_path / "exp"
    assert main(["run", "--config", SMOKE, "--output-dir", str(out), "experiment.eval_tasks=[toxicty]"]) == 2
    err = capsys.readouterr().err
    assert "experiment.eval_tasks: unknown task 'toxicty'; did you mean 'toxicity'?" in err
    assert not out.exists()


def test_a_folder_with_content_is_kept_after_a_failed_start(tmp_path):
    from decpo.io import removed_if_start_fails

    out = tmp_path / "run"
    with pytest.raises(RuntimeError), removed_if_start_fails(out):
        out.mkdir()
        (out / "config.yaml").write_text("x: 1\n")
        (out / "metrics.jsonl").write_text("{}\n")  # work was done
        raise RuntimeError("late failure")
    assert (out / "metrics.jsonl").is_file()


def test_a_failed_start_with_dotdot_in_the_output_dir_leaves_no_folder(tmp_path, capsys):
    out = tmp_path / "new" / "sub" / ".." / "run"  # mkdir(parents=True) makes new/sub too
    assert main(["train", "--config", SMOKE, "--output-dir", str(out), "train.reg_layers=[9]"]) == 2
    assert "layer 9 does not exist" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize(
    "flags, message",
    [
        (
            ["--probes", "decorelation"],
            "--probes: unknown probe 'decorelation'; did you mean 'decorrelation'?",
        ),
        (["--sites", "mlp.upproj"], "--sites: unknown site 'mlp.upproj'; did you mean 'mlp.up_proj'?"),
        (["--layers", "abc"], "--layers: layers must be 'all' or comma-separated integers or ranges"),
        (["--sparse-layers", "1-x"], "--sparse-layers: layers must be 'all'"),
        (["--batch-size", "0"], "--batch-size must be >= 1, got 0"),
        (["--max-length", "0"], "--max-length must be >= 2, got 0"),
        (["--eps-zero", "-1"], "--eps-zero must be > 0"),
        (["--sparse-folds", "1"], "--sparse-folds must be >= 2, got 1"),
        (["--measure", "sae", "--sae-k", "0"], "--sae-k must be >= 1, got 0"),
        (["--measure", "sae", "--sae-expansion", "0"], "--sae-expansion must be >= 1, got 0"),
        (["--measure", "sae", "--sae-train-tokens", "0"], "--sae-train-tokens must be >= 1, got 0"),
        (
            ["--texts", "synthetc"],
            "--texts 'synthetc' is neither a file nor a task name; did you mean 'synthetic'?",
        ),
    ],
)
def test_a_bad_probe_option_is_one_line_before_any_model_loads(tmp_path, capsys, monkeypatch, flags, message):
    def no_loading(*args, **kwargs):
        raise AssertionError("a model loaded")

    monkeypatch.setattr("decpo.probes.runner.load_model", no_loading)
    out = tmp_path / "new" / "probes"
    assert (
        main(["probe", "--model", "tiny-random-llama", "--num-texts", "4", "--output-dir", str(out), *flags])
        == 2
    )
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "new").exists()


def test_a_missing_local_model_is_a_missing_path_before_any_probing_or_evaluation(
    tmp_path, capsys, monkeypatch
):
    def no_loading(*args, **kwargs):
        raise AssertionError("a model loaded")

    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()  # runs/dpo reads like a Hub id (org/name); runs/ is a folder here
    monkeypatch.setattr("decpo.probes.runner.load_model", no_loading)
    argv = ["probe", "--model", "base=tiny-random-llama", "--model", "dpo=runs/dpo", "--num-texts", "4"]
    assert main([*argv, "--output-dir", "probes"]) == 2
    err = capsys.readouterr().err
    assert "no such directory: runs/dpo (read as a local path, as ./runs is a folder here" in err
    assert "train it first (decpo train --output-dir runs/dpo), or check the path, or name a Hub model" in err
    assert "Hugging Face cache" not in err and not (tmp_path / "probes").exists()

    monkeypatch.setattr("decpo.evaluation.context.load_model", no_loading)
    assert main(["eval", "--task", "synthetic", "--model", "runs/dpo", "--limit", "4"]) == 2
    err = capsys.readouterr().err
    assert "no such directory: runs/dpo" in err and "Hugging Face cache" not in err
    assert not (tmp_path / "evals").exists()
    assert main(["eval", "--task", "synthetic", "--model", "runs/dpo/final", "--limit", "4"]) == 2
    assert "no such directory: runs/dpo/final" in capsys.readouterr().err
    assert not (tmp_path / "evals").exists()


def test_an_unreachable_judge_endpoint_fails_before_any_generation(tmp_path, capsys, monkeypatch):
    def no_loading(*args, **kwargs):
        raise AssertionError("a model loaded")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("decpo.evaluation.context.load_model", no_loading)
    monkeypatch.setattr("decpo.scoring.judge.time.sleep", lambda s: None)
    monkeypatch.setenv("DECPO_JUDGE_BASE_URL", "http://127.0.0.1:9/v1")  # nothing listens on port 9
    argv = [
        "eval",
        "--task",
        "toxicity",
        "--model",
        "tiny-random-llama",
        "--judge",
        "openai:gpt-x",
        "--limit",
        "2",
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(
        "decpo: error: judge endpoint http://127.0.0.1:9/v1/chat/completions did not answer"
    )
    assert "DECPO_JUDGE_BASE_URL" in err[-1] and "Traceback" not in "\n".join(err)
    assert not (tmp_path / "evals").exists()


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--model", "runs/dpo"], "no such directory: runs/dpo (read as a local path"),
        (["--model", "tiny-random-llama", "--scorer", "nosuch"], "unknown scorer 'nosuch'"),
    ],
)
def test_a_failed_decpo_pairs_leaves_no_folder(tmp_path, capsys, monkeypatch, flags, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    (tmp_path / "prompts.txt").write_text("hello\nworld\n")
    assert main(["pairs", "--prompts", "prompts.txt", "--output", "new/sub/pairs.jsonl", *flags]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


def test_verbose_adds_the_traceback_to_the_one_line_error(tmp_path, capsys):
    argv = ["probe", "--probes", "decorelation", "--output-dir", str(tmp_path / "p")]
    assert main(argv) == 2
    assert "Traceback" not in capsys.readouterr().err
    assert main(["-v", *argv]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith(
        "decpo: error: --probes: unknown probe"
    )


@pytest.mark.parametrize(
    "overrides, why",
    [
        (["train.per_device_train_batch_size=1", "train.reg_rows=chosen"], "train.reg_rows='chosen'"),
        (
            ["train.per_device_eval_batch_size=1", "train.reg_tokens=prompt_last"],
            "train.reg_tokens=prompt_last",
        ),
    ],
)
def test_a_one_row_decorrelation_batch_is_refused_at_config_load(
    tmp_path, capsys, monkeypatch, overrides, why
):
    def no_training(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr("decpo.training.run.train", no_training)
    out = tmp_path / "run"
    assert main(["train", "--config", SMOKE, "--output-dir", str(out), *overrides]) == 2
    err = capsys.readouterr().err
    assert f"batch_size=1 with {why} gives the decorrelation penalty 1 row per forward" in err
    assert "Traceback" not in err and not out.exists()
    # DPO has no penalty, and two pairs give two rows: both accepted
    from decpo.config import load_config

    load_config(SMOKE, [*overrides, "objective.name=dpo"])
    load_config(
        SMOKE, [*overrides, "train.per_device_train_batch_size=2", "train.per_device_eval_batch_size=2"]
    )


@pytest.mark.parametrize(
    "argv, message",
    [
        (["run", "--methods", "dpo,dpoo"], "--methods must be one of"),
        (["train", "objective.name=decpoo"], "objective.name must be one of"),
        (["train", "experiment.methods=[simop]"], "experiment.methods must be one of"),
        (["train", "data.synthetic_answer=leter"], "data.synthetic_answer must be"),
        (["train", "data.on_error=skp"], "data.on_error must be"),
        (["train", "pairs.split=trian"], "pairs.split must be"),
        (["run", "experiment.executor=locl"], "experiment.executor must be one of"),
        (["pairs", "--prompts", "toxicty", "--output", "new/pairs.jsonl"], "unknown prompt source 'toxicty'"),
        (
            ["eval", "--task", "synthetic", "--model", "tiny-random-llama", "--synthetic-answer", "optoin"],
            "--synthetic-answer must be",
        ),
    ],
)
def test_a_misspelt_name_is_refused_naming_its_flag_or_key_and_the_closest_name(
    tmp_path, capsys, monkeypatch, argv, message
):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    close = {
        "dpoo": "dpo",
        "decpoo": "decpo",
        "simop": "simpo",
        "leter": "letter",
        "toxicty": "toxicity",
        "optoin": "option",
        "skp": "skip",
        "trian": "train",
        "locl": "local",
    }
    wrong = next(w for w in close if any(w in a for a in argv))
    assert message in err and err.endswith(f"did you mean {close[wrong]!r}?"), err
    assert len(err.splitlines()) == 1


@pytest.mark.parametrize(
    "argv, said",
    [
        (["sweep", "--layers", "0,2"], "--layers: the model has 2 blocks (0..1); layer 2 does not exist"),
        (["sweep", "--layers", "1", "train.reg_layers=[5]"], "train.reg_layers: the model has 2 blocks"),
        (
            ["run", "train.reg_layers=[-3]"],
            "train.reg_layers: the model has 2 blocks (0..1); layer -3 does not",
        ),
        (
            ["train", "train.reg_layers=[2]"],
            "train.reg_layers: the model has 2 blocks (0..1); layer 2 does not exist",
        ),
    ],
)
def test_a_block_the_model_does_not_have_is_refused_before_any_training(
    argv, said, tmp_path, monkeypatch, capsys
):
    """The tiny model has 2 blocks: a sweep or run naming block 2 used to train DPO first and fail at the
    first DecPO stage, and `decpo train` failed once the model had loaded; now one line before any stage, and
    no folder."""
    import decpo.experiment.recipes as recipes

    def started(*args, **kwargs):
        raise AssertionError("the experiment started")

    monkeypatch.setattr(recipes, "sweep_layers", started)
    monkeypatch.setattr(recipes, "run_experiment", started)
    out = tmp_path / "out"
    command, *rest = argv
    assert main([command, "--config", SMOKE, "--output-dir", str(out), *rest]) == 2
    assert said in capsys.readouterr().err
    assert not out.exists()
