"""Per-probe figures from tidy probe rows: one curve per model against relative depth, and a difference."""

from __future__ import annotations

import io
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from decpo.io import atomic_write_bytes

LABELS = {
    "decorrelation": "feature decorrelation (1 - mean cos)",
    "reg_cosine": "||Z^ Z^T - I||_F^2 / n^2",
    "mean_sq_cosine": "mean squared cosine (i != j)",
    "variance": "variance across dims",
    "near_zero": "fraction |z| < eps",
    "hoyer": "Hoyer sparsity",
    "mono_scale": "monosemantic scale (Wang et al.)",
    "weight_proxy": "median ||w_i|| b_i (normalised)",
    "weight_change_top100": "relative change, top-100 changed neurons",
}


def reference_model(models: Sequence[str]) -> str:
    """The model the difference plot subtracts: ``dpo`` when present, else the first."""
    return "dpo" if "dpo" in models else models[0]


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def plot_probes(rows: Sequence[dict], output_dir: str | Path) -> list[Path]:
    """One PNG per (probe, site): each model's value against depth; beside it, last model minus the reference.

    Rows need ``model, probe, site, depth, value``. Returns the written paths.
    """
    import matplotlib  # lazy: matplotlib loads slowly and only the plots need it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict[tuple[str, str], dict[str, list[tuple[float, float]]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for row in rows:
        value = float(row["value"])
        if math.isfinite(value):
            groups[(row["probe"], row["site"])][row["model"]].append((float(row["depth"]), value))
    paths = []
    for (probe, site), curves in sorted(groups.items()):
        models = list(curves)
        diff = None
        if len(models) >= 2:
            ref, last = reference_model(models), models[-1]
            if ref == last:
                ref = models[0]
            ref_values = dict(curves[ref])
            diff = [(d, v - ref_values[d]) for d, v in sorted(curves[last]) if d in ref_values]
        fig, axes = plt.subplots(1, 2 if diff else 1, figsize=(11 if diff else 6, 4), squeeze=False)
        ax = axes[0][0]
        for model in models:
            points = sorted(curves[model])
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", ms=3, label=model)
        ax.set_xlabel("relative layer depth")
        ax.set_ylabel(LABELS.get(probe, probe))
        ax.set_title(f"{probe} ({site})")
        ax.legend()
        ax.grid(alpha=0.3)
        if diff:
            ax = axes[0][1]
            ax.plot([p[0] for p in diff], [p[1] for p in diff], marker="o", ms=3, color="C3")
            ax.axhline(0.0, color="black", lw=0.8)
            ax.set_xlabel("relative layer depth")
            ax.set_title(f"{last} minus {ref}")
            ax.grid(alpha=0.3)
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=110)
        plt.close(fig)
        path = Path(output_dir) / f"{_safe(probe)}__{_safe(site)}.png"
        atomic_write_bytes(path, buffer.getvalue())
        paths.append(path)
    return paths
