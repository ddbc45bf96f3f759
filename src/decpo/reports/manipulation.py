"""The report's section "Manipulation checks": did each method do what it was set up to do, before any
comparison of outcomes?

(a) DPO learned: DPO - base on the primary outcome, paired by item (`decpo.reports.results.minus_base`).
(b) The penalty acted: DecPO - DPO of decorrelation at the regularized layers, on the held-out prompts and at
    the penalty's token (`decpo.reports.probe_section.ProbeSetView.reg_layer`).
(c) The penalty's share of the training loss: ``lambda x R / (preference loss + lambda x R)`` from each
    DecPO seed's ``metrics.jsonl``, mean over its last logged train steps (`penalty_share`).
(d) Likelihood health: the preferred answer's log-prob change against the reference (``chosen_reward /
    beta``) per method, and the greedy answers' accuracy beside the log-prob primary when it was measured.

A manipulation check says where a number lies ("higher / lower than"), never which side is preferable: these
are conditions for reading the outcomes, not outcomes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from decpo.names import BASE
from decpo.reports.claims import decorr_verdict, interval_words
from decpo.reports.curves import PREF_LOSS_KEY, REG_TERM_KEYS, read_metrics
from decpo.reports.primary import Primary
from decpo.reports.probe_section import ProbeSetView
from decpo.reports.probes import split_label
from decpo.reports.results import minus_base
from decpo.reports.stats import Estimate
from decpo.reports.tables import Results, over_seeds, seed_entries

LAST_STEPS = 10  # the penalty's share: mean over (at most) the last 10 logged train steps of a seed
CHOSEN_REWARD = ("chosen_reward", "pairs/chosen_reward")  # where a task keeps beta * (log pi - log ref)
GEN_ACCURACY = "gen/accuracy"


def _side_words(est: Estimate, a: str, b: str) -> str:
    """Where ``a - b`` lies, without a preferred side."""
    if not est.has_interval:
        side = "higher than" if est.mean > 0 else "lower than" if est.mean < 0 else "equal to"
        return f"direction only: {a} {side} {b}"
    return {
        1: f"{a} higher than {b}",
        -1: f"{a} lower than {b}",
        0: f"no clear difference between {a} and {b} (the interval includes 0)",
    }[est.side()]


def _dpo_learned(output_dir: Path, results: Results, primary: Primary | None) -> str:
    head = "- (a) DPO learned the task:"
    if primary is None:
        return f"{head} not measured (no primary outcome)."
    columns = [(primary.task, primary.measure, primary.label)]
    d = next(iter(minus_base(output_dir, results, columns, "dpo")), None)
    if d is None:
        return f"{head} not measured (no evaluation of base and dpo on {primary})."
    if d.estimate is None:
        return f"{head} DPO - base on {primary}: {d.how}."
    return (
        f"{head} DPO - base on {primary} = {d.estimate.fmt(3, sign=True)} ({d.how}): "
        f"{_side_words(d.estimate, 'DPO', 'base')}."
    )


def reg_layer_lines(views: Sequence[ProbeSetView], regularized: list[int]) -> list[str]:
    """DecPO - DPO of decorrelation at each regularized layer, per probe set."""
    lines = []
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
                f"{est.fmt(4, sign=True)}, {interval_words(est)}: {decorr_verdict(est)}."
            )
    if views and not any(v.reg_layer for v in views):
        lines.append(f"- Decorrelation at the regularized layer(s) {regularized}: not in the probes.")
    return lines


def penalty_share(rows: Sequence[dict], last: int = LAST_STEPS) -> tuple[float, int, int] | None:
    """``(share, k, n)``: the mean over the last ``k`` (at most ``last``) of the ``n`` logged train steps of
    ``term / (preference loss + term)``, ``term`` the logged ``lambda x R`` (`REG_TERM_KEYS`); None when
    the run logged no penalty."""
    key = next((k for k in REG_TERM_KEYS if any(k in r for r in rows)), None)
    if key is None:
        return None
    steps = sorted(
        (int(r["step"]), float(r[key]), float(r[PREF_LOSS_KEY]))
        for r in rows
        if key in r and PREF_LOSS_KEY in r and float(r[PREF_LOSS_KEY]) + float(r[key]) > 0
    )
    if not steps:
        return None
    tail = steps[-last:]
    return math.fsum(t / (p + t) for _, t, p in tail) / len(tail), len(tail), len(steps)


def _penalty_lines(output_dir: Path, models: Sequence[str]) -> str:
    head = "- (c) The penalty's share of the training loss, lambda x R / (preference loss + lambda x R):"
    shares = {}
    for label in models:
        method, seed = split_label(label)
        path = output_dir / "train" / label / "metrics.jsonl"
        if method == "decpo" and path.exists():
            share = penalty_share(read_metrics(path))
            if share is not None:
                shares[seed] = share
    if not shares:
        return f"{head} not measured (no decpo training logged its penalty in metrics.jsonl)."
    per_seed = ", ".join(
        f"s{s} {v:.3f} (last {k} of {n} logged steps)" for s, (v, k, n) in sorted(shares.items())
    )
    values = [v for v, _, _ in shares.values()]
    summary = (
        f"mean {math.fsum(values) / len(values):.3f}, range {min(values):.3f} to {max(values):.3f} over "
        f"{len(values)} DecPO seeds"
        if len(values) > 1
        else "one DecPO seed"
    )
    return f"{head} {per_seed}; {summary}."


def _scaled(entry: dict, beta: float) -> dict:
    ci = entry.get("ci", [math.nan, math.nan])
    return {**entry, "value": float(entry["value"]) / beta, "ci": [float(c) / beta for c in ci]}


def _likelihood_line(results: Results, primary: Primary, methods: Sequence[str], beta: float) -> str:
    head = "- (d) Likelihood of the preferred answer, its log-prob change against the reference"
    cells = []
    for method in methods:
        per_seed = results.get(method, {}).get(primary.task, {})
        metric = next((m for m in CHOSEN_REWARD if seed_entries(per_seed, m)), None)
        if metric is None:
            continue
        entries = seed_entries(per_seed, metric)
        scaled = [
            _scaled(entries[s], float(per_seed[s].get("config", {}).get("beta", beta)))
            for s in sorted(entries)
        ]
        cells.append(f"{method} {over_seeds(scaled).fmt(3, sign=True)} ({metric})")
    if not cells:
        return f"{head}: not measured (no chosen_reward in the {primary.task} results)."
    return (
        f"{head} (chosen_reward / beta: log pi(chosen) - log ref(chosen), summed over the answer's tokens, "
        f"on the {primary.task} pairs), mean [95% CI over seeds; one seed: over items]: {'; '.join(cells)}. "
        "Below 0 the preferred answer is less likely than under the reference, above 0 more likely."
    )


def _generation_line(results: Results, primary: Primary, methods: Sequence[str]) -> list[str]:
    """The greedy answers' accuracy beside the log-prob primary, per model; nothing without it."""
    if primary.measure.startswith("gen/"):
        return []
    cells = []
    for method in [BASE, *methods]:
        per_seed = results.get(method, {}).get(primary.task, {})
        prim, gen = seed_entries(per_seed, primary.measure), seed_entries(per_seed, GEN_ACCURACY)
        if prim and gen:
            p = over_seeds([prim[s] for s in sorted(prim, key=str)], primary.measure)
            g = over_seeds([gen[s] for s in sorted(gen, key=str)], GEN_ACCURACY)
            cells.append(f"{method} {p.fmt()} by log-prob, {g.fmt()} generated")
    if not cells:
        return []
    return [
        f"- Generation beside the log-prob primary ({primary} against {primary.task} {GEN_ACCURACY}, the "
        f"greedy answer parsed), mean [95% CI]: {'; '.join(cells)}."
    ]


def manipulation_lines(
    output_dir: Path,
    results: Results,
    primary: Primary | None,
    views: Sequence[ProbeSetView],
    regularized: list[int],
    models: Sequence[str],
    methods: Sequence[str],
    beta: float,
) -> list[str]:
    """The section "Manipulation checks" (see the module docstring)."""
    lines = ["## Manipulation checks", "", _dpo_learned(output_dir, results, primary)]
    reg = reg_layer_lines(views, regularized) if "decpo" in methods and "dpo" in methods else []
    lines.append("- (b) The penalty acted, decorrelation DecPO - DPO:" + ("" if reg else " not measured."))
    lines += ["  " + line for line in reg]
    lines.append(_penalty_lines(output_dir, models))
    if primary is not None:
        lines.append(_likelihood_line(results, primary, methods, beta))
        lines += _generation_line(results, primary, methods)
    return [*lines, ""]


__all__ = ["LAST_STEPS", "manipulation_lines", "penalty_share", "reg_layer_lines"]
