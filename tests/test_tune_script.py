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


@pytest.fixture(scope="module")
def tune_tox(tune):
    sys.path.insert(0, str(BENCH))
    try:
        import tune_toxicity

        yield tune_toxicity
    finally:
        sys.path.remove(str(BENCH))


def _row(variant, seed, step, tox, ppl):
    entry = lambda v: {"value": v, "ci": [v - 0.01, v + 0.01], "n": 4}  # noqa: E731
    metrics = {"gen/mean_toxicity": entry(tox), "gen/perplexity": entry(ppl), "gen/distinct_2": entry(0.8)}
    return {
        "variant": variant,
        "seed": seed,
        "step": step,
        "n": 4,
        "train_s": 1.0,
        "eval_s": 1.0,
        "metrics": metrics,
    }


def test_toxicity_tuning_evaluates_dev_checkpoints_it_keeps(tune, tune_tox, tmp_path, monkeypatch) -> None:
    """--task toxicity: the preset's toxicity config, checkpoints checked before any training (the preset saves
    every 20 steps: step 10 does not exist; at 40 steps, keeping them all, step 20 is kept)."""
    monkeypatch.setenv("DECPO_DATA_DIR", str(tmp_path))
    args, variants = tune.parse(
        ["--task", "toxicity", "--out", str(tmp_path), "--steps", "10", "--variant", "dpo"]
    )
    assert args.config.endswith("toxicity.yaml") and args.scorer.startswith("jigsaw-bilstm,")
    with pytest.raises(SystemExit, match="--steps.*multiple of train.save_steps"):
        tune_tox.variant_config(args, [], 0)
    args.steps = [20]
    cfg = tune_tox.variant_config(args, ["train.max_steps=40", "train.save_total_limit=null"], 1)
    assert cfg.train.seed == 1 and cfg.experiment.curve_steps == [20] and cfg.experiment.eval_num_samples == 0
    assert tune_tox.variant_config(args, [], 0, untrained=True).experiment.eval_scorer == args.scorer
    with pytest.raises(SystemExit, match="dev part"):
        tune_tox.variant_config(args, [f"experiment.eval_prompts={tmp_path / 'p.txt'}"], 0, untrained=True)


def test_toxicity_table_has_a_seed_interval_per_variant_and_step(tune_tox, tmp_path) -> None:
    rows = [_row("base", 0, 0, 0.3, 3.0)]
    rows += [_row("dpo", s, step, 0.2 - step / 400 + s / 100, 4 + s) for s in (0, 1, 2) for step in (20, 40)]
    lines = tune_tox.table(rows, "jigsaw-bilstm", "header")
    body = [line for line in lines if line.startswith("| dpo") or line.startswith("| base")]
    assert [line.split(" | ")[:3] for line in body] == [
        ["| base", "0", "1"],
        ["| dpo", "20", "3"],
        ["| dpo", "40", "3"],
    ]
    # dpo at step 40: tox 0.1, 0.11, 0.12 over seeds -> mean 0.110 with a t-interval around it
    assert "0.110 [" in body[2] and "0.300 [0.290, 0.310]" in body[0]
    tune_tox.plot(rows, tmp_path / "t.png", "jigsaw-bilstm")
    assert (tmp_path / "t.png").stat().st_size > 1000
