"""Intervals of the report, all from ``scipy.stats``: pure functions, no I/O.

- ``t_interval``: mean and 95% Student-t interval of a few values (one per seed).
- ``paired_seed_difference``: ``a - b`` paired by seed (``decpo-sK`` minus ``dpo-sK``), t-interval of the
  per-seed differences.
- ``paired_bootstrap``: ``mean(a) - mean(b)`` over the same items scored by two models, percentile
  bootstrap resampling items jointly (``scipy.stats.bootstrap(..., paired=True)``); for one seed.
- ``exact_binomial`` / ``proportion_estimate``: a share of items scored 0 or 1 with its exact
  (Clopper-Pearson) interval, never zero-width; ``binary_difference_bound``: the interval of a paired
  difference of 0/1 scores that is the same on every item; ``share_measure`` / ``binary_items``: which
  measures (by name) are such shares.
- ``at_ceiling_or_floor`` / ``count_verdicts``: measures where both methods sit at the ceiling (or floor)
  cannot show a difference, so they are flagged and left out of the better / worse counts.

The seeds x items bootstrap and the minimum detectable effect are in `decpo.reports.hierarchical`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from decpo.evaluation.metrics import exact_binomial_ci

LEVEL = 0.95
N_RESAMPLES = 9999


@dataclass(frozen=True)
class Estimate:
    """A mean with a 95% interval and how it was made.

    ``how``: ``"seeds"`` (t-interval over seeds), ``"items"`` (the evaluation's bootstrap over items),
    ``"paired items"`` (paired bootstrap over items), ``"seeds x items"`` (two-level bootstrap over seeds
    and items, `decpo.reports.hierarchical`), ``"exact binomial"`` (Clopper-Pearson interval of a share of
    ``n_items`` items), ``"one seed"`` (no interval: low = high = nan), ``"seeds, all equal"`` (several
    seeds with the same value and nothing to say how far it could move: no interval, not a zero-width one).
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


def _equal(x: np.ndarray) -> bool:
    """All values equal up to float rounding (a difference computed two ways may differ by 1e-17)."""
    return float(np.ptp(x)) <= 1e-12 * max(1.0, float(np.max(np.abs(x))))


def _count_of(share: float, n_items: int) -> int | None:
    """``share * n_items`` as a whole number of items, or None when it is not one."""
    k = share * n_items
    return int(round(k)) if abs(k - round(k)) <= 1e-6 * max(1, n_items) and 0 <= round(k) <= n_items else None


def t_interval(values: Sequence[float], level: float = LEVEL, *, n_items: int | None = None) -> Estimate:
    """Mean and ``level`` t-interval (``scipy.stats.t``, n - 1 degrees of freedom) of ``values``.

    One value: the mean with no interval (``how="one seed"``). Several values that are all equal (up to
    float rounding) would give a zero-width interval, which would claim certainty; instead:

    - ``n_items`` given (each value is the share of the same ``n_items`` items scored 0 or 1, as an
      accuracy over one evaluation set is): the exact binomial interval of ``mean * n_items`` successes of
      ``n_items`` (`exact_binomial`). The items are pooled over seeds but counted once, since every seed
      scores the same items; 64/64 in every seed gives [0.944, 1], not [1, 1].
    - otherwise (a difference, or a measure that is not a share of items): no interval,
      ``how="seeds, all equal"``; the caller can fall back to the items (`decpo.reports.hierarchical`).
    """
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        raise ValueError("t-interval of zero values")
    mean = float(x.mean())
    if x.size == 1:
        return Estimate(mean, math.nan, math.nan, 1, "one seed")
    if _equal(x):
        k = _count_of(mean, n_items) if n_items else None
        if k is not None:
            return exact_binomial(k, int(n_items), level, n_seeds=int(x.size))
        return Estimate(mean, math.nan, math.nan, int(x.size), "seeds, all equal", n_items)
    sem = float(stats.sem(x))  # ddof = 1
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
    widen the interval. All differences equal: with scores of 0 or 1 on both sides, the exact interval of
    `binary_difference_bound`; with other scores, a zero-width interval (the data show no spread at all).
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
        if is_binary(x) and is_binary(y):
            return binary_difference_bound(mean, int(x.size), level)
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


# --- shares of items scored 0 or 1 ------------------------------------------------------------------------


def is_binary(values) -> bool:
    """Every value is 0 or 1."""
    x = np.asarray(values, dtype=np.float64)
    return bool(np.all((x == 0.0) | (x == 1.0)))


def exact_binomial(k: int, n: int, level: float = LEVEL, *, n_seeds: int = 1) -> Estimate:
    """``k`` of ``n`` items: the share ``k / n`` with its exact (Clopper-Pearson) ``level`` interval,
    ``scipy.stats.binomtest(k, n).proportion_ci(method="exact")``; ``how="exact binomial"``.

    Never zero-width: 64/64 has the lower bound ``0.025 ** (1 / 64) = 0.944``, 0/64 the upper bound 0.056.
    """
    low, high = exact_binomial_ci(k, n, level)
    return Estimate(k / n, low, high, n_seeds, "exact binomial", int(n))


def proportion_estimate(values: Sequence[float], level: float = LEVEL) -> Estimate:
    """The mean of per-item scores that are each 0 or 1, with its exact binomial interval
    (`exact_binomial`); the interval to use whenever such a mean is 0 or 1."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0 or not is_binary(x):
        raise ValueError("proportion_estimate needs one or more per-item scores, each 0 or 1")
    return exact_binomial(int(x.sum()), int(x.size), level)


def binary_difference_bound(d: float, n_items: int, level: float = LEVEL, *, n_seeds: int = 1) -> Estimate:
    """``a - b`` of 0/1 scores on ``n_items`` items when every item (and seed) gives the same difference
    ``d`` (so ``d`` is -1, 0 or 1): an exact interval, never zero-width.

    The difference of two paired shares is ``p(a=1, b=0) - p(a=0, b=1)``. ``d = 0``: no item is discordant;
    ``|a - b|`` is at most the discordant share, whose exact upper bound is ``u`` (0 of ``n_items``), so
    ``[-u, u]``. ``d = 1``: every item is ``a=1, b=0``; that share is at least ``L`` (the exact lower bound
    of ``n_items`` of ``n_items``), so the difference is at least ``2L - 1``: ``[2L - 1, 1]`` (mirrored for
    ``d = -1``).
    """
    if d == 0:
        u = exact_binomial(0, n_items, level).high
        return Estimate(0.0, -u, u, n_seeds, "exact binomial", n_items)
    if abs(d) == 1:
        low = 2 * exact_binomial(n_items, n_items, level).low - 1
        return (
            Estimate(float(d), low, 1.0, n_seeds, "exact binomial", n_items)
            if d > 0
            else Estimate(float(d), -1.0, -low, n_seeds, "exact binomial", n_items)
        )
    raise ValueError(f"a difference of 0/1 scores that is the same on every item is -1, 0 or 1, got {d}")


def share_measure(metric: str) -> bool:
    """A mean of per-item scores in [0, 1]: an accuracy, a rate or a probability (``ab_accuracy_mean_orders``
    too, whose items score 0, 0.5 or 1)."""
    leaf = metric.rsplit("/", 1)[-1]
    # toxicity_probability: the share of prompts with a toxic sample (the RealToxicityPrompts name)
    return "accuracy" in leaf or leaf.endswith("_rate") or leaf == "toxicity_probability"


def binary_items(metric: str, values: Sequence[float]) -> bool:
    """``values`` (one per seed) of ``metric`` are shares of items each scored 0 or 1: every accuracy and
    rate, and the mean of the two orders when it is 0 or 1 (then every item is 0 or 1 in both orders)."""
    if not share_measure(metric):
        return False
    return not metric.endswith("ab_accuracy_mean_orders") or all(v in (0.0, 1.0) for v in values)


# --- measures that cannot show a difference ---------------------------------------------------------------

CEILING, FLOOR = 0.97, 0.03


def at_ceiling_or_floor(a: float, b: float, high: float = CEILING, low: float = FLOOR) -> str | None:
    """``"ceiling"`` when both means are ``>= high``, ``"floor"`` when both are ``<= low``, else None.

    For shares of items (accuracies, rates), where such a measure leaves no room for one method to be
    better than the other: a "no clear difference" there is not evidence of no effect.
    """
    if a >= high and b >= high:
        return "ceiling"
    if a <= low and b <= low:
        return "floor"
    return None


def flag_words(flag: str) -> str:
    """What the report says in place of a verdict for a flagged measure."""
    return f"at the {flag}: cannot show a difference"


@dataclass(frozen=True)
class VerdictCounts:
    """``counts``: verdict -> number of counted measures; ``n``: measures counted; ``flagged``: the names
    of the measures left out, each with its flag (``"ceiling"`` or ``"floor"``)."""

    counts: dict[str, int]
    n: int
    flagged: list[tuple[str, str]]


def count_verdicts(measures: Sequence[tuple[str, str, str | None]]) -> VerdictCounts:
    """Count ``(name, verdict, flag)`` by verdict, leaving out the measures with a flag
    (`at_ceiling_or_floor`), whose verdict cannot be "better" or "worse" whatever the methods did."""
    counts: dict[str, int] = {}
    flagged = []
    for name, verdict, flag in measures:
        if flag:
            flagged.append((name, flag))
        else:
            counts[verdict] = counts.get(verdict, 0) + 1
    return VerdictCounts(counts, sum(counts.values()), flagged)


__all__ = [
    "CEILING",
    "FLOOR",
    "LEVEL",
    "Estimate",
    "VerdictCounts",
    "at_ceiling_or_floor",
    "binary_difference_bound",
    "binary_items",
    "count_verdicts",
    "exact_binomial",
    "flag_words",
    "is_binary",
    "paired_bootstrap",
    "paired_seed_difference",
    "proportion_estimate",
    "share_measure",
    "t_interval",
]
