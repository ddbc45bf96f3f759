"""The config changes of a sweep: one strength of the regularizer, its run's label, the values of a flag."""

from __future__ import annotations

from typing import Any

from decpo.config.run_config import RunConfig
from decpo.records import is_auto


def strength_overrides(cfg: RunConfig, value: float) -> dict[str, Any]:
    """The config change of one strength of a sweep.

    0 always means no penalty (``train.reg_weight=0``; a balance of 0 is refused). Otherwise, with
    ``train.reg_weight: auto`` the value is a balance (``train.reg_balance``: lambda * R = value x
    preference loss at the start of training), else an absolute lambda (``train.reg_weight``).
    """
    if value < 0:
        raise ValueError(f"a strength must be >= 0, got {value}")
    if value == 0:
        return {"train.reg_weight": 0.0}
    if is_auto(cfg.train.reg_weight):
        return {"train.reg_balance": float(value)}
    return {"train.reg_weight": float(value)}


def strength_label(value: float, seed: int) -> str:
    """``decpo-w0.3-s1``: the run of strength 0.3 and seed 1."""
    return f"decpo-w{value:g}-s{seed}"


def parse_values(text: str) -> list[float]:
    """``"0,0.1,0.3,1,3"`` -> ``[0.0, 0.1, 0.3, 1.0, 3.0]`` (order kept, duplicates refused)."""
    values = [float(v) for v in text.split(",") if v.strip()]
    if not values:
        raise ValueError(f"no values in {text!r}")
    if len({f"{v:g}" for v in values}) != len(values):
        raise ValueError(f"a value is given twice in {text!r}")
    if any(v < 0 for v in values):
        raise ValueError(f"strengths must be >= 0, got {text!r}")
    return values
