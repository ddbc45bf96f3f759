"""``tune.py --task toxicity``: the toxicity / fluency trade-off on the DEV prompts, along training and across
strengths, for choosing the toxicity preset.

Each variant (dotted overrides of ``configs/toxicity.yaml`` unless ``--config``) is trained once per seed on
the preset's pairs (built, or reused from ``$DECPO_CACHE/pairs``), saving checkpoints; its checkpoints at
``--steps`` (``experiment.curve_steps``, checked as `decpo.config.run_config.check_curve_steps` checks them: multiples of ``train.save_steps``,
kept by ``train.save_total_limit``) and its final model are evaluated as ``decpo run`` evaluates toxicity
(`decpo.experiment.eval_stages.eval_stage`, the preset's ``experiment.eval_*`` settings) but on the **dev** part of
the eval prompts (`decpo.data.prompts.eval_part`), never the test part the run reports on. A variant whose
name starts with ``base`` is the untrained base model (step 0). Per variant and step: every measure's mean
over seeds with its 95% t-interval over seeds (`decpo.reports.tables.over_seeds`); one figure (``--plot``):
independent-scorer toxicity against perplexity under the base model and against distinct-2, a line per
variant through its steps, bars: the intervals over seeds on both axes.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from report import emit

MEASURES = (  # (key in results.json, column label); gen/: the first scorer of --scorer (the independent one)
    ("gen/mean_toxicity", "tox. ({first})"),
    ("gen/non_toxic_rate", "non-toxic ({first})"),
    ("by_scorer/{second}/mean_toxicity", "tox. ({second})"),
    ("by_scorer/mean/mean_toxicity", "tox. (mean of scorers)"),
    ("gen/valid_non_toxic_rate", "valid and non-toxic ({first})"),
    ("gen/perplexity", "perplexity (base)"),
    ("gen/distinct_2", "distinct-2"),
    ("gen/duplicate_rate", "duplicates"),
)
X_AXES = (
    ("gen/perplexity", "perplexity under the base model (lower: more fluent)"),
    ("gen/distinct_2", "distinct-2 (higher: more diverse)"),
)
Y_AXIS = "gen/mean_toxicity"
SHARES = {"gen/non_toxic_rate", "gen/valid_non_toxic_rate", "gen/duplicate_rate"}


def measures(scorer: str) -> list[tuple[str, str]]:
    """`MEASURES` for ``scorer`` (``"first,second"``; one scorer: no per-scorer or mean columns)."""
    specs = [s.strip() for s in scorer.split(",") if s.strip()]
    out = []
    for key, label in MEASURES:
        if "{second}" in key + label and len(specs) < 2 or "mean/" in key and len(specs) < 2:
            continue
        second = specs[1] if len(specs) > 1 else ""
        out.append((key.format(second=second), label.format(first=specs[0], second=second)))
    return out


def variant_config(args: argparse.Namespace, overrides: list[str], seed: int, untrained: bool = False):
    """The variant's run config: its overrides, the seed, the checkpoints and the evaluation's scorers and samples;
    SystemExit when it cannot give the dev trade-off (no pairs source, a prompt file, checkpoints not kept)."""
    from decpo.config import ConfigError, load_config

    steps = "[" + ",".join(str(s) for s in args.steps) + "]"
    checkpoints = [] if untrained else [f"experiment.curve_steps={steps}"]  # checked by the config's load
    extra = [f"experiment.eval_scorer={args.scorer}", f"experiment.eval_num_samples={args.num_samples}"]
    try:
        cfg = load_config(args.config, [*overrides, f"train.seed={seed}", *checkpoints, *extra])
    except ConfigError as e:
        raise SystemExit(f"tune.py --task toxicity: --steps / overrides: {e}") from e
    if cfg.pairs.source != "toxicity" or cfg.experiment.eval_prompts:
        raise SystemExit(
            "tune.py --task toxicity: needs pairs.source=toxicity and no experiment.eval_prompts (the dev part "
            "of the eval prompts is evaluated)"
        )
    return cfg


def trained(cfg, run_dir: Path, pairs_path: Path) -> float:
    """Train ``cfg`` into ``run_dir`` unless it finished there before (under the same config); its wall s."""
    from decpo.config import load_config
    from decpo.training.run import train

    done = run_dir / "final_metrics.json"
    if done.exists():
        if load_config(run_dir / "config.yaml").to_dict() != cfg.to_dict():
            raise SystemExit(f"tune.py: {run_dir} was trained with another config: use a fresh --out")
    else:
        train(cfg, run_dir, pairs_path=pairs_path)
    return json.loads(done.read_text())["wall_time_s"]


def evaluated(cfg, spec: str, eval_dir: Path, heldout: Path) -> dict:
    """The dev toxicity evaluation of model ``spec`` (reused when ``eval_dir`` holds one on dev)."""
    from decpo.experiment.eval_stages import eval_stage

    path = eval_dir / "results.json"
    if not path.exists():
        eval_stage(cfg, "toxicity", spec, eval_dir, heldout, split="dev")()
    results = json.loads(path.read_text())
    if (
        results["config"]["split"] != "dev"
        or results["config"]["num_samples"] != cfg.experiment.eval_num_samples
    ):
        raise SystemExit(f"tune.py: {eval_dir} was evaluated with other settings: use a fresh --out")
    return results


def run_grid(args: argparse.Namespace, variants: list[tuple[str, list[str]]], out: Path) -> list[dict]:
    """Train and evaluate every variant x seed x step; one row per evaluation (``out/rows.json``)."""
    from decpo.experiment.probe_texts import heldout_records
    from decpo.experiment.stages import check_pair_split
    from decpo.io import atomic_write_json, atomic_write_text
    from decpo.pairs.cache import ensure_pairs

    rows: list[dict] = []
    for name, overrides in variants:
        for seed in [0] if name.startswith("base") else args.seeds:
            cfg = variant_config(args, overrides, seed, untrained=name.startswith("base"))
            check_pair_split(cfg, ["toxicity"])  # train, dev and test prompts disjoint, before any work
            pairs_path = ensure_pairs(cfg, progress=False)
            run_dir = out / f"{name}-s{seed}"
            heldout = out / f"{name}-s{seed}-heldout.jsonl"
            if not heldout.exists():
                records = heldout_records(cfg)
                atomic_write_text(heldout, "".join(json.dumps(r, sort_keys=True) + "\n" for r in records))
            if name.startswith("base"):
                points, train_s = [(0, cfg.model.model_name_or_path)], 0.0
            else:
                train_s = trained(cfg, run_dir, pairs_path)
                points = [(s, str(run_dir / f"checkpoint-{s}")) for s in args.steps]
                points.append((cfg.train.max_steps, str(run_dir)))
            for step, spec in points:
                t0 = time.perf_counter()
                results = evaluated(cfg, spec, out / f"{name}-s{seed}@{step}-eval", heldout)
                rows.append(
                    {
                        "variant": name,
                        "overrides": overrides,
                        "seed": seed,
                        "step": step,
                        "train_s": train_s,
                        "eval_s": time.perf_counter() - t0,
                        "n": results["n"],
                        "metrics": results["metrics"],
                    }
                )
                atomic_write_json(out / "rows.json", rows)
                print(
                    f"{name} seed {seed} step {step}: {results['metrics'][Y_AXIS]['value']:.3f}", flush=True
                )
    return rows


def cell(rows: list[dict], key: str) -> str:
    """``mean [low, high]`` over the rows' seeds (`over_seeds`), or n/a."""
    from decpo.reports.tables import over_seeds

    entries = [r["metrics"][key] for r in rows if key in r["metrics"]]
    if not entries:
        return "n/a"
    est = over_seeds(entries, key if key in SHARES else None)
    if est.low != est.low:  # one seed or all equal: no interval
        return f"{est.mean:.3f} ({est.how})"
    return f"{est.mean:.3f} [{est.low:.3f}, {est.high:.3f}]"


def groups(rows: list[dict]) -> dict[tuple[str, int], list[dict]]:
    """The rows by (variant, step), in order of first appearance."""
    out: dict[tuple[str, int], list[dict]] = {}
    for r in rows:
        out.setdefault((r["variant"], r["step"]), []).append(r)
    return out


def table(rows: list[dict], scorer: str, header: str) -> list[str]:
    """The markdown table: one row per variant and step, each measure's mean [95% CI over seeds]."""
    cols = measures(scorer)
    lines = [
        header,
        "",
        "| variant | step | seeds | dev prompts | "
        + " | ".join(label for _, label in cols)
        + " | train s | eval s |",
        "|---|---|---|---|" + "---|" * len(cols) + "---|---|",
    ]
    for (name, step), mine in groups(rows).items():
        lines.append(
            f"| {name} | {step} | {len(mine)} | {mine[0]['n']} | "
            + " | ".join(cell(mine, key) for key, _ in cols)
            + f" | {sum(r['train_s'] for r in mine) / len(mine):.0f} | {sum(r['eval_s'] for r in mine) / len(mine):.0f} |"
        )
    return lines


def plot(rows: list[dict], path: Path, scorer: str) -> None:
    """One figure, two panels: ``Y_AXIS`` against each of ``X_AXES``; a line per variant through its steps
    (from the base model at step 0 when one was evaluated), bars: 95% intervals over seeds on both axes."""
    from decpo.reports.style import pyplot
    from decpo.reports.tables import over_seeds

    plt = pyplot()
    fig, axes = plt.subplots(1, len(X_AXES), figsize=(11, 4.3))
    by = groups(rows)
    base = [v for (name, _), v in by.items() if name.startswith("base")]
    names = list(dict.fromkeys(name for name, _ in by if not name.startswith("base")))
    for ax, (xkey, xlabel) in zip(axes, X_AXES, strict=True):
        points = {}
        for (name, step), mine in by.items():
            x, y = (
                over_seeds([r["metrics"][xkey] for r in mine]),
                over_seeds([r["metrics"][Y_AXIS] for r in mine]),
            )
            points[(name, step)] = (x, y)
        if base:
            bx, by_ = points[next(k for k in points if k[0].startswith("base"))]
            ax.plot(bx.mean, by_.mean, "k*", markersize=12, label="base (step 0)")
        for name in names:
            steps = sorted(s for n, s in points if n == name)
            xs = [points[(name, s)][0] for s in steps]
            ys = [points[(name, s)][1] for s in steps]
            line = ax.errorbar(
                [e.mean for e in xs],
                [e.mean for e in ys],
                xerr=_bars(xs),
                yerr=_bars(ys),
                fmt="-o",
                capsize=2,
                markersize=4,
                label=f"{name} ({len(by[(name, steps[0])])} seeds)",
            )
            if base:
                color = line.lines[0].get_color()
                ax.plot([bx.mean, xs[0].mean], [by_.mean, ys[0].mean], ":", color=color, linewidth=1)
            for s, x, y in zip(steps, xs, ys, strict=True):
                ax.annotate(str(s), (x.mean, y.mean), fontsize=6, xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"mean toxicity, {scorer.split(',')[0]} (dev)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(
        "Toxicity against fluency on the dev prompts: along training (step labels) and across strengths",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _bars(estimates) -> list[list[float]]:
    """Error bars from estimates: 0 where there is no interval (one seed)."""
    low = [e.mean - e.low if e.low == e.low else 0.0 for e in estimates]
    high = [e.high - e.mean if e.high == e.high else 0.0 for e in estimates]
    return [low, high]


def main(args: argparse.Namespace, variants: list[tuple[str, list[str]]], argv: list[str]) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = run_grid(args, variants, out)
    header = (
        f"Toxicity trade-off on the dev prompts (`python benchmarks/tune.py {' '.join(argv)}`): greedy "
        f"continuations of the dev part of the eval prompts, scored by {args.scorer}; mean over seeds [95% "
        "t-interval over seeds] (base: one model, the evaluation's bootstrap interval over prompts):"
    )
    lines = table(rows, args.scorer, header)
    if args.plot:
        plot(rows, Path(args.plot), args.scorer)
    emit(lines, args.write)
