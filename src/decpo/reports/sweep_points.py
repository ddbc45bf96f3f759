"""The numbers of a sweep, of the regularizer's strength or of the regularized layer: one `SweepPoint` per
setting and measure (decorrelation read by the probes, task measures) over seeds, with its difference to
the sweep's reference (strength 0, or DPO) paired by seed (one seed: by item); written as a CSV
(`sweep_csv`) and drawn against the setting (`plot_sweep`).

`Sweep` says what a sweep compares: the method of each setting's runs (``decpo-w0.3``, ``decpo-L05``, each
run ``<method>-s<seed>``), the reference method, and the layers whose decorrelation each setting is read at.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from decpo.names import BASE
from decpo.reports.hierarchical import hierarchical_paired_bootstrap, mde, mde_paired
from decpo.reports.items import seed_items
from decpo.reports.probe_section import ProbeSetView
from decpo.reports.results import ceiling_flag, samples_reader
from decpo.reports.stats import Estimate, paired_seed_difference, t_interval
from decpo.reports.style import method_color, pyplot
from decpo.reports.tables import Results, over_seeds, paired_difference, seed_entries


@dataclass(frozen=True)
class Sweep:
    """What a sweep compares.

    ``method_of[value]``: the method of the runs of each setting (a strength, or a layer); ``reference``: the
    method every setting is paired with by seed (strength 0's runs, or ``dpo``), None without one;
    ``layers_at[value]``: the layers whose decorrelation is read for that setting; ``name_layer``: the layer
    is named in the measure (the strength sweep's fixed regularized layers), else it is the setting itself.
    """

    method_of: dict[float, str]
    reference: str | None
    layers_at: dict[float, list[int]]
    name_layer: bool = True

    @property
    def separate_reference(self) -> bool:
        """The reference is runs of its own (DPO), not one of the settings (strength 0)."""
        return self.reference is not None and self.reference not in self.method_of.values()


@dataclass
class SweepPoint:
    value: float  # the setting: a strength, or a regularized layer
    measure: str  # label
    task: str  # "probes" for decorrelation
    estimate: Estimate | None
    vs_ref: Estimate | None  # minus the reference, paired
    vs_ref_how: str
    ref: Estimate | None = None  # the reference's own value, when it is not one of the settings (DPO)
    base: float | None = None  # the base model's value
    mde: float | None = None  # minimum detectable effect of vs_ref (80% power, two-sided alpha 0.05)
    flag: str | None = None  # "ceiling" / "floor": both sides there (`decpo.reports.results.ceiling_flag`)


def _decorrelation_label(view: ProbeSetView, layer: int, sweep: Sweep) -> str:
    where = f"L{layer}" if sweep.name_layer else "at the regularized layer"
    return f"decorrelation {where} ({view.site}, {view.name})"


def probe_points(views: list[ProbeSetView], sweep: Sweep) -> list[SweepPoint]:
    """Decorrelation per probe set, layer and setting, over seeds; minus the reference paired by seed."""
    points: list[SweepPoint] = []
    layers = list(dict.fromkeys(L for v in sweep.method_of for L in sweep.layers_at[v]))
    for view in views:
        base = next(iter(view.curves[BASE].values()))
        ref_curves = view.curves.get(sweep.reference, {}) if sweep.reference else {}
        for layer in layers:
            ref = {s: d[layer] for s, d in ref_curves.items() if layer in d}
            ref_est = t_interval(list(ref.values())) if ref and sweep.separate_reference else None
            for v, method in sweep.method_of.items():
                per_seed = {s: d[layer] for s, d in view.curves.get(method, {}).items() if layer in d}
                if layer not in sweep.layers_at[v] or not per_seed:
                    continue
                vs, how = (None, "") if method == sweep.reference else _probe_vs_ref(per_seed, ref)
                est = t_interval(list(per_seed.values()))
                label = _decorrelation_label(view, layer, sweep)
                points.append(SweepPoint(v, label, "probes", est, vs, how, ref_est, base.get(layer)))
    return points


def _probe_vs_ref(per_seed: dict[int, float], ref: dict[int, float]) -> tuple[Estimate | None, str]:
    """One probe measure minus the reference, paired by seed (None without a common seed)."""
    common = sorted(set(per_seed) & set(ref))
    if not common:
        return None, ""
    vs = paired_seed_difference({s: per_seed[s] for s in common}, {s: ref[s] for s in common})
    return vs, f"paired over {len(common)} seeds (t)" if len(common) > 1 else "one seed: no interval"


def task_points(
    output_dir: Path, results: Results, columns, sweep: Sweep, by_items: bool = False
) -> list[SweepPoint]:
    """Each task measure of ``columns`` per setting, over seeds; minus the reference: `paired_difference`,
    or with ``by_items`` `paired_by_items` (by seed and item), its minimum detectable effect and flag."""
    points: list[SweepPoint] = []
    for task, metric, label in columns:
        base = seed_entries(results.get(BASE, {}).get(task, {}), metric)
        ref_runs = results.get(sweep.reference, {}).get(task, {}) if sweep.reference else {}
        ref = seed_entries(ref_runs, metric)
        ref_est = (
            over_seeds([ref[s] for s in sorted(ref)], metric) if ref and sweep.separate_reference else None
        )
        for v, method in sweep.method_of.items():
            runs = results.get(method, {}).get(task, {})
            per_seed = seed_entries(runs, metric)
            if not per_seed:
                continue
            point = SweepPoint(
                v, label, task, over_seeds([per_seed[s] for s in sorted(per_seed)], metric), None, ""
            )
            point.ref, point.base = ref_est, float(base[None]["value"]) if None in base else None
            if sweep.reference is not None and method != sweep.reference:
                reader = samples_reader(output_dir, task, method, sweep.reference)
                if by_items:
                    point.vs_ref, point.vs_ref_how, point.mde = paired_by_items(
                        task, metric, runs, ref_runs, reader
                    )
                    point.flag = ceiling_flag(metric, per_seed, ref) if point.vs_ref is not None else None
                else:
                    point.vs_ref, point.vs_ref_how = paired_difference(task, metric, runs, ref_runs, reader)
            points.append(point)
    return points


def paired_by_items(
    task: str, metric: str, a: dict[int, dict], b: dict[int, dict], samples: Callable
) -> tuple[Estimate | None, str, float | None]:
    """``a - b`` of one measure (``seed -> results.json``) paired by seed and by item; ``(estimate, how,
    minimum detectable effect)``.

    Several seeds with per-item scores on the same items (``samples.jsonl``): the seeds x items bootstrap
    (`decpo.reports.hierarchical.hierarchical_paired_bootstrap`). Otherwise `paired_difference`: one seed,
    a paired bootstrap over items; several seeds without per-item scores, a t-interval over seeds. The MDE
    (`decpo.reports.hierarchical.mde_paired`) is of the per-item differences, or without them `mde` of the
    per-seed differences' standard error; None when neither can be had or the differences have no spread. An
    interval of no width (every item gave the same difference, scores not 0/1) is dropped rather than shown
    as certainty.
    """
    items = seed_items(task, metric, seed_entries(a, metric), seed_entries(b, metric), samples)
    items = None if isinstance(items, str) else items
    if items is not None and len(items[0]) > 1:
        est = hierarchical_paired_bootstrap(*items)
        how = f"paired by seed and item: bootstrap over {len(items[0])} seeds x {est.n_items} items (samples.jsonl)"
    else:
        est, how = paired_difference(task, metric, a, b, samples)
    if items is not None:
        diffs = {s: list(np.subtract(items[0][s], items[1][s])) for s in items[0]}
        effect = mde_paired(diffs)
    else:
        ea, eb = seed_entries(a, metric), seed_entries(b, metric)
        d = [float(ea[s]["value"]) - float(eb[s]["value"]) for s in sorted(set(ea) & set(eb))]
        effect = mde(float(np.std(d, ddof=1)) / math.sqrt(len(d))) if len(d) > 1 else None
    if est is not None and est.has_interval and est.low == est.high:
        est = Estimate(est.mean, math.nan, math.nan, est.n_seeds, est.how, est.n_items)
        how += "; no interval: every item gave the same difference"
    if effect is not None and not effect > 0:
        effect = None
        how += "; no MDE: the differences have no spread"
    return est, how, effect


# --- the CSV ----------------------------------------------------------------------------------------------


def _num(x: float | None) -> str:
    return "" if x is None or not math.isfinite(x) else repr(float(x))


def _cells(e: Estimate | None) -> list[str]:
    return [_num(e.mean), _num(e.low), _num(e.high)] if e else ["", "", ""]


def sweep_csv(
    points: list[SweepPoint], key: str, ref: str, setting: Callable[[float], str] | None = None
) -> str:
    """One row per point: ``key`` (the setting) and its config change (``setting``), the measure over seeds,
    and minus the reference (``minus_<ref>_*``); with a reference of its own (DPO) also its value
    (``<ref>_*``), the base model's, the minimum detectable effect and the ceiling/floor flag."""
    separate = any(p.ref is not None for p in points)
    head = [key, *(["setting"] if setting else []), "task", "measure", "mean", "ci_low", "ci_high"]
    head += ["interval", "n_seeds", *(f"minus_{ref}_{c}" for c in ("mean", "low", "high", "interval"))]
    if separate:
        head += [f"{ref}_mean", f"{ref}_low", f"{ref}_high", "base", "mde", "flag"]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(head)
    for p in points:
        e = p.estimate
        row = [f"{p.value:g}", *([setting(p.value)] if setting else []), p.task, p.measure, *_cells(e)]
        row += [e.how if e else "", e.n_seeds if e else "", *_cells(p.vs_ref), p.vs_ref_how]
        if separate:
            row += [*_cells(p.ref), _num(p.base), _num(p.mde), p.flag or ""]
        writer.writerow(row)
    return buffer.getvalue()


# --- the figure -------------------------------------------------------------------------------------------


def plot_sweep(
    points: list[SweepPoint],
    path: Path,
    values: Sequence[float],
    xlabel: str,
    log_x: bool = False,
    reference: str = "dpo",
) -> Path | None:
    """One panel per measure against the setting, with the base model's value, chance lines and, for a
    reference of its own (``reference``, DPO), its mean and 95% interval as a band (horizontal where it
    does not change with the setting). ``log_x``: a log (symlog with 0) axis for positive settings."""
    measures = list(dict.fromkeys(p.measure for p in points))
    if not measures:
        return None
    plt = pyplot()
    ncols = min(3, len(measures))
    nrows = math.ceil(len(measures) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.4 * nrows), squeeze=False)
    for ax, measure in zip(axes.flat, measures, strict=False):
        pts = sorted((p for p in points if p.measure == measure), key=lambda p: p.value)
        _panel(ax, measure, pts, reference)
        _x_axis(ax, values, xlabel, log_x)
    for ax in list(axes.flat)[len(measures) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _panel(ax, measure: str, pts: list[SweepPoint], reference: str) -> None:
    """One measure of `plot_sweep` on ``ax``: its points, the reference band, base and chance lines."""
    xs = [p.value for p in pts]
    if pts[0].ref is not None:
        _level(ax, xs, [p.ref for p in pts], method_color(reference), "--", f"{reference} (95% CI)")
    err = [
        [p.estimate.mean - p.estimate.low if p.estimate.has_interval else 0.0 for p in pts],
        [p.estimate.high - p.estimate.mean if p.estimate.has_interval else 0.0 for p in pts],
    ]
    ys = [p.estimate.mean for p in pts]
    ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, color=method_color("decpo"), label="decpo")
    if all(p.base is not None for p in pts):
        bases = [Estimate(p.base, math.nan, math.nan, 1, "base") for p in pts]
        _level(ax, xs, bases, method_color(BASE), ":", BASE)
    if "debiased" in measure:  # right in both option orders: 0.25 for a random guesser
        ax.axhline(0.25, color="gray", ls="--", lw=1, label="chance (both orders)")
    elif "acc" in measure:
        ax.axhline(0.5, color="gray", ls="--", lw=1, label="chance")
    ax.set_ylabel(
        measure.split(" (", 1)[0] if measure.startswith("decorrelation") else measure.split(": ", 1)[-1]
    )
    ax.set_title(measure, fontsize=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


def _level(ax, xs: list[float], ests: list[Estimate], color: str, ls: str, label: str) -> None:
    """A reference level with its band: horizontal when it is the same at every setting, else along them."""
    means = [e.mean for e in ests]
    banded = all(e.has_interval for e in ests)
    if len(set(means)) == 1 and len({(e.low, e.high) for e in ests}) == 1:
        ax.axhline(means[0], color=color, ls=ls, lw=1, label=label)
        if banded:
            ax.axhspan(ests[0].low, ests[0].high, color=color, alpha=0.15, lw=0)
        return
    ax.plot(xs, means, color=color, ls=ls, lw=1, label=label)
    if banded:
        ax.fill_between(xs, [e.low for e in ests], [e.high for e in ests], color=color, alpha=0.15, lw=0)


def _x_axis(ax, values: Sequence[float], xlabel: str, log_x: bool) -> None:
    positive = [v for v in values if v > 0]
    if log_x and positive and min(values) == 0:
        ax.set_xscale("symlog", linthresh=min(positive))
    elif log_x and len(positive) > 1:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_xticks(list(values), [f"{v:g}" for v in values])
