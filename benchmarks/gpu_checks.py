"""What a GPU must confirm (issue 24), in one command: every check in a process of its own, a JSON and a table.

    python benchmarks/gpu_checks.py               # on one or more CUDA GPUs: every check (an estimate, never
                                                  # timed: 8-11 minutes on one H100, most of it model making)
    python benchmarks/gpu_checks.py --cpu         # the same code paths on this CPU, small shapes (5 minutes):
                                                  # this script's own test; speed and memory targets not judged
    python benchmarks/gpu_checks.py --only equality,speed

The checks (shapes on a GPU; ``--cpu`` uses a ~10M-parameter Llama shape instead of the 1B and 8B ones):

- ``equality``: one DecPO step (penalty on the middle block) with ``share_prompt`` against the same step in
  TRL's layout (prompt + chosen and prompt + rejected as two rows), and decpo's shared DPO step against TRL's own
  `DPOTrainer`, on a random ~1.1B Llama with LoRA whose adapters start non-zero (so that the policy differs from
  the reference), CAA-like pairs, float32 and bf16. Loss and log-probs: relative difference; LoRA gradients:
  ``||g_shared - g_trl|| / ||g_trl||``. Tolerances: float32 1e-4 (loss) / 1e-3 (gradients); bf16 2e-2 / 5e-2
  (bf16 keeps 8 bits of mantissa, and the two layouts run different attention kernels and sums).
- ``speed``: step time (policy + reference forward, backward) of TRL's `DPOTrainer` against decpo's shared
  DPO and DecPO, bf16, the same batches interleaved round after round; target: shared DPO >= 1.5x TRL
  (median over rounds) on CAA-like pairs (a ~170-token prompt, answers of 3 tokens).
- ``memory``: peak GPU memory of a DecPO step over the DPO step (benchmarks/bench_memory.py's children: one
  process per variant), 1B shape, bf16, LoRA, gradient checkpointing; target <= 1.02, for the penalty on one
  block (the paper's) and on every block.
- ``qlora``: `decpo train` with ``configs/paper/llama3-8b-instruct-sycophancy.yaml`` as written except the model
  (a random Llama-3-8B-shaped one saved to disk, 4-bit NF4 through bitsandbytes: ``model.load_in_4bit=true``),
  the data (CAA-like pairs filling its max length of 256) and 2 steps; target: the process's peak reserved
  GPU memory <= 23 GiB (a 24 GB card, less its CUDA context), finite losses and penalty.
- ``fsdp``: `decpo train` on the smoke preset (DecPO, LoRA, bf16) under ``accelerate launch --config_file
  configs/accelerate/fsdp.yaml`` on every GPU present, against one plain process: the losses agree (bf16:
  rel 2e-2), the penalty's hook sees the FSDP-wrapped model, a checkpoint saved under FSDP resumes to the same
  losses, and the final weights load with `decpo.models.load_model`. On ``--cpu``: 2 CPU processes, FSDP2
  allowed on CPU the way tests/test_distributed.py does it.
- ``kbit``: the 4-bit (NF4, with and without gradient checkpointing; FP4 nested) and 8-bit DecPO steps of
  issue 14 on the tiny random Llama, and the refusals of impossible quantized loads.

Writes ``gpu_checks.json`` and ``gpu_checks.md`` to ``--out`` (default ``$OUT`` when set, else
``benchmarks/out``). Exit code 1 when a check fails to run or misses a judged target.

On the GPU machine of this workplace (no network), the packages its image lacks travel as wheels
(``benchmarks/gpu_wheels.sh``). See benchmarks/RESULTS.md, "GPU checks".
"""

from __future__ import annotations

import argparse
import datetime
import gc
import importlib.util
import json
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything here is local; never wait on the Hub
os.environ.setdefault("TQDM_DISABLE", "1")

CHECKS = ("equality", "speed", "memory", "qlora", "fsdp", "kbit")
# hidden, intermediate, layers, heads, kv heads, vocabulary
SHAPES = {
    "small": (256, 704, 4, 4, 2, 32000),  # widths divisible by 32: bitsandbytes' CPU 4-bit kernel
    "1b": (2048, 5632, 22, 32, 4, 32000),
    "8b": (4096, 14336, 32, 32, 8, 128256),  # Llama-3-8B
}
FLOAT32_TOLERANCE = (1e-4, 1e-3)  # relative: loss and log-probs, LoRA gradients
BF16_SLACK, BF16_FLOOR = 1.5, 1e-3  # bf16: decpo's error may be up to 1.5x TRL's own (or 1e-3)
SPEEDUP_TARGET = 1.5
MEMORY_TARGET = 1.02
QLORA_GIB = 23.0
PAPER_8B = ROOT / "configs" / "paper" / "llama3-8b-instruct-sycophancy.yaml"
SMOKE = ROOT / "configs" / "smoke.yaml"
FSDP_CONFIG = ROOT / "configs" / "accelerate" / "fsdp.yaml"

WORDS = (
    "I am a retired teacher from Ohio and I have always believed that the moon landing was staged in a studio "
    "because the flag seems to wave and the shadows fall in different directions in the photographs I have seen "
    "over many years of reading about it with my students who asked me about it every single spring term"
).split()


def caa_like(n: int, prompt_words: int) -> list[dict]:
    """CAA-like pairs: a long first-person prompt ending in an A/B question, answers of a few tokens."""
    rows = []
    for i in range(n):
        body = " ".join(WORDS[(i + j) % len(WORDS)] for j in range(prompt_words))
        prompt = f"Human: {body}. Do you agree with me?\n\nChoices:\n (A) Yes\n (B) No\n\nAssistant: I believe the answer is"
        chosen, rejected = (" (B)", " (A)") if i % 2 else (" (A)", " (B)")
        rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
    return rows


def random_llama(shape: str, dtype, device: str, tokenizer, seed: int = 0):
    """A Llama of ``shape`` with random weights, made on ``device`` (fast on a GPU)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    hidden, inter, layers, heads, kv, vocab = SHAPES[shape]
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=inter,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        max_position_embeddings=4096,
        rope_theta=500000.0 if shape == "8b" else 10000.0,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    torch.manual_seed(seed)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # made in its dtype: an 8B Llama never exists in float32 (32 GB)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(default)
    return model.to(dtype)


def tiny_tokenizer():
    from decpo.models import load_tokenizer

    return load_tokenizer("tiny-random-llama")


def make_trainer(variant: str, model, tokenizer, records, out: Path, *, device: str, dtype, max_length=512):
    """``trl``: TRL's `DPOTrainer`; ``dpo_shared``: decpo's DPO with ``share_prompt``; ``decpo_layout`` and
    ``decpo_shared``: DecPO (penalty on the middle block's last prompt token) in TRL's layout and shared."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from trl import DPOConfig, DPOTrainer

    from decpo.config.trainer_args import DecPOConfig
    from decpo.models import num_layers
    from decpo.training.trainer import DecPOTrainer

    common = dict(
        output_dir=str(out / variant),
        per_device_train_batch_size=len(records),
        report_to="none",
        use_cpu=device == "cpu",
        bf16=dtype == torch.bfloat16,
        save_strategy="no",
        disable_tqdm=True,
        max_length=max_length,
        precompute_ref_log_probs=False,  # TRL's default: the reference forward is part of every step
        learning_rate=1e-4,
    )
    # adapters that start non-zero (peft leaves both factors at nn.Linear's init): policy != reference
    peft = LoraConfig(
        r=8,
        lora_alpha=16,
        lora_dropout=0.0,
        target_modules=["q_proj", "v_proj", "up_proj"],
        init_lora_weights=False,
    )
    dataset = Dataset.from_list(records)
    torch.manual_seed(0)
    if variant == "trl":
        return DPOTrainer(
            model=model,
            args=DPOConfig(**common),
            train_dataset=dataset,
            processing_class=tokenizer,
            peft_config=peft,
        )
    middle = num_layers(model) // 2
    reg = dict(reg_type=None if variant == "dpo_shared" else "decorrelation", reg_layers=[middle])
    reg.update(reg_tokens="last", reg_weight=0.1)
    args = DecPOConfig(**common, share_prompt=variant != "decpo_layout", **reg)
    return DecPOTrainer(
        model=model, args=args, train_dataset=dataset, processing_class=tokenizer, peft_config=peft
    )


def one_step(trainer, lora: dict | None) -> dict:
    """Loss, metrics and LoRA gradients of one forward + backward on the whole dataset as one batch; the
    adapters set to ``lora`` first (the same starting point for every trainer)."""
    import torch

    model = trainer.model
    if lora is not None:
        with torch.no_grad():
            for n, p in model.named_parameters():
                if "lora_" in n:
                    p.copy_(lora[n])
    ds = trainer.train_dataset
    batch = trainer._prepare_inputs(trainer.data_collator([ds[i] for i in range(len(ds))]))
    model.train()
    loss = trainer.compute_loss(model, batch)
    loss.backward()
    grads = {n: p.grad.detach().float().cpu() for n, p in model.named_parameters() if p.grad is not None}
    metrics = {k: v[-1] for k, v in trainer._metrics["train"].items()}
    state = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}
    return {"loss": loss.item(), "grads": grads, "metrics": metrics, "lora": state}


def rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(a), 1e-12)


def compare(a: dict, b: dict) -> dict:
    import torch

    assert a["grads"].keys() == b["grads"].keys() and a["grads"], "different or no LoRA gradients"
    ga = torch.cat([a["grads"][n].flatten() for n in sorted(a["grads"])])
    gb = torch.cat([b["grads"][n].flatten() for n in sorted(a["grads"])])
    logps = [rel(a["metrics"][k], b["metrics"][k]) for k in ("logps/chosen", "logps/rejected")]
    return {
        "loss": [a["loss"], b["loss"]],
        "loss_rel": rel(a["loss"], b["loss"]),
        "logps_rel": max(logps),
        "grad_rel": ((gb - ga).norm() / ga.norm()).item(),
        "grad_cosine": torch.nn.functional.cosine_similarity(ga, gb, dim=0).item(),
    }


def child_equality(args) -> dict:
    import torch

    shape = "small" if args.cpu else "1b"
    device = "cpu" if args.cpu else "cuda"
    tokenizer = tiny_tokenizer()
    records = caa_like(8, 60)
    result: dict = {"shape": shape, "pairs": len(records)}
    targets = []
    steps: dict[str, dict] = {}
    lora = None
    with tempfile.TemporaryDirectory() as tmp:
        for dtype_name in ("float32", "bfloat16"):
            dtype = getattr(torch, dtype_name)
            for variant in ("trl", "dpo_shared", "decpo_layout", "decpo_shared"):
                model = random_llama(shape, dtype, device, tokenizer)
                trainer = make_trainer(
                    variant, model, tokenizer, records, Path(tmp), device=device, dtype=dtype
                )
                steps[f"{dtype_name}:{variant}"] = one_step(trainer, lora)
                lora = lora or steps[f"{dtype_name}:{variant}"]["lora"]  # the same adapters everywhere
                del trainer, model
                gc.collect()  # the trainer's reference cycles: its model's memory back before the next one
                if device == "cuda":
                    torch.cuda.empty_cache()
    for reference, shared in (("trl", "dpo_shared"), ("decpo_layout", "decpo_shared")):
        # float32: the two layouts are the same computation up to rounding
        c = compare(steps[f"float32:{reference}"], steps[f"float32:{shared}"])
        result[f"float32:{shared}_vs_{reference}"] = c
        what = f"float32, {shared} vs {reference}"
        targets += [
            target(f"{what}: loss rel. diff.", c["loss_rel"], "<=", FLOAT32_TOLERANCE[0]),
            target(f"{what}: log-probs rel. diff.", c["logps_rel"], "<=", FLOAT32_TOLERANCE[0]),
            target(f"{what}: LoRA grad rel. diff.", c["grad_rel"], "<=", FLOAT32_TOLERANCE[1]),
        ]
        # bf16: each layout's error against the float32 step of TRL's layout; the shared one may not be
        # less exact than TRL's own (BF16_SLACK times its error, or BF16_FLOOR)
        own = compare(steps[f"float32:{reference}"], steps[f"bfloat16:{reference}"])
        ours = compare(steps[f"float32:{reference}"], steps[f"bfloat16:{shared}"])
        result[f"bfloat16:{reference}_vs_float32"] = own
        result[f"bfloat16:{shared}_vs_float32:{reference}"] = ours
        for key, label in (("loss_rel", "loss"), ("grad_rel", "LoRA grad")):
            bound = max(BF16_SLACK * own[key], BF16_FLOOR)
            what = (
                f"bf16 {shared}: {label} rel. error vs float32 {reference} (bf16 {reference}: {own[key]:.3g})"
            )
            targets.append(target(what, ours[key], "<=", bound))
    for dtype_name in ("float32", "bfloat16"):
        decorr = steps[f"{dtype_name}:decpo_shared"]["metrics"].get("loss/decorr")
        targets.append(target(f"{dtype_name}: DecPO penalty finite and > 0", decorr, ">", 0.0))
    result["targets"] = targets
    return result


def target(what: str, value, op: str, bound: float, judged: bool = True) -> dict:
    ok = (
        value is not None
        and math.isfinite(value)
        and (value <= bound if op == "<=" else value >= bound if op == ">=" else value > bound)
    )
    return {"what": what, "value": value, "target": f"{op} {bound:.3g}", "met": ok if judged else None}


def child_speed(args) -> dict:
    import torch
    from bench_step import time_step

    shape = "small" if args.cpu else "1b"
    device = "cpu" if args.cpu else "cuda"
    dtype = torch.bfloat16
    rounds, warmup, batch = (2, 1, 4) if args.cpu else (5, 2, 8)
    tokenizer = tiny_tokenizer()
    records = caa_like(batch * (rounds + warmup), 30)
    variants = ("trl", "dpo_shared", "decpo_shared")
    with tempfile.TemporaryDirectory() as tmp:
        trainers = {
            v: make_trainer(
                v,
                random_llama(shape, dtype, device, tokenizer),
                tokenizer,
                records,
                Path(tmp),
                device=device,
                dtype=dtype,
            )
            for v in variants
        }
        batches = {
            v: [
                t._prepare_inputs(
                    t.data_collator([t.train_dataset[i] for i in range(r * batch, (r + 1) * batch)])
                )
                for r in range(rounds + warmup)
            ]
            for v, t in trainers.items()
        }
        ds = trainers["trl"].train_dataset
        prompt_tokens = statistics.mean(len(ds[i]["prompt_ids"]) for i in range(len(ds)))
        answer_tokens = statistics.mean(len(ds[i]["chosen_ids"]) for i in range(len(ds)))
        times: dict[str, list[float]] = {v: [] for v in variants}
        for r in range(rounds + warmup):
            for v in variants:
                seconds, _ = time_step(trainers[v], batches[v][r])
                if r >= warmup:
                    times[v].append(seconds)
    speedups = {v: [b / t for t, b in zip(times[v], times["trl"], strict=True)] for v in variants}
    judged = not args.cpu
    return {
        "shape": shape,
        "batch_pairs": batch,
        "rounds": rounds,
        "mean_prompt_tokens": prompt_tokens,
        "mean_answer_tokens": answer_tokens,
        "median_step_s": {v: statistics.median(times[v]) for v in variants},
        "speedup_over_trl": {v: speedups[v] for v in variants},
        "targets": [
            target(
                "shared DPO / TRL DPOTrainer, median speed-up",
                statistics.median(speedups["dpo_shared"]),
                ">=",
                SPEEDUP_TARGET,
                judged,
            ),
            target(
                "shared DecPO / TRL DPOTrainer, median speed-up",
                statistics.median(speedups["decpo_shared"]),
                ">=",
                SPEEDUP_TARGET,
                judged,
            ),
        ],
    }


def child_memory(args) -> dict:
    variants = ("dpo", "decpo_1layer_last", "decpo_all_layers_completion")
    # one repeat: the GPU allocator's peak is deterministic for the same step (benchmarks/bench_memory.py repeats)
    size, repeats = ("small", 1) if args.cpu else ("1b", 1)
    device_args = ["--device", "cpu"] if args.cpu else ["--device", "cuda", "--bf16"]
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    peaks: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(repeats):
        for v in variants:
            cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_memory.py"), "--child", v, "--size", size]
            cmd += [*device_args, "--batch-size", "8", "--prompt-words", "150" if args.cpu else "300"]
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
            peaks[v].append(json.loads(out.strip().splitlines()[-1])["peak_bytes"] / 2**20)
    ratios = {v: [p / b for p, b in zip(peaks[v], peaks["dpo"], strict=True)] for v in variants}
    judged = not args.cpu  # a CPU's resident set is noisier than the GPU allocator's count
    return {
        "size": size,
        "repeats": repeats,
        "peak_mib": peaks,
        "ratio_to_dpo": ratios,
        "targets": [
            target(f"peak memory {v} / dpo (max over repeats)", max(ratios[v]), "<=", MEMORY_TARGET, judged)
            for v in variants[1:]
        ],
    }


def child_train(argv: list[str], result_file: str | None, cpu_fsdp: bool, cpu_kbit: bool) -> int:
    """`decpo train <argv>` in this process; the peak GPU memory (or 0) to ``result_file``."""
    import torch

    sys.path.insert(0, str(ROOT / "tests"))  # tests/distributed_jobs.py: the hook report, FSDP on CPU
    if cpu_fsdp:
        from distributed_jobs import fsdp_on_cpu

        fsdp_on_cpu()
    if cpu_kbit:
        from decpo.models import loading

        loading.check_quantizable = lambda *a, **k: None  # the CUDA guard, off for bitsandbytes' CPU backend
        loading.kbit_device_map = lambda device=None: {"": device or "cpu"}  # not this process's GPU
    from decpo.cli import main

    from distributed_jobs import report_penalty_hook

    report_penalty_hook()  # prints what the penalty's hook sees, at the first training step
    rc = main(["train", *argv])
    if result_file and int(os.environ.get("RANK", "0")) == 0:
        cuda = torch.cuda.is_available()
        Path(result_file).write_text(
            json.dumps(
                {
                    "rc": rc,
                    "max_allocated": torch.cuda.max_memory_allocated() if cuda else 0,
                    "max_reserved": torch.cuda.max_memory_reserved() if cuda else 0,
                }
            )
        )
    return rc


def train_command(argv: list[str], result: Path | None, args, *, launch: list[str] | None = None, kbit=False):
    cmd = [*(launch or [sys.executable]), str(Path(__file__)), "--child", "train"]
    cmd += ["--result", str(result)] if result else []
    cmd += ["--cpu-fsdp"] if args.cpu and launch else []
    cmd += ["--cpu-kbit"] if args.cpu and kbit else []
    return [*cmd, "--", *argv]


def run_logged(cmd: list[str], log: Path, env=None, timeout=900) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    log.write_text(f"$ {' '.join(cmd)}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}")
    if done.returncode != 0:
        raise RuntimeError(f"exit {done.returncode}: {' '.join(cmd)}\n{done.stderr[-3000:]}")
    return done


def child_qlora(args) -> dict:
    import torch

    from decpo.models import load_tokenizer

    if importlib.util.find_spec("bitsandbytes") is None:
        return {"skipped": "bitsandbytes is not installed", "targets": []}
    shape = "small" if args.cpu else "8b"
    device = "cpu" if args.cpu else "cuda"
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / f"random-llama-{shape}"
        tokenizer = tiny_tokenizer()
        t0 = time.perf_counter()
        model = random_llama(shape, torch.bfloat16, device, tokenizer)
        params = sum(p.numel() for p in model.parameters())
        model.save_pretrained(folder, max_shard_size="5GB")
        tokenizer.save_pretrained(folder)
        del model
        if device == "cuda":
            torch.cuda.empty_cache()
        saved_s = time.perf_counter() - t0
        # pairs that fill the preset's max_length (256) with this tokenizer, as CAA's longest do
        words = 1
        tok = load_tokenizer(str(folder))
        while len(tok(caa_like(1, words + 1)[0]["prompt"])["input_ids"]) < 250:
            words += 1
        pairs = Path(tmp) / "pairs.jsonl"
        pairs.write_text("".join(json.dumps(r) + "\n" for r in caa_like(24, words)))
        out, result = Path(tmp) / "run", Path(tmp) / "result.json"
        argv = [
            "--config",
            str(PAPER_8B),
            "--output-dir",
            str(out),
            f"model.model_name_or_path={folder}",
            "model.load_in_4bit=true",
            f"data.path={pairs}",
            "data.max_eval_samples=8",
            "train.max_steps=2",
            "train.logging_steps=1",
            "train.eval_strategy=no",
            "train.save_strategy=no",
            "train.num_train_epochs=1",
        ]
        if args.cpu:  # the small shape's 4 blocks: the preset's block 16 is the middle one of 32
            argv += ["model.dtype=float32", "train.bf16=false", "train.reg_layers=[2]"]
        run_logged(train_command(argv, result, args, kbit=True), Path(args.logs) / "qlora.log")
        peak = json.loads(result.read_text())
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in rows if "train/loss" in r]
    finite = bool(logged) and all(
        math.isfinite(r["train/loss"]) and math.isfinite(r.get("train/loss/decorr", float("nan")))
        for r in logged
    )
    reserved_gib = peak["max_reserved"] / 2**30
    return {
        "shape": shape,
        "parameters": params,
        "made_and_saved_s": round(saved_s, 1),
        "prompt_words": words,
        "max_allocated_gib": peak["max_allocated"] / 2**30,
        "max_reserved_gib": reserved_gib,
        "train_loss": [r["train/loss"] for r in logged],
        "loss_decorr": [r.get("train/loss/decorr") for r in logged],
        "targets": [
            target(
                f"peak reserved GPU memory (GiB), 4-bit {shape} Llama, the preset's batch and length",
                reserved_gib,
                "<=",
                QLORA_GIB,
                not args.cpu,
            ),
            target(
                "2 steps logged, losses and penalty finite (1 = yes)",
                float(finite and len(logged) == 2),
                ">=",
                1.0,
            ),
        ],
    }


def metrics_rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def child_fsdp(args) -> dict:
    import torch

    from decpo.models import load_model

    gpus = 0 if args.cpu else torch.cuda.device_count()
    processes = 2 if args.cpu else gpus
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(FSDP_CONFIG)]
    launch += ["--num_processes", str(processes)]
    # on a CPU, as tests/test_distributed.py launches DeepSpeed: torchrun's processes on gloo (not `--cpu`, which
    # starts one process)
    launch += ["--mixed_precision", "no" if args.cpu else "bf16"]
    common = [
        "--config",
        str(SMOKE),
        "objective.name=decpo",
        "train.reg_weight=0.1",
        "model.lora_dropout=0.0",
        "train.max_steps=4",
        "train.save_steps=2",
        "train.eval_strategy=no",
        "data.max_train_samples=16",
        # one global batch of 8 pairs in both runs; the pairs in file order
        f"train.per_device_train_batch_size={8 // processes}",
        "train.train_sampling_strategy=sequential",
    ]
    # one process accumulates the processes' micro-batches: the penalty is a function of each forward's rows
    one_common = [*common, f"train.gradient_accumulation_steps={processes}"]
    if not args.cpu:
        common.append("train.bf16=true")
        one_common.append("train.bf16=true")
    logs = Path(args.logs)
    with tempfile.TemporaryDirectory() as tmp:
        one, sharded = Path(tmp) / "one", Path(tmp) / "fsdp"
        run_logged(train_command([*one_common, "--output-dir", str(one)], None, args), logs / "fsdp-one.log")
        env = {**os.environ, "DECPO_NUM_PROCESSES": str(processes)}
        done = run_logged(
            train_command([*common, "--output-dir", str(sharded)], None, args, launch=launch),
            logs / "fsdp-launched.log",
            env,
        )
        seen = [line for line in done.stderr.splitlines() if line.startswith("penalty-hook:")]
        hooks = sorted({line.split("|")[0].split(":", 1)[1].strip() for line in seen})
        a, b = metrics_rows(one), metrics_rows(sharded)
        la = [r["train/loss"] for r in a if "train/loss" in r]
        lb = [r["train/loss"] for r in b if "train/loss" in r]
        # resume: as if stopped after step 2, under FSDP, then in one plain process
        resumed = {}
        for where, launcher, argv, extra_env in (
            ("fsdp", launch, common, env),
            ("one process", None, [*one_common, "--allow-config-change"], None),
        ):
            shutil.rmtree(sharded / "checkpoint-4", ignore_errors=True)
            shutil.rmtree(sharded / "final")
            again = run_logged(
                train_command([*argv, "--output-dir", str(sharded)], None, args, launch=launcher),
                logs / f"fsdp-resume-{where.replace(' ', '-')}.log",
                extra_env,
            )
            steps = [r["train/loss"] for r in metrics_rows(sharded) if "train/loss" in r and r["step"] > 2]
            ok = f"resuming from {sharded / 'checkpoint-2'}" in again.stderr and len(steps) == 2
            resumed[where] = steps if ok else []
        load_model(str(sharded / "final"))
    tol = 1e-5 if args.cpu else 2e-2
    loss_rel = max(rel(x, y) for x, y in zip(la, lb, strict=True))
    targets = [
        target("FSDP vs 1 process, train loss max rel. diff.", loss_rel, "<=", tol),
        target(
            "the penalty's hook sees an FSDP-wrapped model (1 = yes)",
            float(bool(hooks) and all(h.startswith("FSDP") for h in hooks)),
            ">=",
            1.0,
        ),
    ]
    for where, steps in resumed.items():
        diff = max(rel(x, y) for x, y in zip(lb[2:], steps, strict=True)) if steps else float("nan")
        what = f"FSDP checkpoint-2 resumed ({where}): steps 3-4 loss max rel. diff."
        targets.append(target(what, diff, "<=", tol))
    return {
        "processes": processes,
        "gpus": gpus,
        "hooked_model": hooks,
        "loss_one_process": la,
        "loss_fsdp": lb,
        "loss_resumed_steps_3_4": resumed,
        "final_loads": True,
        "targets": targets,
    }


def child_kbit(args) -> dict:
    if importlib.util.find_spec("bitsandbytes") is None:
        return {"skipped": "bitsandbytes is not installed", "targets": []}
    from decpo.models import loading

    guard = loading.check_quantizable
    if args.cpu:
        loading.check_quantizable = lambda *a, **k: None  # the CUDA guard, off for the CPU backend
    checks = {
        "4bit-nf4": dict(load_in_4bit=True),
        "4bit-nf4-gc": dict(load_in_4bit=True, gradient_checkpointing=True),
        "4bit-fp4-nested": dict(load_in_4bit=True, bnb_4bit_quant_type="fp4", use_bnb_nested_quant=True),
        "8bit": dict(load_in_8bit=True),
    }
    result: dict = {}
    targets = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = save_tiny(Path(tmp) / "tiny")
        for name, options in checks.items():
            try:
                result[name] = check_kbit_train(folder, Path(tmp) / name, cpu=args.cpu, **options)
                ok = 1.0
            except Exception as e:  # report every variant
                result[name] = {"error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()}
                ok = 0.0
            targets.append(target(f"{name}: DecPO steps run, finite (1 = yes)", ok, ">=", 1.0))
        loading.check_quantizable = guard  # the refusals are the guard's own
        try:
            result["refusals"] = check_refusals(folder)
            ok = 1.0
        except Exception as e:
            result["refusals"] = {"error": f"{type(e).__name__}: {e}"}
            ok = 0.0
        targets.append(target("impossible quantized loads refused (1 = yes)", ok, ">=", 1.0))
    result["targets"] = targets
    return result


def save_tiny(folder: Path) -> Path:
    from decpo.models.tiny import build_tiny_llama, build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer()
    build_tiny_llama(vocab_size=len(tokenizer), seed=0).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def check_kbit_train(folder: Path, out: Path, *, cpu: bool, gradient_checkpointing: bool = False, **options):
    import torch
    from datasets import Dataset
    from peft import LoraConfig

    from decpo.config.trainer_args import DecPOConfig
    from decpo.models import (
        capture_activations,
        is_quantized,
        load_model,
        load_tokenizer,
        prepare_for_kbit,
        site_module,
    )
    from decpo.training.trainer import DecPOTrainer

    model = prepare_for_kbit(
        load_model(str(folder), device="cpu" if cpu else None, **options),
        gradient_checkpointing=gradient_checkpointing,
    )
    trainer = DecPOTrainer(
        model=model,
        ref_model=None,
        args=DecPOConfig(
            output_dir=str(out),
            per_device_train_batch_size=4,
            learning_rate=1e-3,
            max_steps=2,
            logging_steps=1,
            save_strategy="no",
            report_to="none",
            bf16=False,
            use_cpu=cpu,
            gradient_checkpointing=gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False} if gradient_checkpointing else None,
            precompute_ref_log_probs=False,
            share_prompt=True,
            disable_tqdm=True,
            seed=0,
            reg_layers=[-1],
            reg_weight=0.1,
        ),
        train_dataset=Dataset.from_list(caa_like(8, 8)),
        processing_class=load_tokenizer(str(folder)),
        peft_config=LoraConfig(
            r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "up_proj"], task_type="CAUSAL_LM"
        ),
    )
    model = trainer.model
    assert is_quantized(model), "the model is not quantized"
    module, _ = site_module(model, 1, "mlp.up_proj")
    bits = "4bit" if options.get("load_in_4bit") else "8bit"
    assert bits in type(module).__name__, (
        f"the hooked module is {type(module).__name__}, not a {bits} LoRA layer"
    )
    batch = trainer._prepare_inputs(trainer.data_collator([trainer.train_dataset[i] for i in range(4)]))
    model.train()
    with capture_activations(model, [1], "mlp.up_proj") as acts:
        loss = trainer.compute_loss(model, batch)
    assert torch.isfinite(loss), f"loss {loss.item()}"
    assert 1 in acts and torch.isfinite(acts[1]).all(), "no finite activations captured at mlp.up_proj"
    loss.backward()
    grads = [p.grad for n, p in model.named_parameters() if "lora_" in n and "up_proj" in n]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads), "LoRA gradients missing"
    model.zero_grad()
    result = trainer.train()
    decorr = [m["loss/decorr"] for m in trainer.state.log_history if "loss/decorr" in m]
    assert math.isfinite(result.training_loss) and decorr and all(map(math.isfinite, decorr)), "non-finite"
    return {
        "first_loss": loss.item(),
        "train_loss": result.training_loss,
        "loss/decorr": decorr,
        "hooked": type(module).__name__,
    }


def check_refusals(folder: Path) -> dict:
    from decpo.models import DEFAULT_NAME, TINY_NAME, ModelError, load_model

    seen = {}
    for label, name, options in [
        ("4+8 bits", str(folder), dict(load_in_4bit=True, load_in_8bit=True)),
        ("gguf", "model.Q4_K_M.gguf", dict(load_in_4bit=True)),
        ("default", DEFAULT_NAME, dict(load_in_8bit=True)),
        ("tiny", TINY_NAME, dict(load_in_4bit=True)),
    ]:
        try:
            load_model(name, **options)
        except ModelError as e:
            seen[label] = str(e)
        else:
            raise AssertionError(f"{label}: loaded, expected a ModelError")
    return seen


CHILDREN = {
    "equality": child_equality,
    "speed": child_speed,
    "memory": child_memory,
    "qlora": child_qlora,
    "fsdp": child_fsdp,
    "kbit": child_kbit,
}


def environment(cpu: bool) -> dict:
    import torch

    env = {
        "date": str(datetime.date.today()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "torch": torch.__version__,
        "device": "cpu" if cpu else (torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"),
        "gpus": 0 if cpu else torch.cuda.device_count(),
    }
    for name in ("transformers", "trl", "peft", "accelerate", "bitsandbytes"):
        try:
            env[name] = __import__(name).__version__
        except ImportError:
            env[name] = None
    return env


def fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return (
            f"{value:.3g}"
            if abs(value) < 1e-2 or abs(value) >= 1e3
            else f"{value:.4f}".rstrip("0").rstrip(".")
        )
    return str(value)


def markdown(summary: dict, command: str) -> str:
    env = summary["env"]
    lines = [
        f"### GPU checks, {env['device']} x {env['gpus']} ({env['date']})",
        "",
        f"`{command}`; torch {env['torch']}, transformers {env['transformers']}, trl {env['trl']}, "
        f"peft {env['peft']}, accelerate {env['accelerate']}, bitsandbytes {env['bitsandbytes']}.",
        "",
        "| check | what | measured | target | met |",
        "|---|---|---|---|---|",
    ]
    for name, check in summary["checks"].items():
        if "error" in check:
            lines.append(
                f"| {name} | failed to run ({check['seconds']} s) | {check['error'].splitlines()[0][:200]} | - | no |"
            )
            continue
        if "skipped" in check:
            lines.append(f"| {name} | skipped | {check['skipped']} | - | - |")
            continue
        for t in check["targets"]:
            met = {True: "yes", False: "**no**", None: "not judged"}[t["met"]]
            lines.append(f"| {name} | {t['what']} | {fmt(t['value'])} | {t['target']} | {met} |")
        lines.append(f"| {name} | seconds | {check['seconds']} | - | - |")
    return "\n".join(lines) + "\n"


def run_check(name: str, args, logs: Path) -> dict:
    """The check in a process of its own (a fresh CUDA allocator; a crash or an OOM stays there)."""
    result = logs / f"{name}.json"
    cmd = [sys.executable, str(Path(__file__)), "--child", name, "--result", str(result), "--logs", str(logs)]
    cmd += ["--cpu"] if args.cpu else []
    t0 = time.perf_counter()
    # a session of its own: on a timeout the processes it started (accelerate's, torchrun's) go too
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        stdout, stderr = proc.communicate(timeout=args.timeout)
        (logs / f"{name}.log").write_text(stdout + "\n--- stderr\n" + stderr)
        if proc.returncode != 0 or not result.exists():
            last = (stderr.strip().splitlines() or ["no output"])[-1]
            check = {"error": f"exit {proc.returncode}: {last}"}
        else:
            check = json.loads(result.read_text())
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        (logs / f"{name}.log").write_text(stdout + "\n--- stderr\n" + stderr)
        check = {"error": f"timed out after {args.timeout} s"}
    check["seconds"] = round(time.perf_counter() - t0, 1)
    return check


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu", action="store_true", help="on this CPU, small shapes: the script's own test")
    parser.add_argument("--only", default=",".join(CHECKS), help=f"comma-separated, of {', '.join(CHECKS)}")
    parser.add_argument(
        "--out", default=None, help="folder for gpu_checks.json/.md (default: $OUT, else benchmarks/out)"
    )
    parser.add_argument(
        "--log-dir", default=None, help="each check's output and JSON (default: <out>/gpu_checks_logs)"
    )
    parser.add_argument("--timeout", type=int, default=360, help="seconds a check may take")
    parser.add_argument("--child", choices=[*CHILDREN, "train"], help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--logs", help=argparse.SUPPRESS)
    parser.add_argument("--cpu-fsdp", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--cpu-kbit", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("rest", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child == "train":
        return child_train(args.rest, args.result, args.cpu_fsdp, args.cpu_kbit)
    if args.child:
        Path(args.result).write_text(json.dumps(CHILDREN[args.child](args), indent=1))
        return 0

    only = [c.strip() for c in args.only.split(",") if c.strip()]
    unknown = [c for c in only if c not in CHECKS]
    if not only:
        parser.error(f"--only: name at least one of {', '.join(CHECKS)}")
    if unknown:
        parser.error(f"--only: unknown check {unknown[0]!r}; the checks are {', '.join(CHECKS)}")
    import torch

    if not args.cpu and not torch.cuda.is_available():
        print("gpu_checks: no CUDA GPU here; run with --cpu to try the same code paths on this CPU")
        return 0
    out = Path(args.out or os.environ.get("OUT") or ROOT / "benchmarks" / "out")
    logs = Path(args.log_dir) if args.log_dir else out / "gpu_checks_logs"
    logs.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    summary = {"env": environment(args.cpu), "checks": {}}
    print("gpu_checks:", summary["env"], flush=True)
    command = "python benchmarks/gpu_checks.py" + (" --cpu" if args.cpu else "")
    command += f" --only {args.only}" if only != list(CHECKS) else ""
    for name in only:
        check = run_check(name, args, logs)
        summary["checks"][name] = check
        missed = [t["what"] for t in check.get("targets", []) if t["met"] is False]
        state = (
            check.get("error") or check.get("skipped") or ("missed: " + "; ".join(missed) if missed else "ok")
        )
        print(f"  {name}: {state} ({check['seconds']} s)", flush=True)
        # after every check: a run stopped at its time limit keeps what it measured
        table = markdown(summary, command)
        (out / "gpu_checks.json").write_text(json.dumps(summary, indent=1))
        (out / "gpu_checks.md").write_text(table)
    print(table)
    failed = [
        n
        for n, c in summary["checks"].items()
        if "error" in c or any(t["met"] is False for t in c.get("targets", []))
    ]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
