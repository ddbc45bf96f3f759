"""Step time of DecPO against DPO, and of decpo's trainer against a plain TRL `DPOTrainer`, side by side.

Every variant trains the same model (fresh copy, same seed) on the same batches; the variants are run
interleaved, round after round, so that machine noise hits them alike. Reported: the ratio of each
variant's step time to plain DPO in decpo's trainer (min / median / max over rounds).

    python benchmarks/bench_step.py                       # tiny random Llama, seconds
    python benchmarks/bench_step.py --model default       # embedded SmolLM2-135M, LoRA, a few minutes
    python benchmarks/bench_step.py --model default --write benchmarks/RESULTS.md
    python benchmarks/bench_step.py --model random-llama-1b --device cuda --bf16 --gradient-checkpointing
                                                          # GPU: ~1B Llama shape, random weights, LoRA;
                                                          # also reports peak GPU memory per variant
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
sys.path.insert(0, str(ROOT / "benchmarks"))
from report import emit, spread  # noqa: E402


def build(
    variant: str,
    model_name: str,
    lora: bool,
    records,
    tmp: Path,
    batch_size: int,
    *,
    device="cpu",
    dtype=torch.float32,
    checkpointing=False,
):
    from datasets import Dataset
    from peft import LoraConfig
    from trl import DPOConfig, DPOTrainer

    from decpo.config.trainer_args import DecPOConfig
    from decpo.models import frozen_copy, load_model, load_tokenizer, num_layers
    from decpo.training.trainer import DecPOTrainer

    if model_name == "random-llama-1b":
        # timing needs the shape, not the weights: a Llama of about 1.1B parameters, randomly initialised
        from transformers import LlamaConfig, LlamaForCausalLM

        tokenizer = load_tokenizer("tiny-random-llama")
        torch.manual_seed(0)
        model = LlamaForCausalLM(
            LlamaConfig(
                vocab_size=32000,
                hidden_size=2048,
                intermediate_size=5632,
                num_hidden_layers=22,
                num_attention_heads=32,
                num_key_value_heads=4,
                max_position_embeddings=2048,
                pad_token_id=0,
                eos_token_id=1,
                bos_token_id=2,
            )
        ).to(dtype)
    else:
        tokenizer = load_tokenizer(model_name)
        model = load_model(model_name, seed=0).to(dtype)
    common = dict(
        output_dir=str(tmp / variant),
        per_device_train_batch_size=batch_size,
        report_to="none",
        use_cpu=device == "cpu",
        bf16=dtype == torch.bfloat16,
        save_strategy="no",
        disable_tqdm=True,
        gradient_checkpointing=checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False} if checkpointing else None,
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


def time_step(trainer, batch) -> tuple[float, float]:
    """Seconds of one forward + backward, and peak GPU memory in GiB (0 on CPU)."""
    trainer.model.train()
    cuda = torch.cuda.is_available() and next(trainer.model.parameters()).is_cuda
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    loss = trainer.compute_loss(trainer.model, batch)
    loss.backward()
    if cuda:
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else 0.0
    trainer.model.zero_grad(set_to_none=True)
    return elapsed, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-random-llama")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--write", default=None, help="append a section to this markdown file")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 weights (GPUs)")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    args = parser.parse_args()

    import tempfile

    from decpo.data import make_synthetic

    lora = args.model != "tiny-random-llama"
    dtype = torch.bfloat16 if args.bf16 else torch.float32
    records = [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in make_synthetic("train", n=64)]
    variants = ["decpo_dpo", "trl_dpo", "decpo_1layer_last", "decpo_all_layers_completion"]
    with tempfile.TemporaryDirectory() as tmp:
        trainers = {}
        for v in variants:
            trainers[v] = build(
                v,
                args.model,
                lora,
                records,
                Path(tmp),
                args.batch_size,
                device=args.device,
                dtype=dtype,
                checkpointing=args.gradient_checkpointing,
            )
            if args.device != "cpu":
                trainers[v].model.to(args.device)
        first = trainers["decpo_dpo"]
        batch = first.data_collator([first.train_dataset[i] for i in range(args.batch_size)])
        batch = {k: v.to(args.device) for k, v in batch.items()}
        # equal loss at the first step: decpo's trainer without penalty against plain TRL
        losses = {
            v: trainers[v].compute_loss(trainers[v].model, batch).item() for v in ("decpo_dpo", "trl_dpo")
        }
        times: dict[str, list[float]] = {v: [] for v in variants}
        peaks: dict[str, float] = {v: 0.0 for v in variants}
        for r in range(args.warmup + args.rounds):
            for v in variants:
                t, peak = time_step(trainers[v], batch)
                peaks[v] = max(peaks[v], peak)
                if r >= args.warmup:
                    times[v].append(t)

    base = times["decpo_dpo"]
    lines = [
        f"### step time, {args.model} ({'LoRA' if lora else 'full'}, {args.device}, {dtype}"
        f"{', checkpointing' if args.gradient_checkpointing else ''}), batch {args.batch_size} pairs x "
        f"{batch['input_ids'].shape[1]} tokens",
        "",
        f"`python benchmarks/bench_step.py {' '.join(sys.argv[1:])}`"
        f" on {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{datetime.date.today()}. First-step loss: decpo (no penalty) {losses['decpo_dpo']:.6f}, "
        f"TRL DPOTrainer {losses['trl_dpo']:.6f}.",
        "",
        "| variant | median step (s) | ratio to DPO in decpo: min / median / max | peak GPU memory (GiB), ratio |",
        "|---|---|---|---|",
    ]
    for v in variants:
        ratios = [t / b for t, b in zip(times[v], base, strict=True)]
        lines.append(
            f"| {v} | {statistics.median(times[v]):.3f} | "
            f"{spread(ratios)} | "
            + (
                f"{peaks[v]:.2f}, {peaks[v] / peaks['decpo_dpo']:.3f} |"
                if peaks["decpo_dpo"]
                else "n/a (CPU) |"
            )
        )
    emit(lines, args.write)


if __name__ == "__main__":
    main()
