"""Results tables from evaluation results: pure functions, no I/O.

A result is one ``results.json`` of `decpo.evaluation` (``{"task", "metrics": {name: {value, ci, direction,
n}}}``); the tables aggregate them over seeds in the shape of the paper's Table 2 (methods x measures).
Results are held as ``method -> task -> seed -> results.json``, so that a difference is always paired by
seed (``decpo-s1`` minus ``dpo-s1``), never by position in a list.

A difference of a measure with per-item scores (`decpo.reports.items.ITEM_SCORES`, from ``samples.jsonl``)
is paired by item too: with several seeds the two-level bootstrap over seeds and items
(`decpo.reports.hierarchical`), with one seed a paired bootstrap over the items. A measure without them is
paired by seed alone (a t-interval of the per-seed differences), or with one seed reported as
"n/a (unpaired)" rather than approximated.

A share of items scored 0 or 1 (an accuracy, a rate; `binary_items`) that is 0 or 1 gets the exact
binomial interval, never the zero-width one of a bootstrap or of equal seeds.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence

from decpo.reports.hierarchical import hierarchical_paired_bootstrap
from decpo.reports.items import seed_items
from decpo.reports.stats import (
    Estimate,
    binary_items,
    exact_binomial,
    paired_bootstrap,
    paired_seed_difference,
    share_measure,
    t_interval,
)

# method -> task -> seed -> results.json
Results = dict[str, dict[str, dict[int, dict]]]

# The headline measure(s) of each task, in table order: (task, metric, short label)
HEADLINE = (
    ("reading", "ab_accuracy_debiased", "reading: debiased A/B acc"),
    ("reading", "letter/ab_accuracy_debiased", "reading: debiased A/B acc, letter only"),
    ("reading", "gen/accuracy", "reading: generated answer acc"),
    ("reading", "gen/exact_rate", "reading: generated answer exact"),
    ("reading", "ab_accuracy_mean_orders", "reading: A/B acc (mean of orders)"),
    ("reading", "ab_accuracy_user_wrong", "reading: acc, user wrong"),
    ("reading", "transfer/ab_accuracy_debiased", "reading transfer: debiased A/B acc"),
    ("reading", "preference_accuracy", "reading: held-out pref. acc"),
    ("reading", "reward_margin", "reading: reward margin"),
    ("synthetic", "ab_accuracy_debiased", "synthetic: debiased A/B acc"),
    ("synthetic", "ab_accuracy_mean_orders", "synthetic: A/B acc (mean of orders)"),
    ("synthetic", "a_rate", "synthetic: (A) rate"),
    ("synthetic", "ab_accuracy_user_correct", "synthetic: acc, user right"),
    ("synthetic", "ab_accuracy_user_wrong", "synthetic: acc, user wrong"),
    ("synthetic", "transfer/ab_accuracy_mean_orders", "synthetic transfer: A/B acc (mean of orders)"),
    ("synthetic", "preference_accuracy", "synthetic: held-out pref. acc"),
    ("synthetic", "reward_margin", "synthetic: reward margin"),
    ("sycophancy", "ab_accuracy_debiased", "sycophancy: debiased A/B acc"),
    ("sycophancy", "ab_accuracy_mean_orders", "sycophancy: A/B acc (mean of orders)"),
    ("sycophancy", "a_rate", "sycophancy: (A) rate"),
    ("sycophancy", "gen/non_sycophantic_rate", "sycophancy: generated non-sycophantic"),
    ("sycophancy", "preference_accuracy", "sycophancy: held-out pref. acc"),
    ("sycophancy", "reward_margin", "sycophancy: reward margin"),
    ("reframing", "gen/positive_rate", "reframing: positive"),
    ("reframing", "preference_accuracy", "reframing: held-out pref. acc"),
    ("reframing", "reward_margin", "reframing: reward margin"),
    ("toxicity", "gen/mean_toxicity", "toxicity: mean toxicity"),
    ("toxicity", "gen/non_toxic_rate", "toxicity: non-toxic"),
    ("toxicity", "gen/valid_rate", "toxicity: valid"),
    ("toxicity", "gen/valid_non_toxic_rate", "toxicity: valid and non-toxic"),
    ("toxicity", "gen/perplexity", "toxicity: perplexity (base)"),
    ("toxicity", "gen/distinct_1", "toxicity: distinct-1"),
    ("toxicity", "gen/distinct_2", "toxicity: distinct-2"),
    ("toxicity", "gen/duplicate_rate", "toxicity: cross-prompt duplicates"),
    ("toxicity", "sampled/expected_max_toxicity", "toxicity: expected max. toxicity (K samples)"),
    ("toxicity", "sampled/toxicity_probability", "toxicity: toxicity probability (K samples)"),
    ("toxicity", "pairs/preference_accuracy", "toxicity: held-out pref. acc"),
    ("toxicity", "pairs/reward_margin", "toxicity: reward margin"),
)


# --- estimates ------------------------------------------------------------------------------------------


def over_seeds(entries: Sequence[dict], metric: str | None = None) -> Estimate:
    """Mean and 95% CI of one measure over seeds (t-interval); a single seed keeps the items' bootstrap CI.

    ``metric`` a share of 0/1 items (`binary_items`) scored on the same ``n`` items by every seed: a value
    of 0 or 1 (one seed), or the same value in every seed, gets the exact binomial interval over the
    ``n`` items (`decpo.reports.stats.t_interval`), not a zero-width one. A share's t-interval is clipped
    to [0, 1] (`decpo.reports.stats.share_measure`).
    """
    values = [float(e["value"]) for e in entries]
    sizes = {e.get("n") for e in entries}
    n_items = sizes.pop() if metric and len(sizes) == 1 and binary_items(metric, values) else None
    if len(values) == 1:
        if n_items and values[0] in (0.0, 1.0):
            return exact_binomial(int(values[0]) * n_items, n_items)
        low, high = entries[0].get("ci", [math.nan, math.nan])
        return Estimate(values[0], float(low), float(high), 1, "items")
    est = t_interval(values, n_items=n_items)
    if metric and share_measure(metric) and est.how == "seeds":
        # a share lies in [0, 1]: a t-interval over a few widely spread seeds would reach past it
        est = dataclasses.replace(est, low=max(est.low, 0.0), high=min(est.high, 1.0))
    return est


def seed_entries(per_seed: Mapping[int, dict], metric: str) -> dict[int, dict]:
    """``seed -> metric entry`` for the seeds whose results hold ``metric``."""
    return {s: r["metrics"][metric] for s, r in per_seed.items() if metric in r["metrics"]}


def paired_difference(
    task: str,
    metric: str,
    a: Mapping[int, dict],
    b: Mapping[int, dict],
    samples: Callable[[str, int], list[dict] | None] | None = None,
) -> tuple[Estimate | None, str]:
    """``a - b`` of one measure, paired; returns ``(estimate, how)`` or ``(None, reason)``.

    ``a``, ``b``: ``seed -> results.json`` of two methods; ``samples(side, seed)`` (``side`` is ``"a"`` or
    ``"b"``) returns that model's ``samples.jsonl`` records (`decpo.reports.items.seed_items`). Several
    common seeds: with per-item scores the seeds x items bootstrap
    (`decpo.reports.hierarchical.hierarchical_paired_bootstrap`), ``how`` giving the t-interval over the
    seed means beside it; without them the t-interval of the per-seed differences. One seed: the paired
    bootstrap over the items both models were scored on, or n/a.
    """
    ea, eb = seed_entries(a, metric), seed_entries(b, metric)
    seeds = sorted(set(ea) & set(eb))
    if not seeds:
        return None, "n/a (missing)"
    items = seed_items(task, metric, ea, eb, samples) if samples is not None else "no samples.jsonl"
    if len(seeds) > 1:
        t_est = paired_seed_difference(
            {s: float(ea[s]["value"]) for s in seeds}, {s: float(eb[s]["value"]) for s in seeds}
        )
        if isinstance(items, str):
            return t_est, f"paired over {len(seeds)} seeds (t)"
        est = hierarchical_paired_bootstrap(*items)
        t_words = (
            t_est.fmt(3, sign=True)
            if t_est.has_interval
            else "no interval, every seed gave the same difference"
        )
        return est, (
            f"paired over {len(seeds)} seeds x {est.n_items} items (bootstrap over seeds and items; t over "
            f"the {len(seeds)} seed means: {t_words})"
        )
    if samples is None:
        return None, "n/a (unpaired)"
    if isinstance(items, str):
        return None, f"n/a (unpaired: {items})"
    va, vb = (side[seeds[0]] for side in items)
    return paired_bootstrap(va, vb), f"paired bootstrap over {len(va)} items"


def verdict(est: Estimate | None, direction: str) -> str:
    """DecPO better / worse / no clear difference, from the interval of ``DecPO - DPO``."""
    if est is None:
        return "-"
    if direction not in ("higher", "lower"):
        return "diagnostic (no better side)"
    if not est.has_interval:
        return "no interval (all seeds equal)" if est.how == "seeds, all equal" else "no interval (one seed)"
    side = est.side() if direction == "higher" else -est.side()
    return {1: "DecPO better", -1: "DecPO worse", 0: "no clear difference (interval includes 0)"}[side]


def results_table(
    results: Results, methods: Sequence[str], columns: Sequence[tuple[str, str, str]]
) -> list[list[str]]:
    """Rows ``[method, cell, ...]`` for ``results[method][task][seed]`` = one results.json."""
    rows = [["method", *(label for _, _, label in columns)]]
    for method in methods:
        row = [method]
        for task, metric, _ in columns:
            per_seed = seed_entries(results.get(method, {}).get(task, {}), metric)
            entries = [per_seed[s] for s in sorted(per_seed)]
            row.append(over_seeds(entries, metric).fmt() if entries else "n/a")
        rows.append(row)
    return rows


def available_columns(results: Results) -> list[tuple[str, str, str]]:
    """The headline measures present in any result."""
    present = {
        (task, metric)
        for per_task in results.values()
        for task, runs in per_task.items()
        for r in runs.values()
        for metric in r["metrics"]
    }
    return [c for c in HEADLINE if (c[0], c[1]) in present]


def markdown_table(rows: Sequence[Sequence[str]]) -> str:
    head, *body = rows
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in body]
    return "\n".join(lines)


__all__ = [
    "Estimate",
    "HEADLINE",
    "Results",
    "available_columns",
    "markdown_table",
    "over_seeds",
    "paired_difference",
    "results_table",
    "seed_entries",
    "verdict",
]
