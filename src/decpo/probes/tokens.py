"""Probe inputs that know where the answer starts, so that a probe reads any token the penalty reads.

The penalty selects its rows with `decpo.functional.token_spans` on TRL's batch: prompt + answer + EOS, the
completion mask 1 on the answer's tokens. A plain text does not say where its answer starts, so the
selections that need it (`NEEDS_ANSWER`) read `AnsweredText` items, tokenized here as TRL's ``DPOTrainer``
tokenizes a pair (non-conversational): ``tok(prompt)`` and ``tok(prompt + answer + EOS)``, the completion
starting where the two (and the pair's other answer) diverge; right padding, truncation keeping the start.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from decpo.functional import TOKEN_SELECTIONS
from decpo.inference.encoding import encode_completions

logger = logging.getLogger(__name__)

# the selections that need the completion mask, hence pairs (prompt and answer apart)
NEEDS_ANSWER = tuple(t for t in TOKEN_SELECTIONS if t != "last")


@dataclass(frozen=True)
class AnsweredText:
    """A prompt and its answer (a pair's chosen one); ``other``: the pair's other answer, which TRL tokenizes
    too (the completion of both starts at the shorter common prefix with the prompt)."""

    prompt: str
    answer: str
    other: str | None = None


def check_token(token: str | None, texts: Sequence) -> None:
    """ValueError for an unknown selection, or one that needs answers given plain texts."""
    if token is None:
        return
    if token not in TOKEN_SELECTIONS:
        raise ValueError(f"unknown token selection {token!r}; expected one of {', '.join(TOKEN_SELECTIONS)}")
    if token in NEEDS_ANSWER and any(not isinstance(t, AnsweredText) for t in texts):
        raise ValueError(
            f"the token selection {token!r} needs to know where each answer starts: give pairs (a pairs file or "
            "a task as --texts), not plain texts"
        )


def _with_eos(answer: str, eos: str | None) -> str:
    # TRL appends EOS to each answer of a non-conversational pair
    return answer if not eos or answer.endswith(eos) else answer + eos


def encode_answered(tokenizer, item: AnsweredText) -> tuple[list[int], int]:
    """``(ids of prompt + answer + EOS, the answer's first position)``, as TRL's DPOTrainer tokenizes a pair
    (`decpo.inference.encoding.encode_completions`); ValueError when no prompt token is left."""
    answers = [item.answer] if item.other is None else [item.answer, item.other]
    prompt_ids, (answer_ids, *_) = encode_completions(
        tokenizer, item.prompt, [_with_eos(a, tokenizer.eos_token) for a in answers]
    )
    return prompt_ids + answer_ids, len(prompt_ids)


def answered_batch(tokenizer, items: Sequence[AnsweredText], max_length: int) -> dict[str, torch.Tensor]:
    """``input_ids``, ``attention_mask``, ``completion_mask``, each ``(B, T)``: right padded, each sequence cut
    to its first ``max_length`` tokens (TRL's collator, ``truncation_mode="keep_start"``)."""
    encoded = []
    for item in items:
        ids, start = encode_answered(tokenizer, item)
        ids = ids[:max_length]
        encoded.append((ids, [0] * start + [1] * (len(ids) - start)))
    width = max(len(ids) for ids, _ in encoded)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    input_ids = torch.full((len(encoded), width), pad, dtype=torch.long)
    attention_mask = torch.zeros((len(encoded), width), dtype=torch.long)
    completion_mask = torch.zeros((len(encoded), width), dtype=torch.long)
    for n, (ids, completion) in enumerate(encoded):
        input_ids[n, : len(ids)] = torch.tensor(ids)
        attention_mask[n, : len(ids)] = 1
        completion_mask[n, : len(ids)] = torch.tensor(completion[: len(ids)])
    return {"input_ids": input_ids, "attention_mask": attention_mask, "completion_mask": completion_mask}


def usable(tokenizer, items: Sequence[AnsweredText], max_length: int) -> list[AnsweredText]:
    """The items with an answer token within ``max_length`` tokens, after a real prompt token; the others are
    skipped with a warning (TRL drops pairs whose prompt fills ``max_length``)."""
    kept = []
    for item in items:
        try:
            ids, start = encode_answered(tokenizer, item)
        except ValueError:  # no prompt token before the answer
            continue
        if start < min(len(ids), max_length):
            kept.append(item)
    if len(kept) < len(items):
        logger.warning(
            "%d of %d pairs skipped: their prompt fills --max-length=%d tokens or they have no answer token",
            len(items) - len(kept),
            len(items),
            max_length,
        )
    return kept
