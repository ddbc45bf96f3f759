"""Probe results over seeds: per-layer decorrelation of base / DPO / DecPO, paired differences, figures.

Input: the rows of ``probes.csv`` (``model, layer, site, probe, value, n_texts, depth``) whose models are
labelled ``base`` and ``<method>-s<seed>`` (``dpo-s0``, ``decpo-s1``, ``decpo-w0.3-s2``). Per layer:

- DPO - base: per seed ``dpo-sK - base``, mean and t-interval over seeds;
- DecPO - DPO: per seed ``decpo-sK - dpo-sK`` (paired), mean and t-interval over seeds.

One seed gives the value with no interval (``probes.csv`` holds no per-text values to resample).
"""

from __future__ import annotations

import csv
import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from decpo.names import BASE, split_label
from decpo.probes.plots import mark_blocks, set_scale
from decpo.reports.stats import Estimate, paired_seed_difference, t_interval
from decpo.reports.style import DIFF_COLORS, method_color, pyplot

# method -> seed -> layer -> value (base: seed None)
Curves = dict[str, dict[int | None, dict[int, float]]]


def read_rows(path: str | Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def curves(rows: Sequence[dict], probe: str, site: str) -> Curves:
    out: Curves = {}
    for r in rows:
        if r["probe"] != probe or r["site"] != site:
            continue
        value = float(r["value"])
        if not math.isfinite(value):
            continue
        method, seed = split_label(r["model"])
        out.setdefault(method, {}).setdefault(seed, {})[int(r["layer"])] = value
    return out


def n_layers(rows: Sequence[dict], site: str) -> int:
    layers = [int(r["layer"]) for r in rows if r["site"] == site]
    return max(layers) + 1 if layers else 0


def resolve_layers(layers: Sequence[int], n: int) -> list[int]:
    """Block indices with negative ones counted from the end (``-1`` = ``n - 1``); out of range dropped."""
    out = []
    for layer in layers:
        k = layer + n if layer < 0 else layer
        if 0 <= k < n and k not in out:
            out.append(k)
    return out


def _common_layers(*per_seed: Mapping[int, float]) -> list[int]:
    layers = set(per_seed[0])
    for d in per_seed[1:]:
        layers &= set(d)
    return sorted(layers)


def change_vs_base(method: Mapping[int | None, Mapping[int, float]], base: Mapping[int, float]):
    """``layer -> Estimate`` of ``method_sK - base`` over seeds; and the mean over layers (per seed, then t)."""
    seeds = sorted(s for s in method if s is not None) or [None]
    layers = _common_layers(base, *(method[s] for s in seeds))
    per_layer = {L: t_interval([method[s][L] - base[L] for s in seeds]) for L in layers}
    overall = t_interval([float(np.mean([method[s][L] - base[L] for L in layers])) for s in seeds])
    return per_layer, overall


def paired_change(a: Mapping[int | None, Mapping[int, float]], b: Mapping[int | None, Mapping[int, float]]):
    """``layer -> Estimate`` of ``a_sK - b_sK`` paired by seed; and the mean over layers."""
    seeds = sorted(set(a) & set(b), key=lambda s: -1 if s is None else s)
    if not seeds:
        return {}, None
    layers = _common_layers(*(a[s] for s in seeds), *(b[s] for s in seeds))
    per_layer = {
        L: paired_seed_difference({s: a[s][L] for s in seeds}, {s: b[s][L] for s in seeds}) for L in layers
    }
    overall = paired_seed_difference(
        {s: float(np.mean([a[s][L] for L in layers])) for s in seeds},
        {s: float(np.mean([b[s][L] for L in layers])) for s in seeds},
    )
    return per_layer, overall


def method_mean(method: Mapping[int | None, Mapping[int, float]]) -> dict[int, Estimate]:
    """``layer -> Estimate`` of a method's value, mean and t-interval over its seeds."""
    seeds = list(method)
    layers = _common_layers(*(method[s] for s in seeds))
    return {L: t_interval([method[s][L] for s in seeds]) for L in layers}


def method_order(methods: set[str]) -> list[str]:
    """The methods in the tables' order: dpo, decpo, then the others by name (base first when present)."""
    return sorted(methods, key=lambda m: (m != BASE, m != "dpo", m != "decpo", m))


def clipped(estimates: dict[int, Estimate], bounds: tuple[float, float]) -> dict[int, Estimate]:
    """Each t-interval clipped to the measure's range ``bounds``."""
    low, high = bounds
    return {
        L: dataclasses.replace(e, low=max(e.low, low), high=min(e.high, high)) if e.has_interval else e
        for L, e in estimates.items()
    }


@dataclass
class MeasureRows:
    """One measure's table rows by layer: the base model's value, each method's mean over seeds and
    DecPO - DPO paired by seed (empty without both), every interval clipped to the measure's range."""

    base: dict[int, float]
    means: dict[str, dict[int, Estimate]]
    diff: dict[int, Estimate]

    @property
    def layers(self) -> list[int]:
        return sorted(set(self.base) | {L for m in self.means.values() for L in m})


def measure_rows(c: Curves, methods: Sequence[str], bounds: tuple[float, float]) -> MeasureRows:
    """`MeasureRows` of the curves ``c`` for ``methods``; the difference's range is ``bounds``' width."""
    base = next(iter(c.get(BASE, {None: {}}).values()))
    means = {m: clipped(method_mean(c[m]), bounds) if m in c else {} for m in methods}
    diff = paired_change(c["decpo"], c["dpo"])[0] if "dpo" in c and "decpo" in c else {}
    return MeasureRows(base, means, clipped(diff, (bounds[0] - bounds[1], bounds[1] - bounds[0])))


def cell(est: Estimate | None, digits: int = 4, sign: bool = False) -> str:
    """A table cell: ``mean [low, high]`` (`Estimate.fmt`), or n/a."""
    return "n/a" if est is None else est.fmt(digits, sign=sign)


@dataclass
class LayerSummary:
    """Claim 1 numbers: a per-layer change and its summary over layers."""

    per_layer: dict[int, Estimate]
    overall: Estimate
    n_above: int
    n_below: int
    rise: tuple[int, Estimate]
    fall: tuple[int, Estimate]


def summarize(per_layer: dict[int, Estimate], overall: Estimate) -> LayerSummary:
    layers = sorted(per_layer)
    rise = max(layers, key=lambda L: per_layer[L].mean)
    fall = min(layers, key=lambda L: per_layer[L].mean)
    return LayerSummary(
        per_layer,
        overall,
        sum(per_layer[L].side() > 0 for L in layers),
        sum(per_layer[L].side() < 0 for L in layers),
        (rise, per_layer[rise]),
        (fall, per_layer[fall]),
    )


def _band(ax, est: Mapping[int, Estimate], color: str, label: str, marker: str = "o") -> None:
    layers = sorted(est)
    mean = [est[L].mean for L in layers]
    ax.plot(layers, mean, marker=marker, ms=3, color=color, label=label)
    if all(est[L].has_interval for L in layers) and layers:
        ax.fill_between(
            layers, [est[L].low for L in layers], [est[L].high for L in layers], color=color, alpha=0.2, lw=0
        )


def plot_decorrelation(
    c: Curves,
    path: str | Path,
    *,
    regularized: Sequence[int],
    title: str,
    ylabel: str = "feature decorrelation (1 - mean cos)",
) -> Path | None:
    """Left: base, DPO, DecPO (and other methods) per layer, mean over seeds with a t-band; right: DPO - base
    and DecPO - DPO (paired by seed) with t-bands; the regularized layer(s) as vertical lines."""
    if BASE not in c or not any(m != BASE for m in c):
        return None
    fig = decorrelation_figure(c, regularized=regularized, title=title, ylabel=ylabel)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    pyplot().close(fig)
    return Path(path)


def decorrelation_figure(c: Curves, *, regularized: Sequence[int], title: str, ylabel: str):
    """The figure of `plot_decorrelation` (``c`` holds the base and another method); its axes: values, then
    differences."""
    plt = pyplot()
    base = c[BASE][None] if None in c[BASE] else next(iter(c[BASE].values()))
    fig, (ax, dx) = plt.subplots(1, 2, figsize=(11.5, 4))
    n_seeds = max(len([s for s in per if s is not None]) for m, per in c.items() if m != BASE)
    for method in method_order(set(c)):
        est = (
            method_mean(c[method])
            if method != BASE
            else {L: Estimate(v, v, v, 1, BASE) for L, v in base.items()}
        )
        _band(ax, est, method_color(method), method)
    diffs = []
    if "dpo" in c:
        diffs.append(("dpo - base", change_vs_base(c["dpo"], base)[0]))
    if "dpo" in c and "decpo" in c:
        diffs.append(("decpo - dpo", paired_change(c["decpo"], c["dpo"])[0]))
    for label, est in diffs:
        _band(dx, est, DIFF_COLORS[label], label)
    for a in (ax, dx):  # the means drawn so far (no reference line yet): a log axis when they span decades
        set_scale(a, [float(y) for line in a.get_lines() for y in line.get_ydata()])
    dx.axhline(0.0, color="black", lw=0.8)
    for a in (ax, dx):
        mark_blocks(a, regularized)
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
    band = f"band: 95% t-interval over {n_seeds} seeds" if n_seeds > 1 else "one seed: no band"
    ax.set_ylabel(ylabel)
    ax.set_title(f"{title} ({band})", fontsize=9)
    dx.set_ylabel("difference in decorrelation")
    dx.set_title("DPO - base; DecPO - DPO (paired by seed)", fontsize=9)
    fig.tight_layout()
    return fig


__all__ = [
    "BASE",
    "LayerSummary",
    "cell",
    "change_vs_base",
    "curves",
    "decorrelation_figure",
    "method_mean",
    "n_layers",
    "paired_change",
    "plot_decorrelation",
    "read_rows",
    "resolve_layers",
    "split_label",
    "summarize",
]
