"""Does the proxy track monosemanticity? The rank correlation between decorrelation and another per-layer
measure (e.g. sparse probing's neurons needed), from tidy probe rows. Pure: no I/O.

The points are the ``(model, layer, site)`` triples where both the proxy and the measure have a finite value
(every model and layer of the rows, unless ``models`` or ``site`` narrow them); the statistic is Spearman's
rho (`scipy.stats.spearmanr`, ties at their average rank), its 95% interval the percentile bootstrap over
points (resamples with a constant side, whose rho is undefined, are skipped). Layers of one model are not
independent draws, so the interval is a rough guide, not a test. "Tracks" means the interval excludes 0
and there are at least 8 points (`MIN_VERDICT`: with fewer, most resamples repeat two or three points and
the percentile interval is degenerate, e.g. [-1.00, -0.77] from 4 points, so the sentence gives no verdict);
the sentence says the sign too, since a more monosemantic layer has a higher decorrelation but *fewer*
neurons needed (a negative rho is the direction the paper's proxy predicts for neurons needed).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

PROXY = "decorrelation"
# the side of each measure that reads as more monosemantic (+1 higher, -1 lower, 0 none: an SAE trained on
# base reads another model's FVU and dead latents as distance from the base's dictionary), by name prefix
SIDES = {
    PROXY: 1,
    "sparse_probe/acc_k1/": 1,
    "sparse_probe/neurons_needed/": -1,
    "sae/l0": -1,
    "sae/fvu": 0,
    "sae/dead_frac": 0,
    "sae/dense_frac": -1,
}


def monosemantic_side(measure: str) -> int | None:
    """`SIDES`' entry for ``measure`` (its longest matching prefix), None for a measure it does not know."""
    known = [p for p in SIDES if measure.startswith(p)]
    return SIDES[max(known, key=len)] if known else None


MIN_POINTS = 3  # fewer: no rho
MIN_VERDICT = 8  # fewer: rho and its interval, but no "tracks" / "does not track"


@dataclass(frozen=True)
class ProxyTracking:
    """Spearman's rho between the proxy and ``measure`` over ``n_points`` points, with its bootstrap interval."""

    proxy: str
    measure: str
    rho: float
    lo: float
    hi: float
    n_points: int

    @property
    def tracks(self) -> bool:
        return self.n_points >= MIN_VERDICT and math.isfinite(self.lo) and (self.lo > 0 or self.hi < 0)

    def verb(self, side: int | None = None) -> str:
        """``tracks`` / ``does not track``; with the sign the proxy predicts (``side``: +1 the measure rises
        with monosemanticity as decorrelation does, -1 it falls, 0 neither), a clear correlation of the other
        sign ``runs against``, and one with no predicted sign ``correlates with``."""
        if not self.tracks:
            return "does not track"
        if side is None:
            return "tracks"
        if side == 0:
            return "correlates with"
        return "tracks" if (self.rho > 0) == (side > 0) else "runs against"

    def sentence(self, label: str | None = None, side: int | None = None) -> str:
        """One plain sentence: ``decorrelation tracks neurons needed: Spearman -0.62 [-0.85, -0.21] ...``
        (``side``: the sign the proxy predicts, see `verb`; None: no verdict on the sign)."""
        label = label or self.measure
        if not math.isfinite(self.rho):
            why = (
                f"too few points ({self.n_points})" if self.n_points < MIN_POINTS else "one side is constant"
            )
            return f"{self.proxy} vs {label}: {why}; no correlation"
        if self.n_points < MIN_VERDICT:
            return (
                f"{self.proxy} vs {label}: Spearman {self.rho:.2f} [{self.lo:.2f}, {self.hi:.2f}] over "
                f"{self.n_points} (model, layer) points, too few to judge (fewer than {MIN_VERDICT})"
            )
        return (
            f"{self.proxy} {self.verb(side)} {label}: Spearman {self.rho:.2f} [{self.lo:.2f}, {self.hi:.2f}] "
            f"over {self.n_points} (model, layer) points"
        )


def paired_values(
    rows: Iterable[Mapping],
    measure: str,
    proxy: str = PROXY,
    *,
    site: str | None = None,
    models: Sequence[str] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(proxy values, measure values)`` at the ``(model, layer, site)`` points where both are finite.

    Rows need ``model, layer, site, probe, value`` (numbers or their CSV strings), as `probes.csv` has them.
    """
    found: dict[str, dict[tuple[str, str, str], float]] = {proxy: {}, measure: {}}
    for r in rows:
        if r["probe"] not in found or (site is not None and r["site"] != site):
            continue
        if models is not None and r["model"] not in models:
            continue
        value = float(r["value"])
        if math.isfinite(value):
            found[r["probe"]][(str(r["model"]), str(r["layer"]), str(r["site"]))] = value
    points = sorted(found[proxy].keys() & found[measure].keys())
    return (
        np.array([found[proxy][p] for p in points], dtype=float),
        np.array([found[measure][p] for p in points], dtype=float),
    )


def _rho(x: np.ndarray, y: np.ndarray) -> float:
    from scipy import stats  # lazy: scipy loads slowly

    if len(x) < MIN_POINTS or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    return float(stats.spearmanr(x, y).statistic)


def proxy_tracking(
    rows: Iterable[Mapping],
    measure: str,
    proxy: str = PROXY,
    *,
    site: str | None = None,
    models: Sequence[str] | None = None,
    n_boot: int = 2000,
    seed: int = 0,
) -> ProxyTracking:
    """Spearman's rho between ``proxy`` and ``measure`` over the rows' points, with a 95% percentile
    bootstrap interval over points (``n_boot`` resamples, seeded); NaN with fewer than 3 points."""
    x, y = paired_values(rows, measure, proxy, site=site, models=models)
    rho = _rho(x, y)
    if not math.isfinite(rho):
        return ProxyTracking(proxy, measure, math.nan, math.nan, math.nan, len(x))
    rng = np.random.default_rng(seed)
    draws = [_rho(x[i], y[i]) for i in rng.integers(0, len(x), size=(n_boot, len(x)))]
    finite = [d for d in draws if math.isfinite(d)]
    lo, hi = np.percentile(finite, [2.5, 97.5]) if finite else (math.nan, math.nan)
    return ProxyTracking(proxy, measure, rho, float(lo), float(hi), len(x))
