"""Step time of DecPO against DPO, and of decpo's trainer against a plain TRL `DPOTrainer`, side by side.

Every variant trains the same model (fresh copy, same seed) on the same batches; the variants are run
interleaved, round after round, so that machine noise hits them alike. Reported: the ratio of each
variant's step time to plain DPO in decpo's trainer (min / median / max over rounds).

    python benchmarks/bench_step.py                       # tiny random Llama, seconds
    python benchmarks/bench_step.py --model default       # embedded SmolLM2-135M, LoRA, a few minutes
    python benchmarks/bench_step.py --model default --write benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def build(variant: str, model_name: str, lora: bool, records, tmp: Path, batch_size: int):
    from datasets import Dataset
    from peft import LoraConfig
    from trl import DPOConfig, DPOTrainer

    from decpo.models import frozen_copy, load_model, load_tokenizer, num_layers
    from decpo.training.trainer import DecPOConfig, DecPOTrainer

    tokenizer = load_tokenizer(model_name)
    model = load_model(model_name, seed=0)
    common = dict(
        output_dir=str(tmp / variant),
        per_device_train_batch_size=batch_size,
        report_to="none",
        use_cpu=True,
        bf16=False,
        save_strategy="no",
        disable_tqdm=True,
        gradient_checkpointing=False,
        max_length=128,
        precompute_ref_log_probs=False,
        learning_rate=1e-4,
    )
    peft = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "up_proj"]) if lora else None
    dataset = Dataset.from_list(records)
    ref = (
        None if lora else frozen_copy(model)
    )  # full fine-tuning: an explicit frozen reference for every variant
    if variant == "trl_dpo":
        return DPOTrainer(
            model=model,
            ref_model=ref,
            args=DPOConfig(**common),
            train_dataset=dataset,
            processing_class=tokenizer,
            peft_config=peft,
        )
    n = num_layers(model)
    reg = {
        "decpo_dpo": dict(reg_type=None),
        "decpo_1layer_last": dict(reg_type="decorrelation", reg_layers=[n // 2], reg_tokens="last"),
        "decpo_all_layers_completion": dict(
            reg_type="decorrelation", reg_layers=list(range(n)), reg_tokens="completion_mean"
        ),
    }[variant]
    return DecPOTrainer(
        model=model,
        ref_model=ref,
        args=DecPOConfig(**common, **reg),
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft,
    )


def time_step(trainer, batch) -> float:
    trainer.model.train()
    start = time.perf_counter()
    loss = trainer.compute_loss(trainer.model, batch)
    loss.backward()
    elapsed = time.perf_counter() - start
    trainer.model.zero_grad(set_to_none=True)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-random-llama")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--write", default=None, help="append a section to this markdown file")
    args = parser.parse_args()

    import tempfile

    from decpo.data import make_synthetic

    lora = args.model != "tiny-random-llama"
    records = [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in make_synthetic("train", n=64)]
    variants = ["decpo_dpo", "trl_dpo", "decpo_1layer_last", "decpo_all_layers_completion"]
    with tempfile.TemporaryDirectory() as tmp:
        trainers = {v: build(v, args.model, lora, records, Path(tmp), args.batch_size) for v in variants}
        first = trainers["decpo_dpo"]
        batch = first.data_collator([first.train_dataset[i] for i in range(args.batch_size)])
        # equal loss at the first step: decpo's trainer without penalty against plain TRL
        losses = {
            v: trainers[v].compute_loss(trainers[v].model, batch).item() for v in ("decpo_dpo", "trl_dpo")
        }
        times: dict[str, list[float]] = {v: [] for v in variants}
        for r in range(args.warmup + args.rounds):
            for v in variants:
                t = time_step(trainers[v], batch)
                if r >= args.warmup:
                    times[v].append(t)

    base = times["decpo_dpo"]
    lines = [
        f"### step time, {args.model} ({'LoRA' if lora else 'full'}), batch {args.batch_size} pairs x "
        f"{batch['input_ids'].shape[1]} tokens",
        "",
        f"`python benchmarks/bench_step.py --model {args.model} --batch-size {args.batch_size} --rounds {args.rounds}`"
        f" on {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{datetime.date.today()}. First-step loss: decpo (no penalty) {losses['decpo_dpo']:.6f}, "
        f"TRL DPOTrainer {losses['trl_dpo']:.6f}.",
        "",
        "| variant | median step (s) | ratio to DPO in decpo: min / median / max |",
        "|---|---|---|",
    ]
    for v in variants:
        ratios = [t / b for t, b in zip(times[v], base, strict=True)]
        lines.append(
            f"| {v} | {statistics.median(times[v]):.3f} | "
            f"{min(ratios):.3f} / {statistics.median(ratios):.3f} / {max(ratios):.3f} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        with open(args.write, "a", encoding="utf-8") as f:
            f.write("\n" + text)


if __name__ == "__main__":
    main()
