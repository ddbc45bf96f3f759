"""Diagnostic for issue 23 (not part of the library): can a plain logistic probe read `toxic_continuation` from the
embedded model when it sees all 593 scored RealToxicityPrompts continuations (train + eval splits), at the last
token and averaged over the tokens? The residual stream after blocks 9, 15, 21; standardized features;
`LogisticRegressionCV` (5 C values) scored by 5-fold cross-validation. It was written when decpo's concept texts were
the 190 of the eval split read at the last token of `mlp.up_proj`, where no model's dense probe beat chance; it led to
the library's read (all 593, the mean over the continuation's tokens: benchmarks/RESULTS.md).

    python benchmarks/toxic_concept_readout.py
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from sklearn.linear_model import LogisticRegressionCV
from sklearn.model_selection import cross_val_score

from decpo.data import load_rtp_prompts
from decpo.models import load_model, load_tokenizer
from decpo.probes.concept_texts import TOXIC

BLOCKS = (9, 15, 21)


def main() -> None:
    warnings.filterwarnings("ignore")
    records = [
        r for r in load_rtp_prompts() if r["continuation"].strip() and r["continuation_toxicity"] is not None
    ]
    texts = [r["prompt"] + r["continuation"] for r in records]
    y = np.array([r["continuation_toxicity"] >= TOXIC for r in records], dtype=int)
    model, tokenizer = load_model("default"), load_tokenizer("default")
    tokenizer.padding_side = "right"
    reads = {(b, how): [] for b in BLOCKS for how in ("last", "mean")}
    with torch.no_grad():
        for i in range(0, len(texts), 16):
            enc = tokenizer(
                texts[i : i + 16], return_tensors="pt", padding=True, truncation=True, max_length=96
            )
            hidden = model(**enc, output_hidden_states=True).hidden_states
            mask = enc["attention_mask"].unsqueeze(-1).float()
            last = enc["attention_mask"].sum(1) - 1
            for b in BLOCKS:
                h = hidden[b + 1]
                reads[(b, "last")].append(h[torch.arange(h.shape[0]), last].numpy())
                reads[(b, "mean")].append(((h * mask).sum(1) / mask.sum(1)).numpy())
    print(f"{len(y)} texts, {y.mean():.3f} toxic (majority share {max(y.mean(), 1 - y.mean()):.3f})")
    for (b, how), parts in reads.items():
        x = np.concatenate(parts)
        x = (x - x.mean(0)) / (x.std(0) + 1e-6)
        acc = cross_val_score(LogisticRegressionCV(Cs=5, max_iter=2000), x, y, cv=5)
        print(f"block {b} {how}: accuracy {acc.mean():.3f} (folds {acc.min():.3f}-{acc.max():.3f})")


if __name__ == "__main__":
    main()
