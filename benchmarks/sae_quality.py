"""The SAE defaults' quality on the embedded model (issue 23): SAE settings compared on the same cached
activations, and where the dead latents of a trained SAE are alive.

    # settings: SmolLM2-135M block 15 mlp.up_proj, 60,000 training tokens of reading texts 200..1199 (prompt +
    # chosen answer, every token but the first), measured on texts 0..199
    taskset -c 0 env OMP_NUM_THREADS=1 python benchmarks/sae_quality.py settings --tokens 60000
    # dead latents: an SAE folder (e.g. `decpo probe ... --measure sae --output-dir P` wrote P/sae) on the
    # held-out texts 0..199 vs the training texts 200..1999
    taskset -c 0 env OMP_NUM_THREADS=1 python benchmarks/sae_quality.py dead --sae P/sae
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from decpo.models import load_model, load_tokenizer
from decpo.probes.runner import load_texts
from decpo.probes.sae import train_sae
from decpo.probes.sae_measures import SaeStats
from decpo.probes.sae_runner import load_sae, token_rows
from decpo.probes.sae_settings import SaeSettings

SITE, LAYER = "mlp.up_proj", 15
SPARSIFY_LR = 2e-4 / math.sqrt(6144 / 2**14)  # sparsify's Adam rate at 6144 latents
VARIANTS = {
    "default (lr x4)": {},
    "lr x1 (sparsify's)": {"lr": SPARSIFY_LR},
    "lr x2": {"lr": 2 * SPARSIFY_LR},
    "lr x4, AuxK 1/8, dead after 5000": {"auxk_alpha": 1 / 8, "dead_after_tokens": 5000},
}


def _stats(sae, model, tok, texts) -> SaeStats:
    stats = SaeStats(sae)
    for rows in token_rows(model, tok, texts, SITE, LAYER, batch_size=16):
        stats.update(rows)
    return stats


def settings(model, tok, texts, tokens: int) -> None:
    train, n = [], 0
    for rows in token_rows(model, tok, texts[200:1200], SITE, LAYER, batch_size=16):
        train.append(rows)
        n += rows.size(0)
        if n >= tokens:
            break
    held = list(token_rows(model, tok, texts[:200], SITE, LAYER, batch_size=16))
    print(f"{n} training tokens, {sum(h.size(0) for h in held)} held-out tokens")
    for name, kwargs in VARIANTS.items():
        t0 = time.perf_counter()
        trained = train_sae(
            iter(train), train[0].size(-1), SaeSettings(train_tokens=n, **kwargs), progress=False
        )
        stats = SaeStats(trained.sae)
        for rows in held:
            stats.update(rows)
        values = {k: round(v, 4) for k, v in stats.result().items()}
        print(f"{name}: {time.perf_counter() - t0:.0f} s, held-out {values}")


def dead(model, tok, texts, path: str) -> None:
    sae = load_sae(path)
    held, train = _stats(sae, model, tok, texts[:200]), _stats(sae, model, tok, texts[200:2000])
    for name, s in (("held-out texts 0..199", held), ("training texts 200..1999", train)):
        print(f"{name}: {s.n} tokens, { ({k: round(v, 4) for k, v in s.result().items()}) }")
    moved = float((held.fired.eq(0) & train.fired.gt(0)).double().mean())
    print(f"latents dead on the held-out texts but active on the training texts: {moved:.4f}")
    print(f"latents dead on the training texts too: {float(train.fired.eq(0).double().mean()):.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("what", choices=("settings", "dead"))
    parser.add_argument("--tokens", type=int, default=60_000)
    parser.add_argument("--sae", default=None)
    args = parser.parse_args()
    torch.manual_seed(0)
    model, tok = load_model("default", dtype="float32", device="cpu"), load_tokenizer("default")
    texts = load_texts("reading", None, with_answer=True)
    settings(model, tok, texts, args.tokens) if args.what == "settings" else dead(model, tok, texts, args.sae)


if __name__ == "__main__":
    main()
