"""Training curves from ``metrics.jsonl`` files: one PNG per measure, one line per method (the paper's Fig. 6)."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

CURVES = (
    ("train/rewards/margins", "train reward margin"),
    ("eval/rewards/margins", "eval reward margin"),
    ("train/rewards/accuracies", "train reward accuracy"),
    ("eval/rewards/accuracies", "eval reward accuracy"),
    ("train/loss/pref", "train preference loss"),
    ("train/loss/decorr", "train lambda x decorrelation term"),
    ("train/decorr/value", "train decorrelation R"),
)


def read_metrics(path: str | Path) -> list[dict]:
    """The rows of a ``metrics.jsonl`` (a line cut short by a crash is skipped)."""
    rows = []
    for line in Path(path).read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def series(rows: Sequence[dict], key: str) -> tuple[list[int], list[float]]:
    points = sorted((int(r["step"]), float(r[key])) for r in rows if key in r)
    return [s for s, _ in points], [v for _, v in points]


def plot_curves(runs: dict[str, list[dict]], output_dir: str | Path, keys=CURVES) -> list[Path]:
    """``runs``: label (e.g. ``dpo/s0``) -> metrics rows. Writes ``curve_<measure>.png`` for measures present."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for key, title in keys:
        lines = {label: series(rows, key) for label, rows in runs.items()}
        lines = {label: xy for label, xy in lines.items() if xy[0]}
        if not lines:
            continue
        fig, ax = plt.subplots(figsize=(5.5, 3.6))
        for label, (steps, values) in sorted(lines.items()):
            ax.plot(steps, values, marker="o", markersize=3, label=label)
        ax.set_xlabel("step")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = output_dir / f"curve_{key.replace('/', '_')}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def probe_dynamics(runs: dict[str, list[dict]], probe: str = "decorrelation") -> dict[str, dict[int, list]]:
    """``label -> layer -> [(step, value)]`` from ``probe/<probe>/Lxx`` keys logged during training."""
    out: dict[str, dict[int, list]] = {}
    prefix = f"probe/{probe}/L"
    for label, rows in runs.items():
        per_layer: dict[int, list] = defaultdict(list)
        for r in rows:
            for k, v in r.items():
                if k.startswith(prefix):
                    per_layer[int(k[len(prefix) :])].append((int(r.get("probe/step", r["step"])), float(v)))
        if per_layer:
            out[label] = dict(per_layer)
    return out


def plot_probe_dynamics(
    runs: dict[str, list[dict]], path: str | Path, probe: str = "decorrelation"
) -> Path | None:
    """Probe value against step, one line per layer, one panel per run (the paper's Fig. 4)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dyn = probe_dynamics(runs, probe)
    if not dyn:
        return None
    fig, axes = plt.subplots(1, len(dyn), figsize=(5 * len(dyn), 3.6), squeeze=False, sharey=True)
    for ax, (label, per_layer) in zip(axes[0], sorted(dyn.items()), strict=True):
        cmap = plt.get_cmap("viridis")
        n = max(per_layer) + 1
        for layer, points in sorted(per_layer.items()):
            points.sort()
            ax.plot([s for s, _ in points], [v for _, v in points], color=cmap(layer / max(n - 1, 1)), lw=1)
        ax.set_title(f"{label}: {probe} per layer (light = deep)")
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
