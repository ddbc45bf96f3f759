"""The GPU check script (benchmarks/gpu_checks.py): its refusals and its table. Its checks themselves run with
``python benchmarks/gpu_checks.py --cpu`` (minutes: benchmarks/RESULTS.md, "GPU checks")."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def checks():
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location("gpu_checks", BENCH / "gpu_checks.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(BENCH))


def test_a_target_is_met_only_by_a_finite_value_on_its_side(checks):
    assert checks.target("x", 1.4, ">=", 1.5)["met"] is False
    assert checks.target("x", 1.5, ">=", 1.5)["met"] is True
    assert checks.target("x", 0.02, "<=", 0.01)["met"] is False
    assert checks.target("x", math.nan, "<=", 0.01)["met"] is False  # a check that measured nothing fails
    assert checks.target("x", None, ">", 0.0)["met"] is False
    assert checks.target("x", 0.5, ">=", 1.5, judged=False)["met"] is None  # a CPU run's speed-up


def test_the_table_says_what_was_missed_not_judged_failed_or_skipped(checks):
    summary = {
        "env": {
            "device": "NVIDIA H100",
            "gpus": 1,
            "date": "2026-12-06",
            "torch": "2.11",
            "transformers": "5.24.0",
            "trl": "1.16.0",
            "peft": "0.21.2",
            "accelerate": "1.15.0",
            "bitsandbytes": None,
        },
        "checks": {
            "speed": {
                "seconds": 30.0,
                "targets": [
                    checks.target("speed-up", 1.2, ">=", 1.5),
                    checks.target("other", 2.0, ">=", 1.5, judged=False),
                ],
            },
            "memory": {"seconds": 20.0, "targets": [checks.target("ratio", 1.001, "<=", 1.02)]},
            "qlora": {"seconds": 1.0, "skipped": "bitsandbytes is not installed", "targets": []},
            "fsdp": {"seconds": 5.0, "error": "exit 1: RuntimeError: boom\ntrace"},
        },
    }
    table = checks.markdown(summary, "python benchmarks/gpu_checks.py")
    assert "| speed | speed-up | 1.2 | >= 1.5 | **no** |" in table
    assert "| speed | other | 2 | >= 1.5 | not judged |" in table
    assert "| memory | ratio | 1.001 | <= 1.02 | yes |" in table
    assert "| qlora | skipped | bitsandbytes is not installed | - | - |" in table
    assert "| fsdp | failed to run (5.0 s) | exit 1: RuntimeError: boom | - | no |" in table
    assert table.startswith("### GPU checks, NVIDIA H100 x 1 (2026-12-06)")


def test_an_unknown_check_is_refused_naming_the_checks(checks, capsys):
    with pytest.raises(SystemExit):
        checks.main(["--only", "equality,sped"])
    assert (
        "unknown check 'sped'; the checks are equality, speed, memory, qlora, fsdp, kbit"
        in capsys.readouterr().err
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_without_a_gpu_it_says_so_and_checks_nothing(checks, capsys, tmp_path):
    assert checks.main(["--out", str(tmp_path)]) == 0
    assert "no CUDA GPU here; run with --cpu" in capsys.readouterr().out
    assert not any(tmp_path.iterdir())
