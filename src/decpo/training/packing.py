"""The packed layout of prefix sharing (`decpo.training.prefix_sharing`): `SharedPromptCollator` lays out
each pair as ``prompt | chosen | rejected`` in one row (several short pairs to a row with ``pack=True``),
with the block attention mask (`shared_attention_mask`), and gives TRL its short view of the same tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

SHARED_KEYS = (
    "shared_input_ids",
    "shared_position_ids",
    "shared_group",
    "shared_branch",
    "shared_gather",
    "full_gather",
    "full_attention_mask",
    "full_completion_mask",
)
PROMPT, CHOSEN, REJECTED = 0, 1, 2


@dataclass
class SharedPromptCollator:
    """Collate tokenized pairs (``prompt_ids``, ``chosen_ids``, ``rejected_ids``) into packed rows.

    Truncation follows TRL's ``keep_start``: ``prompt + completion`` is cut to ``max_length`` (prompts that
    fill ``max_length`` were dropped by TRL beforehand). With ``B`` pairs, ``R`` packed rows of length ``L``
    and completions of at most ``S - 1`` tokens, the batch holds:

    - ``input_ids``, ``attention_mask``, ``completion_mask``: ``(2B, S)``, TRL's view. Row ``i`` is pair
      ``i``'s chosen sequence, row ``B + i`` its rejected one: ``[last prompt token, completion, pad]``;
      the completion mask is 0 on the prompt token.
    - ``shared_input_ids``, ``shared_position_ids``: ``(R, L)`` packed tokens and their positions.
    - ``shared_group``: ``(R, L)``, which pair of the row a token belongs to (-1: padding);
      ``shared_branch``: 0 prompt, 1 chosen, 2 rejected.
    - ``shared_gather``: ``(2B, S)``, flat index into ``R * L`` of each TRL-view position.
    - ``full_gather``, ``full_attention_mask``, ``full_completion_mask``: ``(2B, F)``, TRL's usual layout
      ``prompt + completion`` (right-padded) as flat indices into the packed tokens, for the activation
      regularizer's token selection (`decpo.functional.token_spans`).
    - ``ref_chosen_logps``, ``ref_rejected_logps`` when the examples have them.

    Example (``pack=False``): pairs ``([1, 2, 3], [4, 5], [6])`` and ``([7, 8], [9], [10, 11])`` give
    ``shared_input_ids = [[1, 2, 3, 4, 5, 6], [7, 8, 9, 10, 11, 0]]`` and
    ``input_ids = [[3, 4, 5], [8, 9, 0], [3, 6, 0], [8, 10, 11]]``.
    """

    pad_token_id: int
    max_length: int | None = None
    truncation_mode: str = "keep_start"
    pack: bool = False
    # as TRL's collator: every padded width (L, S and F) a multiple of it
    pad_to_multiple_of: int | None = None

    def __post_init__(self) -> None:
        if self.truncation_mode != "keep_start":
            raise ValueError(
                "prefix sharing needs truncation_mode='keep_start' (with 'keep_end' the chosen and rejected "
                "sequences lose different prompt tokens, so the prompt is no longer shared)"
            )

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if not examples:
            raise ValueError("empty batch")
        pairs = [self._truncated(ex) for ex in examples]
        packed, prompt_at, completion_at, completion_ids = self._packed(pairs)
        out = self._trl_view(pairs, prompt_at, completion_at, completion_ids)
        out.update(packed)
        for key in ("ref_chosen_logps", "ref_rejected_logps"):
            if key in examples[0]:
                out[key] = torch.tensor([ex[key] for ex in examples])
        return out

    def _truncated(self, ex: dict[str, Any]) -> tuple[list[int], list[int], list[int]]:
        """``(prompt, chosen, rejected)`` token lists, each completion cut so that ``prompt + completion`` fits
        ``max_length`` (TRL's ``keep_start``)."""
        prompt = list(ex["prompt_ids"])
        if not prompt:
            raise ValueError("prefix sharing needs a non-empty prompt in every pair")
        room = None if self.max_length is None else self.max_length - len(prompt)
        if room is not None and room < 1:
            raise ValueError(
                f"a prompt of {len(prompt)} tokens fills max_length={self.max_length}; TRL drops such pairs "
                "before collation"
            )
        return prompt, list(ex["chosen_ids"])[:room], list(ex["rejected_ids"])[:room]

    def _packed(self, pairs: list[tuple[list[int], list[int], list[int]]]):
        """The packed rows (``shared_*`` tensors) and, per sequence (chosen rows ``0..n-1``, rejected rows
        ``n..2n-1``), the flat packed index of each prompt and completion token and the completion's ids."""
        n = len(pairs)
        sizes = [len(p) + len(c) + len(r) for p, c, r in pairs]
        rows = _pack(sizes, max(sizes)) if self.pack else [[i] for i in range(n)]
        length = self._padded(max(sum(sizes[i] for i in row) for row in rows))

        ids = torch.full((len(rows), length), self.pad_token_id, dtype=torch.long)
        pos = torch.zeros((len(rows), length), dtype=torch.long)
        group = torch.full((len(rows), length), -1, dtype=torch.long)
        branch = torch.full((len(rows), length), -1, dtype=torch.long)
        prompt_at: list[list[int]] = [[] for _ in range(n)]
        completion_at: list[list[int]] = [[] for _ in range(2 * n)]
        completion_ids: list[list[int]] = [[] for _ in range(2 * n)]
        for r, row in enumerate(rows):
            start = 0
            for slot, i in enumerate(row):
                prompt, chosen, rejected = pairs[i]
                for part, kind, first_pos in (
                    (prompt, PROMPT, 0),
                    (chosen, CHOSEN, len(prompt)),
                    (rejected, REJECTED, len(prompt)),
                ):
                    span = slice(start, start + len(part))
                    ids[r, span] = torch.tensor(part, dtype=torch.long)
                    pos[r, span] = torch.arange(first_pos, first_pos + len(part))
                    group[r, span] = slot
                    branch[r, span] = kind
                    flat = list(range(r * length + start, r * length + start + len(part)))
                    if kind == PROMPT:
                        prompt_at[i] = flat
                    else:
                        seq = i if kind == CHOSEN else n + i
                        completion_at[seq] = flat
                        completion_ids[seq] = part
                    start += len(part)
        packed = dict(shared_input_ids=ids, shared_position_ids=pos, shared_group=group, shared_branch=branch)
        return packed, prompt_at, completion_at, completion_ids

    def _trl_view(
        self,
        pairs: list[tuple[list[int], list[int], list[int]]],
        prompt_at: list[list[int]],
        completion_at: list[list[int]],
        completion_ids: list[list[int]],
    ) -> dict[str, torch.Tensor]:
        """TRL's short view (``[last prompt token, completion, pad]``) and its usual layout (``full_*``), each
        position with its flat index into the packed rows."""
        n = len(pairs)
        width = self._padded(1 + max(len(c) for c in completion_ids))
        full_width = self._padded(max(len(prompt_at[s % n]) + len(completion_ids[s]) for s in range(2 * n)))
        out = {
            "input_ids": torch.full((2 * n, width), self.pad_token_id, dtype=torch.long),
            "attention_mask": torch.zeros((2 * n, width), dtype=torch.long),
            "completion_mask": torch.zeros((2 * n, width), dtype=torch.long),
            "shared_gather": torch.zeros((2 * n, width), dtype=torch.long),
            "full_gather": torch.zeros((2 * n, full_width), dtype=torch.long),
            "full_attention_mask": torch.zeros((2 * n, full_width), dtype=torch.long),
            "full_completion_mask": torch.zeros((2 * n, full_width), dtype=torch.long),
        }
        for s in range(2 * n):
            p_at, c_at, c_ids = prompt_at[s % n], completion_at[s], completion_ids[s]
            k = 1 + len(c_ids)
            out["input_ids"][s, :k] = torch.tensor([pairs[s % n][0][-1], *c_ids])
            out["attention_mask"][s, :k] = 1
            out["completion_mask"][s, 1:k] = 1
            out["shared_gather"][s, :k] = torch.tensor([p_at[-1], *c_at])
            f = len(p_at) + len(c_at)
            out["full_gather"][s, :f] = torch.tensor(p_at + c_at)
            out["full_attention_mask"][s, :f] = 1
            out["full_completion_mask"][s, len(p_at) : f] = 1
        return out

    def _padded(self, width: int) -> int:
        m = self.pad_to_multiple_of
        return width if not m else -(-width // m) * m


def _pack(sizes: Sequence[int], capacity: int) -> list[list[int]]:
    """First-fit decreasing: pair indices grouped into rows of at most ``capacity`` tokens."""
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(sizes)), key=lambda i: -sizes[i]):
        for r, free in enumerate(room):
            if sizes[i] <= free:
                rows[r].append(i)
                room[r] -= sizes[i]
                break
        else:
            rows.append([i])
            room.append(capacity - sizes[i])
    return rows


def shared_attention_mask(group: torch.Tensor, branch: torch.Tensor) -> torch.Tensor:
    """``(R, 1, L, L)`` boolean mask, True where query ``q`` may attend to key ``k``.

    Causal, within one pair, and a completion never sees the other completion. A padding position sees
    only itself, so that no softmax row is empty (an empty row is NaN, and NaN leaks into gradients).
    """
    length = group.size(1)
    idx = torch.arange(length, device=group.device)
    causal = idx[None, :] <= idx[:, None]  # (L, L): key <= query
    q_group, k_group = group[:, :, None], group[:, None, :]
    q_branch, k_branch = branch[:, :, None], branch[:, None, :]
    allowed = causal & (q_group == k_group) & (q_group >= 0) & ((k_branch == PROMPT) | (k_branch == q_branch))
    allowed |= torch.eye(length, dtype=torch.bool, device=group.device)
    return allowed[:, None]


def full_input_ids(packed: dict[str, torch.Tensor], pad_token_id: int) -> torch.Tensor:
    """``(2B, F)`` TRL's usual ``input_ids``, prompt + completion, right-padded with ``pad_token_id``."""
    ids = packed["shared_input_ids"].flatten()[packed["full_gather"]]
    return ids.masked_fill(packed["full_attention_mask"] == 0, pad_token_id)


def split_shared(inputs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(TRL's view, packed extras)`` of a collated batch."""
    return (
        {k: v for k, v in inputs.items() if k not in SHARED_KEYS},
        {k: v for k, v in inputs.items() if k in SHARED_KEYS},
    )
