"""Prefix sharing: each pair's prompt goes through the model once, not once per completion.

TRL's `DPOTrainer` runs ``prompt + chosen`` and ``prompt + rejected`` as two rows, so a long prompt with
short answers (CAA sycophancy: ~184 prompt tokens, 3 answer tokens) is processed twice. Here one packed
row holds ``prompt | chosen | rejected`` with a block attention mask and matching position ids:

    keys ->      p p p c c r r
    p            1
    p            1 1
    p            1 1 1
    c            1 1 1 1
    c            1 1 1 1 1
    r            1 1 1 0 0 1
    r            1 1 1 0 0 1 1

The rejected tokens see the prompt and themselves, never the chosen ones, and their positions restart after
the prompt, so every completion token has exactly the context (and rotary positions) it has in TRL's layout.
With ``pack=True`` several short pairs share one row (each pair its own block), as long as the row is no
longer than the batch's longest pair: less padding at no extra attention length.

The trainer still calls TRL's loss: the collator gives TRL a short layout ``[last prompt token, completion,
pad]`` per sequence (chosen rows first, then rejected), and hooks on the backbone swap in the packed inputs
and gather the packed hidden states back into that layout before TRL's LM head. Log-probs, losses, rewards
and metrics are TRL's own; the test compares them and the gradients with TRL's plain path.

That relies on how TRL's fused LM head runs the model (``model.base_model(**kwargs)``, then
``.last_hidden_state``), which TRL does not document. Every forward of a model is therefore counted against
the firings of its backbone hooks, and a forward they missed (which would score the short view) is an error.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from decpo.models.hooks import unwrap_model

# keys the collator adds beside TRL's; the trainer removes them before TRL sees the batch
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
        pairs = []
        for ex in examples:
            prompt = list(ex["prompt_ids"])
            if not prompt:
                raise ValueError("prefix sharing needs a non-empty prompt in every pair")
            room = None if self.max_length is None else self.max_length - len(prompt)
            if room is not None and room < 1:
                raise ValueError(
                    f"a prompt of {len(prompt)} tokens fills max_length={self.max_length}; TRL drops such pairs "
                    "before collation"
                )
            pairs.append((prompt, list(ex["chosen_ids"])[:room], list(ex["rejected_ids"])[:room]))
        n = len(pairs)
        sizes = [len(p) + len(c) + len(r) for p, c, r in pairs]
        rows = _pack(sizes, max(sizes)) if self.pack else [[i] for i in range(n)]
        length = self._padded(max(sum(sizes[i] for i in row) for row in rows))

        ids = torch.full((len(rows), length), self.pad_token_id, dtype=torch.long)
        pos = torch.zeros((len(rows), length), dtype=torch.long)
        group = torch.full((len(rows), length), -1, dtype=torch.long)
        branch = torch.full((len(rows), length), -1, dtype=torch.long)
        # per sequence (chosen rows 0..n-1, rejected rows n..2n-1): flat packed index of each token
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
        out.update(shared_input_ids=ids, shared_position_ids=pos, shared_group=group, shared_branch=branch)
        for key in ("ref_chosen_logps", "ref_rejected_logps"):
            if key in examples[0]:
                out[key] = torch.tensor([ex[key] for ex in examples])
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


def backbone_of(model: nn.Module) -> nn.Module:
    """The decoder stack that TRL's fused LM head calls (``model.base_model`` of the causal LM), through
    DDP/DeepSpeed and PEFT wrappers."""
    model = unwrap_model(model)
    backbone = getattr(model, "base_model", None)
    if backbone is None or backbone is model:
        raise ValueError(
            f"{type(model).__name__} has no separate decoder backbone to share the prompt through"
        )
    return backbone


def _attention_implementation(backbone: nn.Module) -> str:
    return getattr(backbone.config, "_attn_implementation", None) or "eager"


def check_shareable(model: nn.Module) -> None:
    """Refuse a model whose packed rows could not get each token's own position: its backbone must take
    ``position_ids`` by name (a model that derives positions from the attention mask, or drops unknown
    arguments into ``**kwargs``, would number the rejected tokens after the chosen ones)."""
    backbone = backbone_of(model)
    if "position_ids" not in inspect.signature(backbone.forward).parameters:
        raise ValueError(
            f"prefix sharing needs a backbone that takes position_ids; {type(backbone).__name__}.forward does not, "
            "so the packed rejected tokens would not get their positions: set train.share_prompt=false"
        )


def _trl_version() -> str:
    import trl

    return trl.__version__


@contextlib.contextmanager
def shared_prompt_forward(
    models: Sequence[nn.Module | None], batch: dict[str, torch.Tensor]
) -> Iterator[None]:
    """While active, a forward of any of ``models`` with TRL's view of ``batch`` runs the packed rows and
    returns hidden states in TRL's view. Hooks are removed on exit, even when the body raises.

    On exit the forwards are checked: the first model ran at least once, and each forward of every model
    passed through its backbone's hooks (a RuntimeError otherwise: TRL reached the model another way).
    """
    handles = []
    counts: list[tuple[nn.Module, dict[str, int]]] = []
    try:
        for model in models:
            if model is None:
                continue
            count = {"forward": 0, "swap": 0, "unpack": 0}
            counts.append((model, count))
            backbone = backbone_of(model)
            impl = _attention_implementation(backbone)
            if impl not in ("sdpa", "eager"):
                raise ValueError(
                    f"prefix sharing needs attn_implementation 'sdpa' or 'eager' (a custom 4D mask), not {impl!r}; "
                    "load the model with attn_implementation='sdpa' or set train.share_prompt=false"
                )
            handles.append(model.register_forward_pre_hook(_counter(count, "forward")))
            handles.append(
                backbone.register_forward_pre_hook(_swap_inputs(batch, impl, count), with_kwargs=True)
            )
            handles.append(backbone.register_forward_hook(_unpack_hidden(batch, count)))
        yield
        _check_fired(counts)
    finally:
        for handle in handles:
            handle.remove()


def _counter(count: dict[str, int], key: str):
    def hook(module, args):
        count[key] += 1

    return hook


def _check_fired(counts: Sequence[tuple[nn.Module, dict[str, int]]]) -> None:
    for i, (model, count) in enumerate(counts):
        missed = i == 0 and count["forward"] == 0  # who computed the log-probs, then?
        if missed or not count["forward"] == count["swap"] == count["unpack"]:
            raise RuntimeError(
                f"prefix sharing: {count['forward']} forward(s) of {type(model).__name__} ran, but the backbone "
                f"hooks swapped the inputs {count['swap']} and unpacked the hidden states {count['unpack']} "
                f"time(s). TRL {_trl_version()} does not run the model through `model.base_model(**kwargs)` and "
                "`.last_hidden_state` as prefix sharing expects, so its log-probs would be those of the short "
                "view, not of the pairs: set train.share_prompt=false (DecPOConfig.share_prompt=False)"
            )


def _swap_inputs(batch: dict[str, torch.Tensor], impl: str, count: dict[str, int]):
    def hook(module, args, kwargs):
        count["swap"] += 1
        if args:
            raise ValueError("prefix sharing expects the backbone to be called with keyword arguments")
        ids = batch["shared_input_ids"]
        mask = shared_attention_mask(batch["shared_group"], batch["shared_branch"])
        if impl == "eager":  # eager attention adds the mask to the scores
            dtype = module.get_input_embeddings().weight.dtype
            dtype = (
                torch.get_autocast_dtype(ids.device.type)
                if torch.is_autocast_enabled(ids.device.type)
                else dtype
            )
            mask = torch.zeros(mask.shape, dtype=dtype, device=ids.device).masked_fill(
                ~mask, torch.finfo(dtype).min
            )
        kwargs = {
            k: v for k, v in kwargs.items() if k not in ("input_ids", "inputs_embeds", "cache_position")
        }
        kwargs.update(input_ids=ids, attention_mask=mask, position_ids=batch["shared_position_ids"])
        return args, kwargs

    return hook


def _unpack_hidden(batch: dict[str, torch.Tensor], count: dict[str, int]):
    def hook(module, args, output):
        count["unpack"] += 1
        hidden = output.last_hidden_state  # (R, L, H)
        index = batch["shared_gather"]  # (2B, S)
        output["last_hidden_state"] = hidden.flatten(0, 1)[index.flatten()].view(
            *index.shape, hidden.size(-1)
        )
        return output

    return hook


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


class SharedPromptMixin:
    """`DPOTrainer` steps with the prompt processed once per pair (``args.share_prompt``).

    Swaps TRL's collator for `SharedPromptCollator` (before the reference log-probs are precomputed, so that
    pass shares the prompt too) and runs TRL's own ``_compute_loss`` and ``compute_ref_log_probs`` inside
    `shared_prompt_forward`. Sits before `DPOTrainer` in the bases.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._install_shared_collator()

    def _install_shared_collator(self) -> None:
        from trl.trainer.dpo_trainer import DataCollatorForPreference

        if not getattr(self.args, "share_prompt", False) or isinstance(
            self.data_collator, SharedPromptCollator
        ):
            return
        if not isinstance(self.data_collator, DataCollatorForPreference):
            raise ValueError(
                f"share_prompt replaces TRL's DataCollatorForPreference, but the trainer has a "
                f"{type(self.data_collator).__name__}; pass no data_collator or set share_prompt=False"
            )
        for model in (self.model, self.ref_model):
            if model is not None:
                check_shareable(model)
        self.data_collator = SharedPromptCollator(
            pad_token_id=self.data_collator.pad_token_id,
            max_length=self.args.max_length,
            truncation_mode=self.args.truncation_mode,
            pack=getattr(self.args, "pack_pairs", False),
            pad_to_multiple_of=self.data_collator.pad_to_multiple_of,
        )

    def _precompute_ref_logps(self, dataset, name, batch_size):
        self._install_shared_collator()  # called from DPOTrainer.__init__, before our __init__ resumes
        return super()._precompute_ref_logps(dataset, name, batch_size)

    def compute_ref_log_probs(self, model, inputs):
        inputs, packed = split_shared(inputs)
        if not packed:
            return super().compute_ref_log_probs(model, inputs)
        with shared_prompt_forward([model], packed):
            return super().compute_ref_log_probs(model, inputs)

    def _compute_loss(self, model, inputs, return_outputs):
        inputs, packed = split_shared(inputs)
        if not packed:
            return super()._compute_loss(model, inputs, return_outputs)
        with shared_prompt_forward([model, self.ref_model], packed):
            out = super()._compute_loss(model, inputs, return_outputs)
        if self.model.training:
            # TRL counts the tokens of its own layout (the prompt once per completion); count the same ones
            extra = packed["full_attention_mask"].sum() - inputs["attention_mask"].sum()
            self._total_train_tokens += (
                self.accelerator.gather_for_metrics(extra).sum().item() // self._tp_size
            )
            self._metrics["train"]["num_tokens"] = [self._total_train_tokens]
        return out

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        loss, logits, labels = super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)
        if labels is not None and "full_gather" in inputs:
            # TRL returns the batch's input_ids as labels: give its layout, not the short view
            labels = full_input_ids(inputs, self.data_collator.pad_token_id).to(labels.device)
        return loss, logits, labels
