"""Probe pass vs a plain forward over the same texts and batch size, measured in one run.

    PYTHONPATH=src python benchmarks/bench_probes.py                      # tiny-random-llama, seconds
    PYTHONPATH=src python benchmarks/bench_probes.py --model default --num-texts 64

Prints one markdown table row: the plain causal-LM forward (tokenisation included, logits computed), the
same through the backbone only (no LM head), the probe pass (every layer hooked, streaming statistics; it
runs the backbone) and the ratios (target: probe / forward <= 1.2; probe / backbone is the hooks' and
statistics' own overhead), plus the memory held by the statistics.
"""

from __future__ import annotations

import argparse
import time

import torch


def plain_forward(model, tokenizer, texts, batch_size: int, max_length: int, net=None) -> None:
    """``model(**batch)`` over the texts; ``net`` (e.g. the backbone) runs instead when given."""
    net = net or model
    device = next(model.parameters()).device
    tokenizer.padding_side = "left"
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            enc = tokenizer(
                texts[start : start + batch_size],
                return_tensors="pt",
                padding=True,
                truncation=True,
                max_length=max_length,
            ).to(device)
            net(**enc, use_cache=False)
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    from decpo.data import make_synthetic
    from decpo.models import load_model, load_tokenizer
    from decpo.probes.activation import backbone, probe_pass

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-random-llama")
    parser.add_argument("--num-texts", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--sites", default="mlp.up_proj")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many timings of each")
    parser.add_argument("--device", default=None)
    args = parser.parse_args()

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = load_model(args.model, device=device).eval()
    tokenizer = load_tokenizer(args.model)
    prompts = [r["prompt"] for r in make_synthetic("train", seed=0)]
    texts = (prompts * (args.num_texts // len(prompts) + 1))[: args.num_texts]
    sites = args.sites.split(",")

    plain_forward(model, tokenizer, texts[: args.batch_size], args.batch_size, args.max_length)  # warm-up
    forward_s, backbone_s, probe_s = [], [], []
    result = None
    for _ in range(args.repeats):  # interleaved, so that drift affects both alike
        t0 = time.perf_counter()
        plain_forward(model, tokenizer, texts, args.batch_size, args.max_length)
        forward_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        plain_forward(model, tokenizer, texts, args.batch_size, args.max_length, net=backbone(model))
        backbone_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        result = probe_pass(
            model,
            tokenizer,
            texts,
            sites=sites,
            batch_size=args.batch_size,
            max_length=args.max_length,
            progress=False,
        )
        for stats in result.stats.values():
            stats.result()  # finalisation is part of the cost
        if device == "cuda":
            torch.cuda.synchronize()
        probe_s.append(time.perf_counter() - t0)
    f, b, p = min(forward_s), min(backbone_s), min(probe_s)
    print(
        "| model | device | texts | batch | layers x sites | forward s | backbone s | probe s "
        "| probe/forward "
        "| probe/backbone | stats MiB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    print(
        f"| {args.model} | {device} | {len(texts)} | {args.batch_size} | "
        f"{result.num_layers} x {len(sites)} | "
        f"{f:.3f} | {b:.3f} | {p:.3f} | {p / f:.2f}x | {p / b:.2f}x | {result.memory_bytes() / 2**20:.1f} |"
    )


if __name__ == "__main__":
    main()
