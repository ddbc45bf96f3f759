"""Which settings make the embedded demo learn: train variants of the default preset, evaluate each on the
synthetic task, and print one markdown row per variant (with its held-out curve).

Each variant is a list of dotted overrides of ``configs/default.yaml`` (the ``objective.name=dpo`` runs
test whether the task is learned; DecPO variants test the regularizer). Runs one after another, a few
minutes each on 2 CPU cores::

    python benchmarks/tune_demo.py --out /tmp/tune --variant letter-lr5e-4 data.synthetic_answer=letter \\
        objective.name=dpo train.learning_rate=5e-4 --write benchmarks/RESULTS.md

``--variant NAME override ...`` may be repeated. The evaluation is ``decpo eval --task synthetic`` on the
first ``--limit`` held-out items of each split (the same items for every variant).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from report import emit

REPO = Path(__file__).resolve().parents[1]
MEASURES = (
    ("ab_accuracy_debiased", "debiased"),
    ("ab_accuracy_user_correct", "user right"),
    ("ab_accuracy_user_wrong", "user wrong"),
    ("transfer/ab_accuracy_mean_orders", "transfer"),
    ("preference_accuracy", "pref. acc"),
    ("reward_margin", "margin"),
)


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[tuple[str, list[str]]]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder for the runs")
    parser.add_argument("--config", default=str(REPO / "configs" / "default.yaml"))
    parser.add_argument("--limit", type=int, default=64)
    parser.add_argument("--write", default=None, help="append the table to this markdown file")
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
    return args, variants


def curve(metrics_path: Path, key: str) -> str:
    points = []
    for line in metrics_path.read_text().splitlines():
        row = json.loads(line)
        if key in row:
            points.append(f"{row['step']}:{row[key]:.2f}")
    return " ".join(points)


def main(argv: list[str]) -> None:
    from decpo.config import load_config
    from decpo.evaluation.config import EvalConfig
    from decpo.evaluation.runner import evaluate
    from decpo.probes.runner import load_texts, probe_models
    from decpo.training.run import train

    args, variants = parse(argv)
    out = Path(args.out)
    lines = [
        f"Demo tuning (`python benchmarks/tune_demo.py {' '.join(argv)}`), synthetic task, "
        f"{args.limit} held-out items per split:",
        "",
        "| variant | overrides | "
        + " | ".join(label for _, label in MEASURES)
        + " | chosen log-prob change (nats) | decorrelation at reg. layer, prompt-last | same, answer-last "
        "| train s | held-out reward acc by step |",
        "|---|---|" + "---|" * len(MEASURES) + "---|---|---|---|---|",
    ]
    for name, overrides in variants:
        cfg = load_config(args.config, overrides)
        layer = cfg.train.reg_layers[0]
        run_dir = out / name
        t0 = time.perf_counter()
        result = train(cfg, run_dir)
        train_s = time.perf_counter() - t0
        res = evaluate(
            EvalConfig(
                task="synthetic",
                model=str(run_dir),
                limit=args.limit,
                beta=cfg.train.beta,
                synthetic_answer=cfg.data.synthetic_answer,
                progress=False,
            ),
            out / f"{name}-eval",
        ).results["metrics"]
        chosen_nats = res["chosen_reward"]["value"] / cfg.train.beta
        decorr = {}
        for where, with_answer in (("prompt", False), ("answer", True)):
            texts = load_texts(cfg.data.task, args.limit, split="eval", with_answer=with_answer)
            report = probe_models(
                {name: str(run_dir / "final")},
                texts,
                out / f"{name}-probes-{where}",
                layers=[layer],
                probes=("decorrelation",),
                weights=False,
                progress=False,
            )
            decorr[where] = next(r["value"] for r in report.rows if r["probe"] == "decorrelation")
        cells = [f"{res[m]['value']:.3f}" if m in res else "n/a" for m, _ in MEASURES]
        lines.append(
            f"| {name} | `{' '.join(overrides)}` | "
            + " | ".join(cells)
            + f" | {chosen_nats:+.1f} | {decorr['prompt']:.4f} | {decorr['answer']:.4f} | {train_s:.0f} | {curve(result.output_dir / 'metrics.jsonl', 'eval/rewards/accuracies')} |"
        )
        print(lines[-1], flush=True)
    emit(lines, args.write)


if __name__ == "__main__":
    main(sys.argv[1:])
