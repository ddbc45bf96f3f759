"""The ``decpo pairs`` subcommand: preference pairs from a model's own samples, ranked by a scorer; the
sampling flags are generated from `SamplingSettings`."""

from __future__ import annotations

import argparse
from pathlib import Path

from decpo.cli.flags import add_dataclass_flags, from_flags, positive_int
from decpo.config.sampling import PREFER, SamplingSettings, scorer_spec
from decpo.data.prompts import PROMPT_TASKS, load_prompts
from decpo.io import check_writable, file_lock_path, output_lock, removed_if_start_fails
from decpo.scoring.classifiers import make_scorer

FLAGS = {"include_greedy": "greedy"}  # fields whose flag has another name


def add_parser(subparsers) -> None:
    """Register ``pairs`` on the ``decpo`` subparsers; its ``func`` returns an exit code."""
    p = subparsers.add_parser(
        "pairs",
        help="build preference pairs from a model's own samples, ranked by a scorer",
        description="Sample continuations per prompt, score each, keep the best valid and the worst as "
        "chosen/rejected when their gap exceeds --min-gap. Writes TRL-format JSONL, a sample log (resume: "
        "rerun the same command) and a summary. Train on it with data.path=<output>.",
    )
    p.add_argument(
        "--model", default="default", help="'default', a Hub id, a folder or a .gguf (default: default)"
    )
    p.add_argument(
        "--prompts",
        required=True,
        help="a task (toxicity: RealToxicityPrompts challenging prompts; reframing: situations), a "
        "RealToxicityPrompts-format or {prompt: ...} JSONL, or a file with one prompt a line",
    )
    p.add_argument(
        "--split",
        default=None,
        choices=("train", "eval", "all"),
        help="prompts used (default: train for a task, so that its eval split stays for evaluation; all for a file)",
    )
    p.add_argument(
        "--limit", type=positive_int, default=None, help="only the first N prompts, N >= 1 (default: all)"
    )
    settings = add_dataclass_flags(
        p,
        SamplingSettings,
        exclude=("max_prompt_tokens",),  # a run config's setting (pairs.max_prompt_tokens), no flag
        flags=FLAGS,
        choices={"prefer": (*PREFER, "auto")},
    )
    p.add_argument(
        "--dtype",
        default="float32",
        choices=("float32", "bfloat16", "float16"),
        help="model dtype (default: %(default)s)",
    )
    p.add_argument(
        "--data-dir", default=None, help="data folder for task prompts (default: env DECPO_DATA_DIR)"
    )
    p.add_argument(
        "--output", required=True, help="pairs JSONL to write (its .samples.jsonl and .summary.json beside)"
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run_pairs, settings_fields=settings)


def run_pairs(args: argparse.Namespace) -> int:
    split = args.split or ("train" if args.prompts in PROMPT_TASKS else "all")
    settings = from_flags(SamplingSettings, args, args.settings_fields, FLAGS)
    prompts = [
        r["prompt"] for r in load_prompts(args.prompts, split=split, data_dir=args.data_dir, limit=args.limit)
    ]
    output = Path(args.output)
    # no folder left by a failed start; one writer per output (the pairs, their sample log and summary), before
    # any write
    with (
        removed_if_start_fails(output.parent),
        output_lock(file_lock_path(output), f"pairs output {output}", "decpo pairs"),
    ):
        return _build(args, settings, prompts, split, output)


def _build(
    args: argparse.Namespace, settings: SamplingSettings, prompts: list[str], split: str, output: Path
) -> int:
    # lazy: the model and the sampling pull in torch and transformers (slow for `decpo --help`)
    from decpo.models import check_model_spec, load_model, load_tokenizer
    from decpo.pairs.sampling import build_pairs, side_files

    scorer = make_scorer(scorer_spec(args.scorer))  # a ScorerError: one line (a DecPOError)
    check_model_spec(args.model)  # a missing model before any write
    check_writable(output.parent)
    tokenizer = load_tokenizer(args.model)
    model = load_model(args.model, dtype=args.dtype)
    summary = build_pairs(
        model,
        tokenizer,
        prompts,
        scorer,
        settings,
        output,
        model_name=args.model,
        source=f"{args.prompts} ({split})",
        progress=not args.no_progress,
    )
    s = summary["scores"]
    print(
        f"pairs: {summary['pairs']} of {summary['prompts']} prompts kept (skipped {summary['skipped']}); "
        f"valid samples {summary['valid_share']:.0%}\n"
        f"  score of all samples mean {s['all_samples']['mean']}, chosen mean {s['chosen']['mean']}, "
        f"rejected mean {s['rejected']['mean']}, gap median {s['gap']['p50']}\n"
        f"  {output}\n  {side_files(output)[1]}"
    )
    return 0
