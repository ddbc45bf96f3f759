"""Records a run folder keeps that several layers read: the stage log, the resolved regularizer weight and
the experiment's primary outcome.

- ``stages.json`` (`StageLog`): written by the experiment's driver, read by the report.
- ``reg_weight.json`` (`write_reg_weight`, `resolved_reg_weight`): with ``train.reg_weight: auto`` the lambda
  that training set from ``train.reg_balance``, and the numbers it came from. Written once by the training
  run; the run's ``config.yaml`` keeps ``auto``, so the resume check compares like with like, and the report
  reads the lambda from here. ``is_auto`` is the one test of "is this weight set from a balance".
- ``primary.json`` (`write_primary`, `read_primary`): the primary outcome of ``decpo run`` (task and
  measure, from ``experiment.primary`` or the task's declared one), written by the experiment's driver
  before any stage runs, read by the report to say it was declared before the run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from decpo.errors import DecPOError
from decpo.io import atomic_write_json

AUTO = "auto"
REG_WEIGHT_FILE = "reg_weight.json"
STAGES_FILE = "stages.json"
PRIMARY_FILE = "primary.json"


def is_auto(reg_weight: Any) -> bool:
    """``reg_weight: auto``: lambda is set at the start of training from ``reg_balance``."""
    return isinstance(reg_weight, str) and reg_weight == AUTO


def write_reg_weight(run_dir: Path, calibration: dict[str, Any]) -> None:
    """Record the lambda a training set from its balance (``calibration["reg_weight"]`` and its inputs)."""
    atomic_write_json(Path(run_dir) / REG_WEIGHT_FILE, calibration)


def read_reg_weight(run_dir: Path) -> dict[str, Any] | None:
    """The calibration a training recorded, or None when its lambda was fixed (or it has not started)."""
    path = Path(run_dir) / REG_WEIGHT_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def resolved_reg_weight(run_dir: Path, configured: Any) -> float | None:
    """The lambda a run trained with: the recorded one when ``configured`` is ``auto``, else ``configured``.

    None when ``configured`` is ``auto`` and nothing was recorded (the run has not started)."""
    if not is_auto(configured):
        return float(configured)
    record = read_reg_weight(run_dir)
    return float(record["reg_weight"]) if record else None


def read_primary(folder: Path) -> dict[str, Any] | None:
    """The primary outcome an experiment recorded (`write_primary`), or None."""
    path = Path(folder) / PRIMARY_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def write_primary(folder: Path, record: dict[str, Any], now: float) -> dict[str, Any]:
    """Record the experiment's primary outcome ``record`` (``task``, ``measure`` and how it was chosen) with
    the time ``now`` (seconds since the epoch); returns what the file holds.

    The same task and measure again (a resumed run) keep the first record and its time, so the time says
    when the primary was first declared; a changed one replaces it, the old one kept under ``replaced``."""
    old = read_primary(folder)
    if old is not None and (old.get("task"), old.get("measure")) == (record["task"], record["measure"]):
        return old
    new = {**record, "recorded_at": round(now, 3)}
    if old is not None:
        new["replaced"] = {k: old[k] for k in ("task", "measure", "recorded_at") if k in old}
    atomic_write_json(Path(folder) / PRIMARY_FILE, new)
    return new


class StageLog:
    """``stages.json``: per stage its key, status and wall time; written atomically after each change."""

    def __init__(self, path: Path):
        self.path = path
        self.stages: dict[str, dict] = _read_stages(path) if path.exists() else {}

    def done(self, name: str, key: str) -> bool:
        entry = self.stages.get(name, {})
        return entry.get("key") == key and entry.get("status") == "done"

    def mark(self, name: str, key: str, status: str, **extra: Any) -> None:
        self.stages[name] = {"key": key, "status": status, **extra}
        atomic_write_json(self.path, self.stages)

    def in_run_order(self, plan_order: list[str] | None = None) -> list[tuple[str, dict]]:
        """Stages in the plan's order, then any others (older plans) in the order they were run.

        ``stages.json`` is written with sorted keys, so its own order is alphabetical, not the run's.
        """
        plan_order = [n for n in (plan_order or []) if n in self.stages]
        rest = sorted(
            (n for n in self.stages if n not in plan_order),
            key=lambda n: (self.stages[n].get("started_at", float("inf")), self.stages[n].get("order", 0)),
        )
        return [(n, self.stages[n]) for n in [*plan_order, *rest]]


class DamagedRecordError(DecPOError, ValueError):
    """A record of a run folder is not what decpo wrote (cut short or edited)."""


def _read_stages(path: Path) -> dict[str, dict]:
    try:
        stages = json.loads(path.read_text())
        if not isinstance(stages, dict):
            raise ValueError(f"a JSON {type(stages).__name__}, not an object")
    except ValueError as e:
        raise DamagedRecordError(
            f"{path} is damaged ({e}); delete it and rerun the command: every stage then runs again"
        ) from e
    return stages
