"""Log-probs of given completions: A/B option scores, held-out preference accuracy and reward margin.

Tokenisation follows TRL's DPO trainer, so the numbers match what training reports: the prompt and
``prompt + completion`` are tokenised as one text each and the completion starts where the two token
lists diverge (shared by all completions of one prompt). Preference pairs get an EOS appended to both
sides as TRL does for plain-text data; the A/B accuracy scores the options " (A)" / " (B)" without it (only
the choice), and the same pass gives the with-EOS sums for the reward margin. With ``chat_template`` (a
model trained with ``data.chat_template``) prompt and answer are rendered as TRL renders conversational
pairs (`decpo.inference.encoding.encode_chat_completions`): the template's end of turn takes the place of the EOS.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from decpo.inference.encoding import Group, encode_completions, encode_group
from decpo.inference.generation import batches, model_device

AB_OPTIONS = (" (A)", " (B)")


def _pad(rows: Sequence[list[int]], pad_token_id: int, side: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ids, mask)``, both ``(len(rows), longest)``, padded on ``side``."""
    width = max((len(r) for r in rows), default=0)
    ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        start = width - len(r) if side == "left" else 0
        ids[i, start : start + len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, start : start + len(r)] = 1
    return ids, mask


@torch.no_grad()
def completion_token_logps(
    model: PreTrainedModel,
    groups: Sequence[Group],
    *,
    pad_token_id: int,
    batch_size: int = 8,
    padding_side: str = "right",
    progress: bool = True,
    desc: str = "score",
) -> list[list[list[float]]]:
    """``log p(token | everything before it)`` of every completion token: ``[group][completion][token]``.

    Each prompt is run once and its KV cache is shared by its completions: a batch of ``batch_size`` groups
    runs the prompts without their last token, repeats the cache once per completion, then runs
    ``[last prompt token] + completion``. Rows are padded on ``padding_side`` (the padding may sit between
    prompt and completion); position ids count real tokens only, so the result depends neither on the
    padding side nor on the batch composition (up to float rounding). All groups must have the same number
    of completions.
    """
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    if not groups:
        return []
    k = len(groups[0][1])
    if any(len(c) != k for _, c in groups):
        raise ValueError("every prompt must have the same number of completions")
    was_training = model.training
    model.eval()
    device = model_device(model)
    out: list[list[list[float]]] = []
    try:
        for idx in tqdm(batches(len(groups), batch_size), desc=desc, disable=not progress, leave=False):
            batch = [groups[i] for i in idx]
            head_ids, head_mask = _pad([p[:-1] for p, _ in batch], pad_token_id, padding_side)  # (B, Tp)
            tail_rows = [[p[-1], *c] for p, comps in batch for c in comps]  # B * k rows, group-major
            tail_ids, tail_mask = _pad(tail_rows, pad_token_id, padding_side)  # (B * k, Tc)
            head_mask = head_mask.repeat_interleave(k, dim=0)  # (B * k, Tp)
            full_mask = torch.cat([head_mask, tail_mask], dim=1)  # (B * k, Tp + Tc)
            positions = (full_mask.cumsum(-1) - 1).clamp(min=0)
            cache = None
            if head_ids.size(1) > 0:
                head = model(
                    input_ids=head_ids.to(device),
                    attention_mask=head_mask[::k].to(device),
                    position_ids=positions[::k, : head_ids.size(1)].to(device),
                    use_cache=True,
                    logits_to_keep=1,
                )
                # transformers >= 5.x names it `cache`; older releases `past_key_values`
                cache = head["cache"] if "cache" in head else head.past_key_values
                cache.batch_repeat_interleave(k)
            logits = model(
                input_ids=tail_ids.to(device),
                attention_mask=full_mask.to(device),
                position_ids=positions[:, head_ids.size(1) :].to(device),
                cache=cache,
                use_cache=cache is not None,
            ).logits.float()  # (B * k, Tc, V)
            # position t predicts token t + 1 (same shift as decpo.functional.sequence_logps)
            logp = torch.gather(logits[:, :-1].log_softmax(-1), 2, tail_ids[:, 1:, None].to(device))[..., 0]
            logp = logp.cpu()
            for g in range(len(batch)):
                per_group = []
                for j in range(k):
                    row, length = g * k + j, len(tail_rows[g * k + j]) - 1
                    start = tail_ids.size(1) - 1 - length if padding_side == "left" else 0
                    per_group.append(logp[row, start : start + length].tolist())
                out.append(per_group)
    finally:
        model.train(was_training)
    return out


def pad_id(tokenizer: PreTrainedTokenizerBase) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def _reduce(tokens: list[float], average: bool) -> float:
    return sum(tokens) / max(len(tokens), 1) if average else sum(tokens)


def ab_completions(record: dict[str, Any]) -> tuple[str, str]:
    """The answers ``(A, B)`` of an A/B pair record: its chosen and rejected sides ordered by letter.

    CAA items answer with the letter alone (" (A)"), the synthetic task with the letter and the option's
    text (" (A) 25"); either way the two answers are the record's own.
    """
    if record.get("chosen_letter") not in ("A", "B"):
        raise ValueError("an A/B record needs chosen_letter 'A' or 'B'")
    if record["chosen_letter"] == "A":
        return record["chosen"], record["rejected"]
    return record["rejected"], record["chosen"]


def answer_sets_logps(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    answer_sets: Sequence[Sequence[tuple[str, str]]],
    *,
    batch_size: int = 8,
    padding_side: str = "right",
    progress: bool = True,
    chat_template: bool = False,
    desc: str = "score A/B",
) -> list[tuple[list[float], list[float], list[float], list[float]]]:
    """Several answer pairs per prompt scored in one pass (each prompt run once): per pair ``s``, what
    `ab_logps` gives for that pair alone, ``(logps_a, logps_b, logps_a_eos, logps_b_eos)``.

    ``answer_sets[i]``: prompt ``i``'s pairs ``[(answer A, answer B), ...]``, the same number for every prompt.
    Each pair keeps its own prompt/completion boundary (TRL's rule applied to that pair alone): where pairs
    of one prompt start at different tokens, the group's prompt is their shortest, and the tokens of a pair's
    own prompt that fall into the completion are scored but not counted.
    """
    if len(answer_sets) != len(prompts):
        raise ValueError(f"{len(answer_sets)} answer sets for {len(prompts)} prompts")
    if len({len(s) for s in answer_sets}) > 1 or any(not s for s in answer_sets):
        raise ValueError("every prompt needs the same number (at least one) of answer pairs")
    groups: list[Group] = []
    skips: list[list[int]] = []  # per completion: leading tokens of its pair's own prompt
    closings: list[list[int]] = []
    for prompt, pairs in zip(prompts, answer_sets, strict=True):
        encoded = [encode_group(tokenizer, prompt, pair, chat_template=chat_template) for pair in pairs]
        shortest = min(len(head) for (head, _), _ in encoded)
        groups.append(
            (
                encoded[0][0][0][:shortest],
                [head[shortest:] + t for (head, tails), _ in encoded for t in tails],
            )
        )
        skips.append([len(head) - shortest for (head, tails), _ in encoded for _ in tails])
        closings.append([n for _, closing in encoded for n in closing])
    tokens = completion_token_logps(
        model,
        groups,
        pad_token_id=pad_id(tokenizer),
        batch_size=batch_size,
        padding_side=padding_side,
        progress=progress,
        desc=desc,
    )
    alone, closed = [], []  # [prompt][completion]: the answer without / with the tokens that close it
    for per_prompt, skip, closing in zip(tokens, skips, closings, strict=True):
        counted = [x[k:] for x, k in zip(per_prompt, skip, strict=True)]
        alone.append([sum(x[: len(x) - n]) for x, n in zip(counted, closing, strict=True)])
        closed.append([sum(x) for x in counted])
    return [
        (
            [a[2 * s] for a in alone],
            [a[2 * s + 1] for a in alone],
            [c[2 * s] for c in closed],
            [c[2 * s + 1] for c in closed],
        )
        for s in range(len(answer_sets[0]))
    ]


def ab_logps(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    *,
    options: Sequence[tuple[str, str]] | None = None,
    batch_size: int = 8,
    padding_side: str = "right",
    progress: bool = True,
    chat_template: bool = False,
) -> tuple[list[float], list[float], list[float], list[float]]:
    """Log-probs of the answers (A) and (B) after each prompt, from one pass (each prompt run once).

    ``options``: each prompt's ``(answer A, answer B)``; default " (A)" / " (B)" for every prompt.
    Returns ``(logps_a, logps_b, logps_a_eos, logps_b_eos)``: the answer alone (the A/B choice) and the
    answer followed by EOS (what a DPO pair with that answer as a side scores, as TRL appends EOS); with
    ``chat_template``, in the template's layout and followed by its end of turn instead of the EOS.
    """
    if options is None:
        options = [AB_OPTIONS] * len(prompts)
    if len(options) != len(prompts):
        raise ValueError(f"{len(options)} option pairs for {len(prompts)} prompts")
    if not prompts:
        return [], [], [], []
    (scores,) = answer_sets_logps(
        model,
        tokenizer,
        prompts,
        [[o] for o in options],
        batch_size=batch_size,
        padding_side=padding_side,
        progress=progress,
        chat_template=chat_template,
    )
    return scores


def pair_logps(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    records: Sequence[dict[str, Any]],
    *,
    batch_size: int = 8,
    add_eos: bool = True,
    max_length: int | None = None,
    average: bool = False,
    padding_side: str = "right",
    progress: bool = True,
    desc: str = "score pairs",
    chat_template: bool = False,
) -> tuple[list[float], list[float]]:
    """Summed (or length-averaged) log-probs of each record's two sides: ``(chosen, rejected)``.

    ``chat_template``: in the tokenizer's chat template, as TRL renders conversational pairs (the template
    closes each answer, ``add_eos`` is not used).
    """
    groups = [
        encode_group(
            tokenizer,
            r["prompt"],
            (r["chosen"], r["rejected"]),
            chat_template=chat_template,
            add_eos=add_eos,
            max_length=max_length,
        )[0]
        for r in records
    ]
    tokens = completion_token_logps(
        model,
        groups,
        pad_token_id=pad_id(tokenizer),
        batch_size=batch_size,
        padding_side=padding_side,
        progress=progress,
        desc=desc,
    )
    return [_reduce(t[0], average) for t in tokens], [_reduce(t[1], average) for t in tokens]


def continuation_perplexities(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    continuations: Sequence[str],
    *,
    batch_size: int = 8,
    progress: bool = True,
    desc: str = "perplexity",
) -> list[float | None]:
    """``exp(-mean log p)`` of each continuation's tokens given its prompt (no EOS); None for a blank one."""
    if len(prompts) != len(continuations):
        raise ValueError("one continuation per prompt")
    keep = [i for i, c in enumerate(continuations) if c.strip()]
    groups = [encode_completions(tokenizer, prompts[i], (continuations[i],)) for i in keep]
    tokens = completion_token_logps(
        model, groups, pad_token_id=pad_id(tokenizer), batch_size=batch_size, progress=progress, desc=desc
    )
    out: list[float | None] = [None] * len(prompts)
    for i, t in zip(keep, tokens, strict=True):
        out[i] = math.exp(-sum(t[0]) / len(t[0])) if t[0] else None
    return out


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
