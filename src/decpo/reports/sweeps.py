"""The reports of the two sweeps, their numbers from `decpo.reports.sweep_points`: ``strength.md`` of the
regularizer strength sweep (`write_strength`: every measure against the strength, minus strength 0) and
``layers.md`` of the layer sweep (`write_layers`: per regularized layer, the manipulation checks and the
primary outcome, DecPO(L) - DPO)."""

from __future__ import annotations

import datetime
from functools import partial
from pathlib import Path

from decpo.config import RunConfig
from decpo.config.sweeps import strength_overrides
from decpo.io import atomic_write_text
from decpo.names import BASE
from decpo.records import is_auto, resolved_reg_weight
from decpo.reports.initial_mono import initial_mono_section
from decpo.reports.primary import resolve_primary
from decpo.reports.probe_section import ProbeSetView, probe_views
from decpo.reports.probes import split_label
from decpo.reports.provenance import provenance_lines
from decpo.reports.results import load_results
from decpo.reports.stats import flag_words
from decpo.reports.sweep_points import Sweep, SweepPoint, plot_sweep, probe_points, sweep_csv, task_points
from decpo.reports.tables import HEADLINE, available_columns, markdown_table, verdict

# --- strength sweep -------------------------------------------------------------------------------------


def write_strength(
    output_dir: str | Path,
    cfg: RunConfig,
    runs: dict[float, dict[int, str]],
    tasks: list[str],
    command: str,
    stage_order: list[str] | None = None,
) -> Path:
    """``strength.csv``, ``strength.png`` and ``strength.md`` of a strength sweep (see `sweep_strength`)."""
    output_dir = Path(output_dir)
    values = sorted(runs)
    results = load_results(output_dir, [BASE, *(label for v in values for label in runs[v].values())], tasks)
    method_of = {v: split_label(next(iter(runs[v].values())))[0] for v in values}
    views, regularized, _ = probe_views(output_dir, cfg, cfg.train.reg_site)
    sweep = Sweep(method_of, method_of.get(0.0), {v: regularized for v in values})
    points = probe_points(views, sweep)
    points += task_points(output_dir, results, available_columns(results), sweep)

    setting = partial(_strength_setting, cfg)
    atomic_write_text(output_dir / "strength.csv", sweep_csv(points, "strength", "strength0", setting))
    xlabel = "strength (balance)" if is_auto(cfg.train.reg_weight) else "strength (lambda)"
    png = plot_sweep(points, output_dir / "strength.png", values, xlabel, log_x=True)
    lines = _strength_head(cfg, values, regularized, command)
    if png:
        lines += [f"![strength]({png.name})", ""]
    lines += _strength_table(points)
    configured = {v: strength_overrides(cfg, v).get("train.reg_weight", cfg.train.reg_weight) for v in values}
    rows = [(v, _strength_setting(cfg, v), configured[v], runs[v]) for v in values]
    lines += _lambda_lines(output_dir, "strength", rows)
    lines += provenance_lines(output_dir, None, stage_order)
    path = output_dir / "strength.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    _write_summary(output_dir, points)
    return path


def _strength_setting(cfg: RunConfig, value: float) -> str:
    """The config change of one strength, e.g. ``train.reg_balance=0.3``."""
    ((key, v),) = strength_overrides(cfg, value).items()
    return f"{key}={v:g}"


def _strength_head(cfg: RunConfig, values: list[float], regularized: list[int], command: str) -> list[str]:
    """Title, command, the strengths and what a strength means, and how the intervals were made."""
    mode = (
        "a balance: lambda is set at the start of training so that lambda x R = value x preference loss "
        "(`train.reg_weight: auto`, `train.reg_balance=value`)"
        if is_auto(cfg.train.reg_weight)
        else "an absolute lambda (`train.reg_weight=value`)"
    )
    n_seeds = len(cfg.experiment.seeds)
    return [
        "# DecPO regularizer strength sweep",
        "",
        f"Generated {datetime.datetime.now().isoformat(timespec='seconds')} by `{command}`.",
        f"Strengths {', '.join(f'{v:g}' for v in values)}, each value as {mode}; 0 means no penalty "
        f"(`train.reg_weight=0`, i.e. DPO). Seeds {cfg.experiment.seeds}; regularized layer(s) {regularized}.",
        "Intervals: "
        + (
            f"95% t-interval over {n_seeds} seeds; minus strength 0: paired by seed."
            if n_seeds > 1
            else "one seed: task measures carry the evaluation's bootstrap over items, probes none; minus "
            "strength 0: paired bootstrap over items for task measures."
        ),
        "",
    ]


def _strength_table(points: list[SweepPoint]) -> list[str]:
    """Every point: value [95% CI] and minus strength 0 [95% CI]."""
    table = [["measure", "strength", "value [95% CI]", "minus strength 0 [95% CI]", "how"]]
    for p in points:
        z = p.vs_ref
        table.append(
            [
                p.measure,
                f"{p.value:g}",
                p.estimate.fmt(4),
                z.fmt(4, sign=True) if z else "-",
                p.vs_ref_how or "-",
            ]
        )
    return [
        markdown_table(table),
        "",
        "Every number: `strength.csv`; each run: `train/decpo-w<value>-s<seed>/`.",
        "",
    ]


def _lambda_lines(
    output_dir: Path, key: str, rows: list[tuple[float, str, float | str, dict[int, str]]]
) -> list[str]:
    """The lambda each run trained with; ``rows``: per setting (a ``key``), its value, its config change, the
    configured ``train.reg_weight`` and its runs (``seed -> label``)."""
    used = [[key, "setting", "lambda used, per seed"]]
    for value, setting, configured, runs in rows:
        per_seed = [
            f"s{s}: {_lambda_used(output_dir / 'train' / label, configured)}"
            for s, label in sorted(runs.items())
        ]
        used.append([f"{value:g}", setting, ", ".join(per_seed)])
    return [
        "The lambda each run trained with (`reg_weight.json` of a run whose lambda was set from a balance, else "
        "its config.yaml):",
        "",
        markdown_table(used),
        "",
    ]


def _lambda_used(run_dir: Path, configured: float | str) -> str:
    """The lambda of one run (`decpo.records.resolved_reg_weight`), or "n/a" before its training set it."""
    value = resolved_reg_weight(run_dir, configured)
    return "n/a" if value is None else f"{value:.4g}"


def _summary(points: list[SweepPoint]) -> str:
    """Each measure's difference to the sweep's reference, setting by setting."""
    parts = []
    for measure in dict.fromkeys(p.measure for p in points):
        values_text = ", ".join(
            f"{p.value:g}: {p.vs_ref.fmt(4, sign=True)}" for p in points if p.measure == measure and p.vs_ref
        )
        parts.append(f"{measure}: {values_text}")
    return "; ".join(parts)


def _write_summary(output_dir: Path, points: list[SweepPoint]) -> None:
    """``strength_summary.txt``: one line for the experiment report that links this sweep."""
    decorr = [p for p in points if p.task == "probes" and p.vs_ref is not None]
    if decorr:
        text = "Decorrelation at the regularized layer, each strength minus strength 0 (paired by seed): "
        atomic_write_text(output_dir / "strength_summary.txt", text + _summary(decorr) + ".\n")


# --- layer sweep ------------------------------------------------------------------------------------------


def _primary_measure(cfg: RunConfig, tasks: list[str]) -> tuple[str, str] | None:
    """The layer sweep's primary outcome ``(task, metric)``: ``experiment.primary`` resolved as `decpo run`
    resolves it (`decpo.reports.primary.resolve_primary`), None when the run has none."""
    primary = resolve_primary(cfg.experiment.primary, tasks)
    return (primary.task, primary.measure) if primary else None


def _unlisted(primary: tuple[str, str] | None) -> list[tuple[str, str, str]]:
    """The column of a primary measure that `decpo.reports.tables.HEADLINE` does not list."""
    return [(primary[0], primary[1], f"{primary[0]}: {primary[1]}")] if primary else []


def write_layers(
    output_dir: str | Path,
    cfg: RunConfig,
    runs: dict[int, dict[int, str]],
    reference: dict[int, str],
    tasks: list[str],
    command: str,
    stage_order: list[str] | None = None,
) -> Path:
    """``layers.md``, ``layers.csv``, ``layers.png`` and ``layers_summary.txt`` of a layer sweep (see
    `decpo.experiment.recipes.sweep_layers`). ``runs``: layer -> seed -> DecPO run label; ``reference``:
    seed -> DPO run label."""
    output_dir = Path(output_dir)
    layers = sorted(runs)
    labels = [BASE, *reference.values(), *(label for L in layers for label in runs[L].values())]
    results = load_results(output_dir, labels, tasks)
    method_of = {L: split_label(next(iter(runs[L].values())))[0] for L in layers}
    ref = split_label(next(iter(reference.values())))[0]
    sweep = Sweep(method_of, ref, {L: [L] for L in layers}, name_layer=False)
    views, _, probe_rows = probe_views(output_dir, cfg, cfg.train.reg_site)
    checks = probe_points(views, sweep)
    primary = _primary_measure(cfg, tasks)
    outcomes = task_points(
        output_dir,
        results,
        [c for c in HEADLINE if c[:2] == primary] or _unlisted(primary),
        sweep,
        by_items=True,
    )

    atomic_write_text(output_dir / "layers.csv", sweep_csv(checks + outcomes, "layer", ref))
    png = plot_sweep(checks + outcomes, output_dir / "layers.png", layers, "regularized layer", reference=ref)
    lines = _layers_head(cfg, layers, command)
    if png:
        lines += [f"![layers]({png.name})", ""]
    for L in layers:
        lines += [f"## Layer {L}", ""]
        lines += _check_lines(L, [p for p in checks if p.value == L], views, cfg.train.reg_site)
        lines += _outcome_lines(L, [p for p in outcomes if p.value == L], primary, results, ref, tasks)
    lines += initial_mono_section(output_dir, probe_rows, cfg.train.reg_site, layers, outcomes)
    rows = [(L, f"train.reg_layers=[{L}]", cfg.train.reg_weight, runs[L]) for L in layers]
    lines += _lambda_lines(output_dir, "layer", rows)
    lines += provenance_lines(output_dir, None, stage_order)
    path = output_dir / "layers.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    summary = _summary([p for p in checks + outcomes if p.vs_ref is not None])
    if summary:
        text = f"Layer sweep, DecPO(L) - DPO at each regularized layer L: {summary}.\n"
        atomic_write_text(output_dir / "layers_summary.txt", text)
    return path


def _layers_head(cfg: RunConfig, layers: list[int], command: str) -> list[str]:
    """Title, command, what each run is, and how the intervals and the figure were made."""
    seeds = cfg.experiment.seeds
    checks = f"t-interval over {len(seeds)} seeds" if len(seeds) > 1 else "one seed: no interval"
    return [
        "# DecPO layer sweep",
        "",
        f"Generated {datetime.datetime.now().isoformat(timespec='seconds')} by `{command}`.",
        f"Layers {layers}: at each layer L, DecPO regularizes that layer alone (`train.reg_layers=[L]`, site "
        f"`{cfg.train.reg_site}`, tokens `{cfg.train.reg_tokens}`, `train.reg_weight={cfg.train.reg_weight}`); "
        f"each is paired with DPO (`objective.name=dpo`) of the same seed. Seeds {list(seeds)}.",
        f"Intervals: 95%. Manipulation checks: DecPO(L) - DPO paired by seed ({checks}). Outcomes: DecPO(L) - "
        "DPO paired by seed and by item, from the per-item scores of `samples.jsonl`: with several seeds the "
        "seeds x items bootstrap (`hierarchical_paired_bootstrap`), with one seed the paired bootstrap over "
        "items; each row says which. MDE: the smallest difference this design detects with 80% power at "
        "two-sided alpha 0.05 (`mde_paired`, from the per-item differences). A share measure with both DPO and "
        "DecPO(L) at or above 0.97 (or at or below 0.03) is flagged: it cannot show a difference.",
        "Figure: the primary outcome and decorrelation at the regularized layer against the layer; DPO's mean "
        "and 95% interval as a band (horizontal for the outcome; along the layers for decorrelation, which "
        "DPO has at every layer); the base model dotted.",
        "",
    ]


def _check_lines(layer: int, points: list[SweepPoint], views: list[ProbeSetView], site: str) -> list[str]:
    """Manipulation checks of one layer: decorrelation at it, per probe set, DecPO(L) - DPO by seed."""
    lines = [
        "### Manipulation checks",
        "",
        f"Decorrelation at layer {layer}, site `{site}` (where the penalty acts), read by the probes on held-out "
        "texts: whether the penalty moved the quantity it acts on. Not an outcome.",
        "",
    ]
    table = [["probe set: token read", "penalty's token", "DPO", f"DecPO(L{layer})", "DecPO(L) - DPO", "how"]]
    for view in views:
        p = next((p for p in points if p.measure.endswith(f"({view.site}, {view.name})")), None)
        if p is None:
            continue
        table.append(
            [
                f"{view.name} (`{view.site}`): {view.info.get('position', '')}",
                "yes" if view.info.get("penalty_position") else "no (nearest)",
                p.ref.fmt(4) if p.ref else "n/a",
                p.estimate.fmt(4),
                p.vs_ref.fmt(4, sign=True) if p.vs_ref else "n/a",
                p.vs_ref_how or "-",
            ]
        )
    if len(table) == 1:
        return [*lines, "n/a: no probe of this layer (`probes/probes.csv`).", ""]
    return [*lines, markdown_table(table), ""]


def _outcome_lines(
    layer: int,
    points: list[SweepPoint],
    primary: tuple[str, str] | None,
    results,
    ref: str,
    tasks: list[str],
) -> list[str]:
    """Outcomes of one layer: the primary measure, DecPO(L) - DPO by seed and item, its MDE and flag."""
    lines = ["### Outcomes", ""]
    if primary is None:
        first = tasks[0] if tasks else "none evaluated"
        return [
            *lines,
            f"n/a: no primary outcome (the first evaluated task, {first}, has no headline measure).",
            "",
        ]
    task, metric = primary
    runs = results.get(ref, {}).get(task, {})
    direction = next(
        (r["metrics"][metric].get("direction") for r in runs.values() if metric in r["metrics"]), None
    )
    lines += [
        f"Primary outcome: `{task}` `{metric}` "
        f"({f'{direction} is better' if direction in ('higher', 'lower') else 'no better side'}; the first "
        "evaluated task's first headline measure).",
        "",
    ]
    if not points:
        return [*lines, f"n/a: no results of `eval/{task}/` for this layer.", ""]
    p = points[0]
    table = [["measure", "DPO", f"DecPO(L{layer})", "DecPO(L) - DPO", "how", "MDE", "reading"]]
    reading = flag_words(p.flag) if p.flag else verdict(p.vs_ref, direction or "")
    if not p.flag and p.vs_ref is not None and not p.vs_ref.has_interval:
        reading = "no interval (see how)"
    mde = f"{p.mde:.4f}" if p.mde is not None else "n/a"
    ref_cell = p.ref.fmt(4) if p.ref else "n/a"
    diff = p.vs_ref.fmt(4, sign=True) if p.vs_ref else "n/a"
    table.append([p.measure, ref_cell, p.estimate.fmt(4), diff, p.vs_ref_how or "-", mde, reading])
    return [*lines, markdown_table(table), ""]
