"""The plan of an experiment: its stages (`Step`) in order with what each comes after, their config keys, and
the sequential runner (or the hand-over to an engine's jobs, `decpo.experiment.executors.dispatch`).

Every key holds the decpo version (`stage_key`), so a new version reruns every stage instead of reusing the
old code's results. A training's key is its run's whole config but the experiment section (`training_key`):
the keys, and so the results, do not depend on the executor.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import decpo
from decpo.config import RunConfig
from decpo.experiment.executors.base import Engine, Step
from decpo.experiment.executors.dispatch import dispatch
from decpo.io import stable_hash as config_key
from decpo.records import StageLog

logger = logging.getLogger(__name__)


def stage_key(parts: dict[str, Any]) -> str:
    """The config key of a stage: a hash of what it depends on and of the decpo version that runs it."""
    return config_key({**parts, "decpo": decpo.__version__})


def training_key(run_cfg: RunConfig) -> str:
    """The key of a training stage: its run's whole config but the experiment section, which only chooses
    what runs (methods, seeds, executor)."""
    return stage_key({k: v for k, v in run_cfg.to_dict().items() if k != "experiment"})


@dataclass
class Plan:
    """The stages of one experiment, in order, with what each comes after, and a progress overview."""

    log: StageLog
    steps: list[Step] = field(default_factory=list)

    def add(
        self, name: str, key: str, fn: Callable[[], Any], after: list[str] | tuple[str, ...] = ()
    ) -> None:
        """Add a stage that runs once the stages ``after`` are done (each must be in the plan already, so
        the plan's order is always a valid order to run it in)."""
        missing = [a for a in after if a not in self.order]
        if missing:
            raise ValueError(f"stage {name!r} comes after {missing}, which are not in the plan (yet)")
        self.steps.append(Step(name, key, fn, tuple(after)))

    @property
    def order(self) -> list[str]:
        return [s.name for s in self.steps]

    def run(self, engine: Engine | None = None, output_dir: Path | None = None) -> None:
        """Run the stages not done yet: in this process in the plan's order (``engine`` None; a stage that
        raises stops the run), or as jobs of ``engine`` (`decpo.experiment.executors.dispatch.dispatch`; its
        job folders under ``output_dir``), which raises `decpo.experiment.executors.base.StagesFailed` once
        every stage that can run has run."""
        if engine is not None:
            dispatch(self, engine, output_dir if output_dir is not None else self.log.path.parent)
            return
        total = len(self.steps)
        todo = [s.name for s in self.steps if not self.log.done(s.name, s.key)]
        logger.info("%d stages, %d to run: %s", total, len(todo), ", ".join(todo) or "none")
        for i, step in enumerate(self.steps, 1):
            if self.log.done(step.name, step.key):
                logger.info("[%d/%d] %s: done before, skipped", i, total, step.name)
                continue
            logger.info("[%d/%d] %s ...", i, total, step.name)
            wall = self._run_step(step, i)
            logger.info("[%d/%d] %s: done in %.0f s", i, total, step.name, wall)

    def _run_step(self, step: Step, order: int) -> float:
        """Run one stage in this process, marking it running, then done or failed; returns its wall time."""
        name, key = step.name, step.key
        started = round(time.time(), 3)
        self.log.mark(name, key, "running", order=order, started_at=started)
        t0 = time.perf_counter()
        try:
            step.fn()
        except Exception as e:
            ended = round(time.time(), 3)
            self.log.mark(name, key, "failed", order=order, started_at=started, ended_at=ended, error=repr(e))
            raise
        wall = time.perf_counter() - t0
        ended = round(time.time(), 3)
        self.log.mark(
            name, key, "done", wall_time_s=round(wall, 1), order=order, started_at=started, ended_at=ended
        )
        return wall


__all__ = ["Plan", "Step", "config_key", "stage_key", "training_key"]
