"""``report.md`` of an experiment folder: the paper's two questions first, then results, DecPO - DPO, probes,
curves and provenance; ``sweep.md`` (layers) and ``strength.md`` (regularizer strength) of the sweeps.

Every interval is a 95% interval from ``scipy.stats`` (`decpo.reports.stats`): over seeds a t-interval, and
DecPO - DPO is paired by seed (``decpo-sK`` minus ``dpo-sK``); with one seed the task measures' difference is
a paired bootstrap over the evaluated items (per-item scores of ``samples.jsonl``, `decpo.reports.tables`).
"""

from __future__ import annotations

import csv
import datetime
import io
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from decpo.config import RunConfig
from decpo.io import atomic_write_text
from decpo.names import BASE, MLP_UP_PROJ
from decpo.reports import probes as P
from decpo.reports.curves import CAPTION, plot_curves, plot_probe_dynamics, read_metrics
from decpo.reports.stats import Estimate, paired_seed_difference, t_interval
from decpo.reports.style import method_color, pyplot
from decpo.reports.tables import (
    HEADLINE,
    Results,
    available_columns,
    markdown_table,
    over_seeds,
    paired_difference,
    results_table,
    seed_entries,
    verdict,
)

CLAIM_SITE = MLP_UP_PROJ  # the paper's probe site (claim 1)


# --- loading --------------------------------------------------------------------------------------------


def load_results(output_dir: Path, models: Sequence[str], tasks: Sequence[str]) -> Results:
    """``method -> task -> seed -> results.json`` (``dpo-s0`` is method ``dpo``, seed 0; base: seed None)."""
    out: Results = {}
    for label in models:
        method, seed = P.split_label(label)
        for task in tasks:
            path = output_dir / "eval" / task / label / "results.json"
            if path.exists():
                out.setdefault(method, {}).setdefault(task, {})[seed] = json.loads(path.read_text())
    return out


def read_samples(path: Path) -> list[dict] | None:
    if not path.exists():
        return None
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _samples_reader(output_dir: Path, task: str, a: str, b: str) -> Callable[[str, int], list[dict] | None]:
    def read(side: str, seed: int) -> list[dict] | None:
        label = f"{a if side == 'a' else b}-s{seed}"
        return read_samples(output_dir / "eval" / task / label / "samples.jsonl")

    return read


@dataclass
class Difference:
    label: str
    direction: str
    estimate: Estimate | None
    how: str
    verdict: str


def decpo_minus_dpo(
    output_dir: Path, results: Results, columns, a: str = "decpo", b: str = "dpo"
) -> list[Difference]:
    out = []
    for task, metric, label in columns:
        ra, rb = results.get(a, {}).get(task, {}), results.get(b, {}).get(task, {})
        entries = seed_entries(ra, metric) or seed_entries(rb, metric)
        if not entries:
            continue
        direction = next(iter(entries.values())).get("direction", "higher")
        est, how = paired_difference(task, metric, ra, rb, _samples_reader(output_dir, task, a, b))
        out.append(Difference(label, direction, est, how, verdict(est, direction)))
    return out


def minus_base(output_dir: Path, results: Results, columns, method: str) -> list[Difference]:
    """``method - base`` of each measure with per-item scores, paired by item (base is one model).

    For each item: the method's score averaged over its seeds minus the base model's score on the same
    item; the interval is a paired percentile bootstrap over items (`decpo.reports.stats.paired_bootstrap`).
    ``how`` also gives the mean difference of each seed, so a seed that goes the other way is visible.
    """
    from decpo.reports.stats import paired_bootstrap
    from decpo.reports.tables import align_items, item_values

    out = []
    for task, metric, label in columns:
        base = seed_entries(results.get(BASE, {}).get(task, {}), metric)
        runs = seed_entries(results.get(method, {}).get(task, {}), metric)
        if not base or not runs:
            continue
        direction = next(iter(runs.values())).get("direction", "higher")
        base_seed = next(iter(base))
        base_label = BASE if base_seed is None else f"{BASE}-s{base_seed}"
        kb, vb = item_values(
            task,
            metric,
            read_samples(output_dir / "eval" / task / base_label / "samples.jsonl") or [],
            base[base_seed],
        )
        if kb is None:
            out.append(Difference(label, direction, None, f"n/a ({vb})", "-"))
            continue
        per_seed, why = {}, ""
        for seed, entry in sorted(runs.items()):
            samples = read_samples(output_dir / "eval" / task / f"{method}-s{seed}" / "samples.jsonl") or []
            km, vm = item_values(task, metric, samples, entry)
            pairs = align_items(kb, vb, km, vm) if km is not None else None
            if pairs is None:
                why = vm if km is None else "not scored on the same items as base"
                break
            per_seed[seed] = pairs[1]  # in base's item order
        if why:
            out.append(Difference(label, direction, None, f"n/a ({why})", "-"))
            continue
        n = len(vb)
        averaged = [math.fsum(v[i] for v in per_seed.values()) / len(per_seed) for i in range(n)]
        est = paired_bootstrap(averaged, list(vb))
        seeds = ", ".join(f"s{s} {math.fsum(v) / n - math.fsum(vb) / n:+.3f}" for s, v in per_seed.items())
        how = f"paired bootstrap over {n} items, mean of {len(per_seed)} seed(s) per item (per seed: {seeds})"
        out.append(Difference(label, direction, est, how, verdict(est, direction).replace("DecPO", method)))
    return out


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
            est = over_seeds([per_seed[k] for k in sorted(per_seed, key=lambda x: (x is None, x))])
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


def training_data(cfg: RunConfig) -> str:
    """The training data in a few words: the user's file, pairs sampled from the model, or a task."""
    if cfg.pairs.source:
        return f"pairs sampled from the model on {cfg.pairs.source} (split {cfg.pairs.split})"
    return cfg.data.path or cfg.data.task


def data_lines(output_dir: Path, cfg: RunConfig, tasks: Sequence[str]) -> list[str]:
    """Where the training pairs came from and which prompts were evaluated (``pairs/summary.json`` and
    ``pairs/split.json`` of the pairs stage), so that train/eval disjointness is on the page."""
    summary_path, split_path = output_dir / "pairs" / "summary.json", output_dir / "pairs" / "split.json"
    if not cfg.pairs.source or not summary_path.exists():
        return []
    summary = json.loads(summary_path.read_text())
    sc = summary["scores"]
    lines = [
        "## Training data: pairs from the model's own samples",
        "",
        f"`decpo pairs` on {summary['prompts']} prompts of `{cfg.pairs.source}` (split `{cfg.pairs.split}`): "
        f"{cfg.pairs.num_samples} samples per prompt (temperature {cfg.pairs.temperature}, top-p "
        f"{cfg.pairs.top_p}{', plus the greedy one' if cfg.pairs.include_greedy else ''}), "
        f"{cfg.pairs.max_new_tokens} new tokens, scored by `{summary['settings']['scorer']}` "
        f"({summary['settings']['prefer']} is better). Kept {summary['pairs']} pairs (best valid vs worst, gap "
        f"> {cfg.pairs.min_gap}); skipped {summary['skipped']}. Score of all samples: mean "
        f"{sc['all_samples']['mean']}, median {sc['all_samples']['p50']}; chosen mean {sc['chosen']['mean']}, "
        f"rejected mean {sc['rejected']['mean']}. The last {cfg.data.eval_fraction:.0%} of the pairs are "
        "held out (held-out preference accuracy, probes).",
    ]
    if split_path.exists():
        split = json.loads(split_path.read_text())
        lines.append("")
        lines.append(
            f"Evaluated prompts: {split['eval_prompts']} ({split['n_eval']} prompts). Shared with the "
            f"{split['n_train']} prompts the pairs were sampled from: {split['shared']} (checked before "
            "training; a shared prompt stops the run)."
        )
    return [*lines, ""]


# --- probes ---------------------------------------------------------------------------------------------


@dataclass
class ProbeSetView:
    name: str
    site: str  # the site label in probes.csv (with the set's suffix)
    info: dict
    curves: P.Curves
    claim1: P.LayerSummary | None = None
    reg_layer: dict[int, Estimate] = field(default_factory=dict)  # DecPO - DPO at the regularized layers
    figure: Path | None = None


def probe_views(
    output_dir: Path, cfg: RunConfig, site: str
) -> tuple[list[ProbeSetView], list[int], list[dict]]:
    """Each probe set's decorrelation over seeds at ``site``; the regularized layers resolved; all rows."""
    csv_path = output_dir / "probes" / "probes.csv"
    if not csv_path.exists():
        return [], [], []
    rows = P.read_rows(csv_path)
    sets_path = output_dir / "probes" / "probe_sets.json"
    sets = (
        json.loads(sets_path.read_text())
        if sets_path.exists()
        else {
            "heldout_prompts": {
                "site_suffix": "",
                "position": "last token of each text",
                "penalty_position": False,
            }
        }
    )
    n = P.n_layers(rows, site)
    regularized = P.resolve_layers(cfg.train.reg_layers, n)
    views = []
    for name, info in sets.items():
        s = site + info.get("site_suffix", "")
        c = P.curves(rows, "decorrelation", s)
        if BASE not in c or not c:
            continue
        view = ProbeSetView(name, s, info, c)
        base = next(iter(c[BASE].values()))
        if "dpo" in c:
            per_layer, overall = P.change_vs_base(c["dpo"], base)
            if per_layer:
                view.claim1 = P.summarize(per_layer, overall)
        if "dpo" in c and "decpo" in c:
            per_layer, _ = P.paired_change(c["decpo"], c["dpo"])
            view.reg_layer = {L: per_layer[L] for L in regularized if L in per_layer}
        views.append(view)
    return views, regularized, rows


def _layer_est(layer: int, est: Estimate) -> str:
    return f"layer {layer} ({est.fmt(4, sign=True)})"


def _interval_words(est: Estimate) -> str:
    if est.how == "seeds":
        return f"95% t-interval over {est.n_seeds} seeds"
    if est.how == "paired items":
        return f"paired bootstrap over {est.n_items} items"
    return "one seed: no interval over seeds"


def claim1_lines(view: ProbeSetView | None, site: str) -> list[str]:
    head = "**Claim 1: does DPO raise feature decorrelation over the base model?**"
    if view is None or view.claim1 is None:
        return [f"{head} Not measured: no probes of base and DPO were found."]
    c = view.claim1
    o = c.overall
    n = len(c.per_layer)
    if o.has_interval:
        answer = {
            1: "Yes, on average over layers.",
            -1: "No: DPO lowered it on average over layers.",
            0: "Not clearly: the interval of the mean change includes 0.",
        }[o.side()]
        counts = f"the per-layer interval is above 0 in {c.n_above} and below 0 in {c.n_below} of {n} layers"
    else:
        answer = "Direction only (one seed, so no interval over seeds): " + (
            "higher on average."
            if o.mean > 0
            else "lower on average."
            if o.mean < 0
            else "unchanged on average."
        )
        higher = sum(e.mean > 0 for e in c.per_layer.values())
        lower = sum(e.mean < 0 for e in c.per_layer.values())
        counts = f"DPO is higher in {higher} and lower in {lower} of {n} layers (no per-layer interval)"
    fall_word = "the largest fall" if c.fall[1].mean < 0 else "no layer fell; the smallest change"
    rise_word = "the largest rise" if c.rise[1].mean > 0 else "no layer rose; the largest change"
    return [
        f"{head} {answer} Decorrelation of DPO minus base ({site}, {view.info.get('position', 'last token')}, "
        f"{view.info.get('n_texts', '?')} texts), mean over {n} layers: {o.fmt(4, sign=True)} "
        f"({_interval_words(o)}); {counts}; {rise_word} is at {_layer_est(*c.rise)} and {fall_word} at "
        f"{_layer_est(*c.fall)}."
    ]


def _diff_sentence(d: Difference) -> str:
    if d.estimate is None:
        return f"- {d.label}: {d.how}."
    better = f"{d.direction} is better" if d.direction in ("higher", "lower") else "no better side"
    return f"- {d.label} ({better}): DecPO - DPO = {d.estimate.fmt(3, sign=True)}, {d.how}: {d.verdict}."


def _decorr_verdict(est: Estimate) -> str:
    if not est.has_interval:
        side = "DecPO higher" if est.mean > 0 else "DecPO lower" if est.mean < 0 else "no difference"
        return f"direction only, {side}"
    return {1: "DecPO higher", -1: "DecPO lower", 0: "no clear difference (interval includes 0)"}[est.side()]


def claim2_lines(
    diffs: list[Difference], views: list[ProbeSetView], regularized: list[int], methods: Sequence[str]
) -> list[str]:
    head = "**Claim 2: does DecPO beat DPO?**"
    if not ("dpo" in methods and "decpo" in methods):
        return [f"{head} Not measured: the methods do not include both dpo and decpo."]
    sided = [d for d in diffs if d.direction in ("higher", "lower") and d.estimate is not None]
    counts = {k: sum(d.verdict == k for d in sided) for k in ("DecPO better", "DecPO worse")}
    unclear = len(sided) - counts["DecPO better"] - counts["DecPO worse"]
    if sided:
        summary = (
            f"On the task measures, DecPO is better on {counts['DecPO better']}, worse on "
            f"{counts['DecPO worse']} and not clearly different on {unclear} of {len(sided)} measures "
            "(intervals of the paired difference DecPO - DPO)."
        )
    else:
        summary = "No task measure was evaluated for both DecPO and DPO."
    lines = [f"{head} {summary}", ""]
    lines += [_diff_sentence(d) for d in diffs]
    for view in views:
        for layer, est in sorted(view.reg_layer.items()):
            where = view.info.get("position", "")
            also = (
                "; this is also the penalty's position"
                if view.info.get("penalty_position") and view.name == "heldout_prompts"
                else ""
            )
            lines.append(
                f"- Decorrelation at the regularized layer {layer} ({view.site}, {where}{also}): DecPO - DPO = "
                f"{est.fmt(4, sign=True)}, {_interval_words(est)}: {_decorr_verdict(est)}."
            )
    if views and not any(v.reg_layer for v in views):
        lines.append(f"- Decorrelation at the regularized layer(s) {regularized}: not in the probes.")
    return lines


def _cell(est: Estimate | None, digits: int = 4, sign: bool = False) -> str:
    return "n/a" if est is None else est.fmt(digits, sign=sign)


def probe_section(
    views: list[ProbeSetView], regularized: list[int], rows: list[dict], cfg, figures: Path
) -> list[str]:
    lines = ["## Monosemanticity probes (Fig. 3-5)", ""]
    tokens = cfg.train.reg_tokens
    if tokens == "prompt_last":
        lines.append(
            "The penalty is on the last prompt token (`train.reg_tokens=prompt_last`): the held-out prompts, read at "
            "their last token, already measure the penalty's position, so one probe set is enough."
        )
    else:
        lines.append(
            f"The penalty is on `train.reg_tokens={tokens}`, not on the last prompt token: besides the held-out "
            "prompts (the paper's probe), the probes also read held-out prompt + chosen answer at its last token "
            "(site suffix `@answer_last` in probes.csv)."
        )
    lines += [
        f"Regularized layer(s): {regularized} (`train.reg_layers` = {list(cfg.train.reg_layers)}, negative indices "
        "counted from the end). Bands and intervals: 95% t-interval over seeds; DecPO - DPO paired by seed.",
        "",
    ]
    for view in views:
        c = view.curves
        view.figure = P.plot_decorrelation(
            c,
            figures / f"probe_decorrelation_{view.name}.png",
            regularized=regularized,
            title=f"decorrelation, {view.site}",
        )
        lines += [f"### {view.name}: {view.info.get('position', '')}", ""]
        if view.figure:
            lines += [f"![decorrelation {view.name}](figures/{view.figure.name})", ""]
        base = next(iter(c[BASE].values()))
        means = {m: P.method_mean(c[m]) for m in c if m != BASE}
        dpo_base = P.change_vs_base(c["dpo"], base)[0] if "dpo" in c else {}
        dec_dpo = P.paired_change(c["decpo"], c["dpo"])[0] if "dpo" in c and "decpo" in c else {}
        others = [m for m in ("dpo", "decpo") if m in means] + sorted(
            m for m in means if m not in ("dpo", "decpo")
        )
        head = ["layer", "base", *others, "DPO - base", "DecPO - DPO"]
        table = [head]
        for layer in sorted(base):
            name = f"{layer} (regularized)" if layer in regularized else str(layer)
            table.append(
                [
                    name,
                    f"{base[layer]:.4f}",
                    *(_cell(means[m].get(layer)) for m in others),
                    _cell(dpo_base.get(layer), sign=True),
                    _cell(dec_dpo.get(layer), sign=True),
                ]
            )
        lines += [f"Decorrelation per layer ({view.site}):", "", markdown_table(table), ""]
    # other activation probes: mean over layers and seeds, held-out prompts
    site = views[0].site if views else CLAIM_SITE
    extra = [
        p
        for p in ("variance", "hoyer", "near_zero")
        if any(r["probe"] == p and r["site"] == site for r in rows)
    ]
    if extra:
        table = [["model", *extra]]
        methods = sorted(
            {P.split_label(r["model"])[0] for r in rows if r["site"] == site},
            key=lambda m: (m != BASE, m != "dpo", m != "decpo", m),
        )
        for m in methods:
            cells = []
            for p in extra:
                c = P.curves(rows, p, site).get(m)
                if not c:
                    cells.append("n/a")
                    continue
                per_seed = [sum(v.values()) / len(v) for v in c.values()]
                cells.append(t_interval(per_seed).fmt(4))
            table.append([m, *cells])
        lines += [
            f"Other probes, mean over layers ({site}; mean [t-interval] over seeds):",
            "",
            markdown_table(table),
            "",
        ]
    lines += [
        "All probes per layer and model (every seed): `probes/probes.csv`; per probe set, its own probes.csv and "
        "one plot per probe: `probes/<set>/`.",
        "",
    ]
    return lines


# --- the report -----------------------------------------------------------------------------------------


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
    claim_view = next((v for v in views if v.name == "heldout_prompts"), views[0] if views else None)
    if cfg.train.reg_site != CLAIM_SITE:
        claim_views, _, _ = probe_views(output_dir, cfg, CLAIM_SITE)
        claim_view = next((v for v in claim_views if v.name == "heldout_prompts"), claim_view)
    n_seeds = len(cfg.experiment.seeds)

    lines = ["# DecPO experiment report", ""]
    lines += claim1_lines(claim_view, claim_view.site if claim_view else CLAIM_SITE)
    lines.append("")
    lines += claim2_lines(diffs, views, regularized, cfg.experiment.methods)
    lines += [
        "",
        f"Generated {datetime.datetime.now().isoformat(timespec='seconds')} by `{command}`.",
        f"Model `{cfg.model.model_name_or_path}`, training data `{training_data(cfg)}`, methods "
        f"{', '.join(cfg.experiment.methods)}, seeds {cfg.experiment.seeds}, evaluated on {', '.join(tasks) or 'nothing'}.",
        "",
        "## Results",
        "",
        "Each cell: mean [95% CI]. "
        + (
            f"Over {n_seeds} seeds (t-interval, scipy.stats.t)."
            if n_seeds > 1
            else "One seed: the interval is the evaluation's bootstrap over items, not over seeds."
        )
        + " `base` is the untrained model.",
        "",
    ]
    lines.append(
        markdown_table(results_table(results, methods, columns))
        if columns
        else "No evaluation results were found."
    )
    lines.append("")
    lines += not_applicable_lines(results, methods, columns)
    for task in tasks:
        fig = plot_task_measures(results, methods, columns, task, figures / f"measures_{task}.png")
        if fig is not None:
            lines += [f"![{task} measures](figures/{fig.name})", ""]
    if diffs:
        lines += [
            "### DecPO - DPO (paired)",
            "",
            "| measure | DecPO - DPO [95% CI] | how | verdict |",
            "|---|---|---|---|",
        ]
        for d in diffs:
            better = f"{d.direction} is better" if d.direction in ("higher", "lower") else "no better side"
            cell = d.estimate.fmt(3, sign=True) if d.estimate is not None else "n/a"
            lines.append(f"| {d.label} ({better}) | {cell} | {d.how} | {d.verdict} |")
        lines += [
            "",
            "Several seeds: per seed, decpo-sK minus dpo-sK (same seed, same items), then a t-interval of the "
            "per-seed differences. One seed: a paired percentile bootstrap over the evaluated items "
            "(scipy.stats.bootstrap, paired=True) from the per-item scores in samples.jsonl; a measure without "
            'per-item scores is n/a (unpaired). "No clear difference": the interval includes 0.',
            "",
        ]

    vs_base = {m: minus_base(output_dir, results, columns, m) for m in cfg.experiment.methods}
    vs_base = {m: d for m, d in vs_base.items() if any(x.estimate is not None for x in d)}
    if vs_base:
        lines += [
            "### Each method - base (paired by item)",
            "",
            "| method | measure | method - base [95% CI] | how | verdict |",
            "|---|---|---|---|---|",
        ]
        for m, ds in vs_base.items():
            for d in ds:
                cell = d.estimate.fmt(3, sign=True) if d.estimate is not None else "n/a"
                lines.append(
                    f"| {m} | {d.label} ({d.direction} is better) | {cell} | {d.how} | {d.verdict} |"
                )
        lines += [
            "",
            "The same items for base and every model (same prompts, greedy decoding); the verdict reads the "
            "interval: better / worse than base, or no clear difference (the interval includes 0).",
            "",
        ]
    lines += data_lines(output_dir, cfg, tasks)

    if views:
        lines += probe_section(views, regularized, rows, cfg, figures)

    runs = {
        label: read_metrics(output_dir / "train" / label / "metrics.jsonl")
        for label in models
        if label != BASE and (output_dir / "train" / label / "metrics.jsonl").exists()
    }
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

    lines += _strength_link(output_dir, cfg)
    lines += _provenance(output_dir, total_wall_s, stage_order)
    path = output_dir / "report.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def not_applicable_lines(results: Results, methods: Sequence[str], columns) -> list[str]:
    """Why cells are n/a: a model evaluated against itself (the base) has no reward measures."""
    lines = []
    for method in methods:
        runs = [r for per_seed in results.get(method, {}).values() for r in per_seed.values()]
        labels = [
            label
            for task, metric, label in columns
            if any(r.get("task") == task and metric in r.get("not_applicable", {}) for r in runs)
        ]
        if labels:
            lines.append(
                f"n/a for `{method}` ({'; '.join(labels)}): it is its own reference, so every implicit reward "
                "is 0 by construction."
            )
    return [*lines, ""] if lines else []


def strength_dir(output_dir: Path, cfg: RunConfig) -> Path:
    """``experiment.strength_sweep_dir`` (relative to the experiment folder, or absolute)."""
    d = Path(cfg.experiment.strength_sweep_dir)
    return d if d.is_absolute() else output_dir / d


def _strength_link(output_dir: Path, cfg: RunConfig) -> list[str]:
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


def _provenance(
    output_dir: Path, total_wall_s: float | None, stage_order: list[str] | None = None
) -> list[str]:
    from decpo.records import StageLog

    lines = ["## How these numbers were made", ""]
    stages_path = output_dir / "stages.json"
    if stages_path.exists():
        log = StageLog(stages_path)
        lines += ["Stages in run order (the plan's order):", ""]
        lines += ["| # | stage | status | wall time (s) | config key |", "|---|---|---|---|---|"]
        lines += [
            f"| {i} | {name} | {s.get('status', '-')} | {s.get('wall_time_s', '-')} | `{s['key']}` |"
            for i, (name, s) in enumerate(log.in_run_order(stage_order), 1)
        ]
        lines.append("")
    if total_wall_s is not None:
        lines.append(f"This invocation: {total_wall_s:.0f} s (stages done before were skipped).")
    env_files = sorted((output_dir / "train").glob("*/env.json"))
    if env_files:
        env = json.loads(env_files[0].read_text())
        lines.append(
            "Versions: "
            + ", ".join(
                f"{k} {env[k]}" for k in ("decpo", "torch", "transformers", "trl", "peft") if k in env
            )
            + f"; git {env.get('git') or 'n/a'}; device {env.get('device')}."
        )
    lines.append(
        "Resolved config: `config.yaml`; each training run: `train/<method>-s<seed>/` (config.yaml, env.json, "
        "metrics.jsonl); each evaluation: `eval/<task>/<model>/` (results.json, samples.jsonl, run.json)."
    )
    return lines


# --- layer sweep ----------------------------------------------------------------------------------------


def write_sweep(output_dir: str | Path, runs: dict[int, str], tasks: list[str], command: str) -> Path:
    """``sweep.csv`` and one plot per task of the headline measure against the regularized layer (Fig. 7)."""
    plt = pyplot()
    output_dir = Path(output_dir)
    rows = []
    for layer, label in sorted(runs.items()):
        for task in tasks:
            path = output_dir / "eval" / task / label / "results.json"
            if not path.exists():
                continue
            metrics = json.loads(path.read_text())["metrics"]
            for t, metric, _ in HEADLINE:
                if t == task and metric in metrics:
                    e = metrics[metric]
                    rows.append(
                        {
                            "layer": layer,
                            "task": task,
                            "metric": metric,
                            "value": e["value"],
                            "ci_low": e["ci"][0],
                            "ci_high": e["ci"][1],
                        }
                    )
    text = "layer,task,metric,value,ci_low,ci_high\n" + "".join(
        f"{r['layer']},{r['task']},{r['metric']},{r['value']},{r['ci_low']},{r['ci_high']}\n" for r in rows
    )
    atomic_write_text(output_dir / "sweep.csv", text)
    lines = ["# DecPO layer sweep", "", f"Generated by `{command}`.", ""]
    for task in tasks:
        task_rows = [r for r in rows if r["task"] == task]
        if not task_rows:
            continue
        metric = task_rows[0]["metric"]
        pts = [r for r in task_rows if r["metric"] == metric]
        fig, ax = plt.subplots(figsize=(5.5, 3.6))
        ax.errorbar(
            [r["layer"] for r in pts],
            [r["value"] for r in pts],
            yerr=[[r["value"] - r["ci_low"] for r in pts], [r["ci_high"] - r["value"] for r in pts]],
            marker="o",
            capsize=3,
            color=method_color("decpo"),
        )
        ax.set_xlabel("regularized layer")
        ax.set_ylabel(metric)
        ax.set_title(f"{task}: {metric}")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        png = output_dir / f"sweep_{task}.png"
        fig.savefig(png, dpi=110)
        plt.close(fig)
        lines += [
            f"## {task}",
            "",
            f"![sweep](sweep_{task}.png)",
            "",
            "| layer | value [95% CI] |",
            "|---|---|",
        ]
        lines += [f"| {r['layer']} | {r['value']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}] |" for r in pts]
        lines.append("")
    path = output_dir / "sweep.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


# --- strength sweep -------------------------------------------------------------------------------------


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


def _num(x: float | None) -> str:
    return "" if x is None or not math.isfinite(x) else repr(float(x))


def _strength_setting(cfg: RunConfig, value: float) -> str:
    from decpo.config.sweeps import strength_overrides

    ((key, v),) = strength_overrides(cfg, value).items()
    return f"{key}={v:g}"


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
    labels = [BASE, *(label for v in values for label in runs[v].values())]
    results = load_results(output_dir, labels, tasks)
    columns = available_columns(results)
    method_of = {v: P.split_label(next(iter(runs[v].values())))[0] for v in values}
    zero = 0.0 if 0.0 in runs else None
    points: list[StrengthPoint] = []
    base_ref: dict[str, float] = {}

    # decorrelation at the regularized layer(s), per probe set
    views, regularized, _ = probe_views(output_dir, cfg, cfg.train.reg_site)
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
                if not per_value[v]:
                    continue
                est = t_interval(list(per_value[v].values()))
                vs0 = None
                how = ""
                if zero is not None and v != zero and per_value[zero]:
                    common = sorted(set(per_value[v]) & set(per_value[zero]))
                    vs0 = paired_seed_difference(
                        {s: per_value[v][s] for s in common}, {s: per_value[zero][s] for s in common}
                    )
                    how = (
                        f"paired over {len(common)} seeds (t)" if len(common) > 1 else "one seed: no interval"
                    )
                points.append(StrengthPoint(v, label, "probes", est, vs0, how))

    # task measures
    for task, metric, label in columns:
        if BASE in results and metric in results[BASE].get(task, {}).get(None, {}).get("metrics", {}):
            base_ref[label] = float(results[BASE][task][None]["metrics"][metric]["value"])
        for v in values:
            per_seed = seed_entries(results.get(method_of[v], {}).get(task, {}), metric)
            if not per_seed:
                continue
            est = over_seeds([per_seed[s] for s in sorted(per_seed)])
            vs0, how = None, ""
            if zero is not None and v != zero:
                vs0, how = paired_difference(
                    task,
                    metric,
                    results.get(method_of[v], {}).get(task, {}),
                    results.get(method_of[zero], {}).get(task, {}),
                    _samples_reader(output_dir, task, method_of[v], method_of[zero]),
                )
            points.append(StrengthPoint(v, label, task, est, vs0, how))

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(STRENGTH_COLUMNS.split(","))
    for p in points:
        e, z = p.estimate, p.vs_zero
        writer.writerow(
            [
                f"{p.value:g}",
                _strength_setting(cfg, p.value),
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
    atomic_write_text(output_dir / "strength.csv", buffer.getvalue())
    png = _plot_strength(points, base_ref, output_dir / "strength.png", values, cfg)

    from decpo.records import is_auto

    mode = (
        "a balance: lambda is set at the start of training so that lambda x R = value x preference loss "
        "(`train.reg_weight: auto`, `train.reg_balance=value`)"
        if is_auto(cfg.train.reg_weight)
        else "an absolute lambda (`train.reg_weight=value`)"
    )
    n_seeds = len(cfg.experiment.seeds)
    lines = [
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
    if png:
        lines += [f"![strength]({png.name})", ""]
    table = [["measure", "strength", "value [95% CI]", "minus strength 0 [95% CI]", "how"]]
    for p in points:
        z = p.vs_zero
        table.append(
            [
                p.measure,
                f"{p.value:g}",
                p.estimate.fmt(4),
                z.fmt(4, sign=True) if z else "-",
                p.vs_zero_how or "-",
            ]
        )
    lines += [
        markdown_table(table),
        "",
        "Every number: `strength.csv`; each run: `train/decpo-w<value>-s<seed>/`.",
        "",
    ]
    used = [["strength", "setting", "lambda used, per seed"]]
    for v in values:
        per_seed = [
            f"s{s}: {_lambda_used(output_dir / 'train' / label)}" for s, label in sorted(runs[v].items())
        ]
        used.append([f"{v:g}", _strength_setting(cfg, v), ", ".join(per_seed)])
    lines += [
        "The lambda each run trained with (`reg_weight.json` of a run whose lambda was set from a balance, else "
        "its config.yaml):",
        "",
        markdown_table(used),
        "",
    ]
    lines += _provenance(output_dir, None, stage_order)
    path = output_dir / "strength.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    # one line for the experiment report that links this sweep
    decorr = [p for p in points if p.task == "probes" and p.vs_zero is not None]
    if decorr:
        parts = []
        for measure in dict.fromkeys(p.measure for p in decorr):
            values_text = ", ".join(
                f"{p.value:g}: {p.vs_zero.fmt(4, sign=True)}" for p in decorr if p.measure == measure
            )
            parts.append(f"{measure}: {values_text}")
        text = (
            "Decorrelation at the regularized layer, each strength minus strength 0 (paired by seed): "
            + "; ".join(parts)
        )
        atomic_write_text(output_dir / "strength_summary.txt", text + ".\n")
    return path


def _lambda_used(run_dir: Path) -> str:
    import yaml

    calibrated = run_dir / "reg_weight.json"
    if calibrated.exists():
        return f"{json.loads(calibrated.read_text())['reg_weight']:.4g}"
    config = run_dir / "config.yaml"
    if config.exists():
        value = (yaml.safe_load(config.read_text()) or {}).get("train", {}).get("reg_weight")
        return f"{value:.4g}" if isinstance(value, int | float) else str(value)
    return "n/a"


def _plot_strength(points, base_ref, path: Path, values, cfg) -> Path | None:
    measures = list(dict.fromkeys(p.measure for p in points))
    if not measures:
        return None
    plt = pyplot()
    ncols = min(3, len(measures))
    nrows = math.ceil(len(measures) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.4 * nrows), squeeze=False)
    positive = [v for v in values if v > 0]
    color = method_color("decpo")
    for ax, measure in zip(axes.flat, measures, strict=False):
        pts = sorted((p for p in points if p.measure == measure), key=lambda p: p.value)
        xs = [p.value for p in pts]
        ys = [p.estimate.mean for p in pts]
        err = [
            [p.estimate.mean - p.estimate.low if p.estimate.has_interval else 0.0 for p in pts],
            [p.estimate.high - p.estimate.mean if p.estimate.has_interval else 0.0 for p in pts],
        ]
        ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, color=color, label="decpo")
        if measure in base_ref:
            ax.axhline(base_ref[measure], color=method_color(BASE), ls=":", lw=1, label="base")
        if "debiased" in measure:  # right in both option orders: 0.25 for a random guesser
            ax.axhline(0.25, color="gray", ls="--", lw=1, label="chance (both orders)")
        elif "acc" in measure:
            ax.axhline(0.5, color="gray", ls="--", lw=1, label="chance")
        if positive and min(values) == 0:
            ax.set_xscale("symlog", linthresh=min(positive))
        elif positive and len(positive) > 1:
            ax.set_xscale("log")
        ax.set_xlabel("strength (balance)" if str(cfg.train.reg_weight) == "auto" else "strength (lambda)")
        if measure.startswith("decorrelation"):
            ax.set_ylabel(f"decorrelation at layer {measure.split()[1][1:]}")
        else:
            ax.set_ylabel(measure.split(": ", 1)[-1])
        ax.set_xticks(values, [f"{v:g}" for v in values])
        ax.set_title(measure, fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(measures) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
