"""Models: loading (specs, GGUF, options, bitsandbytes quantization) and activation hooks.

The names below are imported on first use (`decpo.lazy`): loading and the hooks import torch and transformers,
which the command line's checks before them (`decpo.models.specs`: the built-in models' names, a folder's block
count) do not need.
"""

from decpo.lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "decpo.models.errors": ("ModelError",),
        "decpo.models.hooks": (
            "SITES",
            "capture_activations",
            "decoder_layers",
            "num_layers",
            "resolve_layers",
            "site_module",
        ),
        "decpo.models.loading": (
            "check_model_config",
            "check_model_spec",
            "frozen_copy",
            "load_model",
            "load_model_from_config",
            "load_tokenizer",
            "load_tokenizer_from_config",
            "resolve_model_path",
        ),
        "decpo.models.options": ("attn_implementations", "check_attn_implementation"),
        "decpo.models.quantization": (
            "check_quantizable",
            "is_quantized",
            "kbit_device_map",
            "prepare_for_kbit",
            "quantization_config",
        ),
        "decpo.models.specs": ("DEFAULT_NAME", "TINY_NAME"),
    },
)
