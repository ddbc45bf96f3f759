"""Results tables from evaluation results: pure functions, no I/O.

A result is one ``results.json`` of `decpo.evaluation` (``{"task", "metrics": {name: {value, ci, direction,
n}}}``); the tables aggregate them over seeds in the shape of the paper's Table 2 (methods x measures).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

# t quantiles (two-sided 95%) for small numbers of seeds; beyond 30 the normal quantile
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}
Z95 = 1.959964

# The headline measure(s) of each task, in table order: (task, metric, short label)
HEADLINE = (
    ("synthetic", "ab_accuracy_debiased", "synthetic: debiased A/B acc"),
    ("synthetic", "ab_accuracy_mean_orders", "synthetic: A/B acc (mean of orders)"),
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
    ("toxicity", "gen/non_toxic_rate", "toxicity: non-toxic"),
    ("toxicity", "gen/mean_toxicity", "toxicity: mean toxicity"),
    ("toxicity", "pairs/reward_margin", "toxicity: reward margin"),
)


@dataclass(frozen=True)
class Estimate:
    """A mean with a 95% interval and how it was made."""

    mean: float
    low: float
    high: float
    n_seeds: int
    how: str  # "seeds" (t-interval over seeds) or "items" (the evaluation's bootstrap over items)

    def fmt(self, digits: int = 3) -> str:
        if not math.isfinite(self.mean):
            return "n/a"
        return f"{self.mean:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


def t95(df: int) -> float:
    return _T95.get(df, Z95) if df <= 30 else Z95


def over_seeds(entries: Sequence[dict]) -> Estimate:
    """Mean and 95% CI of one measure over seeds; a single seed keeps the items' bootstrap CI."""
    values = [float(e["value"]) for e in entries]
    if len(values) == 1:
        low, high = entries[0].get("ci", [values[0], values[0]])
        return Estimate(values[0], float(low), float(high), 1, "items")
    mean = statistics.fmean(values)
    half = t95(len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return Estimate(mean, mean - half, mean + half, len(values), "seeds")


def difference(a: Sequence[dict], b: Sequence[dict]) -> Estimate:
    """``a - b`` of one measure with a 95% CI.

    Several seeds (paired by seed): t-interval of the per-seed differences. One seed: the normal
    approximation from the two bootstrap CIs, ``sqrt(se_a^2 + se_b^2)`` with ``se = width / (2 * 1.96)``
    (unpaired, so conservative).
    """
    if len(a) != len(b):
        raise ValueError(f"difference needs the same seeds on both sides ({len(a)} vs {len(b)})")
    if len(a) == 1:
        se = [(float(e["ci"][1]) - float(e["ci"][0])) / (2 * Z95) for e in (a[0], b[0])]
        d = float(a[0]["value"]) - float(b[0]["value"])
        half = Z95 * math.hypot(*se)
        return Estimate(d, d - half, d + half, 1, "items")
    diffs = [float(x["value"]) - float(y["value"]) for x, y in zip(a, b, strict=True)]
    mean = statistics.fmean(diffs)
    half = t95(len(diffs) - 1) * statistics.stdev(diffs) / math.sqrt(len(diffs))
    return Estimate(mean, mean - half, mean + half, len(diffs), "seeds")


def results_table(
    results: dict[str, dict[str, list[dict]]], methods: Sequence[str], columns: Sequence[tuple[str, str, str]]
) -> list[list[str]]:
    """Rows ``[method, cell, ...]`` for ``results[method][task]`` = one results.json per seed."""
    rows = [["method", *(label for _, _, label in columns)]]
    for method in methods:
        row = [method]
        for task, metric, _ in columns:
            entries = [
                r["metrics"][metric] for r in results.get(method, {}).get(task, []) if metric in r["metrics"]
            ]
            row.append(over_seeds(entries).fmt() if entries else "n/a")
        rows.append(row)
    return rows


def available_columns(results: dict[str, dict[str, list[dict]]]) -> list[tuple[str, str, str]]:
    """The headline measures present in any result."""
    present = {
        (task, metric)
        for per_task in results.values()
        for task, runs in per_task.items()
        for r in runs
        for metric in r["metrics"]
    }
    return [c for c in HEADLINE if (c[0], c[1]) in present]


def markdown_table(rows: Sequence[Sequence[str]]) -> str:
    head, *body = rows
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in body]
    return "\n".join(lines)
