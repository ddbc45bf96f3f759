"""The ``decpo eval`` subcommand: argparse wiring and the printed summary."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from decpo.evaluation.registry import task_names
from decpo.scoring.classifiers import DEFAULT_TOXICITY_SCORER


def add_parser(subparsers) -> None:
    """Register ``eval`` on the ``decpo`` subparsers; its ``func`` returns an exit code."""
    p = subparsers.add_parser(
        "eval",
        help="evaluate a model on a task (A/B accuracy, preference margin, generation scores)",
        description="Evaluate a model, an adapter folder or a run directory on one task; writes results.json "
        "(metrics with direction and 95%% bootstrap CI) and samples.jsonl.",
    )
    p.add_argument("--model", default="default", help="'default', a Hub id, a folder, a .gguf or a run dir")
    p.add_argument(
        "--task",
        required=True,
        help=f"a registered task ({', '.join(task_names())}), or module:name: import the module, whose "
        "@register_task decorators register its tasks, and run its task name (see decpo.evaluation.registry)",
    )
    p.add_argument("--limit", type=int, default=None, help="first N items of each evaluated set")
    p.add_argument("--seed", type=int, default=0, help="synthetic data and bootstrap seed (default 0)")
    p.add_argument(
        "--reference",
        default=None,
        help="reference model for reward margins (default: the base model of the adapter or of the training "
        "run; a model with neither is its own reference and its reward measures are n/a)",
    )
    p.add_argument("--max-new-tokens", type=int, default=None, help="default 64; 20 for toxicity")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--beta", type=float, default=0.1, help="DPO beta of the implicit reward (default 0.1)")
    p.add_argument("--data-dir", default=None, help="data folder (default: env DECPO_DATA_DIR)")
    p.add_argument(
        "--judge", default=None, help="local:<model spec> or openai:<model> (paper's YES/NO judge)"
    )
    p.add_argument(
        "--scorer",
        default=DEFAULT_TOXICITY_SCORER,
        help="toxicity scorer: profanity-check, hf:<id|dir>, detoxify:<ckpt>, perspective",
    )
    p.add_argument(
        "--prompts",
        default=None,
        help="toxicity: a RealToxicityPrompts-format (or {prompt: ...}) JSONL, used whole (default: the eval "
        "split of the data directory's challenging prompts)",
    )
    p.add_argument(
        "--pairs",
        default=None,
        help="toxicity: held-out pairs (TRL JSONL) of the pairs/ measures (default: hh-rlhf harmless test pairs)",
    )
    p.add_argument("--output-dir", default=None, help="where to write (default: evals/<task>-<model>)")
    p.add_argument(
        "--chat-template",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="lay out prompts and answers in the model's chat template, for log-prob measures and generation "
        "prompts (--no-chat-template: raw text). Default: as the model was trained (data.chat_template in "
        "the run's config.yaml for a run's final/ or checkpoint), raw text for any other model",
    )
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=run_eval)


def default_output_dir(task: str, model: str) -> Path:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", model.rstrip("/")).strip("_")[-60:] or "model"
    task = re.sub(r"[^A-Za-z0-9._-]+", "_", task)  # module:name
    return Path("evals") / f"{task}-{slug}"


def run_eval(args: argparse.Namespace) -> int:
    from decpo.evaluation.config import EvalConfig
    from decpo.evaluation.registry import EvalError
    from decpo.evaluation.runner import evaluate
    from decpo.scoring.classifiers import ScorerError
    from decpo.scoring.judge import JudgeError

    try:
        cfg = EvalConfig(
            task=args.task,
            model=args.model,
            reference=args.reference,
            limit=args.limit,
            seed=args.seed,
            max_new_tokens=args.max_new_tokens,
            batch_size=args.batch_size,
            data_dir=args.data_dir,
            judge=args.judge,
            scorer=args.scorer,
            beta=args.beta,
            chat_template=args.chat_template,
            prompts_path=args.prompts,
            pairs_path=args.pairs,
            progress=not args.no_progress,
        )
        out = Path(args.output_dir) if args.output_dir else default_output_dir(args.task, args.model)
        result = evaluate(cfg, out)
    except (EvalError, ScorerError, JudgeError) as e:
        print(f"decpo: error: {e}", file=sys.stderr)
        return 2
    r = result.results
    print(f"task {r['task']} | model {r['model']} | reference {r['reference']} | n {r['n']}")
    for name, m in r["metrics"].items():
        arrow = {"higher": "↑", "lower": "↓"}.get(m["direction"], " ")
        low, high = m["ci"]
        print(f"  {name:<40} {m['value']:9.4f} {arrow}  95% CI [{low:.4f}, {high:.4f}]  n={m['n']}")
    for name, why in r.get("not_applicable", {}).items():
        print(f"  {name:<40} {'n/a':>9}    {why}")
    print(f"results: {result.output_dir / 'results.json'}")
    print(f"wall time: {result.wall_time_s:.1f} s")
    return 0
