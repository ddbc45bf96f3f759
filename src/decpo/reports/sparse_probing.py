"""The report's k-sparse probing subsection (`sparse_probing_lines`): per site, layer and concept, base / DPO /
DecPO's accuracy at k = 1, neurons needed and dense accuracy, mean [95% t-interval] over seeds, and DecPO - DPO
paired by seed.

Read from the probe stage's rows ``sparse_probe/<measure>/<concept>`` (`decpo.probes.sparse_probing`) and
what ``probe_sets.json`` says it covered and skipped (`decpo.experiment.probe_texts.SparsePlan.record`);
the statistics are those of the decorrelation tables (`decpo.reports.probes`: `method_mean`,
`paired_change`, both `decpo.reports.stats.t_interval`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from decpo.names import BASE
from decpo.probes.sparse_probing import KS
from decpo.reports import probes as P
from decpo.reports.tables import markdown_table

PREFIX = "sparse_probe/"
# (measure in probes.csv, its name in the table, digits, the range its t-interval over seeds is clipped to,
# as `decpo.reports.tables.over_seeds` clips a share's: two or three seeds' t-intervals reach past the range)
SHOWN = (
    ("acc_k1", "accuracy at k = 1", 3, (0.0, 1.0)),
    ("neurons_needed", "neurons needed", 1, (1.0, math.inf)),  # up to the width: `neurons_bounds`
    ("acc_dense", "dense accuracy", 3, (0.0, 1.0)),
)


def sparse_probing_lines(rows: Sequence[dict], info: dict | None, regularized: Sequence[int]) -> list[str]:
    """The subsection, or nothing when sparse probing was off (``info``: ``probe_sets.json``'s
    ``sparse_probing`` entry of the held-out prompts, None for a probe stage that predates it)."""
    sparse = [r for r in rows if r["probe"].startswith(PREFIX)]
    info = info or {}
    if not sparse and (not info or not info.get("layers")):
        return []
    lines = ["### Sparse probing of the training task's concepts (k-sparse, Gurnee et al. 2023)", ""]
    if sparse:
        ct = info.get("concept_texts")
        prompt_rows = [r for r in sparse if not ct or r["probe"].rsplit("/", 1)[1] not in ct["concepts"]]
        texts = (
            [f"the last token of {prompt_rows[0].get('n_texts', '?')} held-out prompts"]
            if prompt_rows
            else []
        )
        if ct:
            where = (
                "the mean over the answer's tokens"
                if ct.get("token") == "completion_mean"
                else "the last token"
            )
            texts.append(
                f"{where} of {ct['n_texts']} prompt + answer texts made for the task's own concepts ({ct['source']})"
            )
        lines += [
            f"The training task's labelled concepts (`decpo.probes.concepts`) decoded from "
            f"{' and from '.join(texts)}, {info.get('folds', 5)} stratified folds: a logistic probe on the top-k "
            "neurons (ranked on each training fold by |Cohen's d|) for k = 1, 2, 4, ..., 32, and on all of them "
            "(dense). Neurons needed: the smallest k whose accuracy reaches 95% of the dense probe's (the "
            "width when none does); fewer means a more monosemantic code for the concept; n/a where the dense "
            "probe does not beat chance (its 95% interval over folds reaches down to the majority class's share). Each model's value is its mean over folds; cells: mean "
            "[95% t-interval over seeds, clipped to the measure's range] (base: one model); DecPO - DPO paired "
            "by seed. Blocks: `experiment.sparse_probing_layers` (default: the regularized layers).",
            "",
        ]
        for site in sorted({r["site"] for r in sparse}):
            lines += [f"Site {site}:", "", _table(sparse, site, regularized), ""]
    if info.get("reason"):
        lines += [f"Sparse probing {info['reason']}.", ""]
    lines += [f"- Skipped {reason}" for reason in info.get("skipped", {}).values()]
    if info.get("skipped"):
        lines.append("")
    return lines


def neurons_bounds(rows: Sequence[dict], site: str) -> tuple[float, float]:
    """The range neurons needed lies in at ``site``: from 1 to the layer's width. Neurons needed is a k of
    `decpo.probes.sparse_probing.KS` or, when no k reaches the target, the width, so any other value of the
    site's rows is the width; with none, the upper end is unknown (infinity)."""
    widths = {
        float(r["value"])
        for r in rows
        if r["site"] == site
        and r["probe"].startswith(f"{PREFIX}neurons_needed/")
        and math.isfinite(float(r["value"]))
        and float(r["value"]) not in KS
    }
    return 1.0, max(widths, default=math.inf)


def _table(rows: Sequence[dict], site: str, regularized: Sequence[int]) -> str:
    """Rows (layer, concept, measure): base, each method's mean [t-interval], DecPO - DPO paired by seed."""
    concepts = sorted({r["probe"].rsplit("/", 1)[1] for r in rows if r["site"] == site})
    methods = P.method_order({P.split_label(r["model"])[0] for r in rows if r["site"] == site} - {BASE})
    paired = "dpo" in methods and "decpo" in methods
    table = [["layer", "concept", "measure", BASE, *methods, *(["DecPO - DPO"] if paired else [])]]
    for concept in concepts:
        for measure, name, digits, bounds in SHOWN:
            bounds = neurons_bounds(rows, site) if measure == "neurons_needed" else bounds
            r = P.measure_rows(P.curves(rows, f"{PREFIX}{measure}/{concept}", site), methods, bounds)
            for layer in r.layers:
                table.append(
                    [
                        f"{layer} (regularized)" if layer in regularized else str(layer),
                        concept,
                        name,
                        f"{r.base[layer]:.{digits}f}" if layer in r.base else "n/a",
                        *(P.cell(r.means[m].get(layer), digits) for m in methods),
                        *([P.cell(r.diff.get(layer), digits, sign=True)] if paired else []),
                    ]
                )
    return markdown_table(table)
