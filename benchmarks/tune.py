"""Choose a preset's settings on the DEV split: train variants of a preset, evaluate each on the dev split of
the reading task, and print one markdown row per variant (with its held-out curve); ``--task toxicity``: the
toxicity / fluency trade-off on the dev prompts along training and across strengths (`tune_toxicity`)::

    python benchmarks/tune.py --task toxicity --out /tmp/tox --seeds 0 1 2 --steps 10 20 30 \\
        --plot tradeoff.png --variant base --variant dpo objective.name=dpo train.save_steps=10 \\
        train.save_total_limit=null --variant decpo-b1 train.save_steps=10 train.save_total_limit=null

The test split is the report's and is never used for tuning: this script evaluates ``--split dev`` only and
refuses ``--split test`` (and an override that would evaluate on it). Each variant is a list of dotted
overrides of the preset (``configs/default.yaml`` unless ``--config``); variants run one after another,
a minute or two each on 2 CPU cores::

    python benchmarks/tune.py --out /tmp/tune --variant dpo-s40 objective.name=dpo train.max_steps=40 \\
        --variant dpo-s60 objective.name=dpo train.max_steps=60 --write benchmarks/RESULTS.md

``--variant NAME override ...`` may be repeated; a variant whose NAME starts with ``base`` is not trained:
its preset's base model is evaluated as the others (its answer format from ``data.synthetic_answer``); ``--seeds 0 1 2`` trains each variant once per seed and
prints one row per seed. The evaluation is ``decpo eval --task reading --split dev`` on the first
``--limit`` dev items (the same items for every variant and seed: a multiple of 16 keeps them balanced) and
as many transfer items; generation (``gen/accuracy``) unless ``--no-generate``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from report import emit

REPO = Path(__file__).resolve().parents[1]
TUNING_SPLITS = ("dev",)
MEASURES = (
    ("ab_accuracy_debiased", "debiased (dev)"),
    ("ab_accuracy_mean_orders", "mean of orders"),
    ("letter/ab_accuracy_debiased", "letter-only debiased"),
    ("gen/accuracy", "gen. accuracy"),
    ("gen/exact_rate", "says answer"),
    ("ab_accuracy_user_wrong", "user wrong"),
    ("transfer/ab_accuracy_debiased", "transfer debiased"),
    ("preference_accuracy", "pref. acc"),
)


PENALTY_KEY = "eval/decorr/value"  # R on the held-out pairs, as decpo.training.trainer logs it


class TestSplitRefused(SystemExit):
    """Tuning on the test split: refused."""


def refuse_test(split: str, overrides: list[str] | None = None) -> None:
    """Exit with an error when ``split`` (or an override) points the tuning at anything but the dev split."""
    if split not in TUNING_SPLITS:
        raise TestSplitRefused(
            f"tune.py: --split {split!r} refused: tuning uses the dev split only; the test split is the "
            "report's (decpo run, decpo eval) and is never used to choose settings"
        )
    for override in overrides or []:
        if override.replace(" ", "").lower().endswith(("split=test", "split=eval_test")):
            raise TestSplitRefused(
                f"tune.py: override {override!r} refused: tuning never reads the test split"
            )


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[tuple[str, list[str]]]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder for the runs")
    parser.add_argument("--task", choices=("reading", "toxicity"), default="reading")
    parser.add_argument(
        "--config", default=None, help="default: configs/default.yaml, toxicity: configs/toxicity.yaml"
    )
    parser.add_argument("--split", default="dev", help="the evaluated split: dev (test is refused)")
    parser.add_argument("--limit", type=int, default=96, help="first N dev (and transfer) items")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--no-generate", action="store_true", help="log-prob measures only")
    parser.add_argument("--write", default=None, help="append the table to this markdown file")
    parser.add_argument("--plot", default=None, help="PNG of the trade-off: dev primary vs penalty removed")
    parser.add_argument(
        "--steps",
        type=int,
        nargs="*",
        default=[],
        help="toxicity: checkpoints evaluated besides the final model",
    )
    parser.add_argument(
        "--scorer",
        default="jigsaw-bilstm,profanity-check",
        help="toxicity: evaluation scorers (the first: gen/ measures)",
    )
    parser.add_argument(
        "--num-samples",
        type=int,
        default=0,
        help="toxicity: sampled continuations per prompt (0: greedy only)",
    )
    args, rest = parser.parse_known_args(argv)
    variants: list[tuple[str, list[str]]] = []
    for token in rest:
        if token == "--variant":
            variants.append(("", []))
        elif variants and not variants[-1][0]:
            variants[-1] = (token, [])
        elif variants:
            variants[-1][1].append(token)
        else:
            parser.error(f"unexpected {token!r}: start a variant with --variant NAME")
    if not variants:
        parser.error("give at least one --variant NAME override ...")
    refuse_test(args.split, [o for _, overrides in variants for o in overrides])
    if args.config is None:
        args.config = str(REPO / "configs" / ("toxicity.yaml" if args.task == "toxicity" else "default.yaml"))
    return args, variants


def curve(metrics_path: Path, key: str) -> str:
    """``step:value`` of ``key`` in a training's metrics.jsonl."""
    points = []
    for line in metrics_path.read_text().splitlines():
        row = json.loads(line)
        if key in row:
            points.append(f"{row['step']}:{row[key]:.2f}")
    return " ".join(points)


def penalty_values(metrics_path: Path) -> tuple[float, float] | None:
    """The penalty R on the held-out (dev) pairs at the first and the last evaluation (DecPO only; R is
    computed on the penalty's own tokens, so this is the decorrelation the penalty bought where it acts)."""
    values = [
        json.loads(line)[PENALTY_KEY]
        for line in metrics_path.read_text().splitlines()
        if f'"{PENALTY_KEY}"' in line
    ]
    return (values[0], values[-1]) if values else None


def plot_tradeoff(rows: list[dict], path: Path) -> None:
    """Dev primary outcome against the share of the penalty R removed (1 - R_end / R_start), one point per
    variant (mean over seeds, bars: min to max), DPO variants at 0."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for name in dict.fromkeys(r["variant"] for r in rows):
        mine = [r for r in rows if r["variant"] == name]
        xs = [1 - r["penalty"][1] / r["penalty"][0] if r["penalty"] else 0.0 for r in mine]
        ys = [r["primary"] for r in mine]
        x, y = sum(xs) / len(xs), sum(ys) / len(ys)
        ax.errorbar(
            x,
            y,
            xerr=[[x - min(xs)], [max(xs) - x]],
            yerr=[[y - min(ys)], [max(ys) - y]],
            fmt="o",
            capsize=3,
            label=f"{name} ({len(mine)} seeds)",
        )
    ax.set_xlabel("share of the penalty R removed on dev pairs, 1 - R_end / R_start")
    ax.set_ylabel("dev debiased A/B accuracy")
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str]) -> None:
    from decpo.config import load_config
    from decpo.evaluation.config import EvalConfig
    from decpo.evaluation.runner import evaluate
    from decpo.training.run import train

    args, variants = parse(argv)
    if args.task == "toxicity":
        import tune_toxicity

        return tune_toxicity.main(args, variants, argv)
    out = Path(args.out)
    lines = [
        f"Tuning on dev (`python benchmarks/tune.py {' '.join(argv)}`), reading task, first {args.limit} dev "
        "and transfer items, both option orders:",
        "",
        "| variant | seed | overrides | "
        + " | ".join(label for _, label in MEASURES)
        + " | chosen log-prob change (nats) | penalty R on dev, start -> end | train s "
        "| held-out reward acc by step |",
        "|---|---|---|" + "---|" * len(MEASURES) + "---|---|---|---|",
    ]
    print("\n".join(lines), flush=True)
    rows: list[dict] = []
    for name, overrides in variants:
        for seed in args.seeds:
            cfg = load_config(args.config, [*overrides, f"train.seed={seed}"])
            if cfg.data.task != "reading":
                raise SystemExit(f"tune.py: variant {name}: data.task must be reading, got {cfg.data.task!r}")
            run_dir = out / f"{name}-s{seed}"
            t0 = time.perf_counter()
            untrained = name.startswith("base")
            done = run_dir / "final_metrics.json"
            if untrained:
                metrics = None
            elif done.exists():  # finished before (an interrupted tuning rerun): not trained again
                if load_config(run_dir / "config.yaml").to_dict() != cfg.to_dict():
                    raise SystemExit(f"tune.py: {run_dir} was trained with another config: use a fresh --out")
                metrics = run_dir / "metrics.jsonl"
            else:
                metrics = train(cfg, run_dir).output_dir / "metrics.jsonl"
            train_s = (
                json.loads(done.read_text())["wall_time_s"] if done.exists() else time.perf_counter() - t0
            )
            eval_dir = out / f"{name}-s{seed}-eval"
            earlier = (
                json.loads((eval_dir / "results.json").read_text())
                if (eval_dir / "results.json").exists()
                else None
            )
            wanted = {"split": args.split, "limit": args.limit, "generate": not args.no_generate}
            if earlier is not None and any(earlier["config"][k] != v for k, v in wanted.items()):
                raise SystemExit(f"tune.py: {eval_dir} was evaluated with other settings: use a fresh --out")
            res = (
                earlier
                if earlier is not None
                else evaluate(
                    EvalConfig(
                        task="reading",
                        model=cfg.model.model_name_or_path if untrained else str(run_dir),
                        split=args.split,
                        limit=args.limit,
                        beta=cfg.train.beta,
                        synthetic_answer=cfg.data.synthetic_answer,
                        generate=not args.no_generate,
                        progress=False,
                    ),
                    eval_dir,
                ).results
            )["metrics"]
            reward = res.get("chosen_reward")
            chosen_nats = "-" if reward is None else f"{reward['value'] / cfg.train.beta:+.1f}"
            cells = [f"{res[m]['value']:.3f}" if m in res else "n/a" for m, _ in MEASURES]
            penalty = None if metrics is None else penalty_values(metrics)
            rows.append(
                {"variant": name, "seed": seed, "primary": res[MEASURES[0][0]]["value"], "penalty": penalty}
            )
            (out / "rows.json").write_text(json.dumps(rows, indent=1))
            r_words = f"{penalty[0]:.1f} -> {penalty[1]:.1f}" if penalty else "-"
            lines.append(
                f"| {name} | {seed} | `{' '.join(overrides)}` | "
                + " | ".join(cells)
                + f" | {chosen_nats} | {r_words} | {train_s:.0f} "
                f"| {'-' if metrics is None else curve(metrics, 'eval/rewards/accuracies')} |"
            )
            print(lines[-1], flush=True)
    if args.plot:
        plot_tradeoff(rows, Path(args.plot))
    emit(lines, args.write)


if __name__ == "__main__":
    main(sys.argv[1:])
