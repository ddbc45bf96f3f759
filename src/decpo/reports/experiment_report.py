"""``report.md`` of an experiment folder (`write_report`): the primary outcome named first, then the
manipulation checks (`decpo.reports.manipulation`), the outcomes (`decpo.reports.outcomes`: claim 2 on the
primary, the secondary measures, claim 1), then results (with the toxicity task's measures by scorer,
`decpo.reports.toxicity_table`), DecPO - DPO, each method - base, the training data, probes, curves, the
strength sweep and provenance.

Every interval is a 95% interval from ``scipy.stats`` (`decpo.reports.stats`): over seeds a t-interval, and
DecPO - DPO is paired by seed (``decpo-sK`` minus ``dpo-sK``) and, for a measure with per-item scores of
``samples.jsonl`` (`decpo.reports.items`), by item: a bootstrap over seeds and items (one seed: over items).
Each section is one function returning its lines; `write_report` joins them.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from pathlib import Path

from decpo.config import RunConfig
from decpo.io import atomic_write_text
from decpo.names import BASE
from decpo.reports.claims import better_side, claim1_lines
from decpo.reports.curves import CAPTION, plot_curves, plot_probe_dynamics, read_metrics
from decpo.reports.learning_curves import learning_curve_lines
from decpo.reports.manipulation import manipulation_lines
from decpo.reports.outcomes import outcomes_lines
from decpo.reports.primary import primary_line, resolve_primary
from decpo.reports.probe_section import CLAIM_SITE, ProbeSetView, probe_section, probe_views
from decpo.reports.provenance import provenance_lines
from decpo.reports.results import (
    Difference,
    data_lines,
    decpo_minus_dpo,
    load_results,
    minus_base,
    not_applicable_lines,
    scorer_warning_lines,
    training_data,
)
from decpo.reports.sae_section import read_sae
from decpo.reports.style import method_color, pyplot
from decpo.reports.tables import (
    Results,
    available_columns,
    markdown_table,
    over_seeds,
    results_table,
    seed_entries,
)
from decpo.reports.toxicity_table import toxicity_lines


def write_report(
    output_dir: str | Path,
    cfg: RunConfig,
    *,
    models: list[str],
    tasks: list[str],
    command: str,
    total_wall_s: float,
    stage_order: list[str] | None = None,
) -> Path:
    output_dir = Path(output_dir)
    figures = output_dir / "figures"
    methods = [BASE, *cfg.experiment.methods]
    results = load_results(output_dir, models, tasks)
    columns = available_columns(results)
    diffs = decpo_minus_dpo(output_dir, results, columns) if "dpo" in results and "decpo" in results else []
    views, regularized, rows = probe_views(output_dir, cfg, cfg.train.reg_site)

    # validated before any stage ran (decpo.experiment), so it resolves here as it did then
    primary = resolve_primary(cfg.experiment.primary, tasks)
    lines = ["# DecPO experiment report", "", *scorer_warning_lines(cfg, tasks)]  # before all else
    lines += [primary_line(output_dir, primary, tasks, models), ""]
    lines += manipulation_lines(
        output_dir, results, primary, views, regularized, models, cfg.experiment.methods, cfg.train.beta
    )
    claim1 = claim1_lines(*_claim1_view(output_dir, cfg, views))
    lines += outcomes_lines(
        output_dir, results, primary, diffs, views, regularized, cfg.experiment.methods, claim1
    )
    lines += _header_lines(cfg, tasks, command)
    lines += _results_lines(results, cfg, methods, columns, tasks, figures)
    lines += toxicity_lines(results, methods, len(cfg.experiment.seeds))
    lines += learning_curve_lines(output_dir, cfg, models, tasks, figures)
    lines += _difference_lines(diffs)
    lines += _minus_base_lines(output_dir, results, columns, cfg.experiment.methods)
    lines += data_lines(output_dir, cfg, tasks)
    if views:
        lines += probe_section(views, regularized, rows, cfg, figures, read_sae(output_dir))
    lines += _training_lines(output_dir, models, figures)
    lines += _strength_link(output_dir, cfg)
    lines += provenance_lines(output_dir, total_wall_s, stage_order)
    path = output_dir / "report.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def _claim1_view(
    output_dir: Path, cfg: RunConfig, views: list[ProbeSetView]
) -> tuple[ProbeSetView | None, str]:
    """The probe set claim 1 reads (the held-out prompts, at `CLAIM_SITE` even when the penalty is
    elsewhere) and its site."""
    claim_view = next((v for v in views if v.name == "heldout_prompts"), views[0] if views else None)
    if cfg.train.reg_site != CLAIM_SITE:
        claim_views, _, _ = probe_views(output_dir, cfg, CLAIM_SITE)
        claim_view = next((v for v in claim_views if v.name == "heldout_prompts"), claim_view)
    return claim_view, claim_view.site if claim_view else CLAIM_SITE


def _header_lines(cfg: RunConfig, tasks: list[str], command: str) -> list[str]:
    """When and how the report was made: the command, model, training data, methods, seeds and tasks."""
    return [
        f"Generated {datetime.datetime.now().isoformat(timespec='seconds')} by `{command}`.",
        f"Model `{cfg.model.model_name_or_path}`, training data `{training_data(cfg)}`, methods "
        f"{', '.join(cfg.experiment.methods)}, seeds {cfg.experiment.seeds}, evaluated on {', '.join(tasks) or 'nothing'}.",
        "",
    ]


def _results_lines(
    results: Results, cfg: RunConfig, methods: list[str], columns, tasks: list[str], figures: Path
) -> list[str]:
    """The results table (mean [95% CI] per method and measure), why cells are n/a, one figure per task."""
    n_seeds = len(cfg.experiment.seeds)
    lines = [
        "## Results",
        "",
        "Each cell: mean [95% CI]. "
        + (
            f"Over {n_seeds} seeds (t-interval, scipy.stats.t; an accuracy or rate clipped to [0, 1])."
            if n_seeds > 1
            else "One seed: the interval is the evaluation's bootstrap over items, not over seeds."
        )
        + " `base` is the untrained model.",
        "",
        markdown_table(results_table(results, methods, columns))
        if columns
        else "No evaluation results were found.",
        "",
    ]
    lines += not_applicable_lines(results, methods, columns)
    for task in tasks:
        fig = plot_task_measures(results, methods, columns, task, figures / f"measures_{task}.png")
        if fig is not None:
            lines += [f"![{task} measures](figures/{fig.name})", ""]
    return lines


def plot_task_measures(
    results: Results, methods: Sequence[str], columns, task: str, path: Path
) -> Path | None:
    """One panel per headline measure of ``task``: each method's mean with its 95% interval (over seeds; the
    base model's: over items), in the methods' fixed colours; None when the task has no results."""
    cols = [c for c in columns if c[0] == task]
    if not cols:
        return None
    plt = pyplot()
    fig, axes = plt.subplots(1, len(cols), figsize=(2.6 * len(cols), 3.0), squeeze=False)
    for ax, (_, metric, label) in zip(axes[0], cols, strict=True):
        for i, method in enumerate(methods):
            per_seed = seed_entries(results.get(method, {}).get(task, {}), metric)
            if not per_seed:
                continue
            est = over_seeds([per_seed[k] for k in sorted(per_seed, key=lambda x: (x is None, x))], metric)
            err = [[est.mean - est.low], [est.high - est.mean]] if est.has_interval else None
            ax.bar(i, est.mean, color=method_color(method), yerr=err, capsize=3)
        ax.set_xticks(range(len(methods)), methods, rotation=30, fontsize=8)
        name = label.split(": ", 1)[-1]
        ax.set_title(name, fontsize=9)
        ax.set_ylabel(name, fontsize=8)
    fig.suptitle(f"{task}: mean and 95% interval (over seeds; base: over items)", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _difference_lines(diffs: list[Difference]) -> list[str]:
    """The table of DecPO - DPO, paired by seed (one seed: by item), and how it was computed."""
    if not diffs:
        return []
    lines = [
        "### DecPO - DPO (paired)",
        "",
        "| measure | DecPO - DPO [95% CI] | how | verdict |",
        "|---|---|---|---|",
    ]
    for d in diffs:
        cell = d.estimate.fmt(3, sign=True) if d.estimate is not None else "n/a"
        lines.append(f"| {d.label} ({better_side(d.direction)}) | {cell} | {d.how} | {d.verdict} |")
    return [
        *lines,
        "",
        "Several seeds: a measure with per-item scores in samples.jsonl is paired by seed and item "
        "(decpo-sK minus dpo-sK on item i) and its interval is a bootstrap over seeds and items "
        "(decpo.reports.hierarchical), the t-interval over the per-seed differences given beside it; a "
        "measure without per-item scores gets that t-interval alone. One seed: a paired percentile bootstrap "
        "over the evaluated items (scipy.stats.bootstrap, paired=True); a measure without per-item scores is "
        'n/a (unpaired). "No clear difference": the interval includes 0.',
        "",
    ]


def _minus_base_lines(output_dir: Path, results: Results, columns, methods: Sequence[str]) -> list[str]:
    """The table of each method - base, paired by item; nothing when no measure has per-item scores."""
    vs_base = {m: minus_base(output_dir, results, columns, m) for m in methods}
    vs_base = {m: d for m, d in vs_base.items() if any(x.estimate is not None for x in d)}
    if not vs_base:
        return []
    lines = [
        "### Each method - base (paired by item)",
        "",
        "| method | measure | method - base [95% CI] | how | verdict |",
        "|---|---|---|---|---|",
    ]
    for m, ds in vs_base.items():
        for d in ds:
            cell = d.estimate.fmt(3, sign=True) if d.estimate is not None else "n/a"
            lines.append(f"| {m} | {d.label} ({d.direction} is better) | {cell} | {d.how} | {d.verdict} |")
    return [
        *lines,
        "",
        "The same items for base and every model (same prompts, greedy decoding); per item the method's "
        "score averaged over its seeds minus base's, the interval a bootstrap over seeds and items (one "
        "seed: over items). The verdict reads the interval: better / worse than base, or no clear "
        "difference (the interval includes 0).",
        "",
    ]


def _training_lines(output_dir: Path, models: list[str], figures: Path) -> list[str]:
    """The training curves of every trained model, and its probes during training (``metrics.jsonl``)."""
    runs = {
        label: read_metrics(output_dir / "train" / label / "metrics.jsonl")
        for label in models
        if label != BASE and (output_dir / "train" / label / "metrics.jsonl").exists()
    }
    lines = []
    curves = plot_curves(runs, figures)
    if curves:
        lines += [
            "## Training curves",
            "",
            "Train and held-out reward margin and accuracy, the preference loss and lambda x R (Fig. 6). "
            + CAPTION,
            "",
        ]
        lines += [f"![{p.stem}](figures/{p.name})" for p in curves]
        lines.append("")
    dynamics = plot_probe_dynamics(runs, figures / "probe_dynamics_decorrelation.png")
    if dynamics:
        lines += ["## Probes during training (Fig. 4)", "", f"![dynamics](figures/{dynamics.name})", ""]
    return lines


def strength_dir(output_dir: Path, cfg: RunConfig) -> Path:
    """``experiment.strength_sweep_dir`` (relative to the experiment folder, or absolute)."""
    d = Path(cfg.experiment.strength_sweep_dir)
    return d if d.is_absolute() else output_dir / d


def _strength_link(output_dir: Path, cfg: RunConfig) -> list[str]:
    """A link to the strength sweep's ``strength.md`` and its one-line summary, when the sweep was run."""
    md = strength_dir(output_dir, cfg) / "strength.md"
    if not md.exists():
        return []
    try:
        rel = md.relative_to(output_dir)
    except ValueError:
        rel = md
    lines = ["## Regularizer strength sweep", "", f"See [{rel}]({rel}) (`decpo sweep --reg-weights`)."]
    summary = md.parent / "strength_summary.txt"
    if summary.exists():
        lines += ["", summary.read_text().strip()]
    return [*lines, ""]
