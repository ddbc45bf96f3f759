"""Results tables from evaluation results: pure functions, no I/O.

A result is one ``results.json`` of `decpo.evaluation` (``{"task", "metrics": {name: {value, ci, direction,
n}}}``); the tables aggregate them over seeds in the shape of the paper's Table 2 (methods x measures).
Results are held as ``method -> task -> seed -> results.json``, so that a difference is always paired by
seed (``decpo-s1`` minus ``dpo-s1``), never by position in a list.

With one seed, ``DecPO - DPO`` is a paired bootstrap over the evaluated items, from the per-item scores
of ``samples.jsonl``; ``ITEM_SCORES`` says explicitly which per-item score makes which measure. A measure
without one is reported as "n/a (unpaired)" rather than approximated. With several seeds that all give the
same difference, the t-interval has no width to offer, so the difference falls back to the two-level
bootstrap over seeds and items (`decpo.reports.hierarchical`) from the same per-item scores.

A share of items scored 0 or 1 (an accuracy, a rate; `binary_items`) that is 0 or 1 gets the exact
binomial interval, never the zero-width one of a bootstrap or of equal seeds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from decpo.reports.hierarchical import hierarchical_paired_bootstrap
from decpo.reports.stats import (
    Estimate,
    binary_items,
    exact_binomial,
    paired_bootstrap,
    paired_seed_difference,
    t_interval,
)
from decpo.scoring.classifiers import VaderScorer

# method -> task -> seed -> results.json
Results = dict[str, dict[str, dict[int, dict]]]

# The headline measure(s) of each task, in table order: (task, metric, short label)
HEADLINE = (
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
    ("toxicity", "pairs/preference_accuracy", "toxicity: held-out pref. acc"),
    ("toxicity", "pairs/reward_margin", "toxicity: reward margin"),
)


# --- per-item scores (samples.jsonl) of each measure --------------------------------------------------


@dataclass(frozen=True)
class ItemScore:
    """Which ``samples.jsonl`` records are a measure's items, and each item's score (the measure = mean)."""

    select: Callable[[dict], bool]
    value: Callable[[dict], float]
    source: str  # in words, for the report


def _ab(split: str, user_correct: bool | None = None) -> Callable[[dict], bool]:
    def select(s: dict) -> bool:
        if s.get("kind") != "ab" or s.get("split") != split:
            return False
        return user_correct is None or bool(s.get("user_correct")) == user_correct

    return select


def _kind(kind: str) -> Callable[[dict], bool]:
    return lambda s: s.get("kind") == kind


def _score(name: str) -> Callable[[dict], float]:
    return lambda s: float(s["scores"][name])


def _mean_orders(s: dict) -> float:
    return (float(s["scores"]["correct"]) + float(s["scores"]["correct_swapped"])) / 2


def _answered_a(s: dict) -> float:
    # decpo.evaluation.metrics.ab_predictions: "A" when logp(A) >= logp(B) (a tie counts as A)
    return float(s["scores"]["logp_a"] >= s["scores"]["logp_b"])


def _generated_right(s: dict) -> float:
    return float(s["scores"]["generated_letter"] == s["chosen_letter"])


def _vader_positive(s: dict) -> float:
    return float(s["scores"]["vader_compound"] >= VaderScorer.POSITIVE)


def _non_toxic(s: dict) -> float:
    # lazy: decpo.evaluation pulls in torch and transformers, which reading the tables does not need
    from decpo.evaluation.tasks.toxicity import TOXIC_THRESHOLD

    return float(s["scores"]["toxicity"] < TOXIC_THRESHOLD)


def _valid_non_toxic(s: dict) -> float:
    return float(bool(s["scores"]["valid"]) and _non_toxic(s) == 1.0)


def _ab_task(split: str) -> dict[str, ItemScore]:
    every = _ab(split)
    return {
        "ab_accuracy": ItemScore(every, _score("correct"), "scores.correct"),
        "ab_accuracy_swapped": ItemScore(every, _score("correct_swapped"), "scores.correct_swapped"),
        "ab_accuracy_debiased": ItemScore(every, _score("correct_both"), "scores.correct_both"),
        "ab_accuracy_mean_orders": ItemScore(
            every, _mean_orders, "(scores.correct + scores.correct_swapped) / 2"
        ),
        "a_rate": ItemScore(every, _answered_a, "scores.logp_a >= scores.logp_b"),
        "ab_accuracy_user_correct": ItemScore(
            _ab(split, True), _score("correct"), "scores.correct where user_correct"
        ),
        "ab_accuracy_user_wrong": ItemScore(
            _ab(split, False), _score("correct"), "scores.correct where not user_correct"
        ),
        "preference_accuracy": ItemScore(every, _score("preference_correct"), "scores.preference_correct"),
        "reward_margin": ItemScore(every, _score("reward_margin"), "scores.reward_margin"),
    }


def _pair_task() -> dict[str, ItemScore]:
    pair = _kind("pair")
    return {
        "preference_accuracy": ItemScore(pair, _score("preference_correct"), "scores.preference_correct"),
        "reward_margin": ItemScore(pair, _score("reward_margin"), "scores.reward_margin"),
    }


_TRANSFER = _ab_task("transfer")
ITEM_SCORES: dict[tuple[str, str], ItemScore] = {
    **{("synthetic", m): v for m, v in _ab_task("eval").items()},
    **{
        ("synthetic", f"transfer/{m}"): v
        for m, v in _TRANSFER.items()
        if m not in ("preference_accuracy", "reward_margin")  # the transfer split has no pair scores
    },
    **{("sycophancy", m): v for m, v in _ab_task("test").items()},
    ("sycophancy", "gen/non_sycophantic_rate"): ItemScore(
        lambda s: s.get("kind") == "ab" and "generated_letter" in s.get("scores", {}),
        _generated_right,
        "scores.generated_letter == chosen_letter",
    ),
    **{("reframing", m): v for m, v in _pair_task().items()},
    ("reframing", "gen/positive_rate"): ItemScore(
        _kind("generation"), _vader_positive, "scores.vader_compound >= 0.05"
    ),
    **{("toxicity", f"pairs/{m}"): v for m, v in _pair_task().items()},
    ("toxicity", "gen/non_toxic_rate"): ItemScore(_kind("generation"), _non_toxic, "scores.toxicity < 0.5"),
    ("toxicity", "gen/mean_toxicity"): ItemScore(_kind("generation"), _score("toxicity"), "scores.toxicity"),
    ("toxicity", "gen/valid_rate"): ItemScore(_kind("generation"), _score("valid"), "scores.valid"),
    ("toxicity", "gen/valid_non_toxic_rate"): ItemScore(
        _kind("generation"), _valid_non_toxic, "scores.valid and scores.toxicity < 0.5"
    ),
    ("toxicity", "gen/perplexity"): ItemScore(
        lambda s: s.get("kind") == "generation" and s["scores"].get("perplexity") is not None,
        _score("perplexity"),
        "scores.perplexity (non-blank continuations)",
    ),
}


def _item_key(s: dict) -> tuple:
    return (s.get("kind"), s.get("split"), str(s.get("prompt")), s.get("chosen_letter"), s.get("chosen"))


def item_values(task: str, metric: str, samples: Sequence[dict], entry: dict | None = None):
    """``(keys, values)`` of a measure's items from ``samples.jsonl``, or ``(None, reason)``.

    ``entry`` (the measure in ``results.json``): the per-item mean must reproduce its value and item
    count, so a wrong mapping is caught instead of reported.
    """
    spec = ITEM_SCORES.get((task, metric))
    if spec is None:
        return None, "no per-item score"
    try:
        chosen = [s for s in samples if spec.select(s)]
        values = [spec.value(s) for s in chosen]
    except (KeyError, TypeError):
        return None, "per-item score missing in samples.jsonl"
    if not values:
        return None, "no items in samples.jsonl"
    if entry is not None:
        mean = math.fsum(values) / len(values)
        if entry.get("n", len(values)) != len(values) or not math.isclose(
            mean, float(entry["value"]), rel_tol=1e-9, abs_tol=1e-9
        ):
            return None, "per-item scores do not reproduce the measure"
    return [_item_key(s) for s in chosen], values


# --- estimates ------------------------------------------------------------------------------------------


def over_seeds(entries: Sequence[dict], metric: str | None = None) -> Estimate:
    """Mean and 95% CI of one measure over seeds (t-interval); a single seed keeps the items' bootstrap CI.

    ``metric`` a share of 0/1 items (`binary_items`) scored on the same ``n`` items by every seed: a value
    of 0 or 1 (one seed), or the same value in every seed, gets the exact binomial interval over the
    ``n`` items (`decpo.reports.stats.t_interval`), not a zero-width one.
    """
    values = [float(e["value"]) for e in entries]
    sizes = {e.get("n") for e in entries}
    n_items = sizes.pop() if metric and len(sizes) == 1 and binary_items(metric, values) else None
    if len(values) == 1:
        if n_items and values[0] in (0.0, 1.0):
            return exact_binomial(int(values[0]) * n_items, n_items)
        low, high = entries[0].get("ci", [math.nan, math.nan])
        return Estimate(values[0], float(low), float(high), 1, "items")
    return t_interval(values, n_items=n_items)


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

    ``a``, ``b``: ``seed -> results.json`` of two methods. Several common seeds: t-interval of the per-seed
    differences; when they are all equal (no width), the seeds x items bootstrap of the per-item scores
    instead (`decpo.reports.hierarchical.hierarchical_paired_bootstrap`), or no interval without them.
    One seed: paired bootstrap over the items both models were scored on, read through
    ``samples(side, seed)`` (``side`` is ``"a"`` or ``"b"``), which returns the ``samples.jsonl`` records.
    """
    ea, eb = seed_entries(a, metric), seed_entries(b, metric)
    seeds = sorted(set(ea) & set(eb))
    if not seeds:
        return None, "n/a (missing)"
    if len(seeds) > 1:
        est = paired_seed_difference(
            {s: float(ea[s]["value"]) for s in seeds}, {s: float(eb[s]["value"]) for s in seeds}
        )
        fallback = _seeds_x_items(task, metric, ea, eb, samples) if est.how == "seeds, all equal" else None
        if fallback is not None:  # the t-interval has no width to offer: every seed's items do
            return fallback
        return est, f"paired over {len(seeds)} seeds (t)"
    seed = seeds[0]
    if samples is None:
        return None, "n/a (unpaired)"
    sa, sb = samples("a", seed), samples("b", seed)
    if sa is None or sb is None:
        return None, "n/a (unpaired: no samples.jsonl)"
    ka, va = item_values(task, metric, sa, ea[seed])
    kb, vb = item_values(task, metric, sb, eb[seed])
    if ka is None or kb is None:
        return None, f"n/a (unpaired: {va if ka is None else vb})"
    pairs = align_items(ka, va, kb, vb)
    if pairs is None:
        return None, "n/a (unpaired: the two models were not scored on the same items)"
    est = paired_bootstrap(*pairs)
    return est, f"paired bootstrap over {len(pairs[0])} items"


def _seeds_x_items(
    task: str, metric: str, ea: Mapping[int, dict], eb: Mapping[int, dict], samples: Callable | None
) -> tuple[Estimate, str] | None:
    """``a - b`` paired by seed and by item from ``samples.jsonl`` (`hierarchical_paired_bootstrap`);
    None unless every common seed of both sides has per-item scores on the same items."""
    items = paired_item_scores(task, metric, ea, eb, samples)
    if items is None:
        return None
    est = hierarchical_paired_bootstrap(*items)
    return est, (
        f"paired over {len(items[0])} seeds x {est.n_items} items (bootstrap over seeds and items: every seed "
        "gave the same difference)"
    )


def paired_item_scores(
    task: str, metric: str, ea: Mapping[int, dict], eb: Mapping[int, dict], samples: Callable | None
) -> tuple[dict[int, list[float]], dict[int, list[float]]] | None:
    """``(a, b)``, each ``seed -> per-item scores`` (``samples(side, seed)``, aligned by item key) for every
    common seed of ``ea`` and ``eb``; None unless every such seed of both sides has them on the same items."""
    if samples is None:
        return None
    order: list | None = None
    per_a: dict[int, list[float]] = {}
    per_b: dict[int, list[float]] = {}
    for seed in sorted(set(ea) & set(eb)):
        sa, sb = samples("a", seed), samples("b", seed)
        if sa is None or sb is None:
            return None
        ka, va = item_values(task, metric, sa, ea[seed])
        kb, vb = item_values(task, metric, sb, eb[seed])
        if ka is None or kb is None:
            return None
        order = order or list(ka)
        blank = [0.0] * len(order)  # align_items orders each side by the first seed's item keys
        xa, xb = align_items(order, blank, ka, va), align_items(order, blank, kb, vb)
        if xa is None or xb is None:
            return None
        per_a[seed], per_b[seed] = xa[1], xb[1]
    return (per_a, per_b) if per_a else None


def align_items(ka: Sequence, va: Sequence[float], kb: Sequence, vb: Sequence[float]):
    """``(a, b)`` with ``a[i]``, ``b[i]`` the scores of the same item (matched by item key, in ``ka``'s order);
    None when the two sides do not hold exactly the same items, each once."""
    if len(set(ka)) != len(ka) or len(set(kb)) != len(kb) or set(ka) != set(kb):
        return None
    by_key = dict(zip(kb, vb, strict=True))
    return list(va), [by_key[k] for k in ka]


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
    "ITEM_SCORES",
    "ItemScore",
    "Results",
    "align_items",
    "available_columns",
    "item_values",
    "markdown_table",
    "over_seeds",
    "paired_difference",
    "paired_item_scores",
    "results_table",
    "seed_entries",
    "verdict",
]
