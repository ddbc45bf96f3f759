"""The report's section "Outcomes": claim 2 on the primary outcome first, then the secondary outcomes.

Claim 2 (does DecPO beat DPO?) is answered by one sentence about the primary outcome
(`decpo.reports.primary`): DecPO - DPO paired by seed and item, with the interval of the bootstrap over seeds
and items (`decpo.reports.hierarchical.hierarchical_paired_bootstrap`; one seed: the paired bootstrap over
items) and the minimum detectable effect of this run (`decpo.reports.hierarchical.mde_paired`, 80% power,
two-sided 5%). A primary where both methods sit at the ceiling or floor is flagged instead of given a verdict.
The secondary outcomes follow: every other headline measure's DecPO - DPO with the counts that leave out the
ceiling and floor (`decpo.reports.claims.task_summary`), decorrelation at the paper's probe, and claim 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from decpo.reports.claims import diff_sentence, task_summary
from decpo.reports.hierarchical import ALPHA, POWER, hierarchical_paired_bootstrap, mde_paired
from decpo.reports.items import seed_items
from decpo.reports.manipulation import reg_layer_lines
from decpo.reports.primary import Primary
from decpo.reports.probe_section import ProbeSetView
from decpo.reports.results import Difference, ceiling_flag, samples_reader
from decpo.reports.stats import CEILING, FLOOR, Estimate, paired_bootstrap
from decpo.reports.tables import Results, seed_entries, verdict

CLAIM2 = "**Claim 2 (primary outcome): does DecPO beat DPO?**"
PAPER_PROBE_SET = "heldout_prompts"  # the last prompt token: the paper's probe


@dataclass(frozen=True)
class PrimaryDifference:
    """DecPO - DPO on the primary outcome: the estimate, the run's minimum detectable effect, the design
    (seeds x items), the ceiling / floor flag and the verdict of the interval."""

    estimate: Estimate
    mde: float
    n_seeds: int
    n_items: int
    flag: str | None
    verdict: str


def primary_difference(
    output_dir: Path, results: Results, primary: Primary, a: str = "decpo", b: str = "dpo"
) -> PrimaryDifference | str:
    """``a - b`` on the primary outcome from the per-item scores of every common seed; or why it cannot be
    computed."""
    ra, rb = results.get(a, {}).get(primary.task, {}), results.get(b, {}).get(primary.task, {})
    ea, eb = seed_entries(ra, primary.measure), seed_entries(rb, primary.measure)
    if not set(ea) & set(eb):
        return f"{primary} was not evaluated for both {a} and {b} with a common seed"
    items = seed_items(primary.task, primary.measure, ea, eb, samples_reader(output_dir, primary.task, a, b))
    if isinstance(items, str):
        return f"its per-item scores cannot be paired ({items})"
    per_a, per_b = items
    seeds = sorted(per_a)
    if len(seeds) > 1:
        est = hierarchical_paired_bootstrap(per_a, per_b)
    else:
        est = paired_bootstrap(per_a[seeds[0]], per_b[seeds[0]])
    diffs = {s: [x - y for x, y in zip(per_a[s], per_b[s], strict=True)] for s in seeds}
    direction = next(iter(ea.values())).get("direction", "higher")
    flag = ceiling_flag(primary.measure, ea, eb) if direction in ("higher", "lower") else None
    return PrimaryDifference(
        est, mde_paired(diffs), len(seeds), len(per_a[seeds[0]]), flag, verdict(est, direction)
    )


def _mde_words(d: PrimaryDifference) -> str:
    power, level = f"{POWER:.0%} power", f"two-sided {ALPHA:.0%}"
    if d.mde <= 0:
        return (
            f"minimum detectable effect of this run: n/a ({power}, {level}: every seed and item gave the same "
            "difference, so the data give no spread to size it)"
        )
    scope = "; one seed, so it covers the items only, not seed-to-seed variation" if d.n_seeds == 1 else ""
    return f"minimum detectable effect of this run: {d.mde:.3f} ({power}, {level}{scope})"


def _verdict_words(d: PrimaryDifference) -> str:
    if d.flag is not None:
        bound = f">= {CEILING}" if d.flag == "ceiling" else f"<= {FLOOR}"
        return (
            f"both methods are at the {d.flag} ({bound}), where this measure cannot show a difference: no "
            "verdict"
        )
    if d.verdict.startswith("no clear difference") and d.mde > 0:
        return f"{d.verdict}; an effect smaller than {d.mde:.3f} would likely be missed"
    return d.verdict


def primary_sentence(output_dir: Path, results: Results, primary: Primary) -> str:
    """Claim 2 in one sentence about the primary outcome."""
    d = primary_difference(output_dir, results, primary)
    if isinstance(d, str):
        return f"{CLAIM2} DecPO - DPO on {primary}: not measured: {d}."
    design = (
        f"paired over {d.n_seeds} seeds x {d.n_items} items, hierarchical bootstrap over seeds and items"
        if d.n_seeds > 1
        else f"paired over 1 seed x {d.n_items} items, paired bootstrap over items"
    )
    return (
        f"{CLAIM2} DecPO - DPO on {primary}: {d.estimate.fmt(3, sign=True)} ({design}); {_mde_words(d)}: "
        f"{_verdict_words(d)}."
    )


def outcomes_lines(
    output_dir: Path,
    results: Results,
    primary: Primary | None,
    diffs: list[Difference],
    views: Sequence[ProbeSetView],
    regularized: list[int],
    methods: Sequence[str],
    claim1: list[str],
) -> list[str]:
    """The section "Outcomes": claim 2 on the primary, the secondary measures, decorrelation at the paper's
    probe, then claim 1 (``claim1``: its lines, `decpo.reports.claims.claim1_lines`)."""
    lines = ["## Outcomes", ""]
    if not ("dpo" in methods and "decpo" in methods):
        lines += [f"{CLAIM2} Not measured: the methods do not include both dpo and decpo.", ""]
        return [*lines, *claim1, ""]
    if primary is not None:
        lines += [primary_sentence(output_dir, results, primary), ""]
        key = (primary.task, primary.measure)
        secondary = [d for d in diffs if d.measure != key]
        lines.append(
            "Secondary outcomes, DecPO - DPO (the primary is not counted here): "
            + task_summary(secondary, "secondary task measures")
        )
    else:
        secondary = diffs
        lines.append(
            f"{CLAIM2} No primary outcome, so every task measure is read alike: {task_summary(diffs)}"
        )
    lines.append("")
    lines += [diff_sentence(d) for d in secondary]
    paper = [v for v in views if v.name == PAPER_PROBE_SET]
    lines += [
        line.replace("- Decorrelation", "- Decorrelation at the paper's probe", 1)
        for line in reg_layer_lines(paper, regularized)
    ]
    return [*lines, "", *claim1, ""]


__all__ = ["PrimaryDifference", "outcomes_lines", "primary_difference", "primary_sentence"]
