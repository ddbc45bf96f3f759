"""Intervals of the report, all from ``scipy.stats``: pure functions, no I/O.

- ``t_interval``: mean and 95% Student-t interval of a few values (one per seed).
- ``paired_seed_difference``: ``a - b`` paired by seed (``decpo-sK`` minus ``dpo-sK``), t-interval of the
  per-seed differences.
- ``paired_bootstrap``: ``mean(a) - mean(b)`` over the same items scored by two models, percentile
  bootstrap resampling items jointly (``scipy.stats.bootstrap(..., paired=True)``); for one seed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

LEVEL = 0.95
N_RESAMPLES = 9999


@dataclass(frozen=True)
class Estimate:
    """A mean with a 95% interval and how it was made.

    ``how``: ``"seeds"`` (t-interval over seeds), ``"items"`` (the evaluation's bootstrap over items),
    ``"paired items"`` (paired bootstrap over items), ``"one seed"`` (no interval: low = high = nan).
    """

    mean: float
    low: float
    high: float
    n_seeds: int
    how: str
    n_items: int | None = None

    @property
    def has_interval(self) -> bool:
        return math.isfinite(self.low) and math.isfinite(self.high)

    def fmt(self, digits: int = 3, sign: bool = False) -> str:
        if not math.isfinite(self.mean):
            return "n/a"
        f = f"{{:{'+' if sign else ''}.{digits}f}}"
        if not self.has_interval:
            return f.format(self.mean)
        return f"{f.format(self.mean)} [{f.format(self.low)}, {f.format(self.high)}]"

    def side(self) -> int:
        """+1 when the interval is above 0, -1 when below, 0 when it includes 0 (or there is none)."""
        if not self.has_interval:
            return 0
        return 1 if self.low > 0 else -1 if self.high < 0 else 0


def t_interval(values: Sequence[float], level: float = LEVEL) -> Estimate:
    """Mean and ``level`` t-interval (``scipy.stats.t``, n - 1 degrees of freedom) of ``values``.

    One value: the mean with no interval (``how="one seed"``). Equal values: a zero-width interval.
    """
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        raise ValueError("t-interval of zero values")
    mean = float(x.mean())
    if x.size == 1:
        return Estimate(mean, math.nan, math.nan, 1, "one seed")
    sem = float(stats.sem(x))  # ddof = 1
    if sem == 0.0:
        return Estimate(mean, mean, mean, int(x.size), "seeds")
    low, high = stats.t.interval(level, x.size - 1, loc=mean, scale=sem)
    return Estimate(mean, float(low), float(high), int(x.size), "seeds")


def paired_seed_difference(a: Mapping[int, float], b: Mapping[int, float], level: float = LEVEL) -> Estimate:
    """``a[s] - b[s]`` for each seed ``s``, then their mean with a t-interval over seeds.

    Both sides must hold the same seeds: pairing is by seed, never by position.
    """
    if set(a) != set(b):
        raise ValueError(f"paired difference needs the same seeds on both sides ({sorted(a)} vs {sorted(b)})")
    return t_interval([a[s] - b[s] for s in sorted(a)], level)


def paired_bootstrap(
    a: Sequence[float],
    b: Sequence[float],
    *,
    level: float = LEVEL,
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
) -> Estimate:
    """``mean(a) - mean(b)`` over items scored by both models, with a paired percentile bootstrap interval.

    ``a[i]`` and ``b[i]`` must be the same item: the resampling draws items, keeping each item's two scores
    together (``scipy.stats.bootstrap(paired=True)``), so an item that is hard for both models does not
    widen the interval. All differences equal: a zero-width interval.
    """
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(
            f"paired bootstrap needs two equal-length 1-D sequences, got {x.shape} and {y.shape}"
        )
    if x.size == 0:
        raise ValueError("paired bootstrap of zero items")
    d = x - y
    mean = float(d.mean())
    if np.ptp(d) == 0.0:
        return Estimate(mean, mean, mean, 1, "paired items", int(x.size))
    res = stats.bootstrap(
        (x, y),
        lambda u, v, axis=-1: np.mean(u, axis=axis) - np.mean(v, axis=axis),
        paired=True,
        vectorized=True,
        n_resamples=n_resamples,
        confidence_level=level,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    ci = res.confidence_interval
    return Estimate(mean, float(ci.low), float(ci.high), 1, "paired items", int(x.size))


__all__ = ["Estimate", "t_interval", "paired_seed_difference", "paired_bootstrap", "LEVEL"]
