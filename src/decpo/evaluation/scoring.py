"""Log-probs of given completions: A/B option scores, held-out preference accuracy and reward margin.

Tokenisation follows TRL's DPO trainer, so the numbers match what training reports: the prompt and
``prompt + completion`` are tokenised as one text each and the completion starts where the two token
lists diverge (shared by all completions of one prompt). Preference pairs get an EOS appended to both
sides as TRL does for plain-text data; the A/B options " (A)" / " (B)" do not (only the choice is scored).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from decpo.evaluation.generation import batches, model_device
from decpo.functional import sequence_logps

AB_OPTIONS = (" (A)", " (B)")


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def encode_completions(
    tokenizer: PreTrainedTokenizerBase,
    prompt: str,
    completions: Sequence[str],
    *,
    add_eos: bool = False,
    max_length: int | None = None,
) -> list[tuple[list[int], int]]:
    """``(input_ids, n_prompt_tokens)`` per completion of one prompt.

    ``n_prompt_tokens`` is the same for every completion: the shortest common prefix of the tokenised prompt
    with each tokenised ``prompt + completion`` (TRL's rule). With ``max_length``, the start of the prompt
    is dropped first, then the end of the completion, so that a sequence has at most ``max_length`` tokens.
    """
    eos = tokenizer.eos_token if add_eos else ""
    prompt_ids = tokenizer(prompt)["input_ids"]
    fulls = [tokenizer(prompt + c + eos)["input_ids"] for c in completions]
    n_prompt = min(_common_prefix(prompt_ids, f) for f in fulls)
    out = []
    for full in fulls:
        keep_prompt = n_prompt
        if max_length is not None and len(full) > max_length:
            # keep at least one prompt token so that the first completion token has a predictor
            keep_prompt = max(1, min(n_prompt, max_length - (len(full) - n_prompt)))
            full = (full[n_prompt - keep_prompt :])[:max_length]
        out.append((full, keep_prompt))
    return out


@torch.no_grad()
def score_sequences(
    model: PreTrainedModel,
    encoded: Sequence[tuple[list[int], int]],
    *,
    pad_token_id: int,
    batch_size: int = 8,
    padding_side: str = "right",
    average: bool = False,
    progress: bool = True,
    desc: str = "score",
) -> list[float]:
    """Summed (or length-averaged) log-prob of the completion part of each encoded sequence.

    Batches are padded on ``padding_side``; position ids count real tokens only, so the result does not
    depend on the padding side or the batch composition (up to float rounding).
    """
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    was_training = model.training
    model.eval()
    device = model_device(model)
    out: list[float] = []
    try:
        for idx in tqdm(batches(len(encoded), batch_size), desc=desc, disable=not progress, leave=False):
            rows = [encoded[i] for i in idx]
            width = max(len(ids) for ids, _ in rows)
            input_ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
            attention = torch.zeros((len(rows), width), dtype=torch.long)
            completion = torch.zeros((len(rows), width), dtype=torch.long)
            for r, (ids, n_prompt) in enumerate(rows):
                start = width - len(ids) if padding_side == "left" else 0
                input_ids[r, start : start + len(ids)] = torch.tensor(ids)
                attention[r, start : start + len(ids)] = 1
                completion[r, start + n_prompt : start + len(ids)] = 1
            positions = (attention.cumsum(-1) - 1).clamp(min=0)  # (B, T) real-token positions
            # Only the logits that predict completion tokens are needed: keep the last `keep` columns.
            first = int(completion.float().argmax(-1).min())  # earliest completion column in the batch
            keep = width - max(first - 1, 0)
            logits = model(
                input_ids=input_ids.to(device),
                attention_mask=attention.to(device),
                position_ids=positions.to(device),
                logits_to_keep=keep,
            ).logits  # (B, keep, V)
            logps = sequence_logps(
                logits.float(),
                input_ids[:, -keep:].to(device),
                completion[:, -keep:].to(device),
                average=average,
            )
            out.extend(logps.cpu().tolist())
    finally:
        model.train(was_training)
    return out


def pad_id(tokenizer: PreTrainedTokenizerBase) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def ab_logps(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    *,
    batch_size: int = 8,
    padding_side: str = "right",
    progress: bool = True,
) -> tuple[list[float], list[float]]:
    """Log-probs of the continuations " (A)" and " (B)" after each prompt: ``(logps_a, logps_b)``."""
    encoded = []
    for prompt in prompts:
        encoded.extend(encode_completions(tokenizer, prompt, AB_OPTIONS))
    flat = score_sequences(
        model,
        encoded,
        pad_token_id=pad_id(tokenizer),
        batch_size=batch_size,
        padding_side=padding_side,
        progress=progress,
        desc="score A/B",
    )
    return flat[0::2], flat[1::2]


def pair_logps(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    records: Sequence[dict[str, Any]],
    *,
    batch_size: int = 8,
    add_eos: bool = True,
    max_length: int | None = None,
    average: bool = False,
    progress: bool = True,
    desc: str = "score pairs",
) -> tuple[list[float], list[float]]:
    """Log-probs of each record's ``chosen`` and ``rejected`` completions: ``(chosen, rejected)``."""
    encoded = []
    for r in records:
        encoded.extend(
            encode_completions(
                tokenizer, r["prompt"], (r["chosen"], r["rejected"]), add_eos=add_eos, max_length=max_length
            )
        )
    flat = score_sequences(
        model,
        encoded,
        pad_token_id=pad_id(tokenizer),
        batch_size=batch_size,
        average=average,
        progress=progress,
        desc=desc,
    )
    return flat[0::2], flat[1::2]


def preference_items(
    policy_chosen_logps: Sequence[float],
    policy_rejected_logps: Sequence[float],
    reference_chosen_logps: Sequence[float],
    reference_rejected_logps: Sequence[float],
    beta: float = 0.1,
) -> dict[str, list[float]]:
    """Per-pair DPO implicit rewards ``beta * (log pi - log ref)`` and what is averaged from them.

    Returns lists keyed by ``chosen_reward``, ``rejected_reward``, ``margin`` (chosen - rejected),
    ``correct`` (1 where margin > 0, TRL's ``rewards/accuracies``) and ``policy_correct`` (1 where the
    policy alone gives the chosen side the larger log-prob, no reference involved).
    """
    n = len(policy_chosen_logps)
    if not (len(policy_rejected_logps) == len(reference_chosen_logps) == len(reference_rejected_logps) == n):
        raise ValueError("all four log-prob lists must have the same length")
    chosen = [beta * (p - r) for p, r in zip(policy_chosen_logps, reference_chosen_logps, strict=True)]
    rejected = [beta * (p - r) for p, r in zip(policy_rejected_logps, reference_rejected_logps, strict=True)]
    margin = [c - r for c, r in zip(chosen, rejected, strict=True)]
    return {
        "chosen_reward": chosen,
        "rejected_reward": rejected,
        "margin": margin,
        "correct": [float(m > 0) for m in margin],
        "policy_correct": [
            float(c > r) for c, r in zip(policy_chosen_logps, policy_rejected_logps, strict=True)
        ],
    }
