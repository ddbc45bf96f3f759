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
    attn_implementations,
    check_attn_implementation,
    check_quantizable,
    frozen_copy,
    is_quantized,
    kbit_device_map,
    load_model,
    load_tokenizer,
    prepare_for_kbit,
    quantization_config,
    resolve_model_path,
)
from decpo.models.tiny import TINY_NAME

__all__ = [
    "DEFAULT_NAME",
    "SITES",
    "TINY_NAME",
    "ModelError",
    "attn_implementations",
    "capture_activations",
    "check_attn_implementation",
    "check_quantizable",
    "decoder_layers",
    "frozen_copy",
    "is_quantized",
    "kbit_device_map",
    "load_model",
    "load_tokenizer",
    "num_layers",
    "prepare_for_kbit",
    "quantization_config",
    "resolve_layers",
    "resolve_model_path",
    "site_module",
]
