"""Length-grouped batches against TRL's default random batching: real tokens per second on hh-rlhf harmless.

TRL pads each micro-batch to its longest sequence. On hh-rlhf harmless (dialogues of a few dozen to several
hundred tokens) a random batch is largely padding; ``train_sampling_strategy="group_by_length"`` (decpo's
`LengthGroupedMixin`) batches pairs of similar length. Both variants train the same model (same seed, LoRA as
in configs/default.yaml) on the same N pairs through the trainer's own train dataloader; only the sampler
differs. Each repeat takes one epoch order per variant (epoch = repeat index) and times `--steps` optimizer
steps (forward + backward + AdamW step) at the same evenly spaced positions of the epoch (random offset),
interleaved step by step (the variant going first alternates), so that machine noise hits both alike.
A step of SmolLM2-135M on 8 pairs x 256 tokens takes 10-100 s on 2 shared CPU cores, so `--model default`
times two steps per repeat by default (~7 min in all); the whole-epoch padding is counted exactly either way.

Reported per variant: real (non-padding) tokens per second over the timed steps, padded tokens per step
(timed steps, and the whole epoch), and the ratio grouped / default of real tokens per second (min / median /
max over repeats). Also checked: both epochs hold every pair exactly once, and the DPO loss of a pair is the
same whichever batch it sits in (a random batch, the grouped batch that holds it, alone).

    python benchmarks/bench_batching.py --model tiny-random-llama        # seconds
    python benchmarks/bench_batching.py --model default                  # SmolLM2-135M, LoRA, ~7 min
    python benchmarks/bench_batching.py --model default --write benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))
from report import emit  # noqa: E402

VARIANTS = ("default", "grouped")


def data_dir(arg: str | None) -> str:
    for candidate in (arg, os.environ.get("DECPO_DATA_DIR"), str(ROOT.parent / "shared" / "data")):
        if candidate and Path(candidate).is_dir():
            return candidate
    raise SystemExit("hh-rlhf harmless data not found: pass --data-dir or set DECPO_DATA_DIR")


def build(variant: str, args, records, tmp: Path):
    """A DecPOTrainer (objective as in configs/default.yaml) whose only difference is the sampler."""
    from datasets import Dataset
    from peft import LoraConfig

    from decpo.config import RunConfig
    from decpo.config.trainer_args import DecPOConfig
    from decpo.models import load_model, load_tokenizer
    from decpo.training.trainer import DecPOTrainer

    o, lora = RunConfig().train, RunConfig().model
    tiny = args.model == "tiny-random-llama"
    tokenizer = load_tokenizer(args.model)
    model = load_model(args.model, seed=0)
    torch.manual_seed(0)  # same LoRA initialisation for both variants
    config = DecPOConfig(
        output_dir=str(tmp / variant),
        per_device_train_batch_size=args.batch_size,
        max_length=args.max_length,
        learning_rate=args.lr,
        beta=o.beta,
        reg_type="decorrelation" if args.reg_weight > 0 else None,
        reg_weight=args.reg_weight,
        reg_form=o.reg_form,
        reg_layers=[-1] if tiny else list(o.reg_layers),
        precompute_ref_log_probs=False,  # the reference forward (adapter off) runs in every step
        train_sampling_strategy="group_by_length" if variant == "grouped" else "random",
        length_column_name="length",
        seed=0,
        data_seed=0,
        report_to="none",
        use_cpu=True,
        bf16=False,  # TRL's DPOConfig defaults to bf16 autocast, even on CPU; the project trains in float32
        save_strategy="no",
        disable_tqdm=True,
    )
    peft = LoraConfig(
        r=lora.lora_r,
        lora_alpha=lora.lora_alpha,
        lora_dropout=lora.lora_dropout,
        target_modules=list(lora.lora_target_modules),
    )
    return DecPOTrainer(
        model=model,
        args=config,
        train_dataset=Dataset.from_list(records),
        processing_class=tokenizer,
        peft_config=peft,
    )


def epoch_batches(trainer, epoch: int) -> list[dict]:
    """The collated batches of one epoch, as the trainer's train dataloader yields them."""
    loader = trainer.get_train_dataloader()
    loader.set_epoch(epoch)  # what the Trainer does at the start of each epoch
    return list(loader)


def real_tokens(batch) -> int:
    return int(batch["attention_mask"].sum())


def padded_tokens(batch) -> int:
    return batch["input_ids"].numel()


def pair_keys(batch) -> list[tuple]:
    """One key per pair: the real tokens of its chosen and rejected sequences."""
    ids, mask = batch["input_ids"], batch["attention_mask"].bool()
    half = ids.size(0) // 2
    return [
        (tuple(ids[i][mask[i]].tolist()), tuple(ids[half + i][mask[half + i]].tolist())) for i in range(half)
    ]


@torch.no_grad()
def pair_losses(trainer, batch) -> dict[tuple, float]:
    """Per-pair sigmoid DPO loss of a batch, from TRL's own (patched) forwards of the policy and the reference."""
    from decpo.functional import dpo_loss

    model = trainer.model
    model.eval()
    labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)
    kwargs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"], "use_cache": False}
    policy = model(**kwargs, labels=labels, fused_lm_head=True).log_probs.sum(1)
    ref_chosen, ref_rejected = trainer.compute_ref_log_probs(model, batch)
    chosen, rejected = policy.chunk(2)
    losses, _, _ = dpo_loss(chosen, rejected, ref_chosen, ref_rejected, trainer.beta)
    return dict(zip(pair_keys(batch), losses.tolist(), strict=True))


def time_step(trainer, optimizer, batch) -> float:
    trainer.model.train()
    start = time.perf_counter()
    loss = trainer.compute_loss(trainer.model, batch)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="default (SmolLM2-135M) or tiny-random-llama")
    parser.add_argument("--data-dir", default=None, help="default: $DECPO_DATA_DIR, else ../shared/data")
    parser.add_argument("--pairs", type=int, default=1024, help="N train pairs (the first N of the split)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="timed optimizer steps per variant per repeat; default 6, but 2 for --model default (a step of "
        "SmolLM2-135M at 8 pairs x 256 tokens takes 10-100 s on 2 shared CPU cores)",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--reg-weight", type=float, default=1e-3, help="DecPO lambda; 0: plain DPO")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--write", default=None, help="append the markdown block to this file")
    args = parser.parse_args()
    if args.steps is None:
        args.steps = 2 if args.model == "default" else 6
    if args.threads:
        torch.set_num_threads(args.threads)

    from decpo.data import load_task

    wall = time.perf_counter()
    load_start = os.getloadavg()
    records = load_task("toxicity", "train", data_dir=data_dir(args.data_dir))[: args.pairs]
    records = [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in records]
    with tempfile.TemporaryDirectory() as tmp:
        trainers = {v: build(v, args, records, Path(tmp)) for v in VARIANTS}
        optimizers = {
            v: torch.optim.AdamW([p for p in t.model.parameters() if p.requires_grad], lr=args.lr)
            for v, t in trainers.items()
        }
        n_pairs = len(trainers["default"].train_dataset)

        # the whole first epoch of each variant: the same pairs once each, and its padding
        epoch = {v: epoch_batches(t, 0) for v, t in trainers.items()}
        seen = {v: Counter(k for b in epoch[v] for k in pair_keys(b)) for v in VARIANTS}
        assert seen["default"] == seen["grouped"] and sum(seen["default"].values()) == n_pairs, "pairs differ"
        epoch_padded = {v: statistics.mean(padded_tokens(b) for b in epoch[v]) for v in VARIANTS}
        epoch_share = {
            v: sum(real_tokens(b) for b in epoch[v]) / sum(padded_tokens(b) for b in epoch[v])
            for v in VARIANTS
        }
        n_batches = len(epoch["default"])

        # warm-up (first-call costs out of the timings) on the shortest batch, one optimizer step each
        shortest = min(epoch["grouped"], key=padded_tokens)
        for v in VARIANTS:
            time_step(trainers[v], optimizers[v], shortest)
        log(f"built, {n_pairs} pairs, {n_batches} batches per epoch, warm-up done")

        per_repeat: dict[str, list[float]] = {v: [] for v in VARIANTS}  # real tokens / s
        timed_real: dict[str, list[int]] = {v: [] for v in VARIANTS}
        timed_padded: dict[str, list[int]] = {v: [] for v in VARIANTS}
        step_times: dict[str, list[float]] = {v: [] for v in VARIANTS}
        gen = torch.Generator().manual_seed(1234)
        n_timed = 0
        for r in range(args.repeats):
            batches = {v: epoch_batches(trainers[v], r + 1) for v in VARIANTS}
            stride = n_batches / args.steps
            offset = torch.rand((), generator=gen).item() * stride
            positions = [int(offset + i * stride) for i in range(args.steps)]
            real = dict.fromkeys(VARIANTS, 0)
            secs = dict.fromkeys(VARIANTS, 0.0)
            for pos in positions:
                order = VARIANTS if n_timed % 2 == 0 else VARIANTS[::-1]
                n_timed += 1
                for v in order:
                    b = batches[v][pos]
                    t = time_step(trainers[v], optimizers[v], b)
                    real[v] += real_tokens(b)
                    secs[v] += t
                    timed_padded[v].append(padded_tokens(b))
                    timed_real[v].append(real_tokens(b))
                    step_times[v].append(t)
                    log(f"repeat {r} step {pos}: {v} {tuple(b['input_ids'].shape)} {t:.1f} s")
            for v in VARIANTS:
                per_repeat[v].append(real[v] / secs[v])

        # The DPO loss of a pair does not depend on its batch. Cheapest random batch of the first epoch; its
        # two shortest pairs scored there, in the grouped batches that hold them, and alone (the grouped policy,
        # a few optimizer steps away from the reference, so that the losses are not all log 2).
        scorer = trainers["grouped"]
        random_batch = min(epoch["default"], key=padded_tokens)
        in_default = pair_losses(scorer, random_batch)
        checked = sorted(in_default, key=lambda k: len(k[0]) + len(k[1]))[:2]
        in_grouped: dict[tuple, float] = {}
        for b in epoch["grouped"]:
            if set(pair_keys(b)) & set(checked):
                in_grouped.update({k: x for k, x in pair_losses(scorer, b).items() if k in checked})
        dataset = scorer._remove_unused_columns(scorer.train_dataset)
        alone: dict[tuple, float] = {}
        for i in range(len(dataset)):
            single = scorer.data_collator([dataset[i]])
            key = pair_keys(single)[0]
            if key in checked and key not in alone:
                alone[key] = pair_losses(scorer, single)[key]
        assert set(in_grouped) == set(alone) == set(checked)
        diff_grouped = max(abs(in_default[k] - in_grouped[k]) for k in checked)
        diff_alone = max(abs(in_default[k] - alone[k]) for k in checked)
        checked_losses = ", ".join(f"{in_default[k]:.4f}" for k in checked)

    ratios = [g / d for g, d in zip(per_repeat["grouped"], per_repeat["default"], strict=True)]
    load_end = os.getloadavg()
    wall = time.perf_counter() - wall
    lines = [
        f"### length-grouped batches vs TRL's default random batching, hh-rlhf harmless, {args.model} "
        f"({'full' if args.model == 'tiny-random-llama' else 'LoRA r8'}; batch {args.batch_size} pairs, "
        f"max_length {args.max_length}, {n_pairs} pairs, {args.steps} step(s) x {args.repeats} repeats)",
        "",
        f"`python benchmarks/bench_batching.py {' '.join(sys.argv[1:])}` on "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores ({torch.get_num_threads()} torch "
        f"threads), torch {torch.__version__}, {datetime.date.today()}, {wall / 60:.1f} min in all. The CPU is "
        f"shared with other jobs (1-min load average {load_start[0]:.1f} at start, {load_end[0]:.1f} at end): "
        "absolute times are inflated and noisy; the step-by-step interleaving spreads the noise over both "
        "variants.",
        "",
        "| variant | real tokens / s (all timed steps) | median step (s) | padded tokens / step, timed "
        "(mean) | padded tokens / step, whole epoch | real share of padded, whole epoch |",
        "|---|---|---|---|---|---|",
    ]
    for v in VARIANTS:
        lines.append(
            f"| {v} | {sum(timed_real[v]) / sum(step_times[v]):.1f} | {statistics.median(step_times[v]):.2f} | "
            f"{statistics.mean(timed_padded[v]):.0f} | {epoch_padded[v]:.0f} | {epoch_share[v]:.3f} |"
        )
    lines += [
        "",
        f"Real tokens per second, grouped / default: **{statistics.median(ratios):.2f}x** median "
        f"(min {min(ratios):.2f}x, max {max(ratios):.2f}x over {args.repeats} repeats: "
        f"{', '.join(f'{x:.2f}' for x in ratios)}). Padded tokens per step, "
        f"whole epoch: grouped / default = {epoch_padded['grouped'] / epoch_padded['default']:.3f}.",
        "",
        f"Same pairs: both epochs hold the {n_pairs} pairs once each. Loss per pair unchanged: the DPO loss of "
        f"{len(checked)} pairs ({checked_losses}) in a random batch differs by at most {diff_grouped:.1e} from "
        f"their loss in the grouped batches that hold them, and by at most {diff_alone:.1e} from their loss "
        "alone (float32 rounding of different padded shapes). The DecPO penalty is a property of the whole "
        "batch (its Gram matrix), so it does change with the batch's composition.",
    ]
    emit(lines, args.write)


if __name__ == "__main__":
    main()
