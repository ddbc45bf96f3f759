"""Learning curves of `decpo run` (experiment.curve_steps): the config checks, the quick evaluation, the
curve's stages (pure, no training), the report's estimates, table and figure, and one tiny run end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from decpo.cli import main
from decpo.config import ConfigError, load_config
from decpo.evaluation.config import EvalConfig
from decpo.evaluation.registry import EvalError
from decpo.evaluation.runner import evaluate
from decpo.experiment.eval_stages import curve_points
from decpo.names import BASE
from decpo.reports.learning_curves import (
    curve_estimates,
    curve_table,
    end_point,
    item_counts,
    learning_curve_lines,
    result_path,
)

from conftest import REPO

SMOKE = str(REPO / "configs" / "smoke.yaml")  # max_steps 4, save_steps 2, save_total_limit 2 (decpo's)
ARGS = ["experiment.eval_limit=8", "experiment.probe_num_texts=8", "experiment.eval_tasks=[synthetic]"]
METRIC = "ab_accuracy_debiased"


# --- config -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, field",
    [
        (["experiment.curve_steps=[0]"], "experiment.curve_steps"),
        (["experiment.curve_steps=[2, 2]"], "experiment.curve_steps"),
        (["train.max_steps=8", "experiment.curve_steps=[4, 2]"], "experiment.curve_steps"),
        (["experiment.curve_steps=[4]"], "train.max_steps"),  # the final model is the last point
        (["train.max_steps=-1", "experiment.curve_steps=[2]"], "train.max_steps"),
        (["experiment.curve_steps=[3]"], "train.save_steps"),  # no checkpoint-3
        (["train.save_strategy=no", "experiment.curve_steps=[2]"], "train.save_strategy"),
        (["train.save_steps=0.5", "experiment.curve_steps=[2]"], "train.save_steps"),  # a ratio
        # saves at 2, 4, 6, 8; the newest 2 kept: checkpoint-2 would be gone before its evaluation
        (["train.max_steps=8", "experiment.curve_steps=[2]"], "train.save_total_limit"),
        (["experiment.curve_limit=0"], "experiment.curve_limit"),
        (["experiment.concept_num_texts=0"], "experiment.concept_num_texts"),  # would probe no concept text
    ],
)
def test_bad_curve_settings_are_refused_naming_the_field(overrides, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        load_config(SMOKE, overrides)


def test_good_curve_settings_load():
    assert load_config(SMOKE, ["experiment.curve_steps=[2]"]).experiment.curve_steps == [2]
    for limit in ("4", "null", "0"):  # rotation keeps every save from step 2 on (null / <= 0: none deleted)
        cfg = load_config(
            SMOKE, ["train.max_steps=8", "experiment.curve_steps=[2, 6]", f"train.save_total_limit={limit}"]
        )
        assert cfg.experiment.curve_steps == [2, 6]
    assert load_config(SMOKE, ["train.max_steps=8", "experiment.curve_steps=[6]"]).experiment.curve_steps == [
        6
    ]
    assert load_config(SMOKE).experiment.curve_steps == []  # default: no curve


# --- the quick evaluation -------------------------------------------------------------------------------


def test_a_task_without_a_quick_evaluation_refuses_it():
    with pytest.raises(EvalError, match="quick: task 'sycophancy' has no quick evaluation"):
        EvalConfig(task="sycophancy", quick=True)
    assert EvalConfig(task="reading", quick=True).quick


@pytest.mark.parametrize("task", ["reading", "synthetic"])
def test_quick_is_the_full_evaluations_ab_measures_alone(tmp_path, task):
    common = {"task": task, "model": "tiny-random-llama", "limit": 4, "progress": False, "n_boot": 50}
    full = evaluate(EvalConfig(**common, generate=False), tmp_path / "full").results["metrics"]
    quick = evaluate(EvalConfig(**common, quick=True), tmp_path / "quick").results
    assert quick["n"] == 4 and quick["config"]["quick"]
    assert quick["metrics"] and all(m.startswith(("ab_", "a_rate")) for m in quick["metrics"])
    assert {m: e for m, e in full.items() if m in quick["metrics"]} == quick["metrics"]
    assert any(m.startswith("transfer/") for m in full) and "policy_preference_accuracy" in full


# --- the curve's stages ---------------------------------------------------------------------------------


def _plan(tmp_path: Path, monkeypatch, overrides: list[str]) -> dict[str, tuple[str, tuple[str, ...]]]:
    """``stage name -> (key, after)`` of `decpo run`'s plan, nothing run."""
    import decpo.experiment.recipes as recipes
    from decpo.experiment.plan import Plan

    planned: dict[str, tuple[str, tuple[str, ...]]] = {}
    monkeypatch.setattr(
        Plan, "run", lambda self, *a: planned.update({s.name: (s.key, s.after) for s in self.steps})
    )
    monkeypatch.setattr(recipes, "write_report", lambda *a, **k: None)
    recipes.run_experiment(load_config(SMOKE, [*ARGS, *overrides]), tmp_path / "run", argv=[])
    return planned


def test_curve_stages_evaluate_each_checkpoint_after_its_training(tmp_path, monkeypatch):
    plain = _plan(tmp_path, monkeypatch, ["experiment.seeds=[0, 1]"])
    stages = _plan(tmp_path, monkeypatch, ["experiment.seeds=[0, 1]", "experiment.curve_steps=[2]"])
    labels = [f"{m}-s{s}" for s in (0, 1) for m in ("dpo", "decpo")]
    curve = {f"eval/synthetic@2/{label}" for label in labels}
    # same items as the ordinary evaluations (curve_limit null): the ends are those evaluations
    assert set(stages) - set(plain) == curve
    assert all(stages[name] == plain[name] for name in plain)  # nothing else changes, keys included
    for label in labels:
        assert stages[f"eval/synthetic@2/{label}"][1] == (f"train/{label}",)
    # another item count: the checkpoints' stages alone, under other keys; the ends are still read from the
    # ordinary evaluations (their first items), never scored again
    other = _plan(
        tmp_path,
        monkeypatch,
        ["experiment.seeds=[0, 1]", "experiment.curve_steps=[2]", "experiment.curve_limit=4"],
    )
    assert set(other) - set(plain) == curve
    assert all(other[name][0] != stages[name][0] for name in curve)


def test_curve_points_are_checkpoints_beside_final(tmp_path):
    cfg = load_config(
        SMOKE, [*ARGS, "train.max_steps=6", "train.save_total_limit=null", "experiment.curve_steps=[2, 4]"]
    )
    models = {BASE: "tiny-random-llama", "dpo-s0": str(tmp_path / "train" / "dpo-s0" / "final")}
    assert curve_points(cfg, models) == [
        (2, "dpo-s0", str(tmp_path / "train" / "dpo-s0" / "checkpoint-2")),
        (4, "dpo-s0", str(tmp_path / "train" / "dpo-s0" / "checkpoint-4")),
    ]
    # another item count: the ends are still the ordinary evaluations (read from their first items)
    assert curve_points(cfg.replace(**{"experiment.curve_limit": 4}), models) == curve_points(cfg, models)


def test_the_first_task_must_have_a_quick_evaluation(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="experiment.curve_steps: the curve follows 'sycophancy'"):
        _plan(tmp_path, monkeypatch, ["experiment.eval_tasks=[sycophancy]", "experiment.curve_steps=[2]"])


# --- the report -----------------------------------------------------------------------------------------


def _result(value: float, n: int = 16, ci: tuple[float, float] | None = None) -> dict:
    lo, hi = ci or (value - 0.1, value + 0.1)
    return {
        "task": "synthetic",
        "n": n,
        "metrics": {METRIC: {"value": value, "ci": [lo, hi], "direction": "higher", "n": n}},
    }


def _t(values):
    """Mean and t-interval of a share over seeds, clipped to [0, 1] as the report clips a share's."""
    x = np.asarray(values, dtype=float)
    low, high = stats.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=stats.sem(x))
    return x.mean(), max(low, 0.0), min(high, 1.0)


def test_curve_estimates_band_over_seeds_and_table():
    curve = {
        BASE: {0: {None: _result(0.25, ci=(0.1, 0.4))}},
        "dpo": {2: {0: _result(0.5), 1: _result(0.625)}, 4: {0: _result(0.75), 1: _result(0.875)}},
        "decpo": {2: {0: _result(0.5625, ci=(0.4, 0.7))}, 4: {0: _result(0.8125), 1: _result(0.9375)}},
    }
    est = curve_estimates(curve, METRIC)
    for step, values in ((2, [0.5, 0.625]), (4, [0.75, 0.875])):
        e = est["dpo"][step]
        assert (
            (e.mean, e.low, e.high) == pytest.approx(_t(values)) and e.high - e.low > 0 and e.how == "seeds"
        )
    one = est["decpo"][2]  # one seed there: the item bootstrap interval of results.json
    assert (one.mean, one.low, one.high, one.how) == (0.5625, 0.4, 0.7, "items")
    assert (est[BASE][0].low, est[BASE][0].high) == (0.1, 0.4)
    rows = curve_table(est, [0, 2, 4], ["dpo", "decpo"], item_counts(curve), n_seeds=2)
    assert rows[0] == ["step", BASE, "dpo", "decpo", "items"]
    assert [r[0] for r in rows[1:]] == ["0", "2", "4"] and [r[-1] for r in rows[1:]] == ["16"] * 3
    assert rows[1][1:4] == ["0.250 [0.100, 0.400]", "", ""]
    assert rows[2][2] == est["dpo"][2].fmt(3) and rows[2][3] == "0.562 [0.400, 0.700] (1 of 2 seeds)"
    assert rows[3][1] == "" and rows[3][3] == est["decpo"][4].fmt(3)


def test_equal_seeds_get_the_binomial_interval_not_a_zero_width_one():
    curve = {"dpo": {2: {0: _result(1.0, n=8, ci=(1.0, 1.0)), 1: _result(1.0, n=8, ci=(1.0, 1.0))}}}
    e = curve_estimates(curve, METRIC)["dpo"][2]
    assert e.high == 1.0 and e.low < 1.0 and e.how == "exact binomial"


def test_the_report_section_reads_the_curve_folders_and_draws_the_figure(tmp_path):
    cfg = load_config(SMOKE, [*ARGS, "experiment.seeds=[0, 1]", "experiment.curve_steps=[2]"])
    models = [BASE, "dpo-s0", "decpo-s0", "dpo-s1", "decpo-s1"]
    values = {
        (BASE, 0): 0.25,
        **{
            (f"{m}-s{s}", step): 0.5 + 0.1 * s + step / 16
            for m in ("dpo", "decpo")
            for s in (0, 1)
            for step in (2, 4)
        },
    }
    for (label, step), v in values.items():
        path = result_path(tmp_path, cfg, "synthetic", step, label)
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(_result(v, n=8)))
    final = result_path(tmp_path, cfg, "synthetic", 4, "dpo-s0")
    assert final.parent.parent.name == "synthetic"  # the final model's ordinary evaluation (same items)
    lines = learning_curve_lines(tmp_path, cfg, models, ["synthetic"], tmp_path / "figures")
    assert lines[0] == f"## Learning curve: synthetic {METRIC}" and "same first 8 items" in lines[2]
    table = [row for line in lines for row in line.splitlines() if row.startswith("| ")]
    assert [row.split(" | ")[0] for row in table[1:]] == ["| 0", "| 2", "| 4"]
    m, lo, hi = _t([values["dpo-s0", 2], values["dpo-s1", 2]])
    assert f"{m:.3f} [{lo:.3f}, {hi:.3f}]" in table[2]
    assert (tmp_path / "figures" / "learning_curve_synthetic.png").stat().st_size > 0
    assert "![learning curve synthetic](figures/learning_curve_synthetic.png)" in lines
    assert (
        learning_curve_lines(
            tmp_path, cfg.replace(**{"experiment.curve_steps": []}), models, ["synthetic"], tmp_path
        )
        == []
    )


# --- end to end -----------------------------------------------------------------------------------------


def test_decpo_run_with_curve_steps_writes_the_curve(tmp_path):
    out = tmp_path / "exp"
    curve = ["experiment.curve_steps=[2]", "experiment.curve_limit=4"]  # 4 items, not eval_limit's 8
    assert main(["run", "--config", SMOKE, "--output-dir", str(out), *ARGS, *curve]) == 0
    stages = json.loads((out / "stages.json").read_text())
    for point in (f"synthetic@2/{m}-s0" for m in ("dpo", "decpo")):
        assert stages[f"eval/{point}"]["status"] == "done"
        results = json.loads((out / "eval" / point / "results.json").read_text())
        assert results["n"] == 4 and results["config"]["quick"] and METRIC in results["metrics"]
    assert not [name for name in stages if name.startswith(("eval/synthetic@0/", "eval/synthetic@4/"))]
    # the ends, read from the ordinary evaluations' first 4 items, equal a quick evaluation of those 4 items
    cfg = load_config(SMOKE, [*ARGS, *curve])
    for label, model in (("dpo-s0", str(out / "train" / "dpo-s0")), (BASE, "tiny-random-llama")):
        step = 0 if label == BASE else 4
        end = end_point(result_path(out, cfg, "synthetic", step, label), "synthetic", METRIC, 4)
        quick = evaluate(
            EvalConfig(task="synthetic", model=model, limit=4, quick=True, progress=False),
            tmp_path / f"quick-{label}",
        ).results
        assert end["n"] == 4 and end["metrics"][METRIC] == quick["metrics"][METRIC]
    assert json.loads((out / "eval" / "synthetic@2" / "dpo-s0" / "results.json").read_text())[
        "model"
    ].endswith("train/dpo-s0/checkpoint-2")
    assert (out / "figures" / "learning_curve_synthetic.png").exists()
    report = (out / "report.md").read_text()
    section = report[report.index("## Learning curve: synthetic") :]
    assert (
        "| 0 |" in section and "| 2 |" in section and "| 4 |" in section and "same first 4 items" in section
    )
