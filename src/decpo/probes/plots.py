"""Per-probe figures from tidy probe rows: each method's value per block, and a difference between two methods.

Models labelled ``<method>-s<seed>`` (``dpo-s0``, ``dpo-s1``: an experiment's seeds) are one curve, the mean
over seeds with a 95% t-band; the difference is paired by seed. The x axis is the block number, the
regularized blocks are marked, and a measure whose values span decades gets a log axis (`axis_scale`).
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from decpo.io import atomic_write_bytes
from decpo.names import split_label

LABELS = {
    "decorrelation": "feature decorrelation (1 - mean cos)",
    "reg_cosine": "||Z^ Z^T - I||_F^2 / n^2",
    "mean_sq_cosine": "mean squared cosine (i != j)",
    "variance": "variance across dims",
    "near_zero": "fraction |z| < eps",
    "hoyer": "Hoyer sparsity",
    "mono_scale": "monosemantic scale (Wang et al.)",
    "weight_proxy": "median ||w_i|| b_i (normalised)",
    "weight_change_top100": "relative change, top-100 changed neurons",
}
DECADES = 100.0  # max / min of the values beyond which an axis is logarithmic
LEVEL = 0.95  # of the t-bands over seeds
REGULARIZED_LABEL = "regularized layer"
REGULARIZED_GID = "regularized"  # the gid of each mark's line, which tests and tools find it by

# method -> seed (None: a model without one) -> block -> value
Curves = dict[str, dict[int | None, dict[int, float]]]
# block -> (mean, low, high); low and high are NaN without an interval (one seed)
Band = dict[int, tuple[float, float, float]]


def reference_model(models: Sequence[str]) -> str:
    """The model the difference plot subtracts: ``dpo`` when present, else the first."""
    return "dpo" if "dpo" in models else models[0]


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def axis_scale(values: Sequence[float]) -> str:
    """``"log"`` when every finite value is > 0 and the largest is over `DECADES` times the smallest;
    ``"symlog"`` when values of both signs (or zeros) span that many decades in magnitude; else ``"linear"``."""
    x = np.asarray([v for v in values if math.isfinite(v)], dtype=np.float64)
    magnitudes = np.abs(x[x != 0])
    if magnitudes.size < 2 or magnitudes.max() <= DECADES * magnitudes.min():
        return "linear"
    return "log" if (x > 0).all() else "symlog"


def set_scale(ax, values: Sequence[float]) -> str:
    """Put ``ax``'s y axis on `axis_scale` of ``values`` (symlog: linear within the smallest magnitude)."""
    scale = axis_scale(values)
    if scale == "symlog":
        finite = [abs(v) for v in values if math.isfinite(v) and v != 0]
        ax.set_yscale("symlog", linthresh=min(finite))
    elif scale == "log":
        ax.set_yscale("log")
    return scale


def seed_band(values: Sequence[float], level: float = LEVEL) -> tuple[float, float, float]:
    """Mean and ``level`` t-interval over seeds; one value: ``(value, nan, nan)``."""
    from scipy import stats  # lazy: scipy loads slowly

    x = np.asarray(values, dtype=np.float64)
    mean = float(x.mean())
    if x.size < 2:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf(0.5 + level / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return mean, mean - half, mean + half


def curves_by_method(rows: Sequence[dict]) -> Curves:
    """The finite values of ``rows`` (one probe and site) grouped by method and seed (`split_label`)."""
    out: Curves = {}
    for row in rows:
        value = float(row["value"])
        if math.isfinite(value):
            method, seed = split_label(str(row["model"]))
            out.setdefault(method, {}).setdefault(seed, {})[int(row["layer"])] = value
    return out


def _common(per_seed: Sequence[Mapping[int, float]]) -> list[int]:
    layers = set(per_seed[0])
    for d in per_seed[1:]:
        layers &= set(d)
    return sorted(layers)


def method_band(method: Mapping[int | None, Mapping[int, float]]) -> Band:
    """Per block, the mean and t-band of a method over its seeds (the blocks every seed has)."""
    seeds = list(method)
    return {L: seed_band([method[s][L] for s in seeds]) for L in _common([method[s] for s in seeds])}


def difference_band(
    a: Mapping[int | None, Mapping[int, float]], b: Mapping[int | None, Mapping[int, float]]
) -> Band:
    """Per block, ``a - b`` paired by seed, mean and t-band; ``b`` with one model (``base``) is subtracted
    from each seed of ``a``."""
    seeds = [s for s in a if s in b]
    pairs = [(a[s], b[s]) for s in seeds] if seeds else []
    if not pairs and len(b) == 1:
        only = next(iter(b.values()))
        pairs = [(a[s], only) for s in a]
    if not pairs:
        return {}
    layers = _common([d for pair in pairs for d in pair])
    return {L: seed_band([x[L] - y[L] for x, y in pairs]) for L in layers}


def _draw(ax, band: Band, label: str | None, color: str | None = None) -> list[float]:
    """The mean per block and, where there is one, its band; returns the means (the axis scale follows them:
    a wide band of few seeds reaching below zero is cut at the axis, not turned into a symlog axis)."""
    layers = sorted(band)
    mean = [band[L][0] for L in layers]
    (line,) = ax.plot(layers, mean, marker="o", ms=3, label=label, color=color)
    low, high = [band[L][1] for L in layers], [band[L][2] for L in layers]
    if layers and all(math.isfinite(v) for v in low + high):
        ax.fill_between(layers, low, high, color=line.get_color(), alpha=0.2, lw=0)
    return mean


def mark_blocks(ax, regularized: Sequence[int]) -> None:
    """Integer block numbers on the x axis; each regularized block a dashed vertical line (gid
    `REGULARIZED_GID`), labelled once."""
    from matplotlib.ticker import MaxNLocator  # lazy: matplotlib loads slowly

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("block (layer index)")
    for i, layer in enumerate(sorted(set(regularized))):
        label = (REGULARIZED_LABEL + ("s" if len(set(regularized)) > 1 else "")) if i == 0 else None
        ax.axvline(layer, color="black", ls="--", lw=1, label=label, gid=REGULARIZED_GID)


def _pyplot():
    import matplotlib  # lazy: matplotlib loads slowly and only the plots need it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # lazy: as above

    return plt


def probe_figure(c: Curves, probe: str, site: str, regularized: Sequence[int] = ()):
    """The figure of one probe at one site: each method per block (mean and t-band over its seeds) and, with
    two methods or more, the last minus the reference (`reference_model`), paired by seed. Returns the
    figure; its axes are ``fig.axes`` (values, then the difference)."""
    plt = _pyplot()
    methods = list(c)
    diff = None
    if len(methods) >= 2:
        ref, last = reference_model(methods), methods[-1]
        if ref == last:
            ref = methods[0]
        diff = difference_band(c[last], c[ref])
    fig, axes = plt.subplots(1, 2 if diff else 1, figsize=(11 if diff else 6, 4), squeeze=False)
    ax = axes[0][0]
    drawn = [v for method in methods for v in _draw(ax, method_band(c[method]), method)]
    set_scale(ax, drawn)
    mark_blocks(ax, regularized)
    seeds = max(len([s for s in per if s is not None]) for per in c.values())
    band = f"band: {LEVEL:.0%} t-interval over {seeds} seeds" if seeds > 1 else "one model each: no band"
    ax.set_ylabel(LABELS.get(probe, probe))
    ax.set_title(f"{probe} ({site}; {band})", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    if diff:
        dx = axes[0][1]
        set_scale(dx, _draw(dx, diff, f"{last} - {ref}", color="C3"))
        dx.axhline(0.0, color="black", lw=0.8)
        mark_blocks(dx, regularized)
        dx.set_title(f"{last} minus {ref}" + (" (paired by seed)" if seeds > 1 else ""), fontsize=9)
        dx.legend(fontsize=8)
        dx.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_probes(
    rows: Sequence[dict], output_dir: str | Path, *, regularized: Sequence[int] = ()
) -> list[Path]:
    """One PNG per (probe, site), `probe_figure`, with the ``regularized`` blocks marked.

    Rows need ``model, probe, site, layer, value``. Returns the written paths.
    """
    plt = _pyplot()
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["probe"], row["site"]), []).append(row)
    paths = []
    for (probe, site), group in sorted(groups.items()):
        c = curves_by_method(group)
        if not c:
            continue
        fig = probe_figure(c, probe, site, regularized)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=110)
        plt.close(fig)
        path = Path(output_dir) / f"{_safe(probe)}__{_safe(site)}.png"
        atomic_write_bytes(path, buffer.getvalue())
        paths.append(path)
    return paths
