"""The tuning script (benchmarks/tune.py) chooses settings on the dev split and refuses the test split."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def tune():
    sys.path.insert(0, str(BENCH))  # tune.py imports its sibling report.py
    try:
        spec = importlib.util.spec_from_file_location("tune", BENCH / "tune.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(BENCH))


def test_the_test_split_is_refused(tune, tmp_path) -> None:
    with pytest.raises(SystemExit, match="test split"):
        tune.parse(["--out", str(tmp_path), "--split", "test", "--variant", "a", "objective.name=dpo"])
    with pytest.raises(SystemExit, match="never reads the test split"):
        tune.parse(["--out", str(tmp_path), "--variant", "a", "eval.split=test"])


def test_dev_is_the_tuning_split(tune, tmp_path) -> None:
    args, variants = tune.parse(
        ["--out", str(tmp_path), "--variant", "a", "objective.name=dpo", "--seeds", "0", "1"]
    )
    assert args.split == "dev" and args.seeds == [0, 1]
    assert variants == [("a", ["objective.name=dpo"])]


def test_penalty_values_read_what_the_trainer_logs(tune, tmp_path) -> None:
    """The dev penalty R at the first and last evaluation, from a real DecPO training's metrics.jsonl."""
    from decpo.config import load_config
    from decpo.training.run import train

    smoke = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"
    cfg = load_config(smoke, ["objective.name=decpo", "train.max_steps=2", "train.eval_steps=2"])
    result = train(cfg, tmp_path / "run")
    values = tune.penalty_values(result.output_dir / "metrics.jsonl")
    assert values is not None and all(v > 0 for v in values)
