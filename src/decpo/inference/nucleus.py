"""Nucleus (top-p) filtering that sorts only the largest logits of each row.

transformers' ``TopPLogitsWarper`` sorts the whole vocabulary of every row at every step: with SmolLM2's 49,152
tokens, 128 rows and 20 steps that sort was a quarter of the time of sampling 4 continuations of 32 prompts on a
CPU. The nucleus is found here among the ``candidates`` largest logits (one ``topk``); a row whose candidates hold
less than ``top_p`` of the probability (a flat distribution) is filtered by ``TopPLogitsWarper`` itself. The tokens
kept are those ``TopPLogitsWarper`` keeps (every token whose larger ones hold less than ``top_p``, and the largest),
up to float rounding at the nucleus's edge: its cumulative sums run over the sorted vocabulary from the smallest
probability up, these from the largest down (tests/test_generation.py compares them).
"""

from __future__ import annotations

import torch
from transformers import LogitsProcessor, TopPLogitsWarper


class LargestFirstTopP(LogitsProcessor):
    """``TopPLogitsWarper(top_p)`` (``min_tokens_to_keep`` 1) from the ``candidates`` largest logits of a row."""

    def __init__(self, top_p: float, candidates: int = 1024):
        if not 0.0 < top_p < 1.0:
            raise ValueError(f"top_p must be in (0, 1), got {top_p}")
        if candidates < 1:
            raise ValueError(f"candidates must be >= 1, got {candidates}")
        self.top_p = top_p
        self.candidates = candidates
        self.whole_vocabulary = TopPLogitsWarper(top_p)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        values, indices = scores.topk(min(self.candidates, scores.shape[-1]), dim=-1)  # largest first
        probs = (values.float() - scores.float().logsumexp(-1, keepdim=True)).exp()
        larger = probs.cumsum(-1) - probs  # the probability of the larger candidates of the row
        keep = larger < self.top_p
        keep[..., 0] = True
        out = torch.full_like(scores, -float("inf")).scatter_(
            -1, indices, values.masked_fill(~keep, -float("inf"))
        )
        wide = probs.sum(-1) < self.top_p  # the nucleus may reach past the candidates
        if wide.any():
            out[wide] = self.whole_vocabulary(input_ids[wide], scores[wide])
        return out
