"""``report.md`` of an experiment folder: results table, DecPO - DPO, curves, probes, provenance."""

from __future__ import annotations

import csv
import datetime
import json
from pathlib import Path

from decpo.config import RunConfig
from decpo.io import atomic_write_text
from decpo.reports.curves import plot_curves, plot_probe_dynamics, read_metrics
from decpo.reports.tables import available_columns, difference, markdown_table, results_table

BASE = "base"


def _load_results(output_dir: Path, models: list[str], tasks: list[str]) -> dict[str, dict[str, list[dict]]]:
    """``method -> task -> [results.json per seed]`` (labels ``dpo-s0`` fold into method ``dpo``)."""
    out: dict[str, dict[str, list[dict]]] = {}
    for label in models:
        method = label.rsplit("-s", 1)[0] if label != BASE else BASE
        for task in tasks:
            path = output_dir / "eval" / task / label / "results.json"
            if path.exists():
                out.setdefault(method, {}).setdefault(task, []).append(json.loads(path.read_text()))
    return out


def _verdict(diff, direction: str) -> str:
    better = diff.low > 0 if direction == "higher" else diff.high < 0
    worse = diff.high < 0 if direction == "higher" else diff.low > 0
    return "DecPO better" if better else "DecPO worse" if worse else "no clear difference (CI includes 0)"


def write_report(
    output_dir: str | Path,
    cfg: RunConfig,
    *,
    models: list[str],
    tasks: list[str],
    command: str,
    total_wall_s: float,
) -> Path:
    output_dir = Path(output_dir)
    figures = output_dir / "figures"
    methods = [BASE] + [m for m in cfg.experiment.methods]
    results = _load_results(output_dir, models, tasks)
    columns = available_columns(results)
    lines = [
        "# DecPO experiment report",
        "",
        f"Generated {datetime.datetime.now().isoformat(timespec='seconds')} by `{command}`.",
        f"Model `{cfg.model.name}`, training data `{cfg.data.path or cfg.data.task}`, methods "
        f"{', '.join(cfg.experiment.methods)}, seeds {cfg.experiment.seeds}, evaluated on {', '.join(tasks) or 'nothing'}.",
        "",
        "## Results",
        "",
    ]
    n_seeds = len(cfg.experiment.seeds)
    lines.append(
        "Each cell: mean [95% CI]. "
        + (
            f"Over {n_seeds} seeds (t-interval)."
            if n_seeds > 1
            else "One seed: the interval is the evaluation's bootstrap over items, not over seeds."
        )
        + " `base` is the untrained model."
    )
    lines.append("")
    if columns:
        lines.append(markdown_table(results_table(results, methods, columns)))
    else:
        lines.append("No evaluation results were found.")
    lines.append("")

    if "dpo" in results and "decpo" in results and columns:
        lines += ["### DecPO - DPO", "", "| measure | DecPO - DPO [95% CI] | verdict |", "|---|---|---|"]
        for task, metric, label in columns:
            a = [r["metrics"][metric] for r in results["decpo"].get(task, []) if metric in r["metrics"]]
            b = [r["metrics"][metric] for r in results["dpo"].get(task, []) if metric in r["metrics"]]
            if a and len(a) == len(b):
                d = difference(a, b)
                direction = a[0].get("direction", "higher")
                verdict = _verdict(d, direction) if direction in ("higher", "lower") else "-"
                lines.append(f"| {label} ({direction} is better) | {d.fmt()} | {verdict} |")
        lines += [
            "",
            "One seed: the CI of a difference is the normal approximation from the two bootstrap CIs (unpaired, "
            "conservative); several seeds: t-interval of the per-seed differences.",
            "",
        ]

    runs = {
        label: read_metrics(output_dir / "train" / label / "metrics.jsonl")
        for label in models
        if label != BASE and (output_dir / "train" / label / "metrics.jsonl").exists()
    }
    curves = plot_curves(runs, figures)
    if curves:
        lines += [
            "## Training curves",
            "",
            "Train and held-out reward margin and accuracy, loss terms (Fig. 6).",
            "",
        ]
        lines += [f"![{p.stem}](figures/{p.name})" for p in curves]
        lines.append("")
    dynamics = plot_probe_dynamics(runs, figures / "probe_dynamics_decorrelation.png")
    if dynamics:
        lines += ["## Probes during training (Fig. 4)", "", f"![dynamics](figures/{dynamics.name})", ""]

    probes_csv = output_dir / "probes" / "probes.csv"
    if probes_csv.exists():
        lines += ["## Monosemanticity probes (Fig. 3-5)", ""]
        lines += _probe_summary(probes_csv)
        for png in sorted((output_dir / "probes").glob("*.png")):
            if png.name.startswith(("decorrelation", "variance", "hoyer")):
                lines.append(f"![{png.stem}](probes/{png.name})")
        lines += ["", "All probes per layer: `probes/probes.csv`; every plot: `probes/*.png`.", ""]

    lines += _provenance(output_dir, total_wall_s)
    path = output_dir / "report.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def _probe_summary(probes_csv: Path) -> list[str]:
    """Mean over layers of each activation probe per model, and the layers where DecPO most exceeds DPO."""
    with open(probes_csv, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["site"] == "mlp.up_proj"]
    per: dict[tuple[str, str], list[float]] = {}
    for r in rows:
        per.setdefault((r["model"], r["probe"]), []).append(float(r["value"]))
    models = sorted({m for m, _ in per}, key=lambda m: (m != BASE, m))
    probes = [
        p for p in ("decorrelation", "variance", "hoyer", "near_zero") if any((m, p) in per for m in models)
    ]
    out = [
        "Mean over layers (mlp.up_proj, last token of each text):",
        "",
        "| model | " + " | ".join(probes) + " |",
    ]
    out.append("|---|" + "---|" * len(probes))
    for m in models:
        cells = [f"{sum(per[(m, p)]) / len(per[(m, p)]):.4f}" if (m, p) in per else "n/a" for p in probes]
        out.append(f"| {m} | " + " | ".join(cells) + " |")
    dec = {
        int(r["layer"]): float(r["value"])
        for r in rows
        if r["model"] == "decpo" and r["probe"] == "decorrelation"
    }
    dpo = {
        int(r["layer"]): float(r["value"])
        for r in rows
        if r["model"] == "dpo" and r["probe"] == "decorrelation"
    }
    base = {
        int(r["layer"]): float(r["value"])
        for r in rows
        if r["model"] == BASE and r["probe"] == "decorrelation"
    }
    out.append("")
    if dpo and base:
        rise = sorted(dpo, key=lambda layer: dpo[layer] - base.get(layer, 0.0), reverse=True)[:3]
        out.append(
            "Decorrelation DPO - base, largest at layers "
            + ", ".join(f"{layer} ({dpo[layer] - base[layer]:+.4f})" for layer in rise)
            + f"; layers where DPO raised it: {sum(dpo[k] > base[k] for k in dpo)} of {len(dpo)}."
        )
    if dec and dpo:
        top = sorted(dec, key=lambda layer: dec[layer] - dpo.get(layer, 0.0), reverse=True)[:3]
        out.append(
            "Decorrelation DecPO - DPO, largest at layers "
            + ", ".join(f"{layer} ({dec[layer] - dpo[layer]:+.4f})" for layer in top)
            + f"; layers where DecPO is higher: {sum(dec[k] > dpo[k] for k in dec)} of {len(dec)}."
        )
    out.append("")
    return out


def _provenance(output_dir: Path, total_wall_s: float) -> list[str]:
    lines = ["## How these numbers were made", ""]
    stages_path = output_dir / "stages.json"
    if stages_path.exists():
        stages = json.loads(stages_path.read_text())
        lines += ["| stage | wall time (s) | config key |", "|---|---|---|"]
        lines += [f"| {name} | {s.get('wall_time_s', '-')} | `{s['key']}` |" for name, s in stages.items()]
        lines.append("")
    lines.append(f"This invocation: {total_wall_s:.0f} s (stages done before were skipped).")
    env_files = sorted((output_dir / "train").glob("*/env.json"))
    if env_files:
        env = json.loads(env_files[0].read_text())
        lines.append(
            "Versions: "
            + ", ".join(
                f"{k} {env[k]}" for k in ("decpo", "torch", "transformers", "trl", "peft") if k in env
            )
            + f"; git {env.get('git') or 'n/a'}; device {env.get('device')}."
        )
    lines.append(
        "Resolved config: `config.yaml`; each training run: `train/<method>-s<seed>/` (config.yaml, env.json, "
        "metrics.jsonl); each evaluation: `eval/<task>/<model>/` (results.json, samples.jsonl, run.json)."
    )
    return lines


def write_sweep(output_dir: str | Path, runs: dict[int, str], tasks: list[str], command: str) -> Path:
    """``sweep.csv`` and one plot per task of the headline measure against the regularized layer (Fig. 7)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from decpo.reports.tables import HEADLINE

    output_dir = Path(output_dir)
    rows = []
    for layer, label in sorted(runs.items()):
        for task in tasks:
            path = output_dir / "eval" / task / label / "results.json"
            if not path.exists():
                continue
            metrics = json.loads(path.read_text())["metrics"]
            for t, metric, _ in HEADLINE:
                if t == task and metric in metrics:
                    e = metrics[metric]
                    rows.append(
                        {
                            "layer": layer,
                            "task": task,
                            "metric": metric,
                            "value": e["value"],
                            "ci_low": e["ci"][0],
                            "ci_high": e["ci"][1],
                        }
                    )
    text = "layer,task,metric,value,ci_low,ci_high\n" + "".join(
        f"{r['layer']},{r['task']},{r['metric']},{r['value']},{r['ci_low']},{r['ci_high']}\n" for r in rows
    )
    atomic_write_text(output_dir / "sweep.csv", text)
    lines = ["# DecPO layer sweep", "", f"Generated by `{command}`.", ""]
    for task in tasks:
        task_rows = [r for r in rows if r["task"] == task]
        if not task_rows:
            continue
        metric = task_rows[0]["metric"]
        pts = [r for r in task_rows if r["metric"] == metric]
        fig, ax = plt.subplots(figsize=(5.5, 3.6))
        ax.errorbar(
            [r["layer"] for r in pts],
            [r["value"] for r in pts],
            yerr=[[r["value"] - r["ci_low"] for r in pts], [r["ci_high"] - r["value"] for r in pts]],
            marker="o",
            capsize=3,
        )
        ax.set_xlabel("regularized layer")
        ax.set_title(f"{task}: {metric}")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        png = output_dir / f"sweep_{task}.png"
        fig.savefig(png, dpi=110)
        plt.close(fig)
        lines += [
            f"## {task}",
            "",
            f"![sweep](sweep_{task}.png)",
            "",
            "| layer | value [95% CI] |",
            "|---|---|",
        ]
        lines += [f"| {r['layer']} | {r['value']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}] |" for r in pts]
        lines.append("")
    path = output_dir / "sweep.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path
