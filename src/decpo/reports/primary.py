"""The primary outcome of an experiment: one task and one of its measures, declared before the run.

``experiment.primary`` (``task:measure``) names it; null means the first evaluated task's declared primary
(``register_task(..., primary=...)``, `decpo.evaluation.registry`). `resolve_primary` checks it against
the tasks a run evaluates: the task must be evaluated and the measure must have per-item scores
(`decpo.reports.items.ITEM_SCORES`), so that DecPO - DPO on it gets an interval over seeds and items. The
experiment's driver resolves it before any stage runs and records it (`decpo.records.write_primary`);
the report's first line names it and says whether that record predates the first training
(`primary_line`).
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from decpo.config import ConfigError
from decpo.evaluation.registry import get_task
from decpo.records import STAGES_FILE, StageLog, read_primary
from decpo.reports.items import ITEM_SCORES, item_splits
from decpo.reports.results import read_samples
from decpo.reports.tables import HEADLINE

FIELD = "experiment.primary"


@dataclass(frozen=True)
class Primary:
    """``task`` and ``measure`` (a metric of its results.json); ``declared``: set in ``experiment.primary``
    (True) or the task's declared primary, ``experiment.primary`` being null (False)."""

    task: str
    measure: str
    declared: bool

    @property
    def label(self) -> str:
        """The headline label of the measure (`decpo.reports.tables.HEADLINE`), else ``task measure``."""
        return next((x for t, m, x in HEADLINE if (t, m) == (self.task, self.measure)), f"{self}")

    def __str__(self) -> str:
        return f"{self.task} {self.measure}"

    def record(self) -> dict:
        """What `decpo.records.write_primary` keeps."""
        return {"task": self.task, "measure": self.measure, "declared_in": FIELD if self.declared else "task"}


def primary_choices(tasks: Sequence[str]) -> list[str]:
    """Every valid ``experiment.primary`` for a run evaluating ``tasks``: ``task:measure`` with per-item
    scores."""
    return [f"{t}:{m}" for t in tasks for (task, m) in ITEM_SCORES if task == t]


def _choices_words(tasks: Sequence[str]) -> str:
    choices = primary_choices(tasks)
    return (
        ", ".join(choices) if choices else f"none (the evaluated tasks {list(tasks)} have no per-item scores)"
    )


def resolve_primary(setting: str | None, tasks: Sequence[str]) -> Primary | None:
    """The primary outcome of a run evaluating ``tasks``; None when ``setting`` is null and the first task
    declares none (or no task is evaluated). ConfigError, naming ``experiment.primary`` and the valid
    choices, for a task not evaluated or a measure without per-item scores."""
    if setting is None:
        if not tasks:
            return None
        task, measure = tasks[0], get_task(tasks[0]).primary
        if measure is None:
            return None
        if (task, measure) not in ITEM_SCORES:
            raise ConfigError(
                f"{FIELD} is null and task {task!r} declares the primary measure {measure!r}, which has no "
                f"per-item scores; set {FIELD} to one of: {_choices_words(tasks)}"
            )
        return Primary(task, measure, declared=False)
    task, _, measure = setting.rpartition(":")
    if task not in tasks:
        raise ConfigError(
            f"{FIELD}={setting!r}: task {task!r} is not evaluated by this run (evaluated: {list(tasks)}); "
            f"valid choices: {_choices_words(tasks)}"
        )
    if (task, measure) not in ITEM_SCORES:
        raise ConfigError(
            f"{FIELD}={setting!r}: {measure!r} of {task} has no per-item scores, so it cannot get an "
            f"interval over seeds and items; valid choices: {_choices_words(tasks)}"
        )
    return Primary(task, measure, declared=True)


def _when(t: float) -> str:
    return datetime.datetime.fromtimestamp(t).isoformat(timespec="seconds")


def _declared_words(output_dir: Path, primary: Primary) -> str:
    """How the primary was declared, from ``primary.json`` and the first training's start in stages.json."""
    how = (
        f"in {FIELD}"
        if primary.declared
        else f"{FIELD} is null, so the {primary.task} task's declared primary measure"
    )
    record = read_primary(output_dir)
    if record is None or (record.get("task"), record.get("measure")) != (primary.task, primary.measure):
        return f"{how}; primary.json holds no record that it was declared before the run"
    log = StageLog(output_dir / STAGES_FILE)
    starts = [e["started_at"] for n, e in log.stages.items() if n.startswith("train/") and "started_at" in e]
    if starts and record["recorded_at"] > min(starts):
        return (
            f"{how}, set after training had begun: recorded {_when(record['recorded_at'])}, first training "
            f"started {_when(min(starts))}"
        )
    return f"declared before the run {how}" if primary.declared else f"declared before the run: {how}"


def _split_words(output_dir: Path, primary: Primary, models: Sequence[str]) -> str:
    """The split of the primary's items, read from the first model's ``samples.jsonl`` that has them."""
    for label in models:
        samples = read_samples(output_dir / "eval" / primary.task / label / "samples.jsonl")
        splits = item_splits(primary.task, primary.measure, samples or [])
        if len(splits) == 1:
            return f"the {splits.pop()} split"
    return "its evaluated items"


def primary_line(
    output_dir: Path, primary: Primary | None, tasks: Sequence[str], models: Sequence[str]
) -> str:
    """The report's line naming the primary outcome and how it was declared."""
    if primary is None:
        why = f"the {tasks[0]} task declares none" if tasks else "no task is evaluated"
        return f"Primary outcome: none ({FIELD} is null and {why})."
    return (
        f"Primary outcome ({_declared_words(output_dir, primary)}): {primary} on "
        f"{_split_words(output_dir, primary, models)} at the final step."
    )


__all__ = ["FIELD", "Primary", "primary_choices", "primary_line", "resolve_primary"]
