"""Token ids of a prompt and its completions as TRL's DPO trainer tokenises them: raw text (the prompt and
``prompt + completion`` tokenised as one text each, the completion starting where the two diverge) or the
chat template's layout; what `decpo.inference.logprobs` scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from transformers import PreTrainedTokenizerBase

from decpo.data import chat_messages

# One prompt and its completions: (prompt_ids, [completion_ids, ...]).
Group = tuple[list[int], list[list[int]]]


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
) -> Group:
    """Token ids of one prompt and of each of its completions.

    The prompt part is the shortest common prefix of the tokenised prompt with each tokenised
    ``prompt + completion`` (TRL's rule), so it is shared by all completions. ``add_eos`` appends the EOS id
    to every completion. With ``max_length``, the start of the prompt is dropped first (one token is always
    kept), then the ends of the completions, so that prompt + completion has at most ``max_length`` tokens.
    """
    prompt_ids = tokenizer(prompt)["input_ids"]
    fulls = [tokenizer(prompt + c)["input_ids"] for c in completions]
    n_prompt = _prompt_length(prompt, prompt_ids, fulls)
    tails = [f[n_prompt:] + ([tokenizer.eos_token_id] if add_eos else []) for f in fulls]
    return _truncate(fulls[0][:n_prompt], tails, max_length)


def _prompt_length(prompt: str, prompt_ids: list[int], fulls: list[list[int]]) -> int:
    """Where the completions start: the shortest common prefix of the prompt's ids with each full sequence."""
    n_prompt = min(_common_prefix(prompt_ids, f) for f in fulls)
    if n_prompt == 0:
        raise ValueError(f"prompt {prompt[:60]!r} has no token shared by all its completions (empty prompt?)")
    return n_prompt


def _truncate(head: list[int], tails: list[list[int]], max_length: int | None) -> Group:
    """Drop the start of the prompt first (one token is always kept), then the ends of the completions."""
    if max_length is None:
        return head, tails
    keep = max(1, min(len(head), max_length - max(len(t) for t in tails)))
    return head[len(head) - keep :], [t[: max_length - keep] for t in tails]


def _chat_ids(tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]], **kwargs: Any) -> list[int]:
    """Token ids of a conversation, tokenised as TRL tokenises conversational data (`trl.data_utils._tokenize`)."""
    return tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True, **kwargs)["input_ids"]


def encode_chat_completions(
    tokenizer: PreTrainedTokenizerBase,
    prompt: str,
    completions: Sequence[str],
    *,
    max_length: int | None = None,
) -> tuple[Group, list[int]]:
    """Token ids of one prompt and its completions in the tokenizer's chat template, and per completion the
    number of tokens that close the assistant's turn after the answer.

    As a pair trained with ``data.chat_template`` (`decpo.data.chat_messages`, then TRL's DPO tokenisation):
    the prompt is the user's turn with the generation prompt, each completion the rest of user + assistant
    turn, starting where the two diverge; no EOS is appended (the template closes the turn). The closing
    tokens are those after the assistant's turn rendered open (``continue_final_message``): the answer alone
    is the completion without them. ``max_length`` truncates as `encode_completions` does.
    """
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("chat_template: the tokenizer has no chat template")
    prompt_ids = _chat_ids(tokenizer, chat_messages(prompt), add_generation_prompt=True)
    fulls = [_chat_ids(tokenizer, chat_messages(prompt, c)) for c in completions]
    opens = [_chat_ids(tokenizer, chat_messages(prompt, c), continue_final_message=True) for c in completions]
    n_prompt = _prompt_length(prompt, prompt_ids, fulls)
    head, tails = _truncate(fulls[0][:n_prompt], [f[n_prompt:] for f in fulls], max_length)
    closing = [len(f) - max(n_prompt, _common_prefix(o, f)) for o, f in zip(opens, fulls, strict=True)]
    return (head, tails), [min(c, len(t)) for c, t in zip(closing, tails, strict=True)]


def encode_group(
    tokenizer: PreTrainedTokenizerBase,
    prompt: str,
    completions: Sequence[str],
    *,
    chat_template: bool,
    add_eos: bool = True,
    max_length: int | None = None,
) -> tuple[Group, list[int]]:
    """``(group, closing)``: raw text (`encode_completions`, the EOS closes) or the chat template's layout."""
    if chat_template:
        return encode_chat_completions(tokenizer, prompt, completions, max_length=max_length)
    group = encode_completions(tokenizer, prompt, completions, add_eos=add_eos, max_length=max_length)
    return group, [int(add_eos)] * len(completions)
