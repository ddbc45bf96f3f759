"""report.md from a fabricated experiment folder (no training): the primary outcome, the manipulation checks
and the outcomes in the first sections with the numbers scipy gives, the largest fall as well as the largest rise, the regularized layer resolved from the
end, figures with y-labels / chance lines / fixed colours, tie points of the accuracy curves, run order."""

from __future__ import annotations

import json

import matplotlib
import numpy as np
import pytest
from scipy import stats

from decpo.config import load_config
from decpo.io import atomic_write_json
from decpo.probes.runner import rows_to_csv
from decpo.records import StageLog
from decpo.reports.curves import CURVES, method_series, plot_curves
from decpo.reports.experiment_report import write_report
from decpo.reports.style import METHOD_COLORS

from conftest import REPO

SMOKE = str(REPO / "configs" / "smoke.yaml")
LAYERS = 4
# DPO - base per layer: small rises at 0 and 1, the largest change is a drop at layer 2
DPO_CHANGE = [0.010, 0.020, -0.050, 0.0]
DECPO_CHANGE = [0.0, 0.001, 0.002, 0.030]  # DecPO - DPO: up at the last layer (the regularized one)
BASE = [0.30, 0.40, 0.50, 0.60]
NOISE = {0: [1e-4, -2e-4, 3e-4, 1e-3], 1: [-3e-4, 1e-4, -1e-4, -1e-3], 2: [2e-4, 2e-4, -2e-4, 2e-3]}


def _probe_rows():
    rows = []

    def add(model, layer, value):
        for site in ("mlp.up_proj", "mlp.up_proj@answer_last"):
            rows.append(
                {
                    "model": model,
                    "layer": layer,
                    "site": site,
                    "probe": "decorrelation",
                    "value": value,
                    "n_texts": 16,
                    "depth": layer / (LAYERS - 1),
                }
            )

    for layer in range(LAYERS):
        add("base", layer, BASE[layer])
        for seed, noise in NOISE.items():
            dpo = BASE[layer] + DPO_CHANGE[layer] + noise[layer]
            add(f"dpo-s{seed}", layer, dpo)
            add(f"decpo-s{seed}", layer, dpo + DECPO_CHANGE[layer] + noise[(layer + 1) % LAYERS] / 2)
    return rows


def _results(value, n=20):
    return {
        "task": "synthetic",
        "n": n,
        "metrics": {
            "ab_accuracy_debiased": {
                "value": value,
                "ci": [value - 0.1, value + 0.1],
                "direction": "higher",
                "n": n,
            },
            "a_rate": {"value": 0.5, "ci": [0.4, 0.6], "direction": "none", "n": n},
            "reward_margin": {"value": value / 10, "ci": [0, 1], "direction": "higher", "n": n},
        },
    }


DEBIASED = {"dpo": {0: 0.50, 1: 0.55, 2: 0.45}, "decpo": {0: 0.40, 1: 0.46, 2: 0.33}}


@pytest.fixture
def folder(tmp_path):
    out = tmp_path / "exp"
    (out / "probes").mkdir(parents=True)
    (out / "probes" / "probes.csv").write_text(rows_to_csv(_probe_rows()))
    atomic_write_json(
        out / "probes" / "probe_sets.json",
        {
            "heldout_prompts": {
                "site_suffix": "",
                "position": "last prompt token",
                "n_texts": 16,
                "penalty_position": False,
            },
            "penalty_position": {
                "site_suffix": "@answer_last",
                "position": "prompt + chosen, last token",
                "n_texts": 16,
                "penalty_position": True,
            },
        },
    )
    models = ["base"] + [f"{m}-s{s}" for s in (0, 1, 2) for m in ("dpo", "decpo")]
    for label in models:
        method, _, seed = label.partition("-s")
        value = 0.3 if label == "base" else DEBIASED[method][int(seed)]
        atomic_write_json(out / "eval" / "synthetic" / label / "results.json", _results(value))
    # stages.json is written with sorted keys: alphabetical, not the run's order
    log = StageLog(out / "stages.json")
    order = [f"train/{m}" for m in models[1:]] + ["probes"] + [f"eval/synthetic/{m}" for m in models]
    for i, name in enumerate(order, 1):
        log.mark(name, f"k{i}", "done", wall_time_s=1.0, order=i, started_at=1000.0 + i)
    return out, models, order


def _cfg(**extra):
    overrides = ["experiment.seeds=[0,1,2]", "train.reg_layers=[-1]", *(f"{k}={v}" for k, v in extra.items())]
    return load_config(SMOKE, overrides)


def _t(values):
    x = np.asarray(values)
    return (x.mean(), *stats.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=stats.sem(x)))


def _fmt(mean, low, high, digits=4):
    return f"{mean:+.{digits}f} [{low:+.{digits}f}, {high:+.{digits}f}]"


def _demo_report(folder) -> str:
    """report.md of the fake 3-seed folder with the smoke config and the plan's stage order."""
    out, models, order = folder
    return write_report(
        out,
        _cfg(),
        models=models,
        tasks=["synthetic"],
        command="decpo run",
        total_wall_s=1,
        stage_order=order,
    ).read_text()


def test_report_opens_with_the_primary_then_the_checks_and_both_claims(folder):
    out, models, order = folder
    lines = _demo_report(folder).splitlines()
    assert lines[0] == "# DecPO experiment report"
    # experiment.primary null: the synthetic task's declared primary; no primary.json in this folder
    assert lines[2].startswith(
        "Primary outcome (experiment.primary is null, so the synthetic task's declared"
    )
    assert "no record that it was declared before the run" in lines[2]
    assert lines[2].endswith("synthetic ab_accuracy_debiased on its evaluated items at the final step.")
    assert lines.index("## Manipulation checks") < lines.index("## Outcomes") < lines.index("## Results")
    claim1 = next(line for line in lines if line.startswith("**Claim 1 (secondary outcome)"))
    assert lines.index("## Outcomes") < lines.index(claim1) < lines.index("## Results")
    # mean over layers of DPO - base, per seed, then a t-interval over seeds: straight from scipy
    per_seed = [np.mean([DPO_CHANGE[L] + NOISE[s][L] for L in range(LAYERS)]) for s in NOISE]
    assert _fmt(*_t(per_seed)) in claim1
    assert "No: DPO lowered it on average" in claim1
    # per-layer intervals: layers 0 and 1 above 0, layer 2 below, layer 3 includes 0
    assert "above 0 in 2 and below 0 in 1 of 4 layers" in claim1
    rise = _t([DPO_CHANGE[1] + NOISE[s][1] for s in NOISE])
    fall = _t([DPO_CHANGE[2] + NOISE[s][2] for s in NOISE])
    assert f"largest rise is at layer 1 ({_fmt(*rise)})" in claim1
    assert f"largest fall at layer 2 ({_fmt(*fall)})" in claim1

    outcomes = "\n".join(lines[lines.index("## Outcomes") : lines.index(claim1)])
    claim2 = next(line for line in lines if line.startswith("**Claim 2 (primary outcome)"))
    # no samples.jsonl here: the primary cannot be paired by item, and the report says so
    assert "DecPO - DPO on synthetic ab_accuracy_debiased: not measured" in claim2
    assert "no samples.jsonl" in claim2
    # the table still has it, paired by seed (t-interval): DecPO is worse on the debiased accuracy here
    d = [DEBIASED["decpo"][s] - DEBIASED["dpo"][s] for s in (0, 1, 2)]
    m, lo, hi = _t(d)
    assert (
        f"| synthetic: debiased A/B acc (higher is better) | {m:+.3f} [{lo:+.3f}, {hi:+.3f}] | paired over 3 seeds (t) | DecPO worse |"
        in lines
    )
    # the secondary measures do not count the primary: the reward margin alone
    assert "DecPO is better on 0, worse on 1 and not clearly different on 0 of 1 measures" in outcomes
    assert "debiased A/B acc (higher is better): DecPO - DPO" not in outcomes
    assert "(A) rate (no better side)" in outcomes and "diagnostic (no better side)" in outcomes
    # the regularized layer -1 is layer 3 of 4; DecPO - DPO there, paired by seed, in both probe sets: a
    # manipulation check; the paper's probe (held-out prompts) also among the secondary outcomes
    checks = "\n".join(lines[lines.index("## Manipulation checks") : lines.index("## Outcomes")])
    dpo3 = {s: BASE[3] + DPO_CHANGE[3] + NOISE[s][3] for s in NOISE}
    dec3 = {s: dpo3[s] + DECPO_CHANGE[3] + NOISE[s][0] / 2 for s in NOISE}
    reg = _t([dec3[s] - dpo3[s] for s in NOISE])
    assert f"regularized layer 3 (mlp.up_proj, last prompt token): DecPO - DPO = {_fmt(*reg)}" in checks
    assert "regularized layer 3 (mlp.up_proj@answer_last" in checks and "DecPO higher" in checks
    assert (
        f"paper's probe at the regularized layer 3 (mlp.up_proj, last prompt token): DecPO - DPO = {_fmt(*reg)}"
        in outcomes
    )


def test_a_measure_at_the_ceiling_is_flagged_and_left_out_of_the_counts(folder):
    out, models, order = folder
    ceiling = {"dpo": {0: 0.98, 1: 1.0, 2: 0.99}, "decpo": {0: 1.0, 1: 1.0, 2: 1.0}}
    for label in models[1:]:
        method, _, seed = label.partition("-s")
        atomic_write_json(
            out / "eval" / "synthetic" / label / "results.json", _results(ceiling[method][int(seed)], n=64)
        )
    # the reward margin the primary: the debiased accuracy is a secondary measure
    cfg = _cfg(**{"experiment.primary": "synthetic:reward_margin"})
    report = write_report(out, cfg, models=models, tasks=["synthetic"], command="x", total_wall_s=1)
    lines = report.read_text().splitlines()
    summary = next(line for line in lines if line.startswith("Secondary outcomes"))
    # the debiased accuracy (both methods >= 0.97) is not counted, and the reward margin is the primary
    assert "None of the secondary task measures can show a difference" in summary
    assert (
        "at the ceiling (>= 0.97) or the floor (<= 0.03): synthetic: debiased A/B acc (at the ceiling)"
        in summary
    )
    line = next(x for x in lines if x.startswith("- synthetic: debiased A/B acc (higher is better)"))
    assert line.endswith(": at the ceiling: cannot show a difference.")
    # the results table: DecPO's 64/64 in every seed is not shown as certain, but as 64 of 64 shared items
    row = next(x for x in lines if x.startswith("| decpo |"))
    assert "1.000 [0.944, 1.000]" in row and "[1.000, 1.000]" not in row


def test_results_table_has_the_a_rate_and_stages_are_in_run_order(folder):
    out, models, order = folder
    report = _demo_report(folder)
    header = next(line for line in report.splitlines() if line.startswith("| method |"))
    assert "synthetic: (A) rate" in header
    table = report.split("Stages in run order")[1]
    listed = [
        line.split(" | ")[1] for line in table.splitlines() if line.startswith("| ") and " | done | " in line
    ]
    assert listed == order and listed != sorted(listed)
    assert list(json.loads((out / "stages.json").read_text())) == sorted(order)  # the file itself is sorted
    # without the plan's order (an older caller): the recorded run order
    report = write_report(
        out, _cfg(), models=models, tasks=["synthetic"], command="x", total_wall_s=1
    ).read_text()
    table = report.split("Stages in run order")[1]
    assert [line.split(" | ")[1] for line in table.splitlines() if " | done | " in line] == order


def test_one_seed_claims_say_there_is_no_interval(tmp_path, folder):
    out, models, order = folder
    one = [m for m in models if m == "base" or m.endswith("-s0")]
    cfg = load_config(SMOKE, ["experiment.seeds=[0]", "train.reg_layers=[3]"])
    csv = (out / "probes" / "probes.csv").read_text().splitlines()
    (out / "probes" / "probes.csv").write_text(
        "\n".join(line for line in csv if "-s1," not in line and "-s2," not in line) + "\n"
    )
    report = write_report(out, cfg, models=one, tasks=["synthetic"], command="x", total_wall_s=1).read_text()
    claim1 = next(line for line in report.splitlines() if line.startswith("**Claim 1"))
    assert "Direction only (one seed, so no interval over seeds): lower on average." in claim1
    assert "higher in 3 and lower in 1 of 4 layers" in claim1
    assert "largest rise is at layer 1 (+0.0198) and the largest fall at layer 2 (-0.0497)" in claim1
    # task measures of one seed without samples.jsonl: not paired, said so
    assert "n/a (unpaired: no samples.jsonl)" in report


def test_equal_seeds_in_claim_1_are_not_called_one_seed():
    from types import SimpleNamespace

    from decpo.reports.claims import _claim1_answer
    from decpo.reports.probes import summarize
    from decpo.reports.stats import t_interval

    same = t_interval([0.01, 0.01, 0.01])  # three seeds, one value: no interval, and not "one seed"
    answer, _ = _claim1_answer(SimpleNamespace(claim1=summarize({0: same, 1: same}, same)))
    assert answer == "Direction only (all 3 seeds gave the same value, so no interval): higher on average."


def test_prompt_last_says_the_held_out_prompts_measure_the_penalty(folder):
    from decpo.experiment.probe_texts import probe_sets

    out, models, order = folder
    cfg = _cfg(**{"train.reg_tokens": "prompt_last"})
    assert [s.name for s in probe_sets(cfg)] == ["heldout_prompts"] and probe_sets(cfg)[0].penalty_position
    assert [s.texts for s in probe_sets(_cfg())] == ["prompt", "prompt+chosen"]
    report = write_report(
        out, cfg, models=models, tasks=["synthetic"], command="x", total_wall_s=1
    ).read_text()
    assert "already measure the penalty's position" in report


class _Capture:
    def __init__(self, monkeypatch):
        self.figures = []
        original = matplotlib.figure.Figure.savefig

        def savefig(fig, *args, **kwargs):
            self.figures.append((str(args[0]) if args else "", fig))
            return original(fig, *args, **kwargs)

        monkeypatch.setattr(matplotlib.figure.Figure, "savefig", savefig)


def _metrics(seed, reg):
    rows = []
    for step in (0, 2, 4):  # held-out evaluations; step 0: policy = reference, every reward exactly 0
        zero = step == 0
        rows.append(
            {
                "step": step,
                "eval/rewards/accuracies": 0.0 if zero else 0.5 + 0.05 * step + 0.01 * seed,
                "eval/rewards/chosen": 0.0 if zero else 0.1,
                "eval/rewards/rejected": 0.0 if zero else -0.1,
                "eval/rewards/margins": 0.0 if zero else 0.2,
                "eval/loss" if not reg else "eval/loss/pref": 0.69 - 0.01 * step,
            }
        )
    for step in (1, 2, 3, 4):
        first = step == 1
        row = {
            "step": step,
            "train/rewards/accuracies": 0.0 if first else 0.6 + 0.01 * seed,
            "train/rewards/chosen": 0.0 if first else 0.05,
            "train/rewards/rejected": 0.0 if first else -0.05,
            "train/rewards/margins": 0.0 if first else 0.1 * step + seed / 100,
            "train/loss": 0.69 - 0.01 * step + (0.2 if reg else 0.0),
        }
        if reg:
            row |= {
                "train/loss/pref": 0.69 - 0.01 * step,
                "train/loss/decorr": 0.2,
                "train/decorr/value": 20.0,
            }
        rows.append(row)
    return rows


def test_training_curves_bands_ties_labels_and_colours(tmp_path, monkeypatch):
    runs = {f"{m}-s{s}": _metrics(s, m == "decpo") for m in ("dpo", "decpo") for s in (0, 1, 2)}
    acc = next(c for c in CURVES if c.name == "eval_rewards_accuracies")
    series = method_series(runs, acc)
    steps, mean, low, high, ties, key, n = series["dpo"]
    assert ties == [0] and 0 not in steps and n == 3  # step 0 is a tie, not an accuracy of 0
    m, lo, hi = _t([0.5 + 0.1 + 0.01 * s for s in (0, 1, 2)])
    assert (mean[0], low[0], high[0]) == pytest.approx((m, lo, hi))
    train_acc = method_series(runs, next(c for c in CURVES if c.name == "train_rewards_accuracies"))
    assert train_acc["decpo"][4] == [1]  # the first train step runs before any update: a tie too
    pref = method_series(runs, next(c for c in CURVES if c.name == "train_loss_pref"))
    assert pref["dpo"][5] == "train/loss" and pref["decpo"][5] == "train/loss/pref"
    assert pref["decpo"][1] == pytest.approx([0.69 - 0.01 * s for s in (1, 2, 3, 4)])  # not loss + lambda R

    cap = _Capture(monkeypatch)
    paths = plot_curves(runs, tmp_path)
    assert {p.stem for p in paths} >= {
        "curve_train_loss_pref",
        "curve_train_loss_reg",
        "curve_eval_rewards_accuracies",
    }
    for name, fig in cap.figures:
        for ax in fig.axes:
            assert ax.get_ylabel(), name
            lines = {line.get_label(): line for line in ax.get_lines()}
            for method, color in METHOD_COLORS.items():
                for label, line in lines.items():
                    if label.startswith(f"{method} ("):
                        assert matplotlib.colors.to_hex(line.get_color()) == color
            if "accuracies" in name:
                assert any(list(line.get_ydata()) == [0.5, 0.5] for line in ax.get_lines()), "chance line"
                hollow = [c for c in ax.collections if c.get_label().startswith("tie")]
                assert hollow and np.allclose(hollow[0].get_offsets()[:, 1], 0.5)
                # no plotted accuracy point at 0
                for label, line in lines.items():
                    if label.startswith(("dpo", "decpo")):
                        assert min(line.get_ydata()) > 0.4


def test_probe_figure_marks_the_regularized_layer(folder, monkeypatch):
    out, models, order = folder
    cap = _Capture(monkeypatch)
    write_report(
        out, _cfg(), models=models, tasks=["synthetic"], command="x", total_wall_s=1, stage_order=order
    )
    probe_figs = [(n, f) for n, f in cap.figures if "probe_decorrelation" in n]
    assert len(probe_figs) == 2  # held-out prompts and the penalty's position
    for _, fig in probe_figs:
        assert len(fig.axes) == 2  # per-layer values and the differences
        for ax in fig.axes:
            assert ax.get_ylabel()
            vlines = [line for line in ax.get_lines() if list(line.get_xdata()) == [3, 3]]
            assert vlines, "regularized layer 3 marked"
            assert ax.collections, "bands over seeds"
        colours = {
            line.get_label(): matplotlib.colors.to_hex(line.get_color()) for line in fig.axes[0].get_lines()
        }
        assert colours["base"] == METHOD_COLORS["base"] and colours["dpo"] == METHOD_COLORS["dpo"]
        assert colours["decpo"] == METHOD_COLORS["decpo"]
