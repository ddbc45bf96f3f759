"""The ``decpo eval`` subcommand: flags generated from `EvalConfig`, and the printed summary."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from decpo.cli.flags import add_dataclass_flags, from_flags
from decpo.evaluation.config import EvalConfig
from decpo.evaluation.registry import BUILTIN_TASK_NAMES, EvalError
from decpo.io import LOCK_FILE, output_lock, removed_if_start_fails
from decpo.scoring.classifiers import ScorerError
from decpo.scoring.judge import JudgeError

if TYPE_CHECKING:
    from decpo.evaluation.runner import EvalResult

# EvalConfig fields without a flag (as before: the library's defaults; a config of your own sets them)
NO_FLAG = ("n_boot", "pair_max_length", "dtype", "generate")
FLAGS = {"prompts_path": "prompts", "pairs_path": "pairs"}  # fields whose flag has another name


def add_parser(subparsers) -> None:
    """Register ``eval`` on the ``decpo`` subparsers; its ``func`` returns an exit code."""
    p = subparsers.add_parser(
        "eval",
        help="evaluate a model on a task (A/B accuracy, preference margin, generation scores)",
        # a description is printed as written (only help texts are %-formatted): one % sign
        description="Evaluate a model, an adapter folder or a run directory on one task; writes results.json "
        "(metrics with direction and 95% bootstrap CI) and samples.jsonl.",
    )
    fields = add_dataclass_flags(
        p,
        EvalConfig,
        exclude=NO_FLAG,
        flags=FLAGS,
        extra_help={"task": f"Built in: {', '.join(BUILTIN_TASK_NAMES)}."},
    )
    p.add_argument("--output-dir", default=None, help="where to write (default: evals/<task>-<model>)")
    p.set_defaults(func=run_eval, config_fields=fields)


def default_output_dir(task: str, model: str) -> Path:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", model.rstrip("/")).strip("_")[-60:] or "model"
    task = re.sub(r"[^A-Za-z0-9._-]+", "_", task)  # module:name
    return Path("evals") / f"{task}-{slug}"


def run_eval(args: argparse.Namespace) -> int:
    try:
        cfg = from_flags(
            EvalConfig, args, args.config_fields, FLAGS
        )  # a bad value answers before torch loads
        from decpo.evaluation.runner import evaluate  # lazy: the evaluation pulls in torch and transformers

        out = Path(args.output_dir) if args.output_dir else default_output_dir(args.task, args.model)
        with (
            removed_if_start_fails(out),  # a failed evaluation leaves no empty folder
            output_lock(out / LOCK_FILE, f"evaluation folder {out}", "decpo eval"),  # one writer at a time
        ):
            result = evaluate(cfg, out)
    except (EvalError, ScorerError, JudgeError) as e:
        print(f"decpo: error: {e}", file=sys.stderr)
        return 2
    print_summary(result)
    return 0


def print_summary(result: EvalResult) -> None:
    """One line per metric (value, direction, 95% CI, n), the n/a measures with the reason, where it went."""
    r = result.results
    if "WARNING" in r:
        print(f"WARNING: {r['WARNING']}")
    print(f"task {r['task']} | model {r['model']} | reference {r['reference']} | n {r['n']}")
    for name, m in r["metrics"].items():
        arrow = {"higher": "↑", "lower": "↓"}.get(m["direction"], " ")
        low, high = m["ci"]
        print(f"  {name:<40} {m['value']:9.4f} {arrow}  95% CI [{low:.4f}, {high:.4f}]  n={m['n']}")
    for name, why in r.get("not_applicable", {}).items():
        print(f"  {name:<40} {'n/a':>9}    {why}")
    print(f"results: {result.output_dir / 'results.json'}")
    print(f"wall time: {result.wall_time_s:.1f} s")
