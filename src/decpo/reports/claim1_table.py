"""Claim 1 three ways (`claim1_three_ways`): does DPO make the base model's activations more monosemantic, by
the paper's proxy (feature decorrelation), by k-sparse probing (accuracy at k = 1, neurons needed) and by the
SAE (L0, FVU, dead and dense latents), at the layers the latter two measured; and whether the proxy tracks
each of the others (`decpo.probes.proxy_check`, one sentence per measure).

Pure: rows in (probes.csv's and sae.csv's, the probe and SAE stages'), markdown lines out. Statistics: those
of the decorrelation tables (`decpo.reports.probes`): each method's mean [95% t-interval over seeds], DPO -
base over seeds (claim 1's contrast, base being one model), DecPO - DPO paired by seed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from decpo.names import BASE
from decpo.probes.proxy_check import SIDES, proxy_tracking
from decpo.reports import probes as P
from decpo.reports.sparse_probing import neurons_bounds
from decpo.reports.stats import Estimate
from decpo.reports.tables import markdown_table

PROXY = "decorrelation"
INF = math.inf
# (probe or its prefix, name, digits, the side that reads as more monosemantic (`proxy_check.SIDES`),
# the range a t-interval over seeds is clipped to, as the sparse-probing and SAE tables clip theirs)
SPARSE = (
    (
        "sparse_probe/acc_k1/",
        "sparse probing: accuracy at k = 1",
        3,
        SIDES["sparse_probe/acc_k1/"],
        (0.0, 1.0),
    ),
    (
        "sparse_probe/neurons_needed/",
        "sparse probing: neurons needed",
        1,
        SIDES["sparse_probe/neurons_needed/"],
        (1.0, INF),
    ),
)
SAE = (
    ("sae/l0", "SAE: L0 (latents per token)", 2, SIDES["sae/l0"], (0.0, INF)),
    ("sae/fvu", "SAE: FVU", 4, SIDES["sae/fvu"], (0.0, INF)),
    ("sae/dead_frac", "SAE: dead latents", 4, SIDES["sae/dead_frac"], (0.0, 1.0)),
    ("sae/dense_frac", "SAE: dense latents", 4, SIDES["sae/dense_frac"], (0.0, 1.0)),
)
SIDE_WORDS = {1: "higher", -1: "lower", 0: "no better side"}
DECODABLE = "sparse_probe/decodable/"
FLOOR = "floor: no model's dense probe beats chance (not counted)"


def _measures(rows: Sequence[dict]) -> list[tuple]:
    """``(probe, name, digits, side, bounds)`` of each measure the rows hold, the proxy first."""
    probes = {r["probe"] for r in rows}
    out: list[tuple] = (
        [(PROXY, "decorrelation (the paper's proxy)", 4, 1, (-INF, INF))] if PROXY in probes else []
    )
    for prefix, name, digits, side, bounds in SPARSE:
        for probe in sorted(p for p in probes if p.startswith(prefix)):
            out.append((probe, f"{name} ({probe.rsplit('/', 1)[1]})", digits, side, bounds))
    out += [m for m in SAE if m[0] in probes]
    return out


def _reading(est: Estimate | None, side: int) -> str:
    """What DPO - base says about claim 1 for a measure whose more monosemantic side is ``side``."""
    if est is None:
        return "n/a"
    if not est.has_interval:
        return "direction only (no interval)"
    moved = est.side()
    if moved == 0:
        return "no clear change"
    word = "higher" if moved > 0 else "lower"
    if side == 0:
        return f"DPO {word}"
    return f"DPO {word}: {'more' if moved == side else 'less'} monosemantic"


def _table(rows: Sequence[dict], site: str, layers: Sequence[int]) -> str:
    head = [
        "measure",
        "layer",
        "more monosemantic",
        BASE,
        "dpo",
        "decpo",
        "DPO - base",
        "reads",
        "DecPO - DPO",
    ]
    table = [head]
    floor = undecodable(rows, site)
    for probe, name, digits, side, (low, high) in _measures(rows):
        if probe.startswith(SPARSE[1][0]):  # neurons needed: at most the layer's width
            low, high = neurons_bounds(rows, site)
        c = P.curves(rows, probe, site)
        if BASE not in c and not probe.startswith(SPARSE[1][0]):
            continue
        r = P.measure_rows(c, ("dpo", "decpo"), (low, high))
        base, means, diff = r.base, r.means, r.diff
        span = (low - high, high - low)  # a difference's range
        claim = P.clipped(P.change_vs_base(c["dpo"], base)[0], span) if "dpo" in c and base else {}
        shown = set(base) | set(means["dpo"]) | set(means["decpo"])
        for layer in [L for L in layers if L in shown]:
            at_floor = probe.startswith("sparse_probe/") and (probe.rsplit("/", 1)[1], layer) in floor
            table.append(
                [
                    name,
                    str(layer),
                    SIDE_WORDS[side],
                    f"{base[layer]:.{digits}f}" if layer in base else "n/a",
                    P.cell(means["dpo"].get(layer), digits),
                    P.cell(means["decpo"].get(layer), digits),
                    P.cell(claim.get(layer), digits, sign=True),
                    FLOOR if at_floor else _reading(claim.get(layer), side),
                    P.cell(diff.get(layer), digits, sign=True),
                ]
            )
    return markdown_table(table)


def undecodable(rows: Sequence[dict], site: str) -> set[tuple[str, int]]:
    """``(concept, layer)`` of ``site`` where no model's dense probe beats chance (every ``decodable`` row 0):
    there every sparse-probing number measures noise. Empty for rows without ``decodable`` (older runs)."""
    seen: dict[tuple[str, int], bool] = {}
    for r in rows:
        if r["site"] == site and r["probe"].startswith(DECODABLE):
            key = (r["probe"].rsplit("/", 1)[1], int(r["layer"]))
            seen[key] = seen.get(key, False) or float(r["value"]) > 0
    return {key for key, any_decodes in seen.items() if not any_decodes}


def measured_layers(rows: Sequence[dict], site: str) -> list[int]:
    """The blocks where sparse probing or the SAE measured at ``site``."""
    return sorted(
        {
            int(r["layer"])
            for r in rows
            if r["site"] == site and r["probe"].startswith(("sparse_probe/", "sae/"))
        }
    )


def proxy_sentences(rows: Sequence[dict], site: str) -> list[str]:
    """One sentence per measure: does decorrelation track it over the (model, layer) points of ``site``. A
    sparse-probing point whose dense probe does not beat chance is left out (`decodable_rows`)."""
    kept = decodable_rows(rows)
    lines = [
        "- " + proxy_tracking(kept, probe, site=site).sentence(name, side) + "."
        for probe, name, _, side, _ in _measures(kept)
        if probe != PROXY
    ]
    concepts = {r["probe"].rsplit("/", 1)[1] for r in rows if r["probe"].startswith(SPARSE[0][0])}
    left = sorted(
        concepts - {r["probe"].rsplit("/", 1)[1] for r in kept if r["probe"].startswith(SPARSE[0][0])}
    )
    if left:
        lines.append(
            f"- Left out: {', '.join(left)}, which no model's dense probe decodes at any block measured."
        )
    return lines


def decodable_rows(rows: Sequence[dict]) -> list[dict]:
    """``rows`` without the sparse-probing rows of a (model, layer, site, concept) whose ``decodable`` row is 0:
    there the concept is not linearly present at all, so its accuracies measure chance, not monosemanticity."""
    floor = {
        (r["model"], str(r["layer"]), r["site"], r["probe"].rsplit("/", 1)[1])
        for r in rows
        if r["probe"].startswith(DECODABLE) and not float(r["value"]) > 0
    }
    return [
        r
        for r in rows
        if not (
            r["probe"].startswith("sparse_probe/")
            and (r["model"], str(r["layer"]), r["site"], r["probe"].rsplit("/", 1)[1]) in floor
        )
    ]


def claim1_three_ways(rows: Sequence[dict], site: str) -> list[str]:
    """The subsection (nothing when neither sparse probing nor the SAE measured at ``site``)."""
    layers = measured_layers(rows, site)
    if not layers:
        return []
    return [
        "### Claim 1 three ways: the proxy, sparse probing and the SAE",
        "",
        f"At {site}, the blocks sparse probing or the SAE measured: base, each method's mean [95% t-interval "
        "over seeds], DPO - base over seeds (claim 1: does DPO move the measure, and to the more monosemantic "
        "side?), and DecPO - DPO paired by seed. Decorrelation and sparse probing read the last token of the "
        "held-out prompts (the toxicity and sycophancy concepts: the mean over the answer's tokens of the "
        "prompt + answer texts made for them, `decpo.probes.concept_texts`); the SAE every token of the "
        "held-out prompt + chosen answer. The SAE's FVU and dead "
        "latents have no monosemantic side under an SAE trained on base: they say how far a model's "
        "activations moved from the base's dictionary. Neurons needed is n/a for a model and layer whose dense "
        "probe does not beat chance (the lower end of its 95% interval over folds at or below the majority "
        "class's share: any k reaches 95% of a chance accuracy); where no model's does, the concept's rows read "
        "`floor` and are not counted for or against claim 1.",
        "",
        _table(rows, site, layers),
        "",
        "Does the proxy track the others? Spearman's rho between decorrelation and each measure over every "
        "(model, layer) point of the site where both were measured (seeds apart), 95% percentile bootstrap "
        "interval over the points; the points share models and texts, so it is a rough guide, not a test. A "
        "more monosemantic point has a higher decorrelation, a higher k = 1 accuracy and fewer neurons "
        "needed (sparse probing's points where the dense probe does not beat chance are left out): the proxy "
        "*tracks* a measure when rho has the sign that predicts (positive for accuracy, "
        "negative for neurons needed and dense latents) and its interval excludes 0, and *runs against* it "
        "when the interval excludes 0 on the other side.",
        "",
        *proxy_sentences(rows, site),
        "",
    ]
