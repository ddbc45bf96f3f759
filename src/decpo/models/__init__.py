"""Models: loading (specs, GGUF, options, bitsandbytes quantization) and activation hooks."""

from decpo.models.errors import ModelError
from decpo.models.gguf import DEFAULT_NAME
from decpo.models.hooks import (
    SITES,
    capture_activations,
    decoder_layers,
    num_layers,
    resolve_layers,
    site_module,
)
from decpo.models.loading import (
    check_model_config,
    check_model_spec,
    frozen_copy,
    load_model,
    load_model_from_config,
    load_tokenizer,
    load_tokenizer_from_config,
    resolve_model_path,
)
from decpo.models.options import attn_implementations, check_attn_implementation
from decpo.models.quantization import (
    check_quantizable,
    is_quantized,
    kbit_device_map,
    prepare_for_kbit,
    quantization_config,
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
    "check_model_config",
    "check_model_spec",
    "check_quantizable",
    "decoder_layers",
    "frozen_copy",
    "is_quantized",
    "kbit_device_map",
    "load_model",
    "load_model_from_config",
    "load_tokenizer",
    "load_tokenizer_from_config",
    "num_layers",
    "prepare_for_kbit",
    "quantization_config",
    "resolve_layers",
    "resolve_model_path",
    "site_module",
]
