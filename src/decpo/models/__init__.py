"""Model loading and activation hooks."""

from decpo.models.hooks import (
    SITES,
    capture_activations,
    decoder_layers,
    num_layers,
    resolve_layers,
    site_module,
)
from decpo.models.loading import (
    DEFAULT_NAME,
    ModelError,
    frozen_copy,
    load_model,
    load_tokenizer,
    resolve_model_path,
)
from decpo.models.tiny import TINY_NAME

__all__ = [
    "DEFAULT_NAME",
    "SITES",
    "TINY_NAME",
    "ModelError",
    "capture_activations",
    "decoder_layers",
    "frozen_copy",
    "load_model",
    "load_tokenizer",
    "num_layers",
    "resolve_layers",
    "resolve_model_path",
    "site_module",
]
