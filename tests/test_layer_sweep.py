"""`decpo sweep --layers`: per seed one DPO run and one DecPO run per layer, probes and evaluations of every
run, resumable; ``layers.md`` with each layer's manipulation checks before its outcomes, DecPO(L) - DPO
paired by seed (probes) and by seed and item (the primary outcome), against scipy and the bootstrap."""

from __future__ import annotations

import csv
import json
import random
import re

import numpy as np
import pytest
import yaml
from scipy import stats

import decpo.experiment.stages as stages
from decpo.cli import main
from decpo.config import ConfigError, load_config
from decpo.config.sweeps import layer_label, sweep_layer_values
from decpo.experiment.plan import Plan
from decpo.reports.hierarchical import hierarchical_paired_bootstrap, mde, mde_paired
from decpo.reports.items import align_items, item_values
from decpo.reports.results import read_samples
from decpo.reports.stats import paired_bootstrap
from decpo.reports.sweep_points import paired_by_items
from decpo.reports.sweeps import _primary_measure

from conftest import REPO

SMOKE = str(REPO / "configs" / "smoke.yaml")
# a few tiny steps: 2 of 8 pairs per run
ARGS = [
    "experiment.eval_limit=8",
    "experiment.probe_num_texts=8",
    "experiment.eval_tasks=[synthetic]",
    "data.max_train_samples=16",
    "train.max_steps=2",
]
TRAININGS = ["dpo-s0", "decpo-L00-s0", "decpo-L01-s0", "dpo-s1", "decpo-L00-s1", "decpo-L01-s1"]


def _t(values):
    x = np.asarray(values, dtype=float)
    return x.mean(), *stats.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=stats.sem(x))


def _sections(md: str) -> dict[str, str]:
    """``## Layer L`` -> its text."""
    parts = re.split(r"^## ", md, flags=re.M)
    return {p.split("\n", 1)[0]: p for p in parts if p.startswith("Layer ")}


def _sweep(out) -> int:
    return main(
        ["sweep", "--layers", "0,1", "--seeds", "0,1", "--config", SMOKE, "--output-dir", str(out), *ARGS]
    )


def test_two_seeds_two_layers_pair_with_dpo_and_resume_without_rerunning(tmp_path, monkeypatch):
    ran: list[str] = []
    run_step = Plan._run_step
    monkeypatch.setattr(
        Plan, "_run_step", lambda self, step, order: (ran.append(step.name), run_step(self, step, order))[1]
    )
    # the first invocation is interrupted at the probe stage, after every training
    probe_models = stages.probe_models

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(stages, "probe_models", interrupted)
    out = tmp_path / "layers"
    assert _sweep(out) == 130
    assert ran == [f"train/{label}" for label in TRAININGS] + ["probes"]
    mtimes = {label: (out / "train" / label / "final_metrics.json").stat().st_mtime for label in TRAININGS}
    monkeypatch.setattr(stages, "probe_models", probe_models)
    ran.clear()
    assert _sweep(out) == 0
    evals = [f"eval/synthetic/{label}" for label in ["base", *TRAININGS]]
    assert ran == ["probes", *evals]  # the trainings done before are not run again
    assert {
        label: (out / "train" / label / "final_metrics.json").stat().st_mtime for label in TRAININGS
    } == mtimes
    ran.clear()
    assert _sweep(out) == 0 and ran == []  # nothing left to run
    log = json.loads((out / "stages.json").read_text())
    assert set(log) == {*(f"train/{label}" for label in TRAININGS), "probes", *evals}
    assert {s["status"] for s in log.values()} == {"done"}

    # the runs: DPO per seed, DecPO with the penalty on one layer
    def config(label):
        return yaml.safe_load((out / "train" / label / "config.yaml").read_text())

    assert config("dpo-s1")["objective"]["name"] == "dpo" and config("dpo-s1")["train"]["seed"] == 1
    dec = config("decpo-L00-s1")
    assert (
        dec["objective"]["name"] == "decpo"
        and dec["train"]["reg_layers"] == [0]
        and dec["train"]["seed"] == 1
    )
    with open(out / "probes" / "probes.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["model"] for r in rows} == {"base", *TRAININGS}

    # manipulation checks: decorrelation at layer L, DecPO(L) - DPO paired by seed (t over the 2 seeds)
    with open(out / "layers.csv", newline="") as f:
        points = list(csv.DictReader(f))
    value = {
        (r["model"], r["layer"]): float(r["value"])
        for r in rows
        if r["probe"] == "decorrelation" and r["site"] == "mlp.up_proj@answer_last"
    }
    for layer in (0, 1):
        (p,) = [r for r in points if r["layer"] == str(layer) and "penalty_position" in r["measure"]]
        d = [value[(layer_label(layer, s), str(layer))] - value[(f"dpo-s{s}", str(layer))] for s in (0, 1)]
        got = float(p["minus_dpo_mean"]), float(p["minus_dpo_low"]), float(p["minus_dpo_high"])
        assert got == pytest.approx(_t(d)) and p["minus_dpo_interval"] == "paired over 2 seeds (t)"
        assert float(p["dpo_mean"]) == pytest.approx(
            np.mean([value[(f"dpo-s{s}", str(layer))] for s in (0, 1)])
        )

    # the primary outcome: DecPO(L) - DPO paired by seed and item (the seeds x items bootstrap)
    task, metric = "synthetic", "ab_accuracy_debiased"
    for layer in (0, 1):
        per = {}
        for label in ("dpo", f"decpo-L{layer:02d}"):
            keyed = {
                s: item_values(
                    task, metric, read_samples(out / "eval" / task / f"{label}-s{s}" / "samples.jsonl")
                )
                for s in (0, 1)
            }
            per[label] = keyed
        a, b = {}, {}
        for s in (0, 1):
            ka, va = per[f"decpo-L{layer:02d}"][s]
            kb, vb = per["dpo"][s]
            a[s], b[s] = align_items(ka, va, kb, vb)
        est = hierarchical_paired_bootstrap(a, b)
        (p,) = [r for r in points if r["layer"] == str(layer) and r["task"] == task]
        got = float(p["minus_dpo_mean"]), float(p["minus_dpo_low"]), float(p["minus_dpo_high"])
        assert got == pytest.approx((est.mean, est.low, est.high)) and est.low < est.high
        assert p["minus_dpo_interval"].startswith("paired by seed and item: bootstrap over 2 seeds x 8 items")
        diffs = {s: np.subtract(a[s], b[s]) for s in (0, 1)}
        expected = mde_paired(diffs)
        assert (float(p["mde"]) if p["mde"] else 0.0) == pytest.approx(expected)

    # layers.md: per layer, the manipulation checks (neutral words) before the outcomes
    md = (out / "layers.md").read_text()
    assert "![layers](layers.png)" in md and (out / "layers.png").exists()
    sections = _sections(md)
    assert list(sections) == ["Layer 0", "Layer 1"]
    for text in sections.values():
        checks, outcomes = text.index("### Manipulation checks"), text.index("### Outcomes")
        assert checks < outcomes
        assert not re.search(r"better|worse", text[checks:outcomes], flags=re.I)
        assert "paired over 2 seeds (t)" in text[checks:outcomes]
        assert "Primary outcome: `synthetic` `ab_accuracy_debiased`" in text[outcomes:]
    summary = (out / "layers_summary.txt").read_text()
    assert summary.startswith("Layer sweep, DecPO(L) - DPO") and "synthetic: debiased A/B acc" in summary


def test_the_sweep_plan_shares_dpo_with_decpo_run_and_probes_the_swept_layers(tmp_path, monkeypatch):
    import decpo.experiment.recipes as recipes

    planned: list[Plan] = []
    monkeypatch.setattr(Plan, "run", lambda self, *a: planned.append(self))
    for name in ("write_report", "write_layers"):
        monkeypatch.setattr(recipes, name, lambda *a, **k: None)
    cfg = load_config(SMOKE, [*ARGS, "experiment.seeds=[0,1]"])
    recipes.run_experiment(cfg, tmp_path / "run", argv=[])
    recipes.sweep_layers(cfg, tmp_path / "layers", [1, 0, 1], argv=[])
    run, sweep = ({s.name: s for s in p.steps} for p in planned)
    assert run["train/dpo-s1"].key == sweep["train/dpo-s1"].key  # the same DPO training: a shared key
    assert [n for n in sweep if n.startswith("train/")] == [f"train/{label}" for label in TRAININGS]
    assert set(sweep["probes"].after) == {f"train/{label}" for label in TRAININGS}
    assert sweep["eval/synthetic/decpo-L01-s1"].after == ("train/decpo-L01-s1",)
    assert sweep["probes"].key != run["probes"].key  # the layers probed are part of its key
    with pytest.raises(ConfigError, match="counted from 0"):
        sweep_layer_values([0, -1])
    assert sweep_layer_values([3, 1, 3]) == [1, 3]

    # the probe stage reads only the swept layers (the tiny model has 2)
    stages.probe_stage(cfg, {"base": cfg.model.model_name_or_path}, tmp_path / "probes", layers=[1])()
    with open(tmp_path / "probes" / "probes.csv", newline="") as f:
        probed = {r["layer"] for r in csv.DictReader(f) if r["probe"] == "decorrelation"}
    assert probed == {"1"}


def test_the_layer_sweeps_primary_is_the_runs_experiment_primary():
    cfg = load_config(SMOKE)
    assert _primary_measure(cfg, ["synthetic", "sycophancy"]) == ("synthetic", "ab_accuracy_debiased")
    assert _primary_measure(cfg, ["toxicity", "synthetic"]) == ("toxicity", "gen/valid_non_toxic_rate")
    assert _primary_measure(cfg, []) is None
    chosen = load_config(SMOKE, ["experiment.primary=synthetic:ab_accuracy_user_wrong"])
    assert _primary_measure(chosen, ["synthetic"]) == ("synthetic", "ab_accuracy_user_wrong")


def _results_and_samples(scores: dict[int, list[float]], order_seed: int):
    """``seed -> results.json`` and ``seed -> samples.jsonl`` records of reward margins (items shuffled)."""
    results, samples = {}, {}
    for s, values in scores.items():
        records = [
            {
                "kind": "ab",
                "split": "eval",
                "prompt": f"q{i}",
                "chosen_letter": "A",
                "chosen": "x",
                "scores": {"reward_margin": v},
            }
            for i, v in enumerate(values)
        ]
        random.Random(order_seed + s).shuffle(records)  # pairing is by item, never by position
        samples[s] = records
        results[s] = {
            "metrics": {"reward_margin": {"value": float(np.mean(values)), "n": len(values), "ci": [0, 0]}}
        }
    return results, samples


def test_paired_by_items_pairs_by_seed_and_item_and_gives_the_mde():
    rng = np.random.default_rng(0)
    item = rng.normal(0, 1, 20)
    a = {s: list(item + rng.normal(0.3 + 0.1 * s, 0.5, 20)) for s in (0, 1, 2)}
    b = {s: list(item + rng.normal(0, 0.5, 20)) for s in (0, 1, 2)}
    ra, sa = _results_and_samples(a, 1)
    rb, sb = _results_and_samples(b, 2)
    reader = lambda side, seed: (sa if side == "a" else sb)[seed]  # noqa: E731
    est, how, effect = paired_by_items("synthetic", "reward_margin", ra, rb, reader)
    # the bootstrap's draws follow the item order of the first seed of DecPO's samples; DPO's are shuffled
    # otherwise, so a pairing by position would give another number
    order = [int(r["prompt"][1:]) for r in sa[0]]
    a = {s: [v[i] for i in order] for s, v in a.items()}
    b = {s: [v[i] for i in order] for s, v in b.items()}
    expected = hierarchical_paired_bootstrap(a, b)
    assert (est.mean, est.low, est.high) == pytest.approx((expected.mean, expected.low, expected.high))
    assert how.startswith("paired by seed and item: bootstrap over 3 seeds x 20 items")
    assert effect == pytest.approx(mde_paired({s: np.subtract(a[s], b[s]) for s in a}))

    # one seed: the paired bootstrap over items
    one = {0: ra[0]}, {0: rb[0]}
    est, how, effect = paired_by_items("synthetic", "reward_margin", *one, reader)
    expected = paired_bootstrap(a[0], b[0])
    assert (est.mean, est.low, est.high) == pytest.approx((expected.mean, expected.low, expected.high))
    assert how == "paired bootstrap over 20 items"
    assert effect == pytest.approx(mde_paired({0: np.subtract(a[0], b[0])}))

    # no per-item scores: a t-interval over seeds, the MDE from the per-seed differences
    est, how, effect = paired_by_items("synthetic", "reward_margin", ra, rb, lambda side, seed: None)
    d = [np.mean(a[s]) - np.mean(b[s]) for s in a]
    assert (est.mean, est.low, est.high) == pytest.approx(_t(d)) and how == "paired over 3 seeds (t)"
    assert effect == pytest.approx(mde(stats.sem(d)))
