"""Run one evaluation: the task's data checked, the models loaded, the task run; ``results.json`` (metrics
with direction and 95% bootstrap CI), ``samples.jsonl`` (per-item outputs and scores) and ``run.json``."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from decpo.env import environment
from decpo.evaluation.config import EvalConfig
from decpo.evaluation.context import EvalContext, resolve_model_spec
from decpo.evaluation.registry import get_task
from decpo.io import atomic_write_json, atomic_write_text, check_writable
from decpo.models import check_model_spec
from decpo.scoring.judge import make_judge

logger = logging.getLogger(__name__)


@dataclass
class EvalResult:
    output_dir: Path
    results: dict[str, Any]
    samples: list[dict[str, Any]] = field(repr=False)
    wall_time_s: float


def evaluate(cfg: EvalConfig, output_dir: str | Path) -> EvalResult:
    """Run one registered task (`decpo.evaluation.registry`) and write ``results.json`` and
    ``samples.jsonl`` into ``output_dir``.

    ``results.json`` holds only what the inputs determine (no time stamps), so the same config gives the
    same file; the wall time and versions go to ``run.json``.
    """
    output_dir = Path(output_dir)
    t0 = time.perf_counter()
    task = get_task(cfg.task)
    checked = task.check_data(cfg) if task.check_data is not None else None
    # before any work: the models exist (a missing local path said as such) and the judge answers
    check_model_spec(resolve_model_spec(cfg.model))
    if cfg.reference:
        check_model_spec(resolve_model_spec(cfg.reference))
    judge = make_judge(cfg.judge) if cfg.judge else None
    if judge is not None:
        judge.check()
    check_writable(output_dir)
    torch.manual_seed(cfg.seed)
    ctx = EvalContext(cfg, checked=checked)
    logger.info(
        "evaluating %s on %s (reference %s)",
        ctx.model_spec,
        cfg.task,
        "none: reward measures n/a" if ctx.reference_is_policy else ctx.reference_spec,
    )
    metrics, samples, n = task.run(ctx, judge)
    config = asdict(cfg)
    config.pop("progress")
    config["max_new_tokens"] = cfg.new_tokens
    config["chat_template"] = ctx.chat_template  # as resolved ("auto": the training run's)
    # upper case sorts first in results.json (sorted keys): the warning is its first line
    warning = {"WARNING": cfg.scorer_warning} if cfg.scorer_warning else {}
    if warning:
        logger.warning(cfg.scorer_warning)
    results = {
        **warning,
        "task": cfg.task,
        "model": ctx.model_spec,
        "reference": ctx.reference_spec,
        "n": n,
        "metrics": dict(sorted(metrics.items())),
        "not_applicable": dict(sorted(ctx.not_applicable.items())),
        "config": config,
    }
    atomic_write_json(output_dir / "results.json", results)
    atomic_write_text(
        output_dir / "samples.jsonl", "".join(json.dumps(s, sort_keys=True) + "\n" for s in samples)
    )
    wall = time.perf_counter() - t0
    atomic_write_json(output_dir / "run.json", {"wall_time_s": wall, **environment()})
    return EvalResult(output_dir, results, samples, wall)
