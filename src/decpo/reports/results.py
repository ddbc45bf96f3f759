"""Evaluation results of an experiment folder and the differences the report draws from them.

``load_results`` reads ``eval/<task>/<label>/results.json`` into ``method -> task -> seed -> results.json``
(`decpo.reports.tables.Results`); ``decpo_minus_dpo`` and ``minus_base`` pair them (by seed, or by item from
the per-item scores of ``samples.jsonl``). Also the words for where the training data came from.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from decpo.config import RunConfig
from decpo.evaluation.config import same_scorer_warning
from decpo.names import BASE
from decpo.reports.hierarchical import hierarchical_paired_bootstrap
from decpo.reports.items import align_items, item_values
from decpo.reports.probes import split_label
from decpo.reports.stats import Estimate, at_ceiling_or_floor, flag_words, paired_bootstrap, share_measure
from decpo.reports.tables import Results, paired_difference, seed_entries, verdict


def load_results(output_dir: Path, models: Sequence[str], tasks: Sequence[str]) -> Results:
    """``method -> task -> seed -> results.json`` (``dpo-s0`` is method ``dpo``, seed 0; base: seed None)."""
    out: Results = {}
    for label in models:
        method, seed = split_label(label)
        for task in tasks:
            path = output_dir / "eval" / task / label / "results.json"
            if path.exists():
                out.setdefault(method, {}).setdefault(task, {})[seed] = json.loads(path.read_text())
    return out


def read_samples(path: Path) -> list[dict] | None:
    if not path.exists():
        return None
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def samples_reader(output_dir: Path, task: str, a: str, b: str) -> Callable[[str, int], list[dict] | None]:
    """``read(side, seed)``: the ``samples.jsonl`` of method ``a`` (side ``"a"``) or ``b`` at ``seed``."""

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
    flag: str | None = None  # "ceiling" / "floor": both methods there, the measure cannot show a difference
    measure: tuple[str, str] = ("", "")  # (task, metric)


def _mean_value(entries: dict) -> float | None:
    return math.fsum(float(e["value"]) for e in entries.values()) / len(entries) if entries else None


def ceiling_flag(metric: str, a: dict, b: dict) -> str | None:
    """`decpo.reports.stats.at_ceiling_or_floor` of a share measure (accuracy, rate): both methods' means
    over their seeds (``seed -> metric entry``) at or above 0.97, or at or below 0.03; None otherwise."""
    ma, mb = _mean_value(a), _mean_value(b)
    if not share_measure(metric) or ma is None or mb is None:
        return None
    return at_ceiling_or_floor(ma, mb)


def decpo_minus_dpo(
    output_dir: Path, results: Results, columns, a: str = "decpo", b: str = "dpo"
) -> list[Difference]:
    """``a - b`` of each measure, paired (`decpo.reports.tables.paired_difference`). A sided share measure
    where both methods are at the ceiling or floor (`ceiling_flag`) gets the verdict "at the ceiling: cannot
    show a difference" and its ``flag``, which leaves it out of the report's counts."""
    out = []
    for task, metric, label in columns:
        ra, rb = results.get(a, {}).get(task, {}), results.get(b, {}).get(task, {})
        entries = seed_entries(ra, metric) or seed_entries(rb, metric)
        if not entries:
            continue
        direction = next(iter(entries.values())).get("direction", "higher")
        est, how = paired_difference(task, metric, ra, rb, samples_reader(output_dir, task, a, b))
        flag = None
        if est is not None and direction in ("higher", "lower"):
            flag = ceiling_flag(metric, seed_entries(ra, metric), seed_entries(rb, metric))
        said = flag_words(flag) if flag else verdict(est, direction)
        out.append(Difference(label, direction, est, how, said, flag, (task, metric)))
    return out


def minus_base(output_dir: Path, results: Results, columns, method: str) -> list[Difference]:
    """``method - base`` of each measure with per-item scores, paired by item (base is one model).

    The estimate is the mean over items of the method's score averaged over its seeds minus the base
    model's score on the same item. Its interval: with several seeds the bootstrap over seeds and items
    (`decpo.reports.hierarchical.hierarchical_paired_bootstrap`, base's scores on every seed's side), with
    one seed a paired percentile bootstrap over items (`decpo.reports.stats.paired_bootstrap`). ``how``
    also gives the mean difference of each seed, so a seed that goes the other way is visible.
    """
    out = []
    for task, metric, label in columns:
        base = seed_entries(results.get(BASE, {}).get(task, {}), metric)
        runs = seed_entries(results.get(method, {}).get(task, {}), metric)
        if base and runs:
            out.append(_minus_base_of(output_dir, task, metric, label, method, base, runs))
    return out


def _minus_base_of(
    output_dir: Path, task: str, metric: str, label: str, method: str, base: dict, runs: dict
) -> Difference:
    """`minus_base` of one measure: ``base`` and ``runs`` are its results.json entries per seed."""
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
        return Difference(label, direction, None, f"n/a ({vb})", "-", measure=(task, metric))
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
        return Difference(label, direction, None, f"n/a ({why})", "-", measure=(task, metric))
    n = len(vb)
    seeds = ", ".join(f"s{s} {math.fsum(v) / n - math.fsum(vb) / n:+.3f}" for s, v in per_seed.items())
    if len(per_seed) > 1:
        est = hierarchical_paired_bootstrap(per_seed, {s: list(vb) for s in per_seed})
        how = (
            f"paired by item over {n} items, mean of {len(per_seed)} seeds per item, bootstrap over seeds and "
            f"items (per seed: {seeds})"
        )
    else:
        est = paired_bootstrap(next(iter(per_seed.values())), list(vb))
        how = f"paired bootstrap over {n} items, one seed ({seeds})"
    said = verdict(est, direction).replace("DecPO", method)
    return Difference(label, direction, est, how, said, measure=(task, metric))


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


def training_data(cfg: RunConfig) -> str:
    """The training data in a few words: the user's file, pairs sampled from the model, or a task."""
    if cfg.pairs.source:
        return f"pairs sampled from the model on {cfg.pairs.source} (split {cfg.pairs.split})"
    return cfg.data.path or cfg.data.task


def scorer_warning_lines(cfg: RunConfig, tasks: Sequence[str]) -> list[str]:
    """The report's warning when the toxicity evaluation's scorer is the one that ranked the training pairs
    (as the eval stages resolve it: `decpo.evaluation.config.same_scorer_warning`)."""
    if "toxicity" not in tasks:
        return []
    warning = same_scorer_warning(cfg.experiment.eval_scorer, cfg.pairs.scorer if cfg.pairs.source else None)
    return [f"**Warning: {warning}**", ""] if warning else []


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
            + (
                f" The other part of the eval split, {split['n_dev']} dev prompts (disjoint from both), is "
                "for choosing settings (benchmarks/tune.py) and is not evaluated here."
                if "n_dev" in split
                else ""
            )
        )
    return [*lines, ""]
