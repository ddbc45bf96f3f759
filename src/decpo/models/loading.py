"""Load a policy, a frozen reference and a tokenizer from a Hub id, a local folder or a GGUF file.

``"default"`` is the embedded SmolLM2-135M-Instruct (`decpo.models.gguf`), ``"tiny-random-llama"`` a tiny
model built in-process (`decpo.models.tiny`). `load_model` takes a spec string and its options one by one
(evaluation, probes, the CLI); training passes the config's ``model`` section whole
(`load_model_from_config`, `load_tokenizer_from_config`, `check_model_config`).
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from huggingface_hub import constants, try_to_load_from_cache
from huggingface_hub.errors import HFValidationError
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from decpo.env import warm_up_cpu_math
from decpo.hub import hub_endpoint, hub_offline_mode, hub_unreachable, looks_like_path
from decpo.models.errors import ModelError
from decpo.models.gguf import gguf_folder
from decpo.models.options import DTYPES, check_attn_implementation, check_dtype, raise_attn_error, torch_dtype
from decpo.models.quantization import check_quantizable, kbit_device_map, quantization_config
from decpo.models.specs import DEFAULT_NAME, TINY_NAME, is_gguf, known_block_count
from decpo.models.tiny import build_tiny_llama, build_tiny_tokenizer

if TYPE_CHECKING:
    from decpo.config.trl_sections import DecPOModelConfig

logger = logging.getLogger(__name__)


def missing_model_hint(name: str) -> str:
    """What to do about a model folder that does not exist: train it (a run's model is its ``final/``; a
    command that takes a model reads the run folder too), or check the path."""
    run = name.rstrip("/")
    run = run[: -len("/final")] if run.endswith("/final") else run
    return f"train it first (decpo train --output-dir {run}), or check the path"


def resolve_model_path(name: str, gguf_file: str | None = None) -> str:
    """Map a model spec to something ``from_pretrained`` reads without a GGUF quantizer."""
    if is_gguf(name, gguf_file):
        return gguf_folder(name, gguf_file)
    if looks_like_path(name):
        path = Path(name).expanduser()
        shown = name if str(path) == name else f"{name} ({path})"
        if not path.exists():
            raise ModelError(f"no such directory: {shown}; {missing_model_hint(name)}")
        if not path.is_dir():
            raise ModelError(f"not a directory: {shown} (a model is a folder, a .gguf file or a Hub id)")
        return str(path)
    return name


def block_count(name: str, gguf_file: str | None = None, revision: str | None = None) -> int | None:
    """The number of transformer blocks of model ``name``, read from its config alone (no weights): what
    `decpo.models.specs.known_block_count` knows without transformers (the tiny model's, a local or converted
    folder's ``config.json``), else the config transformers reads (a cached Hub model's, a GGUF file converted
    here); None when it is not known here (the model loads later and `decpo.models.hooks.resolve_layers` checks
    then)."""
    n = known_block_count(name, gguf_file)
    if n is not None:
        return n
    from transformers import AutoConfig

    try:
        path = resolve_model_path(name, gguf_file)
        config = AutoConfig.from_pretrained(path, revision=revision, local_files_only=True)
    except (ModelError, OSError, ValueError):
        return None
    n = getattr(config, "num_hidden_layers", None)
    return n if isinstance(n, int) else None


def check_model_spec(name: str, revision: str | None = None) -> None:
    """Before any work: a ModelError when ``name`` cannot load, as far as that is known without loading it (a
    local path that does not exist; a Hub id in no cache while the Hub is off or unreachable).

    ``runs/dpo`` reads as a Hub id (``org/name``); while ``runs/`` is a folder here and no cached model
    has that id, it is a missing local path, said as such."""
    if name == TINY_NAME or is_gguf(name):
        if name.endswith(".gguf") and not Path(name).expanduser().is_file():
            raise ModelError(f"no such file: {name}")
        return
    path = resolve_model_path(name)  # a path-like spec that does not exist: "no such directory"
    if path != name or Path(path).is_dir():
        return
    first = name.split("/", 1)[0]
    if "/" in name and Path(first).is_dir() and not _in_hub_cache(name, revision):
        raise ModelError(
            f"no such directory: {name} (read as a local path, as ./{first} is a folder here); "
            f"{missing_model_hint(name)}, or name a Hub model"
        )
    _hub_kwargs(name, path, revision)


def _in_hub_cache(name: str, revision: str | None) -> bool:
    try:
        return isinstance(try_to_load_from_cache(name, "config.json", revision=revision), str)
    except HFValidationError:
        return False


def _hub_kwargs(name: str, path: str, revision: str | None) -> dict[str, bool]:
    """``from_pretrained`` options for a Hub id: ``local_files_only`` when the Hub cannot be reached but the
    model is in the local cache; a ModelError at once when it is in neither (instead of retrying for a minute)."""
    if path != name or Path(path).is_dir():  # a local folder, the embedded model or a converted GGUF file
        return {}
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
    except ValueError as e:
        raise_remote_code_error(name, e)
        raise
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
    check_dtype(dtype)
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
        model = _tiny_model(dtype, seed, attn_implementation)
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
        extra: dict[str, Any] = (
            {} if attn_implementation is None else {"attn_implementation": attn_implementation}
        )
        if quantization is not None:
            extra.update(quantization_config=quantization, device_map=kbit_device_map(device))
        model = _pretrained_model(name, gguf_file, dtype, trust_remote_code, revision, extra)
        if quantization is not None:
            return model  # placed by its device map; bitsandbytes models refuse .to()
    return model.to(device) if device else model


def _tiny_model(dtype: str, seed: int, attn_implementation: str | None) -> PreTrainedModel:
    """The in-process tiny model, in ``dtype``, with ``attn_implementation`` when one is given."""
    model = build_tiny_llama(vocab_size=len(build_tiny_tokenizer()), seed=seed).to(torch_dtype(dtype))
    if attn_implementation is not None:
        try:
            model.set_attn_implementation(attn_implementation)
        except (ImportError, ValueError) as e:
            raise_attn_error(attn_implementation, TINY_NAME, e)
            raise
    return model


def _pretrained_model(
    name: str,
    gguf_file: str | None,
    dtype: str,
    trust_remote_code: bool,
    revision: str | None,
    extra: dict[str, Any],
) -> PreTrainedModel:
    """``from_pretrained`` of a folder, a converted GGUF file or a Hub id, with the options in ``extra``."""
    path = resolve_model_path(name, gguf_file)
    hub = _hub_kwargs(name, path, revision)
    try:
        return AutoModelForCausalLM.from_pretrained(
            path,
            dtype=DTYPES.get(dtype, "auto"),  # "auto": the dtype of the checkpoint's weights
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
        raise_remote_code_error(name, e)
        raise_attn_error(extra.get("attn_implementation"), name, e)
        raise


def raise_remote_code_error(name: str, error: Exception) -> None:
    """A ModelError saying how to allow it when transformers refused a model's own code (``trust_remote_code``
    off); returns for any other error."""
    if isinstance(error, ValueError) and "trust_remote_code=True" in str(error):
        raise ModelError(
            f"model {name!r} ships Python code of its own (an auto_map in its config), which runs only when you "
            "allow it: pass --trust-remote-code (decpo eval), or set model.trust_remote_code: true in your "
            "config (training), and only for code you trust"
        ) from error


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
    # lazy: peft loads slowly, and only an adapter folder needs it
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


# --- the config's ``model`` section (TRL's `ModelConfig` fields) passed whole


def load_options(m: DecPOModelConfig) -> dict[str, Any]:
    """`load_model`'s options from the ``model`` section."""
    return dict(
        gguf_file=m.gguf_file,
        dtype=m.dtype,
        trust_remote_code=m.trust_remote_code,
        revision=m.model_revision,
        attn_implementation=m.attn_implementation,
        **_bnb_options(m),
    )


def _bnb_options(m: DecPOModelConfig) -> dict[str, Any]:
    """The bitsandbytes fields of the ``model`` section, as `quantization_config` and `load_model` take them."""
    return dict(
        load_in_4bit=m.load_in_4bit,
        load_in_8bit=m.load_in_8bit,
        bnb_4bit_quant_type=m.bnb_4bit_quant_type,
        use_bnb_nested_quant=m.use_bnb_nested_quant,
        bnb_4bit_quant_storage=m.bnb_4bit_quant_storage,
    )


def check_model_config(m: DecPOModelConfig) -> None:
    """The ``model`` section's loading options checked without loading anything: a valid
    ``attn_implementation``, and bitsandbytes quantization where it can run (CUDA, bitsandbytes, a model of
    full-precision weights); a ModelError naming the key otherwise."""
    check_attn_implementation(m.attn_implementation)
    quantization = quantization_config(**_bnb_options(m), dtype=m.dtype)
    if quantization is not None:
        option = "load_in_4bit" if m.load_in_4bit else "load_in_8bit"
        check_quantizable(m.model_name_or_path, gguf_file=m.gguf_file, option=option)


def load_model_from_config(
    m: DecPOModelConfig, *, seed: int = 0, device: str | None = None
) -> PreTrainedModel:
    """`load_model` of the ``model`` section's model with its options."""
    return load_model(m.model_name_or_path, **load_options(m), seed=seed, device=device)


def load_tokenizer_from_config(m: DecPOModelConfig) -> PreTrainedTokenizerBase:
    """`load_tokenizer` of the ``model`` section's model."""
    return load_tokenizer(m.model_name_or_path, m.gguf_file, m.trust_remote_code, m.model_revision)
