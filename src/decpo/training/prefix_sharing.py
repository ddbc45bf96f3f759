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

import torch
import trl
from torch import nn
from trl.trainer.dpo_trainer import DataCollatorForPreference

from decpo.models.hooks import unwrap_model
from decpo.training.packing import SharedPromptCollator, full_input_ids, shared_attention_mask, split_shared

# keys the collator adds beside TRL's; the trainer removes them before TRL sees the batch


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
                f"time(s). TRL {trl.__version__} does not run the model through `model.base_model(**kwargs)` and "
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
