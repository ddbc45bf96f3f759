"""The probes of an experiment in its report: each probe set's decorrelation over seeds (`ProbeSetView`),
and the report's section "Monosemanticity probes" (figures, per-layer tables, the other probes).

Read from ``probes/probes.csv`` and ``probes/probe_sets.json`` of the probe stage; the statistics are
`decpo.reports.probes` (95% t-intervals over seeds, DecPO - DPO paired by seed).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from decpo.config import RunConfig
from decpo.names import BASE, MLP_UP_PROJ
from decpo.reports import probes as P
from decpo.reports.claim1_table import claim1_three_ways
from decpo.reports.sae_section import sae_lines
from decpo.reports.sparse_probing import sparse_probing_lines
from decpo.reports.stats import Estimate, t_interval
from decpo.reports.tables import markdown_table

CLAIM_SITE = MLP_UP_PROJ  # the paper's probe site (claim 1)

# without probe_sets.json (older probe stages): the held-out prompts only
_DEFAULT_SETS = {
    "heldout_prompts": {
        "site_suffix": "",
        "position": "last token of each text",
        "penalty_position": False,
    }
}


@dataclass
class ProbeSetView:
    name: str
    site: str  # the site label in probes.csv (with the set's suffix)
    info: dict
    curves: P.Curves
    claim1: P.LayerSummary | None = None
    reg_layer: dict[int, Estimate] = field(default_factory=dict)  # DecPO - DPO at the regularized layers
    figure: Path | None = None


def probe_views(
    output_dir: Path, cfg: RunConfig, site: str
) -> tuple[list[ProbeSetView], list[int], list[dict]]:
    """Each probe set's decorrelation over seeds at ``site``; the regularized layers resolved; all rows."""
    csv_path = output_dir / "probes" / "probes.csv"
    if not csv_path.exists():
        return [], [], []
    rows = P.read_rows(csv_path)
    sets_path = output_dir / "probes" / "probe_sets.json"
    sets = json.loads(sets_path.read_text()) if sets_path.exists() else _DEFAULT_SETS
    regularized = P.resolve_layers(cfg.train.reg_layers, P.n_layers(rows, site))
    views = []
    for name, info in sets.items():
        s = site + info.get("site_suffix", "")
        c = P.curves(rows, "decorrelation", s)
        if BASE not in c or not c:
            continue
        view = ProbeSetView(name, s, info, c)
        base = next(iter(c[BASE].values()))
        if "dpo" in c:
            per_layer, overall = P.change_vs_base(c["dpo"], base)
            if per_layer:
                view.claim1 = P.summarize(per_layer, overall)
        if "dpo" in c and "decpo" in c:
            per_layer, _ = P.paired_change(c["decpo"], c["dpo"])
            view.reg_layer = {L: per_layer[L] for L in regularized if L in per_layer}
        views.append(view)
    return views, regularized, rows


def probe_section(
    views: list[ProbeSetView],
    regularized: list[int],
    rows: list[dict],
    cfg: RunConfig,
    figures: Path,
    sae: tuple[list[dict], dict] = ([], {}),
) -> list[str]:
    """The report's probe section: where the penalty sits, each probe set, the other probes, sparse probing."""
    lines = ["## Monosemanticity probes (Fig. 3-5)", ""]
    lines += _penalty_lines(cfg, regularized)
    for view in views:
        lines += _view_lines(view, regularized, figures)
    lines += _other_probe_lines(rows, views[0].site if views else CLAIM_SITE)
    heldout = next((v for v in views if v.name == "heldout_prompts"), None)
    lines += sparse_probing_lines(rows, heldout.info.get("sparse_probing") if heldout else None, regularized)
    lines += sae_lines(*sae)  # the SAE stage's rows and sae.json (experiment.sae)
    # at the SAE's site (the penalty's) when it ran, else the paper's
    lines += claim1_three_ways([*rows, *sae[0]], sae[0][0]["site"] if sae[0] else CLAIM_SITE)
    lines += [
        "All probes per layer and model (every seed): `probes/probes.csv`; per probe set, its own probes.csv and "
        "one plot per probe: `probes/<set>/`.",
        "",
    ]
    return lines


def _penalty_lines(cfg: RunConfig, regularized: list[int]) -> list[str]:
    """Which tokens and layers the penalty is on, hence which probe sets measure it."""
    tokens = cfg.train.reg_tokens
    if tokens == "prompt_last":
        lines = [
            "The penalty is on the last prompt token (`train.reg_tokens=prompt_last`): the held-out prompts, read at "
            "their last token, already measure the penalty's position, so one probe set is enough."
        ]
    else:
        lines = [
            f"The penalty is on `train.reg_tokens={tokens}`, not on the last prompt token: besides the held-out "
            "prompts (the paper's probe), the probes also read held-out prompt + chosen answer at its last token "
            "(site suffix `@answer_last` in probes.csv)."
        ]
    return [
        *lines,
        f"Regularized layer(s): {regularized} (`train.reg_layers` = {list(cfg.train.reg_layers)}, negative indices "
        "counted from the end). Bands and intervals: 95% t-interval over seeds; DecPO - DPO paired by seed.",
        "",
    ]


def _view_lines(view: ProbeSetView, regularized: list[int], figures: Path) -> list[str]:
    """One probe set: its decorrelation figure (kept in ``view.figure``) and its per-layer table."""
    c = view.curves
    view.figure = P.plot_decorrelation(
        c,
        figures / f"probe_decorrelation_{view.name}.png",
        regularized=regularized,
        title=f"decorrelation, {view.site}",
    )
    lines = [f"### {view.name}: {view.info.get('position', '')}", ""]
    if view.figure:
        lines += [f"![decorrelation {view.name}](figures/{view.figure.name})", ""]
    return [*lines, f"Decorrelation per layer ({view.site}):", "", _layer_table(c, regularized), ""]


def _layer_table(c: P.Curves, regularized: list[int]) -> str:
    """Per layer: base, each method's mean, DPO - base and DecPO - DPO."""
    base = next(iter(c[BASE].values()))
    means = {m: P.method_mean(c[m]) for m in c if m != BASE}
    dpo_base = P.change_vs_base(c["dpo"], base)[0] if "dpo" in c else {}
    dec_dpo = P.paired_change(c["decpo"], c["dpo"])[0] if "dpo" in c and "decpo" in c else {}
    others = [m for m in ("dpo", "decpo") if m in means] + sorted(
        m for m in means if m not in ("dpo", "decpo")
    )
    table = [["layer", BASE, *others, "DPO - base", "DecPO - DPO"]]
    for layer in sorted(base):
        name = f"{layer} (regularized)" if layer in regularized else str(layer)
        table.append(
            [
                name,
                f"{base[layer]:.4f}",
                *(P.cell(means[m].get(layer)) for m in others),
                P.cell(dpo_base.get(layer), sign=True),
                P.cell(dec_dpo.get(layer), sign=True),
            ]
        )
    return markdown_table(table)


def _other_probe_lines(rows: list[dict], site: str) -> list[str]:
    """The other activation probes at ``site``: mean over layers, mean [t-interval] over seeds, per method."""
    extra = [
        p
        for p in ("variance", "hoyer", "near_zero")
        if any(r["probe"] == p and r["site"] == site for r in rows)
    ]
    if not extra:
        return []
    table = [["model", *extra]]
    methods = P.method_order({P.split_label(r["model"])[0] for r in rows if r["site"] == site})
    for m in methods:
        cells = []
        for p in extra:
            c = P.curves(rows, p, site).get(m)
            if not c:
                cells.append("n/a")
                continue
            per_seed = [sum(v.values()) / len(v) for v in c.values()]
            cells.append(t_interval(per_seed).fmt(4))
        table.append([m, *cells])
    return [
        f"Other probes, mean over layers ({site}; mean [t-interval] over seeds):",
        "",
        markdown_table(table),
        "",
    ]
