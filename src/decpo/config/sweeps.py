"""The config changes of a sweep: one strength of the regularizer or one regularized layer, its run's label, the
values of a flag."""

from __future__ import annotations

from typing import Any

from decpo.config.errors import ConfigError
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


def layer_overrides(layer: int) -> dict[str, Any]:
    """The config change of one layer of a layer sweep: DecPO with the penalty on that block alone."""
    return {"objective.name": "decpo", "train.reg_layers": [layer]}


def layer_label(layer: int, seed: int) -> str:
    """``decpo-L05-s1``: the run regularizing layer 5, seed 1 (zero-padded, so the labels sort)."""
    return f"decpo-L{layer:02d}-s{seed}"


def sweep_layer_values(layers: list[int]) -> list[int]:
    """The layers of a layer sweep, sorted, each once; a negative one is refused: a run's label and the
    report's axis name the block, counted from 0, which a layer counted from the end would leave open."""
    negative = [layer for layer in layers if layer < 0]
    if negative:
        raise ConfigError(
            f"decpo sweep --layers takes blocks counted from 0, got {negative}: write the block itself (the "
            "last of 32 blocks is 31)"
        )
    if not layers:
        raise ConfigError("decpo sweep --layers: no layers")
    return sorted(set(layers))


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
