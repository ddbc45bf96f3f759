"""The loading options of a model that are checked against what transformers knows: the dtype names and
the attention implementation."""

from __future__ import annotations

import re

import torch
from transformers.integrations.hub_kernels import is_kernel
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from decpo.models.errors import ModelError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def check_dtype(dtype: str) -> None:
    """A ModelError unless ``dtype`` is one of `DTYPES` or ``"auto"`` (the checkpoint's own)."""
    if dtype not in (*DTYPES, "auto"):
        raise ModelError(f"unknown dtype {dtype!r}; expected one of {[*sorted(DTYPES), 'auto']}")


def torch_dtype(dtype: str) -> torch.dtype:
    """A torch dtype; ``"auto"`` (the checkpoint's own) is float32 for a model built in-process."""
    return DTYPES.get(dtype, torch.float32)


def attn_implementations() -> list[str]:
    """The names transformers' own check (``PreTrainedModel.get_correct_attn_implementation``) accepts:
    ``"eager"`` and the keys of its attention registry (sdpa, flash_attention_2/3/4, flex_attention, ...)."""
    return ["eager", *ALL_ATTENTION_FUNCTIONS.valid_keys()]


def check_attn_implementation(attn_implementation: str | None) -> str | None:
    """``attn_implementation`` unchanged when transformers knows it (`attn_implementations`, or a kernels-hub
    repo such as ``kernels-community/flash-attn2``, by transformers' ``is_kernel``); None is the default
    (transformers picks sdpa where it can, else eager). Else a ModelError listing the valid names. Whether
    the model and the machine support it (flash-attn installed, a GPU) is checked by transformers on load."""
    if attn_implementation is None:
        return None
    valid = attn_implementations()
    if attn_implementation in valid or is_kernel(attn_implementation):
        return attn_implementation
    raise ModelError(
        f"model.attn_implementation={attn_implementation!r} is not an attention implementation transformers "
        f"knows; expected one of {valid}, or a kernels-hub repo such as 'kernels-community/flash-attn2'"
    )


def raise_attn_error(attn_implementation: str | None, name: str, error: Exception) -> None:
    """A ModelError naming the setting when ``error`` is transformers refusing the attention implementation
    (flash-attn not installed, no GPU, a model without support); else nothing (the caller re-raises)."""
    if attn_implementation is not None and re.search(
        r"attn|attention|flash|kernel", str(error), re.IGNORECASE
    ):
        raise ModelError(
            f"model.attn_implementation={attn_implementation!r} cannot be used with {name!r}: {error}"
        ) from error
