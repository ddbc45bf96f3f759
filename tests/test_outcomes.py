"""The primary outcome and the report's first sections: experiment.primary is validated before any stage
runs and recorded; report.md names it first, then "Manipulation checks" (no better/worse words), then
"Outcomes" whose claim 2 is one sentence about the primary with its seeds x items interval and minimum
detectable effect; a primary at the ceiling is flagged instead of given a verdict (fabricated folders)."""

from __future__ import annotations

import json
import random
import re

import numpy as np
import pytest

from decpo.cli import main
from decpo.config import ConfigError, load_config
from decpo.evaluation.registry import get_task, task_names
from decpo.io import atomic_write_json
from decpo.records import StageLog, read_primary, write_primary
from decpo.reports.experiment_report import write_report
from decpo.reports.hierarchical import hierarchical_paired_bootstrap, mde_paired
from decpo.reports.items import ITEM_SCORES, item_values
from decpo.reports.manipulation import penalty_share
from decpo.reports.primary import Primary, resolve_primary
from decpo.reports.stats import paired_bootstrap, t_interval

from conftest import REPO

SMOKE = str(REPO / "configs" / "smoke.yaml")
N_ITEMS = 40
BETA = 0.1
METRICS = ("ab_accuracy_debiased", "ab_accuracy_mean_orders", "a_rate", "reward_margin")


# --- experiment.primary --------------------------------------------------------------------------------------


def test_every_built_in_task_declares_a_primary_with_per_item_scores():
    declared = {name: get_task(name).primary for name in task_names()}
    assert declared == {
        "synthetic": "ab_accuracy_debiased",
        "sycophancy": "ab_accuracy_debiased",
        "reframing": "gen/positive_rate",
        "toxicity": "gen/valid_non_toxic_rate",
        "reading": "ab_accuracy_debiased",
    }
    for name, measure in declared.items():
        assert resolve_primary(None, [name, "synthetic"]) == Primary(name, measure, declared=False)
    assert resolve_primary("reading:gen/accuracy", ["synthetic", "reading"]) == Primary(
        "reading", "gen/accuracy", declared=True
    )
    assert resolve_primary(None, []) is None  # nothing evaluated: no primary, not an error


@pytest.mark.parametrize(
    ("setting", "why"),
    [
        ("synthetic:ab_accuracy_debiased", "task 'synthetic' is not evaluated by this run"),
        ("reading:chosen_reward", "'chosen_reward' of reading has no per-item scores"),
        ("reading:ab_acuracy_debiased", "'ab_acuracy_debiased' of reading has no per-item scores"),
    ],
)
def test_a_bad_primary_is_a_config_error_naming_the_field_and_the_choices(setting, why):
    with pytest.raises(ConfigError) as e:
        resolve_primary(setting, ["reading"])
    message = str(e.value)
    assert message.startswith(f"experiment.primary={setting!r}: ") and why in message
    assert "valid choices: reading:ab_accuracy, " in message and "reading:transfer/letter/a_rate" in message
    assert "synthetic:" not in message.split("valid choices:")[1]  # only the evaluated tasks' measures


def test_the_primary_field_must_be_task_colon_measure():
    assert load_config(SMOKE, ["experiment.primary=reading:gen/accuracy"]).experiment.primary == (
        "reading:gen/accuracy"
    )
    for bad in ("ab_accuracy_debiased", "'reading:'", ":ab_accuracy"):
        with pytest.raises(ConfigError, match=r"^experiment\.primary must be task:measure"):
            load_config(SMOKE, [f"experiment.primary={bad}"])
    with pytest.raises(ConfigError, match=r"'experiment\.primary' expects a string or null"):
        load_config(SMOKE, ["experiment.primary=reading:"])  # YAML reads it as a mapping


def test_a_bad_primary_stops_decpo_run_before_any_stage(tmp_path, capsys, monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("a training started")

    monkeypatch.setattr("decpo.experiment.stages.train", no_training)
    out = tmp_path / "exp"
    argv = ["run", "--config", SMOKE, "--output-dir", str(out), "experiment.eval_tasks=[synthetic]"]
    assert main([*argv, "experiment.primary=synthetic:gen/accuracy"]) == 2
    err = capsys.readouterr().err
    assert "experiment.primary='synthetic:gen/accuracy'" in err and "synthetic:ab_accuracy_debiased" in err
    assert not out.exists()


def test_the_record_keeps_the_first_declaration_and_a_change_is_kept_aside(tmp_path):
    first = write_primary(tmp_path, Primary("reading", "ab_accuracy_debiased", True).record(), 100.0)
    again = write_primary(tmp_path, Primary("reading", "ab_accuracy_debiased", True).record(), 200.0)
    assert first == again == read_primary(tmp_path) and again["recorded_at"] == 100.0
    changed = write_primary(tmp_path, Primary("reading", "gen/accuracy", True).record(), 300.0)
    assert changed["recorded_at"] == 300.0 and changed["replaced"]["measure"] == "ab_accuracy_debiased"


# --- a fabricated reading experiment ---------------------------------------------------------------------------


def _samples(p_right: float, rng: random.Random) -> list[dict]:
    out = []
    for i in range(N_ITEMS):
        right, right_swapped = float(rng.random() < p_right), float(rng.random() < p_right)
        out.append(
            {
                "kind": "ab",
                "split": "test",
                "prompt": f"Fact: item {i}",
                "chosen_letter": "AB"[i % 2],
                "user_correct": i % 4 < 2,
                "scores": {
                    "correct": right,
                    "correct_swapped": right_swapped,
                    "correct_both": right * right_swapped,
                    "logp_a": -rng.random(),
                    "logp_b": -rng.random(),
                    "reward_margin": rng.gauss(p_right, 0.2),
                },
            }
        )
    return out


def _results(samples: list[dict], base: bool, chosen_reward: float) -> dict:
    metrics = {}
    for metric in METRICS if not base else METRICS[:-1]:
        _, values = item_values("reading", metric, samples)
        direction = "none" if metric == "a_rate" else "higher"
        mean = float(np.mean(values))
        metrics[metric] = {
            "value": mean,
            "ci": [mean - 0.1, mean + 0.1],
            "direction": direction,
            "n": len(values),
        }
    if not base:
        metrics["chosen_reward"] = {
            "value": chosen_reward,
            "ci": [chosen_reward - 0.01, chosen_reward + 0.01],
        }
    return {"task": "reading", "n": N_ITEMS, "config": {"beta": BETA}, "metrics": metrics}


def _folder(tmp_path, p_right: dict[str, float], seeds=(0, 1, 2)):
    """An experiment folder of base and dpo / decpo per seed on reading: results.json, samples.jsonl, stage
    log, and each DecPO seed's metrics.jsonl; returns (folder, models, per-item debiased scores by label)."""
    out = tmp_path / "exp"
    rng = random.Random(0)
    models = ["base"] + [f"{m}-s{s}" for s in seeds for m in ("dpo", "decpo")]
    debiased = {}
    for label in models:
        method = label.split("-s")[0]
        samples = _samples(p_right[method], rng)
        folder = out / "eval" / "reading" / label
        folder.mkdir(parents=True)
        (folder / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
        chosen = {"base": 0.0, "dpo": -0.05, "decpo": -0.02}[method] * (1 + 0.1 * len(debiased))
        atomic_write_json(folder / "results.json", _results(samples, label == "base", chosen))
        debiased[label] = [s["scores"]["correct_both"] for s in samples]
    for s in seeds:
        rows = [
            {"step": k, "train/loss/pref": 0.7 - 0.02 * k, "train/loss/decorr": 0.1 + 0.01 * k + 0.001 * s}
            for k in range(1, 13)
        ]
        path = out / "train" / f"decpo-s{s}" / "metrics.jsonl"
        path.parent.mkdir(parents=True)
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    log = StageLog(out / "stages.json")
    for i, label in enumerate(models[1:], 1):
        log.mark(f"train/{label}", f"k{i}", "done", started_at=1000.0 + i)
    return out, models, debiased


def _report(out, models, seeds=(0, 1, 2), **overrides) -> list[str]:
    args = [f"experiment.seeds=[{','.join(map(str, seeds))}]", "data.task=reading", f"train.beta={BETA}"]
    cfg = load_config(SMOKE, [*args, *(f"{k}={v}" for k, v in overrides.items())])
    return (
        write_report(out, cfg, models=models, tasks=["reading"], command="x", total_wall_s=1)
        .read_text()
        .splitlines()
    )


def _section(lines: list[str], title: str) -> list[str]:
    start = lines.index(title)
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("## "))
    return lines[start:end]


def test_report_opens_with_the_primary_the_checks_and_the_outcomes(tmp_path):
    out, models, debiased = _folder(tmp_path, {"base": 0.5, "dpo": 0.7, "decpo": 0.75})
    write_primary(out, Primary("reading", "ab_accuracy_debiased", True).record(), 999.0)  # before training
    lines = _report(out, models, **{"experiment.primary": "reading:ab_accuracy_debiased"})
    assert lines[0] == "# DecPO experiment report"
    assert lines[2] == (
        "Primary outcome (declared before the run in experiment.primary): reading ab_accuracy_debiased on the "
        "test split at the final step."
    )
    headings = [line for line in lines if line.startswith("## ")]
    assert headings[:3] == ["## Manipulation checks", "## Outcomes", "## Results"]

    checks = "\n".join(_section(lines, "## Manipulation checks"))
    assert not re.search(r"better|worse|beat", checks, re.IGNORECASE), checks
    # (a) DPO - base on the primary: per item the mean over seeds, bootstrap over seeds and items
    dpo = {s: debiased[f"dpo-s{s}"] for s in (0, 1, 2)}
    learned = hierarchical_paired_bootstrap(dpo, {s: debiased["base"] for s in dpo})
    assert (
        f"DPO - base on reading ab_accuracy_debiased = {learned.fmt(3, sign=True)} (paired by item" in checks
    )
    assert "DPO higher than base" in checks
    # (c) the penalty's share over the last 10 of 12 logged steps, per DecPO seed
    share = {
        s: np.mean([(0.1 + 0.01 * k + 0.001 * s) / (0.8 - 0.01 * k + 0.001 * s) for k in range(3, 13)])
        for s in (0, 1, 2)
    }
    assert f"s0 {share[0]:.3f} (last 10 of 12 logged steps)" in checks
    assert f"range {min(share.values()):.3f} to {max(share.values()):.3f} over 3 DecPO seeds" in checks
    # (d) the preferred answer's log-prob change: chosen_reward / beta
    dpo_reward = [-0.05 * factor / BETA for factor in (1.1, 1.3, 1.5)]  # dpo-s0, -s1, -s2 of `_folder`
    assert f"dpo {t_interval(dpo_reward).fmt(3, sign=True)} (chosen_reward)" in checks

    outcomes = _section(lines, "## Outcomes")
    claim2 = outcomes[2]
    decpo = {s: debiased[f"decpo-s{s}"] for s in (0, 1, 2)}
    est = hierarchical_paired_bootstrap(decpo, dpo)
    mde = mde_paired({s: np.subtract(decpo[s], dpo[s]) for s in dpo})
    assert claim2.startswith(
        f"**Claim 2 (primary outcome): does DecPO beat DPO?** DecPO - DPO on reading ab_accuracy_debiased: "
        f"{est.fmt(3, sign=True)} (paired over 3 seeds x {N_ITEMS} items, hierarchical bootstrap over seeds "
        f"and items); minimum detectable effect of this run: {mde:.3f} (80% power, two-sided 5%): "
    )
    assert est.low < 0 < est.high and claim2.endswith(
        f"no clear difference (interval includes 0); an effect smaller than {mde:.3f} would likely be missed."
    )
    # the secondary measures: every other headline measure, the primary not counted among them
    summary = next(line for line in outcomes if line.startswith("Secondary outcomes"))
    assert "of 2 measures" in summary  # mean of orders and reward margin; the (A) rate has no side
    assert not any(line.startswith("- reading: debiased A/B acc (") for line in outcomes)
    assert any(line.startswith("- reading: A/B acc (mean of orders) (higher is better)") for line in outcomes)
    assert any(line.startswith("**Claim 1 (secondary outcome)") for line in outcomes)
    # the DecPO - DPO table: the same seeds x items interval, the t over the seed means beside it
    row = next(line for line in lines if line.startswith("| reading: debiased A/B acc (higher is better) |"))
    assert (
        f"| {est.fmt(3, sign=True)} | paired over 3 seeds x {N_ITEMS} items (bootstrap over seeds and" in row
    )


def test_a_primary_at_the_ceiling_is_flagged_not_given_a_verdict(tmp_path):
    out, models, _ = _folder(tmp_path, {"base": 0.5, "dpo": 0.995, "decpo": 0.999})
    lines = _report(out, models)
    claim2 = _section(lines, "## Outcomes")[2]
    assert "DecPO - DPO on reading ab_accuracy_debiased: " in claim2
    assert claim2.endswith(
        "both methods are at the ceiling (>= 0.97), where this measure cannot show a difference: no verdict."
    )
    assert "DecPO better" not in claim2 and "no clear difference" not in claim2
    # null primary and no primary.json: said so
    assert "primary.json holds no record that it was declared before the run" in lines[2]


def test_one_seed_is_paired_over_items_and_its_mde_covers_items_only(tmp_path):
    out, models, debiased = _folder(tmp_path, {"base": 0.3, "dpo": 0.4, "decpo": 0.8}, seeds=(0,))
    # declared after the first training started: the report says so rather than "before the run"
    write_primary(out, Primary("reading", "ab_accuracy_debiased", False).record(), 5000.0)
    lines = _report(out, models, seeds=(0,))
    assert "set after training had begun" in lines[2] and "declared before the run" not in lines[2]
    claim2 = _section(lines, "## Outcomes")[2]
    est = paired_bootstrap(debiased["decpo-s0"], debiased["dpo-s0"])
    mde = mde_paired({0: np.subtract(debiased["decpo-s0"], debiased["dpo-s0"])})
    assert (
        f"{est.fmt(3, sign=True)} (paired over 1 seed x {N_ITEMS} items, paired bootstrap over items); minimum "
        f"detectable effect of this run: {mde:.3f} (80% power, two-sided 5%; one seed, so it covers the items "
        "only, not seed-to-seed variation): DecPO better." in claim2
    )


def test_penalty_share_is_the_mean_of_the_last_logged_steps():
    rows = [{"step": k, "train/loss/pref": 0.5, "train/loss/decorr": 0.5 * k} for k in (3, 1, 2)]
    share, k, n = penalty_share(rows, last=2)
    assert (k, n) == (2, 3) and share == pytest.approx((1.0 / 1.5 + 1.5 / 2.0) / 2)  # steps 2 and 3
    assert penalty_share([{"step": 1, "train/loss": 0.7}]) is None  # DPO logs no penalty


def test_reading_item_scores_cover_its_headline_measures():
    from decpo.reports.tables import HEADLINE

    reading = [m for t, m, _ in HEADLINE if t == "reading"]
    assert reading[0] == get_task("reading").primary
    assert all(("reading", m) in ITEM_SCORES for m in reading)


def test_reading_item_scores_reproduce_a_real_evaluation(tmp_path):
    from decpo.evaluation import EvalConfig, evaluate
    from decpo.models.tiny import TINY_NAME
    from decpo.reports.results import read_samples

    cfg = EvalConfig(task="reading", model=TINY_NAME, limit=8, progress=False, n_boot=20, max_new_tokens=4)
    evaluate(cfg, tmp_path / "ev")
    results = json.loads((tmp_path / "ev" / "results.json").read_text())
    samples = read_samples(tmp_path / "ev" / "samples.jsonl")
    measures = [m for t, m in ITEM_SCORES if t == "reading"]
    # the model is its own reference here: the pair measures are n/a, every other one is in results.json
    assert {m for m in measures if m not in results["metrics"]} == {"preference_accuracy", "reward_margin"}
    for metric in measures:
        if metric in results["metrics"]:
            keys, why = item_values("reading", metric, samples, results["metrics"][metric])
            assert keys is not None, (metric, why)
