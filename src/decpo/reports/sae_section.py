"""The report's SAE subsection (`sae_lines`): at the SAE's block and site, base / DPO / DecPO's L0, FVU, dead and
dense latents and the share of latents shifted vs base, mean [95% t-interval over seeds], and DecPO - DPO
paired by seed.

Read from the SAE stage's ``sae/sae.csv`` (rows ``sae/<measure>``, `decpo.probes.sae_measures`) and
``sae/sae.json`` (where the SAE came from, its training); the statistics are those of the decorrelation
tables (`decpo.reports.probes`: `method_mean`, `paired_change`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

from decpo.names import BASE
from decpo.reports import probes as P
from decpo.reports.tables import markdown_table

PREFIX = "sae/"
# (measure, its name in the table, digits, the range its t-interval over seeds is clipped to)
SHOWN = (
    ("l0", "L0 (latents active per token)", 2, (0.0, math.inf)),
    ("fvu", "FVU (variance unexplained)", 4, (0.0, math.inf)),
    ("dead_frac", "dead latents (share)", 4, (0.0, 1.0)),
    ("dense_frac", "dense latents (share)", 4, (0.0, 1.0)),
    ("shifted_frac", "latents shifted vs base (share)", 4, (0.0, 1.0)),
    ("ks_mean", "mean KS statistic vs base", 4, (0.0, 1.0)),
)


def read_sae(output_dir: Path) -> tuple[list[dict], dict]:
    """The SAE stage's rows and ``sae.json`` (empty when the stage did not run)."""
    folder = output_dir / "sae"
    if not (folder / "sae.csv").is_file():
        return [], {}
    info = json.loads((folder / "sae.json").read_text()) if (folder / "sae.json").is_file() else {}
    return P.read_rows(folder / "sae.csv"), info


def sae_lines(rows: Sequence[dict], info: dict) -> list[str]:
    """The subsection, or nothing without SAE rows."""
    if not rows:
        return []
    site, layer = rows[0]["site"], rows[0]["layer"]
    if "settings" in info:
        s = info["settings"]
        origin = (
            f"a TopK SAE (EleutherAI's sparsify; {info.get('latents')} latents = {s['expansion_factor']} x "
            f"{info.get('d_in')}, k = {s['k']}) trained on the base model's activations of "
            f"{info.get('train_tokens')} tokens of the training pairs ({info.get('seconds')} s; training-batch "
            f"FVU {info.get('train_fvu_first', math.nan):.3f} -> {info.get('train_fvu_last', math.nan):.3f})"
        )
    else:
        origin = f"the SAE loaded from `{info.get('source', '?')}`"
    lines = [
        "### Sparse-autoencoder measures",
        "",
        f"At {site}, block {layer}: {origin}, applied to every token but the first of {rows[0]['n_texts']} "
        "held-out pairs (prompt + chosen answer) of each model. L0: latents active per token; FVU: squared "
        "reconstruction error over the activations' variance; dead: latents active on no held-out token; "
        f"dense: active on more than {info.get('dense_threshold', 0.1):.0%} of them; shifted: latents whose "
        "activation distribution differs from base's (two-sample KS test per latent, Benjamini-Hochberg at "
        f"q = {info.get('shift_q', 0.05)}, over the latents active in either; tokens of one text are not "
        "independent, so read it beside the mean KS statistic). A model whose activations moved away from "
        "the base's needs more latents or reconstructs worse under the base's SAE. Cells: mean [95% "
        "t-interval over seeds, clipped to the measure's range] (base: one model); DecPO - DPO paired by "
        "seed. Files: `sae/sae.csv`, `sae/sae.json`.",
        "",
        _table(rows, site),
        "",
    ]
    return lines


def _table(rows: Sequence[dict], site: str) -> str:
    methods = P.method_order({P.split_label(r["model"])[0] for r in rows} - {BASE})
    paired = "dpo" in methods and "decpo" in methods
    table = [["measure", BASE, *methods, *(["DecPO - DPO"] if paired else [])]]
    for measure, name, digits, bounds in SHOWN:
        c = P.curves(rows, PREFIX + measure, site)
        if not c:
            continue
        r = P.measure_rows(c, methods, bounds)
        for layer in r.layers:
            table.append(
                [
                    name,
                    f"{r.base[layer]:.{digits}f}" if layer in r.base else "n/a",
                    *(P.cell(r.means[m].get(layer), digits) for m in methods),
                    *([P.cell(r.diff.get(layer), digits, sign=True)] if paired else []),
                ]
            )
    return markdown_table(table)
