"""The numbers of a regularizer strength sweep: one `StrengthPoint` per strength and measure (decorrelation
at the regularized layers per probe set, and the headline task measures), with the difference to strength 0
paired by seed (one seed: by item); written as ``strength.csv`` and drawn as ``strength.png``."""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path

from decpo.config import RunConfig
from decpo.config.sweeps import strength_overrides
from decpo.names import BASE
from decpo.records import is_auto
from decpo.reports.probe_section import ProbeSetView
from decpo.reports.results import samples_reader
from decpo.reports.stats import Estimate, paired_seed_difference, t_interval
from decpo.reports.style import method_color, pyplot
from decpo.reports.tables import Results, over_seeds, paired_difference, seed_entries


@dataclass
class StrengthPoint:
    value: float
    measure: str  # label
    task: str  # "probes" for decorrelation
    estimate: Estimate | None
    vs_zero: Estimate | None
    vs_zero_how: str


STRENGTH_COLUMNS = (
    "strength,setting,task,measure,mean,ci_low,ci_high,interval,n_seeds,"
    "minus_strength0_mean,minus_strength0_low,minus_strength0_high,minus_strength0_interval"
)


def strength_setting(cfg: RunConfig, value: float) -> str:
    """The config change of one strength, e.g. ``train.reg_balance=0.3``."""
    ((key, v),) = strength_overrides(cfg, value).items()
    return f"{key}={v:g}"


def probe_points(
    views: list[ProbeSetView], regularized: list[int], values: list[float], method_of: dict[float, str]
) -> tuple[list[StrengthPoint], dict[str, float]]:
    """Decorrelation at each regularized layer, per probe set and strength; and the base model's value."""
    zero = 0.0 if 0.0 in method_of else None
    points: list[StrengthPoint] = []
    base_ref: dict[str, float] = {}
    for view in views:
        for layer in regularized:
            label = f"decorrelation L{layer} ({view.site}, {view.name})"
            base = next(iter(view.curves[BASE].values()))
            if layer in base:
                base_ref[label] = base[layer]
            per_value = {
                v: {s: d[layer] for s, d in view.curves.get(method_of[v], {}).items() if layer in d}
                for v in values
            }
            for v in values:
                if per_value[v]:
                    vs0, how = _probe_vs_zero(per_value, v, zero)
                    points.append(
                        StrengthPoint(v, label, "probes", t_interval(list(per_value[v].values())), vs0, how)
                    )
    return points, base_ref


def _probe_vs_zero(
    per_value: dict[float, dict[int, float]], v: float, zero: float | None
) -> tuple[Estimate | None, str]:
    """Strength ``v`` minus strength 0 of one probe measure, paired by seed (None at 0 or without 0)."""
    if zero is None or v == zero or not per_value[zero]:
        return None, ""
    common = sorted(set(per_value[v]) & set(per_value[zero]))
    vs0 = paired_seed_difference(
        {s: per_value[v][s] for s in common}, {s: per_value[zero][s] for s in common}
    )
    return vs0, f"paired over {len(common)} seeds (t)" if len(common) > 1 else "one seed: no interval"


def task_points(
    output_dir: Path, results: Results, columns, values: list[float], method_of: dict[float, str]
) -> tuple[list[StrengthPoint], dict[str, float]]:
    """Each headline task measure per strength (minus strength 0: `paired_difference`); and base's value."""
    zero = 0.0 if 0.0 in method_of else None
    points: list[StrengthPoint] = []
    base_ref: dict[str, float] = {}
    for task, metric, label in columns:
        if BASE in results and metric in results[BASE].get(task, {}).get(None, {}).get("metrics", {}):
            base_ref[label] = float(results[BASE][task][None]["metrics"][metric]["value"])
        for v in values:
            per_seed = seed_entries(results.get(method_of[v], {}).get(task, {}), metric)
            if not per_seed:
                continue
            est = over_seeds([per_seed[s] for s in sorted(per_seed)], metric)
            vs0, how = None, ""
            if zero is not None and v != zero:
                vs0, how = paired_difference(
                    task,
                    metric,
                    results.get(method_of[v], {}).get(task, {}),
                    results.get(method_of[zero], {}).get(task, {}),
                    samples_reader(output_dir, task, method_of[v], method_of[zero]),
                )
            points.append(StrengthPoint(v, label, task, est, vs0, how))
    return points, base_ref


def _num(x: float | None) -> str:
    return "" if x is None or not math.isfinite(x) else repr(float(x))


def strength_csv(points: list[StrengthPoint], cfg: RunConfig) -> str:
    """``strength.csv``: one row per point (`STRENGTH_COLUMNS`)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(STRENGTH_COLUMNS.split(","))
    for p in points:
        e, z = p.estimate, p.vs_zero
        writer.writerow(
            [
                f"{p.value:g}",
                strength_setting(cfg, p.value),
                p.task,
                p.measure,
                _num(e.mean),
                _num(e.low),
                _num(e.high),
                e.how,
                e.n_seeds,
                _num(z.mean if z else None),
                _num(z.low if z else None),
                _num(z.high if z else None),
                p.vs_zero_how,
            ]
        )
    return buffer.getvalue()


def plot_strength(
    points: list[StrengthPoint], base_ref: dict[str, float], path: Path, values: list[float], cfg: RunConfig
) -> Path | None:
    """``strength.png``: one panel per measure against the strength, with base and chance lines."""
    measures = list(dict.fromkeys(p.measure for p in points))
    if not measures:
        return None
    plt = pyplot()
    ncols = min(3, len(measures))
    nrows = math.ceil(len(measures) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.4 * nrows), squeeze=False)
    for ax, measure in zip(axes.flat, measures, strict=False):
        pts = sorted((p for p in points if p.measure == measure), key=lambda p: p.value)
        _strength_panel(ax, measure, pts, base_ref, values, cfg)
    for ax in list(axes.flat)[len(measures) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _strength_panel(
    ax,
    measure: str,
    pts: list[StrengthPoint],
    base_ref: dict[str, float],
    values: list[float],
    cfg: RunConfig,
) -> None:
    """One measure of `plot_strength` on ``ax``."""
    positive = [v for v in values if v > 0]
    err = [
        [p.estimate.mean - p.estimate.low if p.estimate.has_interval else 0.0 for p in pts],
        [p.estimate.high - p.estimate.mean if p.estimate.has_interval else 0.0 for p in pts],
    ]
    xs, ys = [p.value for p in pts], [p.estimate.mean for p in pts]
    ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, color=method_color("decpo"), label="decpo")
    if measure in base_ref:
        ax.axhline(base_ref[measure], color=method_color(BASE), ls=":", lw=1, label=BASE)
    if "debiased" in measure:  # right in both option orders: 0.25 for a random guesser
        ax.axhline(0.25, color="gray", ls="--", lw=1, label="chance (both orders)")
    elif "acc" in measure:
        ax.axhline(0.5, color="gray", ls="--", lw=1, label="chance")
    if positive and min(values) == 0:
        ax.set_xscale("symlog", linthresh=min(positive))
    elif positive and len(positive) > 1:
        ax.set_xscale("log")
    ax.set_xlabel("strength (balance)" if is_auto(cfg.train.reg_weight) else "strength (lambda)")
    if measure.startswith("decorrelation"):
        ax.set_ylabel(f"decorrelation at layer {measure.split()[1][1:]}")
    else:
        ax.set_ylabel(measure.split(": ", 1)[-1])
    ax.set_xticks(values, [f"{v:g}" for v in values])
    ax.set_title(measure, fontsize=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
