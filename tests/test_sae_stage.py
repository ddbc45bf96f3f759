"""The SAE stage of `decpo run` (``experiment.sae: true``; tiny model, smoke preset): sae/ with every model's
rows, the SAE saved and loadable, the report's subsection with t-intervals over 2 seeds and DecPO - DPO paired
by seed; off by default; `decpo probe --measure sae` with a loaded SAE."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from scipy import stats

pytest.importorskip("sparsify")

from decpo.cli import main  # noqa: E402
from decpo.config import load_config  # noqa: E402
from decpo.experiment.sae_stage import sae_key  # noqa: E402
from decpo.probes.sae_runner import load_sae  # noqa: E402

from conftest import REPO  # noqa: E402

SMOKE = str(REPO / "configs" / "smoke.yaml")
MEASURES = ("l0", "fvu", "dead_frac", "dense_frac", "shifted_frac", "ks_mean")


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_two_seeds_sae_stage_rows_the_saved_sae_and_the_report(tmp_path):
    out = tmp_path / "exp"
    args = ["run", "--config", SMOKE, "--output-dir", str(out), "experiment.seeds=[0,1]"]
    args += ["experiment.eval_limit=8", "experiment.eval_generate=false", "experiment.eval_tasks=[synthetic]"]
    args += ["experiment.probe_num_texts=16", "experiment.sae=true", "experiment.sae_train_tokens=3000"]
    assert main(args) == 0
    rows = _rows(out / "sae" / "sae.csv")
    models = {"base", "dpo-s0", "dpo-s1", "decpo-s0", "decpo-s1"}
    assert {r["model"] for r in rows} == models
    assert {(r["layer"], r["site"]) for r in rows} == {("1", "mlp.up_proj")}  # train.reg_layers=[-1]
    assert {r["probe"] for r in rows if r["model"] == "base"} == {f"sae/{m}" for m in MEASURES[:4]}
    assert {r["probe"] for r in rows if r["model"] == "dpo-s0"} == {f"sae/{m}" for m in MEASURES}
    info = json.loads((out / "sae" / "sae.json").read_text())
    assert info["train_tokens"] >= 3000 and info["layer"] == 1
    assert load_sae(out / "sae" / "sae").d_in == 32  # the tiny model's mlp.up_proj
    stages = json.loads((out / "stages.json").read_text())
    assert "probes/sae" in json.dumps(stages)

    report = (out / "report.md").read_text()
    start = report.index("### Sparse-autoencoder measures")
    section = report[start : report.index("\n## ", start)]
    value = {(r["model"], r["probe"]): float(r["value"]) for r in rows}
    line = next(x for x in section.splitlines() if x.startswith("| FVU"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[1] == f"{value[('base', 'sae/fvu')]:.4f}"
    for cell, method in zip(cells[2:4], ("dpo", "decpo"), strict=True):
        x = np.array([value[(f"{method}-s{s}", "sae/fvu")] for s in (0, 1)])
        low, high = stats.t.interval(0.95, 1, loc=x.mean(), scale=stats.sem(x))
        assert cell == f"{x.mean():.4f} [{max(low, 0.0):.4f}, {high:.4f}]"
    d = np.array([value[(f"decpo-s{s}", "sae/fvu")] - value[(f"dpo-s{s}", "sae/fvu")] for s in (0, 1)])
    assert cells[4].startswith(f"{d.mean():+.4f}")  # DecPO - DPO, paired by seed
    assert "| latents shifted vs base (share) | n/a |" in section


def test_the_stage_is_off_by_default_and_its_key_follows_its_settings():
    cfg = load_config(SMOKE)
    assert cfg.experiment.sae is False
    on = cfg.replace(**{"experiment.sae": True})
    assert sae_key(on, {"base": "k"}) != sae_key(
        on.replace(**{"experiment.sae_train_tokens": 10}), {"base": "k"}
    )
    assert sae_key(on, {"base": "k"}) != sae_key(on.replace(**{"experiment.sae_layer": 0}), {"base": "k"})


def test_decpo_probe_measure_sae_trains_saves_and_loads(tmp_path, capsys):
    common = ["probe", "--model", "base=tiny-random-llama", "--model", "dpo=tiny-random-llama"]
    common += ["--texts", "synthetic", "--num-texts", "20", "--measure", "sae", "--layers", "1"]
    assert (
        main(
            [
                *common,
                "--sae-train-texts",
                "60",
                "--sae-train-tokens",
                "2000",
                "--output-dir",
                str(tmp_path / "a"),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "base: SAE (mlp.up_proj, layer 1) l0" in printed
    # does the proxy track it: 2 models at one block are too few points for a correlation
    assert "decorrelation vs SAE fvu (mlp.up_proj, block 1): too few points (2); no correlation" in printed
    a = {
        (r["model"], r["probe"]): r["value"]
        for r in _rows(tmp_path / "a" / "probes.csv")
        if "sae/" in r["probe"]
    }
    assert a[("dpo", "sae/shifted_frac")] == "0.0"  # the same model: nothing shifted
    # loaded back: the same measures, and no SAE written
    assert (
        main([*common, "--sae-path", str(tmp_path / "a" / "sae"), "--output-dir", str(tmp_path / "b")]) == 0
    )
    b = {
        (r["model"], r["probe"]): r["value"]
        for r in _rows(tmp_path / "b" / "probes.csv")
        if "sae/" in r["probe"]
    }
    assert a == b and not (tmp_path / "b" / "sae").exists()
    # a site of another width: one line naming both
    assert (
        main(
            [
                *common,
                "--sae-path",
                str(tmp_path / "a" / "sae"),
                "--sae-site",
                "resid_post",
                "--output-dir",
                str(tmp_path / "c"),
            ]
        )
        == 2  # a user error: one line, no traceback
    )
    err = capsys.readouterr().err
    assert (
        "the SAE of" in err
        and "reads 32-wide activations but resid_post of block 1 of base is 16 wide" in err
    )


def test_without_sparsify_both_commands_stop_before_any_work(tmp_path, monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "sparsify" else real(name, *a)
    )
    probe = ["probe", "--model", "tiny-random-llama", "--num-texts", "4", "--measure", "sae"]
    assert main([*probe, "--output-dir", str(tmp_path / "p")]) == 2
    assert "--measure sae need EleutherAI's sparsify: pip install 'decpo[sae]'" in capsys.readouterr().err
    run = ["run", "--config", SMOKE, "--output-dir", str(tmp_path / "r"), "experiment.sae=true"]
    assert main(run) == 2
    assert "experiment.sae need EleutherAI's sparsify" in capsys.readouterr().err
    assert not (tmp_path / "p").exists() and not (tmp_path / "r" / "train").exists()
