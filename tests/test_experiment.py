"""`decpo run` on the smoke preset: stages, report, resume skips finished stages, a changed config reruns."""

from __future__ import annotations

import json

from decpo.cli import main
from decpo.experiment import parse_layers
from decpo.reports.tables import Estimate, difference, over_seeds

from conftest import REPO

SMOKE = str(REPO / "configs" / "smoke.yaml")
ARGS = ["experiment.eval_limit=8", "experiment.probe_num_texts=8", "experiment.eval_tasks=[synthetic]"]


def test_run_writes_report_and_skips_finished_stages(tmp_path):
    out = tmp_path / "exp"
    assert main(["run", "--config", SMOKE, "--output-dir", str(out), *ARGS]) == 0
    report = (out / "report.md").read_text()
    assert "| base |" in report and "| dpo |" in report and "| decpo |" in report and "DecPO - DPO" in report
    assert (out / "probes" / "probes.csv").exists() and list((out / "figures").glob("curve_*.png"))
    stages = json.loads((out / "stages.json").read_text())
    assert all(s["status"] == "done" for s in stages.values()) and len(stages) == 6
    before = {k: v["key"] for k, v in stages.items()}

    # same command: nothing reruns (the training folders are untouched)
    mtime = (out / "train" / "dpo-s0" / "final_metrics.json").stat().st_mtime
    assert main(["run", "--config", SMOKE, "--output-dir", str(out), *ARGS]) == 0
    assert (out / "train" / "dpo-s0" / "final_metrics.json").stat().st_mtime == mtime

    # a changed objective reruns what depends on it and keeps the old training aside
    assert main(["run", "--config", SMOKE, "--output-dir", str(out), *ARGS, "objective.beta=0.2"]) == 0
    after = {k: v["key"] for k, v in json.loads((out / "stages.json").read_text()).items()}
    assert after["train/dpo-s0"] != before["train/dpo-s0"]
    assert list((out / "train").glob("dpo-s0.stale-*"))


def test_estimates_over_seeds_and_differences():
    one = [{"value": 0.5, "ci": [0.4, 0.6]}]
    assert over_seeds(one) == Estimate(0.5, 0.4, 0.6, 1, "items")
    three = [{"value": v, "ci": [0, 1]} for v in (0.4, 0.5, 0.6)]
    est = over_seeds(three)
    assert est.mean == 0.5 and est.how == "seeds" and est.low < 0.4 < 0.6 < est.high
    d = difference([{"value": 0.7, "ci": [0.6, 0.8]}], [{"value": 0.5, "ci": [0.4, 0.6]}])
    assert abs(d.mean - 0.2) < 1e-12 and d.low < 0.2 < d.high


def test_parse_layers():
    assert parse_layers("0-3") == [0, 1, 2, 3]
    assert parse_layers("0-29:10") == [0, 10, 20]
    assert parse_layers("3,15,27") == [3, 15, 27]
