"""`decpo run` and `decpo sweep` on the smoke preset (tiny random model): stages in run order, probes of
every seed, the report's claims and paired tables against scipy, figures, resume, the strength sweep."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
import yaml
from scipy import stats

from decpo.cli import main
from decpo.config import load_config
from decpo.config.sweeps import parse_values, strength_label, strength_overrides
from decpo.models.hooks import parse_layers
from decpo.reports.hierarchical import hierarchical_paired_bootstrap
from decpo.reports.items import item_values
from decpo.reports.results import read_samples
from decpo.reports.stats import paired_bootstrap
from decpo.reports.tables import HEADLINE

from conftest import REPO

SMOKE = str(REPO / "configs" / "smoke.yaml")
ARGS = ["experiment.eval_limit=8", "experiment.probe_num_texts=8", "experiment.eval_tasks=[synthetic]"]


def _probe_rows(out):
    with open(out / "probes" / "probes.csv", newline="") as f:
        return list(csv.DictReader(f))


def _t(values):
    x = np.asarray(values, dtype=float)
    return x.mean(), *stats.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=stats.sem(x))


def test_two_seeds_probes_every_model_and_the_report_answers_both_claims(tmp_path):
    out = tmp_path / "exp"
    # a strength sweep in the experiment folder first: the report links it
    assert (
        main(
            [
                "sweep",
                "--reg-weights",
                "0,0.1",
                "--seeds",
                "0,1",
                "--config",
                SMOKE,
                "--output-dir",
                str(out / "strength"),
                *ARGS,
            ]
        )
        == 0
    )
    sweep = out / "strength"
    stages = json.loads((sweep / "stages.json").read_text())
    assert {f"train/{strength_label(v, s)}" for v in (0.0, 0.1) for s in (0, 1)} <= set(stages)
    assert {"probes", "eval/synthetic/base", "eval/synthetic/decpo-w0.1-s1"} <= set(stages)
    lam = {
        label: yaml.safe_load((sweep / "train" / label / "config.yaml").read_text())["train"]
        for label in ("decpo-w0-s0", "decpo-w0.1-s1")
    }
    # the smoke preset's weight is auto: 0 is no penalty, another value a balance
    assert lam["decpo-w0-s0"]["reg_weight"] == 0.0
    assert lam["decpo-w0.1-s1"]["reg_weight"] == "auto" and lam["decpo-w0.1-s1"]["reg_balance"] == 0.1
    assert all(
        yaml.safe_load((sweep / "train" / label / "config.yaml").read_text())["objective"]["name"] == "decpo"
        for label in lam
    )
    assert (sweep / "strength.png").exists() and (sweep / "strength.csv").exists()
    with open(sweep / "strength.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    decorr = [r for r in rows if r["task"] == "probes" and "heldout_prompts" in r["measure"]]
    assert [r["strength"] for r in decorr] == ["0", "0.1"] and decorr[0]["measure"].startswith(
        "decorrelation L1"
    )
    # decorrelation at the regularized layer over the two seeds: a t-interval from scipy
    values = {
        r["model"]: float(r["value"])
        for r in _probe_rows(sweep)
        if r["probe"] == "decorrelation" and r["site"] == "mlp.up_proj" and r["layer"] == "1"
    }
    m, lo, hi = _t([values["decpo-w0.1-s0"], values["decpo-w0.1-s1"]])
    assert (
        float(decorr[1]["mean"]),
        float(decorr[1]["ci_low"]),
        float(decorr[1]["ci_high"]),
    ) == pytest.approx((m, lo, hi))
    d = [values[f"decpo-w0.1-s{s}"] - values[f"decpo-w0-s{s}"] for s in (0, 1)]
    assert float(decorr[1]["minus_strength0_mean"]) == pytest.approx(np.mean(d))
    assert (
        float(decorr[1]["minus_strength0_low"]),
        float(decorr[1]["minus_strength0_high"]),
    ) == pytest.approx(_t(d)[1:])
    md = (sweep / "strength.md").read_text()
    assert "each value as a balance" in md and "![strength](strength.png)" in md

    assert main(["run", "--config", SMOKE, "--output-dir", str(out), "--seeds", "0,1", *ARGS]) == 0
    report = (out / "report.md").read_text()
    lines = report.splitlines()
    # the primary (experiment.primary null: synthetic's declared one), recorded before the first training
    assert json.loads((out / "primary.json").read_text())["measure"] == "ab_accuracy_debiased"
    assert lines[2] == (
        "Primary outcome (declared before the run: experiment.primary is null, so the synthetic task's "
        "declared primary measure): synthetic ab_accuracy_debiased on the eval split at the final step."
    )
    claim1 = next(
        i for i, line in enumerate(lines) if line.startswith("**Claim 1 (secondary outcome): does DPO")
    )
    claim2 = next(i for i, line in enumerate(lines) if line.startswith("**Claim 2 (primary outcome)"))
    assert lines.index("## Manipulation checks") < lines.index("## Outcomes") == claim2 - 2 < claim1
    assert "paired over 2 seeds x 8 items, hierarchical bootstrap over seeds and items" in lines[claim2]
    assert "minimum detectable effect of this run" in lines[claim2]

    # one probe stage: base and every trained model of every seed, in both probe sets
    rows = _probe_rows(out)
    assert {r["model"] for r in rows} == {"base", "dpo-s0", "decpo-s0", "dpo-s1", "decpo-s1"}
    assert {"mlp.up_proj", "mlp.up_proj@answer_last"} <= {r["site"] for r in rows}
    assert list(rows[0]) == ["model", "layer", "site", "probe", "value", "n_texts", "depth"]
    sets = json.loads((out / "probes" / "probe_sets.json").read_text())
    assert (
        sets["heldout_prompts"]["texts"] == "prompt" and sets["penalty_position"]["texts"] == "prompt+chosen"
    )

    # claim 1: mean over layers of DPO - base per seed, t-interval over the two seeds (scipy)
    dec = {
        (r["model"], int(r["layer"])): float(r["value"])
        for r in rows
        if r["probe"] == "decorrelation" and r["site"] == "mlp.up_proj"
    }
    per_seed = [np.mean([dec[(f"dpo-s{s}", L)] - dec[("base", L)] for L in (0, 1)]) for s in (0, 1)]
    m, lo, hi = _t(per_seed)
    assert f"{m:+.4f} [{lo:+.4f}, {hi:+.4f}] (95% t-interval over 2 seeds)" in lines[claim1]
    # claim 2: decorrelation at the regularized layer (-1 -> 1), paired by seed
    m, lo, hi = _t([dec[(f"decpo-s{s}", 1)] - dec[(f"dpo-s{s}", 1)] for s in (0, 1)])
    assert (
        f"regularized layer 1 (mlp.up_proj, last token of each held-out prompt (the paper's probe)): DecPO - DPO = {m:+.4f} [{lo:+.4f}, {hi:+.4f}]"
        in report
    )

    # the paired table: per seed and item decpo-sK - dpo-sK, bootstrap over seeds and items; beside it the
    # t-interval of the per-seed differences
    res = {
        label: json.loads((out / "eval" / "synthetic" / label / "results.json").read_text())["metrics"]
        for label in ("dpo-s0", "dpo-s1", "decpo-s0", "decpo-s1")
    }
    d = [
        res[f"decpo-s{s}"]["reward_margin"]["value"] - res[f"dpo-s{s}"]["reward_margin"]["value"]
        for s in (0, 1)
    ]
    m, lo, hi = _t(d)
    items = {
        label: item_values(
            "synthetic", "reward_margin", read_samples(out / "eval" / "synthetic" / label / "samples.jsonl")
        )[1]
        for label in res
    }
    est = hierarchical_paired_bootstrap(
        {s: items[f"decpo-s{s}"] for s in (0, 1)}, {s: items[f"dpo-s{s}"] for s in (0, 1)}
    )
    assert (
        f"| synthetic: reward margin (higher is better) | {est.fmt(3, sign=True)} | paired over 2 seeds x 8 "
        f"items (bootstrap over seeds and items; t over the 2 seed means: {m:+.3f} [{lo:+.3f}, {hi:+.3f}]) |"
        in report
    )
    header = next(line for line in lines if line.startswith("| method |"))
    assert "| synthetic: (A) rate |" in header  # the synthetic task's "(A)" rate is a column

    for fig in (
        "probe_decorrelation_heldout_prompts",
        "probe_decorrelation_penalty_position",
        "curve_train_loss_pref",
        "curve_train_loss_reg",
        "curve_eval_rewards_accuracies",
    ):
        assert (out / "figures" / f"{fig}.png").exists() and f"figures/{fig}.png" in report
    assert "hollow marker at 0.5" in report
    # the strength sweep is linked
    assert "[strength/strength.md](strength/strength.md)" in report

    # stages in the plan's order: trainings by seed, the probe stage, evaluations
    table = report.split("Stages in run order")[1]
    listed = [line.split(" | ")[1] for line in table.splitlines() if " | done | " in line]
    assert listed[:5] == ["train/dpo-s0", "train/decpo-s0", "train/dpo-s1", "train/decpo-s1", "probes"]
    assert listed[5] == "eval/synthetic/base" and len(listed) == 10


def test_one_seed_paired_bootstrap_over_items_and_resume(tmp_path):
    out = tmp_path / "exp"
    assert main(["run", "--config", SMOKE, "--output-dir", str(out), *ARGS]) == 0
    report = (out / "report.md").read_text()
    assert "| base |" in report and "| dpo |" in report and "| decpo |" in report and "DecPO - DPO" in report
    stages = json.loads((out / "stages.json").read_text())
    assert all(s["status"] == "done" for s in stages.values()) and len(stages) == 6
    assert "Direction only (one seed" in next(x for x in report.splitlines() if x.startswith("**Claim 1"))

    # every headline measure of the task is reproduced by its per-item scores
    for label in ("base", "dpo-s0", "decpo-s0"):
        metrics = json.loads((out / "eval" / "synthetic" / label / "results.json").read_text())["metrics"]
        samples = read_samples(out / "eval" / "synthetic" / label / "samples.jsonl")
        for task, metric, _ in HEADLINE:
            if task == "synthetic" and metric in metrics:
                keys, values = item_values(task, metric, samples, metrics[metric])
                assert keys is not None, (label, metric, values)
    # one seed: DecPO - DPO is a paired bootstrap over the 8 items
    sa = read_samples(out / "eval" / "synthetic" / "decpo-s0" / "samples.jsonl")
    sb = read_samples(out / "eval" / "synthetic" / "dpo-s0" / "samples.jsonl")
    est = paired_bootstrap(
        item_values("synthetic", "reward_margin", sa)[1], item_values("synthetic", "reward_margin", sb)[1]
    )
    assert (
        f"| synthetic: reward margin (higher is better) | {est.fmt(3, sign=True)} | paired bootstrap over 8 items |"
        in report
    )
    before = {k: v["key"] for k, v in stages.items()}

    # same command: nothing reruns (the training folders are untouched)
    mtime = (out / "train" / "dpo-s0" / "final_metrics.json").stat().st_mtime
    probes = (out / "probes" / "probes.csv").stat().st_mtime
    assert main(["run", "--config", SMOKE, "--output-dir", str(out), *ARGS]) == 0
    assert (out / "train" / "dpo-s0" / "final_metrics.json").stat().st_mtime == mtime
    assert (out / "probes" / "probes.csv").stat().st_mtime == probes

    # an interrupted training (stage running, checkpoint-2 left, no final/) of the same config resumes in
    # place: the resume check of `decpo train` does not refuse it, and the folder is not moved aside
    run = out / "train" / "decpo-s0"
    for name in ("final", "checkpoint-4"):
        shutil.rmtree(run / name)
    (run / "final_metrics.json").unlink()
    log = json.loads((out / "stages.json").read_text())
    log["train/decpo-s0"]["status"] = "running"
    (out / "stages.json").write_text(json.dumps(log))
    assert main(["run", "--config", SMOKE, "--output-dir", str(out), *ARGS]) == 0
    assert (run / "final").is_dir() and not list((out / "train").glob("decpo-s0.stale-*"))
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert sorted(set(steps)) == [0, 1, 2, 3, 4] and steps.count(3) == 1  # resumed after step 2, once

    # a changed objective reruns what depends on it and keeps the old training aside
    assert main(["run", "--config", SMOKE, "--output-dir", str(out), *ARGS, "train.beta=0.2"]) == 0
    after = {k: v["key"] for k, v in json.loads((out / "stages.json").read_text()).items()}
    assert after["train/dpo-s0"] != before["train/dpo-s0"] and after["probes"] != before["probes"]
    assert list((out / "train").glob("dpo-s0.stale-*"))


def test_full_fine_tuning_is_scored_against_the_base_and_the_base_row_is_na(tmp_path):
    """Without LoRA the trained model's reference is the run's base model; the base (its own reference)
    has no reward measures: n/a in results.json and in the report, never 0."""
    out = tmp_path / "exp"
    assert (
        main(
            [
                "run",
                "--config",
                SMOKE,
                "--output-dir",
                str(out),
                "--methods",
                "dpo",
                *ARGS,
                "model.use_peft=false",
            ]
        )
        == 0
    )
    assert not (out / "train" / "dpo-s0" / "final" / "adapter_config.json").exists()
    trained = json.loads((out / "eval" / "synthetic" / "dpo-s0" / "results.json").read_text())
    assert trained["reference"] == "tiny-random-llama" and trained["not_applicable"] == {}
    margins = item_values(
        "synthetic", "reward_margin", read_samples(out / "eval" / "synthetic" / "dpo-s0" / "samples.jsonl")
    )[1]
    assert all(abs(m) > 1e-6 for m in margins) and trained["metrics"]["reward_margin"]["value"] != 0.0
    base = json.loads((out / "eval" / "synthetic" / "base" / "results.json").read_text())
    assert {"preference_accuracy", "reward_margin"} <= set(base["not_applicable"])
    assert not {"preference_accuracy", "reward_margin"} & set(base["metrics"])

    report = (out / "report.md").read_text()
    rows = [
        [c.strip() for c in line.strip("|").split("|")]
        for line in report.splitlines()
        if line.startswith("| ")
    ]
    header = next(r for r in rows if r[0] == "method")
    start = rows.index(header) + 1
    table = {r[0]: dict(zip(header, r, strict=True)) for r in rows[start : start + 2]}  # base, dpo
    for column in ("synthetic: reward margin", "synthetic: held-out pref. acc"):
        assert table["base"][column] == "n/a"
        assert table["dpo"][column] != "n/a" and not table["dpo"][column].startswith("0.000 [0.000")
    assert (
        "n/a for `base` (synthetic: held-out pref. acc; synthetic: reward margin): it is its own reference"
        in report
    )


def test_every_stage_key_holds_the_decpo_version(tmp_path, monkeypatch):
    """A new decpo version reruns every stage (trainings, probes, evaluations) instead of reusing them."""
    import decpo
    import decpo.experiment.recipes as recipes
    from decpo.experiment.plan import Plan
    from decpo.experiment.recipes import run_experiment, sweep_layers, sweep_strength

    planned: list[dict[str, str]] = []
    monkeypatch.setattr(Plan, "run", lambda self, *a: planned.append({s.name: s.key for s in self.steps}))
    for name in ("write_report", "write_layers", "write_strength"):
        monkeypatch.setattr(recipes, name, lambda *a, **k: None)
    cfg = load_config(SMOKE, ARGS)
    for version in ("0.1.0", "0.1.1"):
        monkeypatch.setattr(decpo, "__version__", version)
        run_experiment(cfg, tmp_path / "run", argv=[])
        sweep_layers(cfg, tmp_path / "layers", [0], argv=[])
        sweep_strength(cfg, tmp_path / "strength", [0.0], argv=[])
    for old, new in zip(planned[:3], planned[3:], strict=True):
        assert old.keys() == new.keys() and len(old) >= 2
        assert all(old[name] != new[name] for name in old), [n for n in old if old[n] == new[n]]


def test_strength_values_and_their_config_changes():
    assert parse_values("0,0.1,0.3,1,3") == [0.0, 0.1, 0.3, 1.0, 3.0]
    with pytest.raises(ValueError):
        parse_values("0.1,0.10")
    with pytest.raises(ValueError):
        parse_values("-1")
    cfg = load_config(SMOKE, ["train.reg_weight=0.01"])  # a fixed weight: the values are weights
    assert strength_overrides(cfg, 0.3) == {"train.reg_weight": 0.3}
    assert strength_overrides(cfg, 0) == {"train.reg_weight": 0.0}
    assert strength_label(0.1, 2) == "decpo-w0.1-s2" and strength_label(3.0, 0) == "decpo-w3-s0"


def test_strength_sweep_of_balances_when_the_weight_is_auto(tmp_path):
    cfg = load_config(SMOKE, ["train.reg_weight=auto"])
    assert strength_overrides(cfg, 0.3) == {"train.reg_balance": 0.3}
    assert strength_overrides(cfg, 0) == {"train.reg_weight": 0.0}  # 0: no penalty, never a balance of 0
    run = cfg.replace(**strength_overrides(cfg, 0.3))
    assert run.train.reg_weight == "auto" and run.train.reg_balance == 0.3

    out = tmp_path / "strength"
    argv = ["sweep", "--reg-weights", "0,0.3", "--config", SMOKE, "--output-dir", str(out), *ARGS]
    assert main([*argv, "train.reg_weight=auto"]) == 0
    zero = yaml.safe_load((out / "train" / "decpo-w0-s0" / "config.yaml").read_text())["train"]
    assert zero["reg_weight"] == 0.0 and not (out / "train" / "decpo-w0-s0" / "reg_weight.json").exists()
    calibrated = json.loads((out / "train" / "decpo-w0.3-s0" / "reg_weight.json").read_text())
    assert calibrated["reg_balance"] == 0.3 and calibrated["reg_weight"] > 0
    md = (out / "strength.md").read_text()
    assert "each value as a balance" in md
    assert f"| 0.3 | train.reg_balance=0.3 | s0: {calibrated['reg_weight']:.4g} |" in md
    # one seed: strength minus 0 is a paired bootstrap over items for task measures, no interval for probes
    with open(out / "strength.csv", newline="") as f:
        rows = {(r["strength"], r["measure"]): r for r in csv.DictReader(f)}
    assert (
        rows[("0.3", "synthetic: reward margin")]["minus_strength0_interval"]
        == "paired bootstrap over 8 items"
    )
    assert rows[("0.3", "decorrelation L1 (mlp.up_proj, heldout_prompts)")]["minus_strength0_low"] == ""


def test_probe_texts_are_held_out_prompts_and_the_penalty_position():
    from decpo.data import load_task
    from decpo.experiment.probe_texts import probe_sets, probe_texts

    cfg = load_config(SMOKE, ["experiment.probe_num_texts=12"])
    held_out, penalty = probe_sets(cfg)  # train.reg_tokens=last: two probe sets
    texts = probe_texts(cfg, held_out)
    evals = load_task("synthetic", "eval", seed=0)[:12]
    assert texts == [r["prompt"] for r in evals]
    train = {r["prompt"] for r in load_task("synthetic", "train", seed=0)}
    assert not train & set(texts)
    answered = probe_texts(cfg, penalty, eos_token="</s>")
    assert answered == [r["prompt"] + r["chosen"] + "</s>" for r in evals]
    assert penalty.site_suffix == "@answer_last" and held_out.site_suffix == ""
    only = probe_sets(load_config(SMOKE, ["train.reg_tokens=prompt_last"]))
    assert [s.name for s in only] == ["heldout_prompts"] and only[0].penalty_position


def test_parse_layers():
    assert parse_layers("0-3") == [0, 1, 2, 3]
    assert parse_layers("0-29:10") == [0, 10, 20]
    assert parse_layers("3,15,27") == [3, 15, 27]


def test_run_and_sweep_refuse_to_be_launched_as_several_processes(tmp_path, monkeypatch, capsys):
    # under `accelerate launch` / torchrun every process would evaluate and write stages.json
    monkeypatch.setenv("WORLD_SIZE", "2")
    out = tmp_path / "exp"
    assert main(["run", "--config", SMOKE, "--output-dir", str(out), *ARGS]) == 2
    err = capsys.readouterr().err
    assert "one of 2 (WORLD_SIZE)" in err and "--num-processes N" in err
    assert main(["sweep", "--layers", "0,1", "--config", SMOKE, "--output-dir", str(out), *ARGS]) == 2
    assert "one of 2" in capsys.readouterr().err
    assert not out.exists()  # refused before anything is written


def test_num_processes_launches_each_training_stage(tmp_path, monkeypatch):
    import decpo.experiment.stages as stages
    from decpo.experiment.stages import train_stage as _train_stage
    from decpo.records import StageLog

    launched = []

    def fake_launch(n, args):
        launched.append((n, args))
        return 0 if len(launched) == 1 else 1

    monkeypatch.setattr(stages, "launch", fake_launch)
    cfg = load_config(SMOKE, ["objective.name=dpo", "train.seed=1"])
    folder = tmp_path / "train" / "dpo-s1"
    stage = _train_stage(
        cfg, folder, StageLog(tmp_path / "stages.json"), "train/dpo-s1", "k", num_processes=2
    )
    stage()
    config = folder / "launch.yaml"
    assert launched == [(2, ["train", "--config", str(config), "--output-dir", str(folder)])]
    assert load_config(config) == cfg  # the launched run trains what the stage's key says
    with pytest.raises(RuntimeError, match="2-process training exited with code 1"):
        stage()


def test_a_damaged_stages_json_is_one_error_naming_it(tmp_path):
    from decpo.errors import DecPOError
    from decpo.records import StageLog

    path = tmp_path / "stages.json"
    path.write_text('{"pairs": {"key": "ab')  # cut short
    with pytest.raises(DecPOError, match=r"stages.json is damaged .*delete it and rerun"):
        StageLog(path)
