"""Sampling k continuations per prompt: decpo's `generate` against transformers' own path, side by side.

transformers repeats each prompt k times before reading it and sorts the whole vocabulary of every row at every
step for top-p; decpo's `decpo.inference.generation.generate` reads each prompt once (its cache repeated k times)
and finds the nucleus among the 1024 largest logits (`decpo.inference.nucleus`). Both draw from the same seeded
RNG, so the benchmark also counts the continuations that came out the same (the kept tokens agree up to float
rounding at the nucleus's edge, the logits up to float rounding of a batch of another size).

Prompts: the toxicity task's train prompts when the data directory has them (the pairs stage of
configs/toxicity.yaml samples these: 4 continuations of 20 tokens, top-p 0.9, batches of 32), else short built-in
texts. Each repeat times both paths on the same batch, the one going first alternating; reported: seconds per
batch per path, and the ratio transformers / decpo (min / median / max over repeats).

    python benchmarks/bench_sampling.py --model tiny-random-llama            # seconds
    python benchmarks/bench_sampling.py --model default                      # SmolLM2-135M, about 3 min
    python benchmarks/bench_sampling.py --model default --write benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import datetime
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

FALLBACK = [
    "The weather in the mountains today is",
    "My favourite way to spend a Sunday morning",
    "The committee met again to discuss the budget, and",
    "When the train finally arrived at the station",
]


def prompts_for(n: int) -> tuple[list[str], str]:
    from decpo.data import DataError
    from decpo.data.prompts import load_prompts

    try:
        found = load_prompts("toxicity", split="train")
    except DataError:
        found = []
    if len(found) >= n:
        return [r["prompt"] for r in found[:n]], "toxicity train prompts"
    return [FALLBACK[i % len(FALLBACK)] for i in range(n)], "built-in texts (no toxicity data found)"


def transformers_path(model, tokenizer, prompts, args) -> list[str]:
    """What decpo's generate did before: transformers' num_return_sequences and its TopPLogitsWarper."""
    tokenizer.padding_side = "left"
    enc = tokenizer(prompts, return_tensors="pt", padding=True)
    out = model.generate(
        **enc,
        max_new_tokens=args.new_tokens,
        do_sample=True,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=None,
        num_return_sequences=args.k,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)


def decpo_path(model, tokenizer, prompts, args) -> list[str]:
    from decpo.inference.generation import generate

    return generate(
        model,
        tokenizer,
        prompts,
        max_new_tokens=args.new_tokens,
        batch_size=len(prompts),
        do_sample=True,
        temperature=args.temperature,
        top_p=args.top_p,
        num_return_sequences=args.k,
        progress=False,
    )


PATHS = {"transformers": transformers_path, "decpo": decpo_path}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--batch", type=int, default=32, help="prompts per batch (the pairs stage's batch_size)")
    ap.add_argument("--k", type=int, default=4, help="continuations per prompt")
    ap.add_argument("--new-tokens", type=int, default=20)
    ap.add_argument("--top-p", type=float, default=0.9)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--write", default=None, help="append the markdown block to this file")
    args = ap.parse_args(argv)

    from decpo.models import load_model, load_tokenizer

    tokenizer, model = load_tokenizer(args.model), load_model(args.model).eval()
    prompts, source = prompts_for(args.batch * args.repeats)
    seconds: dict[str, list[float]] = {p: [] for p in PATHS}
    same = total = 0
    start = time.perf_counter()
    with torch.no_grad():
        decpo_path(model, tokenizer, prompts[: args.batch], args)  # warm-up, untimed
        for r in range(args.repeats):
            batch = prompts[r * args.batch : (r + 1) * args.batch]
            order = list(PATHS) if r % 2 == 0 else list(reversed(PATHS))
            texts = {}
            for name in order:
                torch.manual_seed(r)
                t0 = time.perf_counter()
                texts[name] = PATHS[name](model, tokenizer, batch, args)
                seconds[name].append(time.perf_counter() - t0)
            same += sum(a == b for a, b in zip(texts["transformers"], texts["decpo"], strict=True))
            total += len(texts["decpo"])
    ratios = [t / d for t, d in zip(seconds["transformers"], seconds["decpo"], strict=True)]
    lines = [
        f"### sampling {args.k} continuations of {args.new_tokens} tokens per prompt, top-p {args.top_p}, "
        f"{args.model}, batches of {args.batch} prompts ({source})",
        "",
        f"`python benchmarks/bench_sampling.py --model {args.model}` on {platform.machine()}, "
        f"{torch.get_num_threads()} torch threads, torch {torch.__version__}, {datetime.date.today()}, "
        f"{time.perf_counter() - start:.0f} s in all, {args.repeats} repeats (the path going first alternates).",
        "",
        "| path | seconds per batch (median) | min | max |",
        "|---|---|---|---|",
        *(
            f"| {name} | {statistics.median(s):.2f} | {min(s):.2f} | {max(s):.2f} |"
            for name, s in seconds.items()
        ),
        "",
        f"transformers / decpo, seconds per batch: **{statistics.median(ratios):.2f}x** median "
        f"(min / median / max {spread(ratios)}). The same continuation from both paths for the same seed: "
        f"{same} of {total}.",
    ]
    emit(lines, args.write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
