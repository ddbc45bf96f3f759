"""Learning curves of the primary outcome (``experiment.curve_steps``): per method, the measure at several
training steps with a 95% band over seeds, so that an effect on sample efficiency shows even where the
methods end equal.

The points of a curve, all on the same first N items of the evaluated split (evaluation seed 0, N
`curve_limit`), scored by the quick evaluation (`decpo.evaluation.config.EvalConfig.quick`: the A/B
measures of that split alone) or, at the ends, read from the ordinary evaluations, which score the same
items first (their A/B measures come from the same A/B pass), restricted to their first N items through
the per-item scores of their ``samples.jsonl`` when they scored more (`end_point`): nothing is scored twice.

    step 0          the base model: ``eval/<task>/base``
    each curve step ``eval/<task>@<N>/<label>``: the training's ``checkpoint-<N>`` (an adapter over the base)
    train.max_steps the final model: ``eval/<task>/<label>``

Each point: the mean over seeds with a 95% t-interval over seeds (`decpo.reports.tables.over_seeds`,
through `decpo.reports.stats.t_interval`; equal seeds of a 0/1 share: the exact binomial interval); one seed
(and the base model): the evaluation's bootstrap interval over items from ``results.json``. Pure functions
but `load_curve` and `end_point` (read the run folder) and `plot_learning_curve` (one figure).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from decpo.config import ConfigError, RunConfig
from decpo.evaluation.metrics import metric_entry
from decpo.names import BASE
from decpo.reports.items import item_values
from decpo.reports.primary import resolve_primary
from decpo.reports.probes import split_label
from decpo.reports.stats import Estimate
from decpo.reports.style import method_color, pyplot
from decpo.reports.tables import markdown_table, over_seeds

# method -> step -> seed -> results.json (base: method "base", step 0, seed None)
CurveResults = dict[str, dict[int, dict[int | None, dict]]]


def curve_measure(cfg: RunConfig, tasks: Sequence[str]) -> tuple[str, str]:
    """The task and measure the learning curve follows: the run's primary outcome (`experiment.primary`,
    `decpo.reports.primary.resolve_primary`), which must be one of the A/B measures a quick evaluation
    computes (an unprefixed ``ab_*`` or ``a_rate`` measure).

    ``tasks``: the evaluated tasks (`decpo.experiment.stages.eval_tasks`, resolved above this layer)."""
    steps = f"experiment.curve_steps={cfg.experiment.curve_steps}"
    if not tasks:
        raise ConfigError(f"{steps}: no task is evaluated (set experiment.eval_tasks)")
    primary = resolve_primary(cfg.experiment.primary, tasks)
    if primary is None:
        raise ConfigError(f"{steps}: the run has no primary outcome to follow (set experiment.primary)")
    if "/" in primary.measure or not primary.measure.startswith(("ab_", "a_rate")):
        raise ConfigError(
            f"{steps}: the curve follows the primary outcome {primary.task}:{primary.measure}, which a quick "
            "evaluation does not compute (only the A/B measures of the evaluated split: ab_*, a_rate)"
        )
    return primary.task, primary.measure


def curve_folder(task: str, step: int) -> str:
    """The folder under ``eval/`` of a curve point at ``step``: ``"reading@10"``."""
    return f"{task}@{step}"


def curve_limit(cfg: RunConfig) -> int | None:
    """Items of each curve point: ``experiment.curve_limit``, else ``experiment.eval_limit``."""
    exp = cfg.experiment
    return exp.curve_limit if exp.curve_limit is not None else exp.eval_limit


def curve_steps(cfg: RunConfig) -> list[int]:
    """The steps of a curve: 0 (base), ``experiment.curve_steps``, ``train.max_steps`` (the final models)."""
    return [0, *cfg.experiment.curve_steps, cfg.train.max_steps]


def result_path(output_dir: Path, cfg: RunConfig, task: str, step: int, label: str) -> Path:
    """The ``results.json`` of ``label`` at ``step``: a checkpoint's quick evaluation at a curve step, else
    (the ends: base at 0, the final model) the ordinary evaluation (see the module docstring)."""
    folder = curve_folder(task, step) if step in cfg.experiment.curve_steps else task
    return output_dir / "eval" / folder / label / "results.json"


def end_point(path: Path, task: str, metric: str, n: int | None) -> dict:
    """An ordinary evaluation's ``results.json`` (at ``path``) as a curve point of its first ``n`` items: as
    it is when it scored at most ``n``; else ``metric`` recomputed from the per-item scores of its
    ``samples.jsonl`` (`decpo.reports.items.item_values`, which checks them against ``results.json``), as
    the quick evaluation of those ``n`` items computes it (`decpo.evaluation.metrics.metric_entry`, its
    seed and resamples). ValueError when the measure has no per-item scores there."""
    results = json.loads(path.read_text())
    entry = results["metrics"].get(metric)
    if n is None or entry is None or int(entry.get("n", results["n"])) <= n:
        return results
    samples_path = path.with_name("samples.jsonl")
    samples = (
        [json.loads(line) for line in samples_path.read_text().splitlines()] if samples_path.exists() else []
    )
    _, checked = item_values(task, metric, samples, entry)  # the per-item scores reproduce results.json
    if not isinstance(checked, list):
        raise ValueError(f"{path}: the curve's first {n} items of {metric}: {checked}")
    seen: dict[
        tuple, int
    ] = {}  # the first n items of each set (kind, split), whatever subset the measure takes
    first_items = []
    for sample in samples:
        group = (sample.get("kind"), sample.get("split"))
        seen[group] = seen.get(group, 0) + 1
        if seen[group] <= n:
            first_items.append(sample)
    _, values = item_values(task, metric, first_items)
    config = results.get("config", {})
    first = metric_entry(
        values, entry["direction"], seed=config.get("seed", 0), n_boot=config.get("n_boot", 1000)
    )
    return {**results, "n": n, "metrics": {metric: first}}


def load_curve(
    output_dir: Path, cfg: RunConfig, models: Sequence[str], task: str, metric: str
) -> CurveResults:
    """Every curve point's results found under ``output_dir``: ``method -> step -> seed -> results``; the
    ends restricted to the curve's items (`end_point`)."""
    out: CurveResults = {}
    for label in models:
        method, seed = split_label(label)
        for step in [0] if label == BASE else curve_steps(cfg)[1:]:
            path = result_path(output_dir, cfg, task, step, label)
            if not path.exists():
                continue
            results = (
                json.loads(path.read_text())
                if step in cfg.experiment.curve_steps
                else end_point(path, task, metric, curve_limit(cfg))
            )
            out.setdefault(method, {}).setdefault(step, {})[seed] = results
    return out


def curve_estimates(curve: CurveResults, metric: str) -> dict[str, dict[int, Estimate]]:
    """``method -> step -> Estimate``: the mean over seeds with its 95% interval (module docstring); points
    whose results lack ``metric`` are left out."""
    out: dict[str, dict[int, Estimate]] = {}
    for method, steps in curve.items():
        for step, per_seed in sorted(steps.items()):
            entries = [
                r["metrics"][metric]
                for _, r in sorted(per_seed.items(), key=_seed_order)
                if metric in r["metrics"]
            ]
            if entries:
                out.setdefault(method, {})[step] = over_seeds(entries, metric)
    return out


def _seed_order(item: tuple[int | None, dict]) -> tuple[bool, int]:
    return item[0] is None, item[0] or 0


def item_counts(curve: CurveResults) -> dict[int, list[int]]:
    """``step -> sorted distinct item counts`` of its results (one count when every point is like the others)."""
    counts: dict[int, set[int]] = {}
    for steps in curve.values():
        for step, per_seed in steps.items():
            counts.setdefault(step, set()).update(int(r["n"]) for r in per_seed.values())
    return {step: sorted(n) for step, n in sorted(counts.items())}


def _cell(est: Estimate | None, n_seeds: int) -> str:
    """``mean [low, high]``, saying how many seeds when a point has fewer than the run (a stage failed)."""
    if est is None:
        return "n/a"
    return est.fmt(3) + (f" ({est.n_seeds} of {n_seeds} seeds)" if est.n_seeds < n_seeds else "")


def curve_table(
    estimates: dict[str, dict[int, Estimate]],
    steps: Sequence[int],
    methods: Sequence[str],
    counts: dict[int, list[int]],
    n_seeds: int,
) -> list[list[str]]:
    """Rows ``[step, base, method, ..., items]``: base at step 0 only, each method from its first curve
    step on; ``items``: the item count(s) of the step's results."""
    rows = [["step", BASE, *methods, "items"]]
    for step in steps:
        base = _cell(estimates.get(BASE, {}).get(step), 1) if step == 0 else ""
        cells = ["" if step == 0 else _cell(estimates.get(m, {}).get(step), n_seeds) for m in methods]
        rows.append([str(step), base, *cells, "/".join(map(str, counts.get(step, []))) or "n/a"])
    return rows


def plot_learning_curve(
    estimates: dict[str, dict[int, Estimate]],
    methods: Sequence[str],
    task: str,
    metric: str,
    path: Path,
    note: str = "",
) -> Path | None:
    """One panel: each method's mean against the training step with its 95% band, from the base model's
    point at step 0 (its interval over items as an error bar); None when no method has two points."""
    base = estimates.get(BASE, {}).get(0)
    lines = {m: {**({0: base} if base is not None else {}), **estimates.get(m, {})} for m in methods}
    lines = {m: pts for m, pts in lines.items() if len(pts) >= 2}
    if not lines:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    for method, pts in lines.items():
        steps = sorted(pts)
        color = method_color(method)
        ax.plot(steps, [pts[s].mean for s in steps], marker="o", color=color, label=method)
        banded = [s for s in steps if pts[s].has_interval]
        if banded:
            ax.fill_between(
                banded,
                [pts[s].low for s in banded],
                [pts[s].high for s in banded],
                color=color,
                alpha=0.2,
                linewidth=0,
            )
    if base is not None:
        err = [[base.mean - base.low], [base.high - base.mean]] if base.has_interval else None
        ax.errorbar(
            [0], [base.mean], yerr=err, fmt="s", color=method_color(BASE), capsize=3, label=BASE, zorder=3
        )
    ax.set_xticks(sorted({s for pts in lines.values() for s in pts}))
    ax.set_xlabel("training step")
    ax.set_ylabel(metric)
    ax.set_title(
        f"{task}: {metric}, mean and 95% interval\n(over seeds; one seed and base: over items){note}",
        fontsize=8,
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def learning_curve_lines(
    output_dir: Path, cfg: RunConfig, models: Sequence[str], tasks: Sequence[str], figures: Path
) -> list[str]:
    """The report's learning-curve section: the table (step x method) and the figure; nothing without
    ``experiment.curve_steps``."""
    if not cfg.experiment.curve_steps or not tasks:
        return []
    task, metric = curve_measure(cfg, tasks)
    curve = load_curve(output_dir, cfg, models, task, metric)
    estimates = curve_estimates(curve, metric)
    counts = item_counts(curve)
    distinct = sorted({n for ns in counts.values() for n in ns})
    note = f"; items per point differ: {distinct}" if len(distinct) > 1 else ""
    methods = list(cfg.experiment.methods)
    steps = curve_steps(cfg)
    items = (
        f"all on the same first {distinct[0]} items"
        if len(distinct) == 1
        else f"on {'/'.join(map(str, distinct)) or 'no'} items (the count differs between points: column items)"
    )
    lines = [
        f"## Learning curve: {task} {metric}",
        "",
        f"The measure at steps {', '.join(map(str, steps))}: base at step 0, each training's checkpoint at "
        f"experiment.curve_steps, the final model at train.max_steps, {items} of the evaluated split "
        "(evaluation seed 0). Each cell: mean [95% CI]; over seeds a t-interval (scipy.stats.t; seeds all "
        "equal on a share of 0/1 items: the exact binomial interval of the items); one seed and base: the "
        "evaluation's bootstrap over items.",
        "",
        markdown_table(curve_table(estimates, steps, methods, counts, len(cfg.experiment.seeds))),
        "",
    ]
    fig = plot_learning_curve(estimates, methods, task, metric, figures / f"learning_curve_{task}.png", note)
    if fig is not None:
        lines += [f"![learning curve {task}](figures/{fig.name})", ""]
    return lines
