"""Training curves from ``metrics.jsonl`` files: one PNG per measure, one line per method (the paper's Fig. 6).

Runs labelled ``<method>-s<seed>`` are grouped by method: the line is the mean over seeds at each step
logged by every seed, the band its 95% t-interval over seeds (no band with one seed). Each method keeps
its colour (`decpo.reports.style`).

Reward accuracy at a step where the policy still equals the reference (the step-0 evaluation, and the
first logged train step, whose forward runs before the first update): every reward is exactly 0, a tie,
and TRL counts a tie as wrong, so the logged accuracy is 0.0. Those points are not drawn as 0: they are
left out of the line and drawn as a hollow marker at 0.5 labelled "tie".
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from decpo.integrity import read_jsonl_log
from decpo.reports.probes import split_label
from decpo.reports.stats import t_interval
from decpo.reports.style import method_color, pyplot


@dataclass(frozen=True)
class Curve:
    name: str  # file stem: curve_<name>.png
    title: str
    ylabel: str
    keys: tuple[
        str, ...
    ]  # the first key a run logs is its series (the preference loss: loss/pref, else loss)
    accuracy: bool = False


PREF_LOSS_KEY = "train/loss/pref"  # a regularized method's preference loss (training.trainer)
REG_TERM_KEYS = ("train/loss/decorr", "train/loss/l1")  # its lambda x R, by regularizer

CURVES = (
    Curve(
        "train_rewards_margins",
        "train reward margin",
        "reward margin (chosen - rejected)",
        ("train/rewards/margins",),
    ),
    Curve(
        "eval_rewards_margins",
        "held-out reward margin",
        "reward margin (chosen - rejected)",
        ("eval/rewards/margins",),
    ),
    Curve(
        "train_rewards_accuracies",
        "train reward accuracy",
        "reward accuracy",
        ("train/rewards/accuracies",),
        accuracy=True,
    ),
    Curve(
        "eval_rewards_accuracies",
        "held-out reward accuracy",
        "reward accuracy",
        ("eval/rewards/accuracies",),
        accuracy=True,
    ),
    # DPO without a regularizer logs its preference loss as train/loss; DecPO and L1 as train/loss/pref
    Curve("train_loss_pref", "train preference loss", "preference loss", (PREF_LOSS_KEY, "train/loss")),
    Curve("eval_loss_pref", "held-out preference loss", "preference loss", ("eval/loss/pref", "eval/loss")),
    Curve(
        "train_loss_reg",
        "train regularizer term lambda x R",
        "lambda x R",
        REG_TERM_KEYS,
    ),
    Curve(
        "train_decorr_value",
        "train decorrelation penalty R",
        "R (regularizer value)",
        ("train/decorr/value",),
    ),
)

CAPTION = (
    "Lines: mean over seeds at each step; bands: 95% t-interval over seeds (none with one seed; "
    "clipped to [0, 1] for accuracies). "
    "Preference loss: `train/loss/pref` for a regularized method, `train/loss` for DPO (for SFT it is "
    "its NLL loss). Accuracy: the dashed line is chance (0.5); a step where the policy still equals the "
    "reference (step-0 evaluation, first train step) has every reward exactly 0, which TRL counts as "
    'wrong (accuracy 0.0): it is left out of the line and drawn as a hollow marker at 0.5 labelled "tie".'
)


def read_metrics(path: str | Path) -> list[dict]:
    """The rows of a ``metrics.jsonl`` (`decpo.integrity.read_jsonl_log`: a torn last line is dropped with a
    warning, a damaged line before it is an error naming the file and line)."""
    return read_jsonl_log(path)


def series(rows: Sequence[dict], key: str) -> tuple[list[int], list[float]]:
    points = sorted((int(r["step"]), float(r[key])) for r in rows if key in r)
    return [s for s, _ in points], [v for _, v in points]


def is_tie(row: dict, prefix: str) -> bool:
    """Policy = reference at this logged step: chosen and rejected rewards exactly 0."""
    return row.get(f"{prefix}/rewards/chosen") == 0.0 and row.get(f"{prefix}/rewards/rejected") == 0.0


def _run_series(rows: Sequence[dict], curve: Curve) -> tuple[str | None, dict[int, float], set[int]]:
    key = next((k for k in curve.keys if any(k in r for r in rows)), None)
    if key is None:
        return None, {}, set()
    prefix = key.split("/", 1)[0]
    values = {int(r["step"]): float(r[key]) for r in rows if key in r}
    ties = {int(r["step"]) for r in rows if key in r and is_tie(r, prefix)} if curve.accuracy else set()
    return key, values, ties


def method_series(runs: dict[str, list[dict]], curve: Curve):
    """``method -> (steps, mean, low|None, high|None, tie_steps, key, n_seeds)`` over the method's seeds."""
    grouped: dict[str, list[tuple[str, dict[int, float], set[int]]]] = defaultdict(list)
    for label, rows in runs.items():
        key, values, ties = _run_series(rows, curve)
        if values:
            grouped[split_label(label)[0]].append((key, values, ties))
    out = {}
    for method, per_seed in grouped.items():
        steps = sorted(set.intersection(*(set(v) for _, v, _ in per_seed)))
        ties = set.intersection(*(t for _, _, t in per_seed)) if curve.accuracy else set()
        line = [s for s in steps if s not in ties]
        ests = [t_interval([v[s] for _, v, _ in per_seed]) for s in line]
        band = len(per_seed) > 1
        out[method] = (
            line,
            [e.mean for e in ests],
            [e.low for e in ests] if band else None,
            [e.high for e in ests] if band else None,
            sorted(ties & set(steps)),
            per_seed[0][0],
            len(per_seed),
        )
    return out


def _order(method: str) -> tuple:
    known = ("dpo", "decpo", "l1", "simpo", "sft")
    return (known.index(method) if method in known else len(known), method)


def plot_curves(runs: dict[str, list[dict]], output_dir: str | Path, curves=CURVES) -> list[Path]:
    """``runs``: label (``dpo-s0``) -> metrics rows. Writes ``curve_<name>.png`` for the measures present."""
    plt = pyplot()
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for curve in curves:
        lines = method_series(runs, curve)
        if not lines:
            continue
        fig, ax = plt.subplots(figsize=(5.8, 3.8))
        tie_labelled = False
        for method in sorted(lines, key=_order):
            steps, mean, low, high, ties, key, n = lines[method]
            color = method_color(method)
            label = f"{method} (n={n})" + (" NLL" if method == "sft" and key.endswith("/loss") else "")
            ax.plot(steps, mean, marker="o", markersize=3, color=color, label=label)
            if low is not None and steps:
                if curve.accuracy:  # a t-band of few seeds can leave [0, 1]: clip it to what is possible
                    low, high = [max(0.0, x) for x in low], [min(1.0, x) for x in high]
                ax.fill_between(steps, low, high, color=color, alpha=0.2, lw=0)
            if ties:
                ax.scatter(
                    ties,
                    [0.5] * len(ties),
                    facecolors="none",
                    edgecolors=color,
                    s=40,
                    zorder=3,
                    label=None if tie_labelled else "tie (policy = reference)",
                )
                tie_labelled = True
        if curve.accuracy:
            ax.axhline(0.5, color="gray", ls="--", lw=1, label="chance")
            ax.set_ylim(-0.03, 1.03)
        ax.set_xlabel("step")
        ax.set_ylabel(curve.ylabel)
        ax.set_title(curve.title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = output_dir / f"curve_{curve.name}.png"
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
    plt = pyplot()
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
        ax.set_ylabel(probe)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
