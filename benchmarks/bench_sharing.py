"""Prefix sharing against TRL's layout: step time on CAA sycophancy (long prompt, ~3 answer tokens).

TRL runs ``prompt + chosen`` and ``prompt + rejected`` as two rows; with ``share_prompt`` the prompt is
processed once (packed ``prompt | chosen | rejected``, block attention mask). Every variant trains the same
model (fresh copy, same seed, LoRA as in configs/default.yaml) on the same batches, interleaved round after
round; a step is the loss forward (policy and, as TRL does by default, the reference) plus backward.
Reported: each variant's step-time ratio to plain TRL `DPOTrainer` (min / median / max over rounds), and the
first-step losses, which must agree.

    DECPO_DATA_DIR=../shared/data python benchmarks/bench_sharing.py --model default
    python benchmarks/bench_sharing.py --model tiny-random-llama       # seconds, smoke
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_step import time_step  # noqa: E402
from report import emit, spread  # noqa: E402

# name -> (trainer, share_prompt, pack_pairs, regularizer)
VARIANTS = {
    "trl_dpo": ("trl", False, False, None),
    "decpo_trainer_dpo": ("decpo", False, False, None),
    "shared_dpo": ("decpo", True, False, None),
    "shared_packed_dpo": ("decpo", True, True, None),
    "decpo_1layer": ("decpo", False, False, "decorrelation"),
    "shared_decpo_1layer": ("decpo", True, False, "decorrelation"),
}


def build(variant: str, model_name: str, records, tmp: Path, batch_size: int, max_length: int):
    from datasets import Dataset
    from peft import LoraConfig
    from trl import DPOConfig, DPOTrainer

    from decpo.config.trainer_args import DecPOConfig
    from decpo.models import load_model, load_tokenizer, num_layers
    from decpo.training.trainer import DecPOTrainer

    kind, share, pack, reg = VARIANTS[variant]
    tokenizer = load_tokenizer(model_name)
    model = load_model(model_name, seed=0)
    common = dict(
        output_dir=str(tmp / variant),
        per_device_train_batch_size=batch_size,
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        disable_tqdm=True,
        max_length=max_length,
        precompute_ref_log_probs=False,  # TRL's default: the reference forward is part of every step
        learning_rate=1e-4,
        bf16=False,  # TRL's configs default to bf16, even on a CPU
    )
    peft = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "up_proj"])
    dataset = Dataset.from_list(records)
    if kind == "trl":
        args = DPOConfig(**common)
        return DPOTrainer(
            model=model, args=args, train_dataset=dataset, processing_class=tokenizer, peft_config=peft
        )
    args = DecPOConfig(
        **common,
        share_prompt=share,
        pack_pairs=pack,
        reg_type=reg,
        reg_layers=[num_layers(model) // 2],
        reg_tokens="last",
    )
    return DecPOTrainer(
        model=model, args=args, train_dataset=dataset, processing_class=tokenizer, peft_config=peft
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-random-llama")
    parser.add_argument(
        "--task", default="sycophancy", help="a decpo task with real data (sycophancy, toxicity)"
    )
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument(
        "--variants",
        default="trl_dpo,shared_dpo,decpo_1layer,shared_decpo_1layer",
        help=f"comma-separated, of {', '.join(VARIANTS)} (each holds a model copy in memory)",
    )
    parser.add_argument("--write", default=None, help="append a section to this markdown file")
    args = parser.parse_args()

    from decpo.data import load_task

    data_dir = os.environ.get("DECPO_DATA_DIR")
    if not data_dir:
        sys.exit("set DECPO_DATA_DIR to the folder with the task data (see ../shared/data/SOURCES.md)")
    records = load_task(args.task, "train", data_dir=data_dir)[
        : args.batch_size * (args.rounds + args.warmup)
    ]
    records = [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in records]
    variants = args.variants.split(",")
    if "trl_dpo" not in variants:
        variants.insert(0, "trl_dpo")
    with tempfile.TemporaryDirectory() as tmp:
        trainers = {
            v: build(v, args.model, records, Path(tmp), args.batch_size, args.max_length) for v in variants
        }
        # each round uses the next batch of pairs; every variant sees the same pairs, collated its own way
        batches = {
            v: [
                t._prepare_inputs(
                    t.data_collator(
                        [t.train_dataset[i] for i in range(r * args.batch_size, (r + 1) * args.batch_size)]
                    )
                )
                for r in range(args.warmup + args.rounds)
            ]
            for v, t in trainers.items()
        }
        first = {v: trainers[v].compute_loss(trainers[v].model, batches[v][0]).item() for v in variants}
        for t in trainers.values():
            t.model.zero_grad(set_to_none=True)
            for mode in t._metrics.values():
                mode.clear()
        times: dict[str, list[float]] = {v: [] for v in variants}
        for r in range(args.warmup + args.rounds):
            for v in variants:
                seconds, _ = time_step(trainers[v], batches[v][r])
                if r >= args.warmup:
                    times[v].append(seconds)
        trl = trainers["trl_dpo"]
        prompt_tokens = statistics.mean(
            len(trl.train_dataset[i]["prompt_ids"]) for i in range(len(trl.train_dataset))
        )
        answer_tokens = statistics.mean(
            (len(trl.train_dataset[i]["chosen_ids"]) + len(trl.train_dataset[i]["rejected_ids"])) / 2
            for i in range(len(trl.train_dataset))
        )

    base = times["trl_dpo"]
    lines = [
        f"### prefix sharing, {args.model} (LoRA, cpu, float32), {args.task}: batch {args.batch_size} pairs, "
        f"mean prompt {prompt_tokens:.0f} tokens, mean answer {answer_tokens:.1f} tokens",
        "",
        f"`DECPO_DATA_DIR=... python benchmarks/bench_sharing.py {' '.join(sys.argv[1:])}` on "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{datetime.date.today()}; {args.rounds} rounds after {args.warmup} warm-up, a step = loss forward "
        "(policy + reference, TRL's default without precomputed reference log-probs) + backward.",
        "",
        "| variant | first-step loss | median step (s) | speed-up over TRL DPOTrainer: min / median / max |",
        "|---|---|---|---|",
    ]
    for v in variants:
        speedups = [b / t for t, b in zip(times[v], base, strict=True)]
        lines.append(f"| {v} | {first[v]:.6f} | {statistics.median(times[v]):.3f} | {spread(speedups)} |")
    emit(lines, args.write)


if __name__ == "__main__":
    main()
