"""Seeds x items: the two-level bootstrap of a mean or of a paired difference, and the minimum detectable
effect of a paired design. Pure functions on per-item scores, no I/O.

Every seed of an experiment scores the same evaluation items, so a measure has two sources of noise: the
seed (training randomness) and the items (which questions happened to be asked). A t-interval over seeds
ignores the items; a bootstrap over items ignores the seeds. Here both are resampled:

- ``hierarchical_bootstrap(values)``: the mean over seeds and items of ``values[seed] -> per-item scores``.
- ``hierarchical_paired_bootstrap(a, b)``: the mean over seeds and items of ``a - b``, paired by seed and
  by item (e.g. DecPO - DPO, ``decpo-sK`` against ``dpo-sK`` on item ``i``).
- ``hierarchical_resamples(matrix)``: the bootstrap distribution itself (its standard deviation is a
  standard error).
- ``variance_components``, ``mde_paired``, ``mde_for``, ``mde``: the smallest difference a design detects
  with 80% power at two-sided alpha 0.05, from data or for planning seeds and items before a run.

The items are crossed with the seeds (shared), not nested in them: one item draw per resample is used for
every drawn seed and both methods, so an item that is hard for both methods cancels in the difference, and
an item effect shared by all seeds is not averaged away by having more seeds.

What the two-way bootstrap is known to do (McCullagh 2000, "Resampling and exchangeable arrays"): the
seed-by-item noise enters through both draws, so where it dominates (0/1 scores) the interval is wider than
the true sampling spread, i.e. conservative (in a simulation of 5 seeds x 200 items with noise sd 0.6, item
sd 0.05, seed sd 0.02: resampled SD 1.5x the true SE); with few seeds and a large seed effect the seed
draw's (S - 1) / S makes it slightly narrow (0.94x with seed sd 0.05, item and noise sd 0.1). The analytic
SE of `mde_paired` matched the true SE within 8% in the same simulations.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

from decpo.reports.stats import (
    LEVEL,
    N_RESAMPLES,
    Estimate,
    binary_difference_bound,
    exact_binomial,
    is_binary,
)

HOW = "seeds x items"
ALPHA, POWER = 0.05, 0.80
_CHUNK = 1024  # resamples per block: a block holds a (chunk x n_items) array


def _matrix(values: Mapping[int, Sequence[float]], what: str) -> tuple[list[int], np.ndarray]:
    """``(seeds, seeds x items array)``; every seed must hold the same number of items."""
    seeds = sorted(values)
    if not seeds:
        raise ValueError(f"{what}: no seeds")
    rows = [np.asarray(values[s], dtype=np.float64) for s in seeds]
    lengths = {s: r.shape for s, r in zip(seeds, rows, strict=True)}
    if any(r.ndim != 1 for r in rows) or len(set(lengths.values())) != 1:
        raise ValueError(
            f"{what}: every seed must score the same items (one 1-D array of equal length per seed), "
            f"got shapes {lengths}"
        )
    if rows[0].size == 0:
        raise ValueError(f"{what}: no items")
    return seeds, np.vstack(rows)


def _paired_matrix(
    a: Mapping[int, Sequence[float]], b: Mapping[int, Sequence[float]]
) -> tuple[list[int], np.ndarray, np.ndarray]:
    if set(a) != set(b):
        raise ValueError(
            f"paired seeds x items bootstrap needs the same seeds on both sides ({sorted(a)} vs {sorted(b)})"
        )
    seeds, x = _matrix(a, "paired seeds x items bootstrap, first side")
    _, y = _matrix(b, "paired seeds x items bootstrap, second side")
    if x.shape != y.shape:
        raise ValueError(
            f"paired seeds x items bootstrap needs the same items on both sides, got {x.shape[1]} and "
            f"{y.shape[1]} items per seed"
        )
    return seeds, x, y


def hierarchical_resamples(matrix, n_resamples: int = N_RESAMPLES, seed: int = 0) -> np.ndarray:
    """The bootstrap distribution of the mean of a ``seeds x items`` array: ``n_resamples`` values.

    Each resample draws the seeds with replacement, then the items with replacement (one draw for all the
    drawn seeds), and takes the mean of the drawn cells. Drawing ``n`` of ``n`` with replacement is a
    multinomial count per seed and per item, so the mean is ``c_seeds @ matrix @ c_items / (S * I)``.
    Seeded: the same ``seed`` gives the same values.
    """
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2 or m.size == 0:
        raise ValueError(f"hierarchical resamples need a non-empty seeds x items array, got shape {m.shape}")
    n_seeds, n_items = m.shape
    rng = np.random.default_rng(seed)
    out = np.empty(n_resamples)
    for start in range(0, n_resamples, _CHUNK):
        r = min(_CHUNK, n_resamples - start)
        seed_counts = rng.multinomial(n_seeds, np.full(n_seeds, 1.0 / n_seeds), size=r)
        item_counts = rng.multinomial(n_items, np.full(n_items, 1.0 / n_items), size=r)
        out[start : start + r] = np.einsum("rs,si,ri->r", seed_counts, m, item_counts) / (n_seeds * n_items)
    return out


def _estimate(m: np.ndarray, level: float, n_resamples: int, seed: int) -> Estimate:
    n_seeds, n_items = m.shape
    mean = float(m.mean())
    if np.ptp(m) == 0.0:  # every resample is this mean (up to the rounding of the resampled sums)
        return Estimate(mean, mean, mean, n_seeds, HOW, n_items)
    boot = hierarchical_resamples(m, n_resamples, seed)
    alpha = (1 - level) / 2
    low, high = np.percentile(boot, [100 * alpha, 100 * (1 - alpha)])
    return Estimate(mean, float(low), float(high), n_seeds, HOW, n_items)


def hierarchical_bootstrap(
    values: Mapping[int, Sequence[float]],
    *,
    level: float = LEVEL,
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
) -> Estimate:
    """The mean over seeds and items of ``values[seed]`` (per-item scores, the same items in the same order
    for every seed) with a ``level`` percentile interval from `hierarchical_resamples`; ``how="seeds x
    items"``. For ``method - base`` (one base model) pass ``{s: method[s] - base for s in method}``.

    Scores of 0 or 1 that are all equal (every seed 64/64): the exact binomial interval over the items,
    counted once (`decpo.reports.stats.exact_binomial`), never a zero-width one. Other equal scores: a
    zero-width interval (no spread at all in the data).
    """
    seeds, m = _matrix(values, "seeds x items bootstrap")
    if np.ptp(m) == 0.0 and is_binary(m):
        return exact_binomial(int(m[0, 0]) * m.shape[1], m.shape[1], level, n_seeds=len(seeds))
    return _estimate(m, level, n_resamples, seed)


def hierarchical_paired_bootstrap(
    a: Mapping[int, Sequence[float]],
    b: Mapping[int, Sequence[float]],
    *,
    level: float = LEVEL,
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
) -> Estimate:
    """The mean over seeds and items of ``a[s][i] - b[s][i]``, paired by seed and by item, with a ``level``
    percentile interval resampling seeds, then items (the same draw for both sides); ``how="seeds x
    items"``.

    ``a`` and ``b`` must hold the same seeds, and every seed of both the same items in the same order
    (align them by item key first, e.g. `decpo.reports.items.align_items`); otherwise a ValueError.
    Scores of 0 or 1 with the same difference on every seed and item: the exact interval of
    `decpo.reports.stats.binary_difference_bound`, never a zero-width one.
    """
    seeds, x, y = _paired_matrix(a, b)
    d = x - y
    if np.ptp(d) == 0.0 and is_binary(x) and is_binary(y):
        return binary_difference_bound(float(d[0, 0]), d.shape[1], level, n_seeds=len(seeds))
    return _estimate(d, level, n_resamples, seed)


# --- minimum detectable effect ----------------------------------------------------------------------------


def mde(se: float, alpha: float = ALPHA, power: float = POWER) -> float:
    """The minimum detectable effect of an estimate with standard error ``se``:
    ``(z_{1 - alpha/2} + z_{power}) * se`` (2.8016 x se at alpha 0.05, power 0.80). ``se`` can be the
    standard deviation of `hierarchical_resamples` of the differences, or the analytic one of `mde_paired`."""
    return float((stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)) * se)


@dataclass(frozen=True)
class VarianceComponents:
    """The variance of a per-item difference ``d[s, i] = mu + seed_s + item_i + noise_si`` in parts.

    ``between_var``: of the seed effect (how much a seed's mean difference over very many items varies);
    ``item_var``: of the item effect shared by every seed (items where one method is better whatever the
    seed); ``within_var``: of the seed-by-item noise.
    """

    between_var: float
    item_var: float
    within_var: float


def variance_components(diffs_by_seed: Mapping[int, Sequence[float]]) -> VarianceComponents:
    """The parts of `VarianceComponents` from a ``seeds x items`` array of differences (the same items for
    every seed): the two-way ANOVA without replication, method of moments, each part at least 0.

    With ``S`` seeds, ``I`` items, grand mean ``g``, seed means ``r_s`` and item means ``c_i``:
    ``MS_seed = I * sum (r_s - g)^2 / (S - 1)``, ``MS_item = S * sum (c_i - g)^2 / (I - 1)``,
    ``MS_res = sum (d - r_s - c_i + g)^2 / ((S - 1)(I - 1))``; then ``within_var = MS_res``,
    ``between_var = max(0, (MS_seed - MS_res) / I)``, ``item_var = max(0, (MS_item - MS_res) / S)``.
    One seed: the seed and item parts cannot be told apart, so ``between_var = 0`` and the item variance
    is ``item_var`` (``within_var = 0``); one item: likewise, all of it is ``between_var``.
    """
    _, d = _matrix(diffs_by_seed, "variance components")
    n_seeds, n_items = d.shape
    if n_seeds == 1:
        return VarianceComponents(0.0, float(np.var(d[0], ddof=1)) if n_items > 1 else 0.0, 0.0)
    if n_items == 1:
        return VarianceComponents(float(np.var(d[:, 0], ddof=1)), 0.0, 0.0)
    g, r, c = d.mean(), d.mean(axis=1), d.mean(axis=0)
    ms_seed = n_items * float(np.sum((r - g) ** 2)) / (n_seeds - 1)
    ms_item = n_seeds * float(np.sum((c - g) ** 2)) / (n_items - 1)
    resid = d - r[:, None] - c[None, :] + g
    ms_res = float(np.sum(resid**2)) / ((n_seeds - 1) * (n_items - 1))
    return VarianceComponents(
        max(0.0, (ms_seed - ms_res) / n_items), max(0.0, (ms_item - ms_res) / n_seeds), ms_res
    )


def se_for(n_seeds: int, n_items: int, between_var: float, within_var: float, item_var: float = 0.0) -> float:
    """Standard error of the mean difference over ``n_seeds`` seeds sharing ``n_items`` items:
    ``sqrt(between_var / S + item_var / I + within_var / (S * I))``."""
    if n_seeds < 1 or n_items < 1:
        raise ValueError(f"a design needs at least one seed and one item, got {n_seeds} x {n_items}")
    return math.sqrt(between_var / n_seeds + item_var / n_items + within_var / (n_seeds * n_items))


def mde_for(
    n_seeds: int,
    n_items: int,
    between_var: float,
    within_var: float,
    item_var: float = 0.0,
    *,
    alpha: float = ALPHA,
    power: float = POWER,
) -> float:
    """The minimum detectable effect of a planned run of ``n_seeds`` seeds on ``n_items`` shared items,
    `mde` of `se_for`: choose seeds and items before a run from the `variance_components` of a pilot
    (``mde_for(5, 200, **asdict(variance_components(pilot)))``).

    ``item_var = 0`` is the textbook two-level form ``between / S + within / (S * I)`` (items drawn afresh
    for each seed). With shared items, the item effect ``item_var`` shrinks only with more items: adding
    seeds cannot bring the MDE below ``mde(sqrt(item_var / n_items))``.
    """
    return mde(se_for(n_seeds, n_items, between_var, within_var, item_var), alpha, power)


def mde_paired(
    diffs_by_seed: Mapping[int, Sequence[float]], *, alpha: float = ALPHA, power: float = POWER
) -> float:
    """The minimum detectable effect (80% power, two-sided alpha 0.05) of the paired design that produced
    ``diffs_by_seed`` (``seed -> per-item differences``, e.g. DecPO - DPO, the same items for every seed):
    ``(z_0.975 + z_0.80) * SE``, with the analytic two-level SE of `se_for` from the `variance_components`
    of the data themselves, i.e. ``SE^2 = between_var / S + item_var / I + within_var / (S * I)``.

    This is ``var(per-seed mean differences) / S + item_var / I`` (the first term holds the seed effect and
    the noise), not the nested form ``var(per-seed means) / S + within-seed item variance / (S * I)``: that
    one assumes each seed draws its own items, and with shared items it divides the item effect by ``S``
    as well, so it promises an MDE that more seeds cannot deliver.
    """
    _, d = _matrix(diffs_by_seed, "minimum detectable effect")
    n_seeds, n_items = d.shape
    return mde_for(n_seeds, n_items, **asdict(variance_components(diffs_by_seed)), alpha=alpha, power=power)


__all__ = [
    "HOW",
    "VarianceComponents",
    "hierarchical_bootstrap",
    "hierarchical_paired_bootstrap",
    "hierarchical_resamples",
    "mde",
    "mde_for",
    "mde_paired",
    "se_for",
    "variance_components",
]
