"""Peak memory of a DecPO step against the DPO step, with gradient checkpointing.

Each variant runs in its own process (fresh allocator), on a randomly initialised Llama-shaped model with
LoRA and non-reentrant gradient checkpointing, the same batch for every variant. On a GPU the peak is
`torch.cuda.max_memory_allocated` during the step; on a CPU it is the process's resident-set high-water mark
during the step (reset through /proc/self/clear_refs) minus the resident set before it, with glibc told to
return large blocks to the system at once (MALLOC_MMAP_THRESHOLD_), so that it follows the live tensors.
Variants are run interleaved, repeat after repeat; reported: each variant's peak and its ratio to DPO
(min / median / max over repeats).

    python benchmarks/bench_memory.py                         # CPU, a ~60M-parameter Llama shape, ~2 minutes
    python benchmarks/bench_memory.py --device cuda --bf16 --size 1b
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from report import emit, spread  # noqa: E402

VARIANTS = ("dpo", "decpo_1layer_last", "decpo_all_layers_completion", "all_layers_holding_full_activations")
SIZES = {  # hidden, intermediate, layers, heads, kv heads
    "small": (512, 1408, 8, 8, 4),
    "1b": (2048, 5632, 22, 32, 4),
}


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def child(args) -> dict:
    import ctypes
    import gc
    import tempfile

    import torch

    sys.path.insert(0, str(ROOT / "src"))
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import LlamaConfig, LlamaForCausalLM

    from decpo.config.trainer_args import DecPOConfig
    from decpo.models import load_tokenizer
    from decpo.training.trainer import DecPOTrainer

    hidden, inter, layers, heads, kv = SIZES[args.size]
    torch.manual_seed(0)
    dtype = torch.bfloat16 if args.bf16 else torch.float32
    tokenizer = load_tokenizer("tiny-random-llama")
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=hidden,
            intermediate_size=inter,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            num_key_value_heads=kv,
            max_position_embeddings=4096,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    ).to(dtype)
    words = "the cat sat on a mat and then it ran far away from home".split()
    records = [
        {
            "prompt": " ".join(words[(i + j) % len(words)] for j in range(args.prompt_words)),
            "chosen": " yes it did",
            "rejected": " no it did not",
        }
        for i in range(args.batch_size)
    ]
    reg = {
        "dpo": dict(reg_type=None),
        "decpo_1layer_last": dict(reg_type="decorrelation", reg_layers=[layers // 2], reg_tokens="last"),
        "decpo_all_layers_completion": dict(
            reg_type="decorrelation", reg_layers=list(range(layers)), reg_tokens="completion_mean"
        ),
        # what a hook that stores the whole (2B, T, D) activation costs (decpo's first version did): the same
        # penalty, plus a capture of every layer's full activation held until the forward ends
        "all_layers_holding_full_activations": dict(
            reg_type="decorrelation", reg_layers=list(range(layers)), reg_tokens="completion_mean"
        ),
    }[args.child]
    with tempfile.TemporaryDirectory() as tmp:
        trainer = DecPOTrainer(
            model=model,
            args=DecPOConfig(
                output_dir=tmp,
                per_device_train_batch_size=args.batch_size,
                report_to="none",
                use_cpu=args.device == "cpu",
                bf16=args.bf16,
                save_strategy="no",
                disable_tqdm=True,
                max_length=4096,
                precompute_ref_log_probs=False,
                gradient_checkpointing=True,
                gradient_checkpointing_kwargs={"use_reentrant": False},
                **reg,
            ),
            train_dataset=Dataset.from_list(records),
            processing_class=tokenizer,
            peft_config=LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "up_proj"]),
        )
        trainer.model.to(args.device)
        trainer.model.gradient_checkpointing_enable({"use_reentrant": False})
        trainer.model.train()
        batch = trainer._prepare_inputs(
            trainer.data_collator([trainer.train_dataset[i] for i in range(args.batch_size)])
        )
        cuda = args.device != "cpu"

        def step():
            from decpo.models.hooks import capture_activations

            hold = args.child == "all_layers_holding_full_activations"
            with capture_activations(trainer.model, list(range(layers)) if hold else [], "mlp.up_proj"):
                loss = trainer.compute_loss(trainer.model, batch)
            loss.backward()
            trainer.model.zero_grad(set_to_none=True)

        step()  # warm-up: lazy allocations
        gc.collect()
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
            step()
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated() - before
        else:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
            before = _rss_kib("VmRSS")
            Path("/proc/self/clear_refs").write_text("5")  # reset the high-water mark
            step()
            peak = (_rss_kib("VmHWM") - before) * 1024
        return {"variant": args.child, "peak_bytes": peak, "tokens": int(batch["attention_mask"].sum())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--size", choices=SIZES, default="small")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--prompt-words", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--write", default=None, help="append a section to this markdown file")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return

    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "TQDM_DISABLE": "1"}
    peaks: dict[str, list[float]] = {v: [] for v in VARIANTS}
    tokens = 0
    for _ in range(args.repeats):
        for v in VARIANTS:
            cmd = [sys.executable, __file__, "--child", v, "--size", args.size, "--device", args.device]
            cmd += ["--batch-size", str(args.batch_size), "--prompt-words", str(args.prompt_words)]
            cmd += ["--bf16"] if args.bf16 else []
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
            result = json.loads(out.strip().splitlines()[-1])
            peaks[v].append(result["peak_bytes"] / 2**20)
            tokens = result["tokens"]
    where = "GPU allocated" if args.device != "cpu" else "CPU resident set"
    lines = [
        f"### peak step memory, random Llama `{args.size}` (LoRA, non-reentrant gradient checkpointing, "
        f"{args.device}, {'bf16' if args.bf16 else 'float32'}), batch {args.batch_size} pairs, {tokens} tokens",
        "",
        f"`python benchmarks/bench_memory.py {' '.join(sys.argv[1:])}` on {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, {datetime.date.today()}; peak {where} above the level before the step, "
        f"{args.repeats} repeats, one process per variant and repeat.",
        "",
        "| variant | median peak (MiB) | ratio to DPO: min / median / max |",
        "|---|---|---|",
    ]
    for v in VARIANTS:
        ratios = [p / b for p, b in zip(peaks[v], peaks["dpo"], strict=True)]
        lines.append(f"| {v} | {statistics.median(peaks[v]):.1f} | {spread(ratios)} |")
    emit(lines, args.write)


if __name__ == "__main__":
    main()
