"""The paper's two questions in words: claim 1 (does DPO raise feature decorrelation over the base model,
probes at `CLAIM_SITE`?) and the per-measure sentences of claim 2 (DecPO - DPO on each task measure, and
how many measures go each way). Each answer reads the 95% interval: a side only when the interval excludes
0, "direction only" with one seed. The report's sections that use them: `decpo.reports.outcomes` (claim 2
on the primary outcome first) and `decpo.reports.manipulation`.
"""

from __future__ import annotations

from decpo.reports.probe_section import ProbeSetView
from decpo.reports.results import Difference
from decpo.reports.stats import CEILING, FLOOR, Estimate, count_verdicts


def _layer_est(layer: int, est: Estimate) -> str:
    return f"layer {layer} ({est.fmt(4, sign=True)})"


def interval_words(est: Estimate) -> str:
    if est.how == "seeds":
        return f"95% t-interval over {est.n_seeds} seeds"
    if est.how == "paired items":
        return f"paired bootstrap over {est.n_items} items"
    if est.how == "seeds x items":
        return f"bootstrap over {est.n_seeds} seeds x {est.n_items} items"
    if est.how == "seeds, all equal":
        return f"{est.n_seeds} seeds, all equal: no interval"
    return "one seed: no interval over seeds"


def _claim1_answer(view: ProbeSetView) -> tuple[str, str]:
    """The answer to claim 1 and how many layers go each way."""
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
        return answer, counts
    why = (
        f"all {o.n_seeds} seeds gave the same value, so no interval"
        if o.how == "seeds, all equal"
        else "one seed, so no interval over seeds"
    )
    answer = f"Direction only ({why}): " + (
        "higher on average." if o.mean > 0 else "lower on average." if o.mean < 0 else "unchanged on average."
    )
    higher = sum(e.mean > 0 for e in c.per_layer.values())
    lower = sum(e.mean < 0 for e in c.per_layer.values())
    counts = f"DPO is higher in {higher} and lower in {lower} of {n} layers (no per-layer interval)"
    return answer, counts


def claim1_lines(view: ProbeSetView | None, site: str) -> list[str]:
    head = "**Claim 1 (secondary outcome): does DPO raise feature decorrelation over the base model?**"
    if view is None or view.claim1 is None:
        return [f"{head} Not measured: no probes of base and DPO were found."]
    c = view.claim1
    o = c.overall
    answer, counts = _claim1_answer(view)
    fall_word = "the largest fall" if c.fall[1].mean < 0 else "no layer fell; the smallest change"
    rise_word = "the largest rise" if c.rise[1].mean > 0 else "no layer rose; the largest change"
    return [
        f"{head} {answer} Decorrelation of DPO minus base ({site}, {view.info.get('position', 'last token')}, "
        f"{view.info.get('n_texts', '?')} texts), mean over {len(c.per_layer)} layers: {o.fmt(4, sign=True)} "
        f"({interval_words(o)}); {counts}; {rise_word} is at {_layer_est(*c.rise)} and {fall_word} at "
        f"{_layer_est(*c.fall)}."
    ]


def better_side(direction: str) -> str:
    """``"higher is better"``, ``"lower is better"`` or ``"no better side"``."""
    return f"{direction} is better" if direction in ("higher", "lower") else "no better side"


def diff_sentence(d: Difference) -> str:
    if d.estimate is None:
        return f"- {d.label}: {d.how}."
    return f"- {d.label} ({better_side(d.direction)}): DecPO - DPO = {d.estimate.fmt(3, sign=True)}, {d.how}: {d.verdict}."


def decorr_verdict(est: Estimate) -> str:
    if not est.has_interval:
        side = "DecPO higher" if est.mean > 0 else "DecPO lower" if est.mean < 0 else "no difference"
        return f"direction only, {side}"
    return {1: "DecPO higher", -1: "DecPO lower", 0: "no clear difference (interval includes 0)"}[est.side()]


def task_summary(diffs: list[Difference], what: str = "task measures") -> str:
    """How many sided measures of ``diffs`` (``what``, in words) DecPO is better, worse or not clearly
    different on; a measure where both methods are at the ceiling or floor is named apart and not counted
    (`decpo.reports.stats.count_verdicts`)."""
    sided = [d for d in diffs if d.direction in ("higher", "lower") and d.estimate is not None]
    if not sided:
        return f"None of the {what} was evaluated for both DecPO and DPO."
    tally = count_verdicts([(d.label, d.verdict, d.flag) for d in sided])
    better, worse = tally.counts.get("DecPO better", 0), tally.counts.get("DecPO worse", 0)
    flagged = "; ".join(f"{name} (at the {flag})" for name, flag in tally.flagged)
    if not tally.n:
        return (
            f"None of the {what} can show a difference: on every one both methods are at the ceiling "
            f"(>= {CEILING}) or the floor (<= {FLOOR}): {flagged}."
        )
    text = (
        f"On the {what}, DecPO is better on {better}, worse on {worse} and not clearly different on "
        f"{tally.n - better - worse} of {tally.n} measures (intervals of the paired difference DecPO - DPO)."
    )
    if flagged:
        text += (
            f" Left out of these counts, because both methods are at the ceiling (>= {CEILING}) or the floor "
            f"(<= {FLOOR}), where a measure cannot show a difference: {flagged}."
        )
    return text
