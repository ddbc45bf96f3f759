"""bitsandbytes 4-/8-bit loading: the ``BitsAndBytesConfig`` of the ``model`` section's options, the checks
that it can run here (before anything is converted or downloaded), where the weights go, and peft's
preparation of a quantized model for LoRA training."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from decpo.models.errors import ModelError
from decpo.models.options import DTYPES
from decpo.models.specs import TINY_NAME, is_gguf

BNB_4BIT_QUANT_TYPES = ("nf4", "fp4")
_QUANT_NEEDS = "a CUDA GPU and bitsandbytes (pip install bitsandbytes)"


def _check_quantization_options(
    bnb_4bit_quant_type: str, compute_dtype: str, bnb_4bit_quant_storage: str | None
) -> None:
    """A ModelError naming the first option of a quantized load that bitsandbytes would not take."""
    if bnb_4bit_quant_type not in BNB_4BIT_QUANT_TYPES:
        raise ModelError(
            f"model.bnb_4bit_quant_type={bnb_4bit_quant_type!r}; expected one of {list(BNB_4BIT_QUANT_TYPES)}"
        )
    if compute_dtype == "auto":
        raise ModelError(
            "model.dtype=auto does not say the 4-bit compute dtype: set model.dtype (e.g. bfloat16)"
        )
    if compute_dtype not in DTYPES:
        raise ModelError(f"model.bnb_4bit_compute_dtype={compute_dtype!r}; expected one of {sorted(DTYPES)}")
    storage = [*sorted(DTYPES), "uint8"]
    if bnb_4bit_quant_storage is not None and bnb_4bit_quant_storage not in storage:
        raise ModelError(
            f"model.bnb_4bit_quant_storage={bnb_4bit_quant_storage!r}; expected one of {storage}"
        )


def quantization_config(
    *,
    load_in_4bit: bool = False,
    load_in_8bit: bool = False,
    bnb_4bit_quant_type: str = "nf4",
    use_bnb_nested_quant: bool = False,
    bnb_4bit_compute_dtype: str | None = None,
    bnb_4bit_quant_storage: str | None = None,
    dtype: str = "float32",
):
    """The ``transformers.BitsAndBytesConfig`` of these options (TRL's ``get_quantization_config`` on a
    ``trl.ModelConfig`` holding them), or None when neither ``load_in_4bit`` nor ``load_in_8bit`` is set.

    The 4-bit compute dtype is ``bnb_4bit_compute_dtype``, else ``dtype`` (TRL's choice: the dtype of the
    other weights). Builds the config only: nothing is loaded and no GPU is needed (see `check_quantizable`).
    """
    if load_in_4bit and load_in_8bit:
        raise ModelError("model.load_in_4bit and model.load_in_8bit are exclusive: set one of them")
    if not (load_in_4bit or load_in_8bit):
        return None
    compute_dtype = bnb_4bit_compute_dtype or dtype
    _check_quantization_options(bnb_4bit_quant_type, compute_dtype, bnb_4bit_quant_storage)
    # lazy: trl loads slowly, and only a quantized load needs it
    from trl import ModelConfig
    from trl.trainer.utils import get_quantization_config

    return get_quantization_config(
        ModelConfig(
            dtype=compute_dtype,
            load_in_4bit=load_in_4bit,
            load_in_8bit=load_in_8bit,
            bnb_4bit_quant_type=bnb_4bit_quant_type,
            use_bnb_nested_quant=use_bnb_nested_quant,
            bnb_4bit_quant_storage=bnb_4bit_quant_storage,
        )
    )


def check_quantizable(name: str, *, gguf_file: str | None = None, option: str = "load_in_4bit") -> None:
    """Raise a ModelError at once, before anything is converted or downloaded, unless ``name`` can be loaded
    with bitsandbytes quantization (``option`` names the setting in the message): the model must be a Hub id
    or a folder of full-precision weights, and the machine needs CUDA and the bitsandbytes package."""
    setting = f"model.{option}"
    if name == TINY_NAME:
        raise ModelError(
            f"{setting}: {TINY_NAME!r} is built in-process, not loaded from weights, so it cannot be quantized "
            "on load; save it (model.save_pretrained(folder), with its tokenizer) and pass the folder"
        )
    if is_gguf(name, gguf_file):
        raise ModelError(
            f"{setting}: {name!r} is a GGUF model (already quantized; decpo dequantizes it on load), and "
            "bitsandbytes quantizes full-precision weights only: pass a Hub id or a folder of safetensors weights"
        )
    if Path(name, "adapter_config.json").is_file():
        raise ModelError(
            f"{setting}: {name!r} holds a peft adapter, merged into its base model on load; a merged model is not "
            "loaded quantized: quantize the base model and load the adapter onto it with peft"
        )
    if not torch.cuda.is_available():
        raise ModelError(f"{setting} needs {_QUANT_NEEDS}; this machine has no CUDA")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ModelError(f"{setting} needs {_QUANT_NEEDS}; the bitsandbytes package is not installed")


def kbit_device_map(device: str | None = None) -> dict[str, int | str]:
    """Where a quantized model's weights go: ``device`` when given, else this process's GPU (the local process
    index; what TRL's former ``get_kbit_device_map`` returned), the whole model on it."""
    if device:
        return {"": device}
    # lazy: accelerate's state is read only for a quantized load
    from accelerate import PartialState

    return {"": PartialState().local_process_index}


def is_quantized(model) -> bool:
    """Loaded in 4 or 8 bits by bitsandbytes (also through a peft wrapper, which forwards the attributes)."""
    return bool(getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False))


def prepare_for_kbit(model, gradient_checkpointing: bool):
    """A 4-/8-bit model made ready for LoRA training (peft's ``prepare_model_for_kbit_training``: every
    weight frozen, the non-quantized ones upcast to float32, input gradients on under checkpointing); a model
    that is not quantized is returned as it is. Checkpointing, when on, is non-reentrant (the regularizer's
    hooks need it, see `decpo.models.hooks`), as `decpo.training.args.trainer_args` asks the Trainer."""
    if not is_quantized(model):
        return model
    # lazy: peft loads slowly, and only a quantized model needs it here
    from peft import prepare_model_for_kbit_training

    return prepare_model_for_kbit_training(
        model,
        use_gradient_checkpointing=gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False} if gradient_checkpointing else None,
    )
