"""report.md's "Toxicity by scorer" table: per model (base, each method; over seeds as the results table),
every scorer's toxicity measures side by side and those of their mean score, beside the collapse guard and
perplexity, and the most frequent continuations. Pure functions of the loaded results, no I/O.

The toxicity task (`decpo.evaluation.tasks.toxicity`) writes, with several scorers, ``by_scorer/<spec>/``
and ``by_scorer/mean/`` measures; with one scorer only the ``gen/`` and ``sampled/`` ones, which are that
scorer's (named by ``config.scorer`` of results.json). The cells are `decpo.reports.tables.results_table`'s.
"""

from __future__ import annotations

from collections.abc import Sequence

from decpo.reports.tables import Results, markdown_table, results_table

TASK = "toxicity"
BY_SCORER = "by_scorer/"
MEAN = "mean"  # by_scorer/mean/: each continuation's mean score over the scorers
# a scorer's measures: (its name under by_scorer/<spec>/, the one-scorer measure, short label)
SCORER_MEASURES = (
    ("mean_toxicity", "gen/mean_toxicity", "mean toxicity"),
    ("expected_max_toxicity", "sampled/expected_max_toxicity", "exp. max. toxicity (K)"),
    ("toxicity_probability", "sampled/toxicity_probability", "toxicity prob. (K)"),
)
# the collapse guard, greedy and on the K samples, and the fluency guard
COLLAPSE_MEASURES = (
    ("gen/distinct_1", "distinct-1"),
    ("gen/distinct_2", "distinct-2"),
    ("gen/duplicate_rate", "cross-prompt duplicates"),
    ("sampled/distinct_1", "distinct-1 (K)"),
    ("sampled/distinct_2", "distinct-2 (K)"),
    ("sampled/duplicate_share", "cross-prompt duplicates (K)"),
    ("gen/perplexity", "perplexity (base)"),
)
MOST_FREQUENT = 3  # continuations listed per model


def _runs(results: Results) -> list[dict]:
    """Every toxicity results.json, in method then seed order."""
    return [
        r
        for per_task in results.values()
        for seed, r in sorted(per_task.get(TASK, {}).items(), key=lambda x: (x[0] is not None, x[0] or 0))
    ]


def _config(runs: Sequence[dict], key: str):
    return next((r["config"][key] for r in runs if key in r.get("config", {})), None)


def scorers(results: Results) -> list[str]:
    """The scorers of the ``by_scorer/`` measures, in the order of the evaluation's ``scorer`` setting,
    their mean last; empty when every result was scored by one scorer."""
    runs = _runs(results)
    specs = {
        name[len(BY_SCORER) :].rsplit("/", 1)[0]
        for r in runs
        for name in r["metrics"]
        if name.startswith(BY_SCORER)
    }
    setting = [s.strip() for s in str(_config(runs, "scorer") or "").split(",")]

    def order(spec: str) -> tuple:
        return (spec == MEAN, spec not in setting, setting.index(spec) if spec in setting else 0, spec)

    return sorted(specs, key=order)


def toxicity_columns(results: Results) -> list[tuple[str, str, str]]:
    """``(task, metric, label)`` of the table's measures present in any toxicity result: per scorer (and
    their mean) mean toxicity of the greedy continuations, expected maximum toxicity and toxicity
    probability of the sampled ones; then the collapse guard and perplexity."""
    runs = _runs(results)
    specs = scorers(results)
    if specs:
        cols = [
            (TASK, f"{BY_SCORER}{spec}/{name}", f"{spec}: {label}")
            for spec in specs
            for name, _, label in SCORER_MEASURES
        ]
    else:
        spec = _config(runs, "scorer") or "scorer"
        cols = [(TASK, metric, f"{spec}: {label}") for _, metric, label in SCORER_MEASURES]
    cols += [(TASK, metric, label) for metric, label in COLLAPSE_MEASURES]
    present = {name for r in runs for name in r["metrics"]}
    return [c for c in cols if c[1] in present]


def _code(text: str) -> str:
    """``text`` safe inside one pair of backticks."""
    return text.replace("`", "'")


def most_frequent_lines(results: Results, methods: Sequence[str]) -> list[str]:
    """Per model (its first seed), the greedy continuations most often repeated across prompts, with counts
    (``most_frequent`` of ``gen/duplicate_rate``); nothing when no continuation occurs twice."""
    lines = []
    for method in methods:
        per_seed = results.get(method, {}).get(TASK, {})
        if not per_seed:
            continue
        seed = min(per_seed, key=lambda s: (s is not None, s or 0))
        entry = per_seed[seed]["metrics"].get("gen/duplicate_rate", {})
        repeated = [(text, count) for text, count in entry.get("most_frequent", []) if count > 1]
        if repeated:
            label = method if seed is None else f"{method}-s{seed}"
            texts = "; ".join(f"`{_code(text)}` x{count}" for text, count in repeated[:MOST_FREQUENT])
            lines.append(f"- {label}: {texts}")
    if not lines:
        return []
    return ["Greedy continuations repeated across prompts (most frequent first):", "", *lines, ""]


def toxicity_lines(results: Results, methods: Sequence[str], n_seeds: int) -> list[str]:
    """The "Toxicity by scorer" section; nothing when the toxicity task was not evaluated."""
    columns = toxicity_columns(results)
    if not columns:
        return []
    k = _config(_runs(results), "num_samples")
    sampled = any(metric.startswith("sampled/") for _, metric, _ in columns)
    several = len(scorers(results)) > 1
    over = (
        f"over {n_seeds} seeds (t-interval, scipy.stats.t; base: the evaluation's interval over prompts)"
        if n_seeds > 1
        else "one seed: the evaluation's interval over prompts"
    )
    protocol = (
        f", and of the RealToxicityPrompts protocol's K = {k} sampled continuations per prompt the expected "
        "maximum toxicity and the toxicity probability (share of prompts with a sample scored >= 0.5)"
        if sampled
        else " (the sampled protocol did not run: `experiment.eval_num_samples` 0)"
    )
    return [
        "### Toxicity by scorer",
        "",
        f"Each cell: mean [95% CI], {over}. Per scorer"
        + (", and for `mean` (each continuation's mean score over the scorers)" if several else "")
        + f": the mean toxicity of the greedy continuations{protocol}. Then the collapse guard, on the "
        + (
            "greedy continuations and on the K samples (the columns marked (K))"
            if sampled
            else "greedy continuations"
        )
        + ": distinct-1/2 over all continuations and the share duplicating another prompt's; and the "
        "perplexity of the greedy continuations under the base model.",
        "",
        markdown_table(results_table(results, [m for m in methods if results.get(m, {}).get(TASK)], columns)),
        "",
        *most_frequent_lines(results, methods),
    ]


__all__ = ["scorers", "toxicity_columns", "toxicity_lines"]
