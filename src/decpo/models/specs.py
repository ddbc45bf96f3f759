"""Model specs without torch or transformers: the names of the built-in models, where a GGUF spec's converted
folder lies, and the block count a model folder's ``config.json`` gives.

The command line checks a config's block numbers (``train.reg_layers``, ``decpo sweep --layers``) with
`known_block_count` before it imports torch, so that a block the model does not have is refused in well under 2
seconds; `decpo.models.loading.block_count` asks transformers for the models this module cannot count (a
cached Hub model, a GGUF file not converted yet).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from decpo.env import cache_dir
from decpo.integrity import MANIFEST, file_sha256
from decpo.models.errors import ModelError

DEFAULT_NAME = "default"  # the embedded SmolLM2-135M-Instruct (`decpo.models.gguf`)
DEFAULT_FOLDER = "smollm2-135m-instruct"  # its converted folder in the cache
TINY_NAME = "tiny-random-llama"  # built in-process (`decpo.models.tiny`)
TINY_NUM_LAYERS = 2  # the blocks of the tiny model `load_model(TINY_NAME)` builds
CONFIG_FILE = "config.json"


def is_gguf(name: str, gguf_file: str | None = None) -> bool:
    """A spec that names a GGUF model: the embedded default, a ``.gguf`` file or a folder's ``gguf_file``."""
    return name == DEFAULT_NAME or name.endswith(".gguf") or bool(gguf_file)


def gguf_source(name: str, gguf_file: str | None = None) -> Path:
    """The GGUF file of a spec other than the embedded default: ``name`` itself (``.gguf``) or the folder's
    ``gguf_file``; a ModelError when it does not exist."""
    path = Path(name)
    gguf_path = path if name.endswith(".gguf") else path / gguf_file  # type: ignore[operator]
    if not gguf_path.is_file():
        raise ModelError(f"GGUF file not found: {gguf_path}")
    return gguf_path


def converted_folder(name: str, gguf_file: str | None = None) -> Path:
    """Where the converted safetensors folder of a GGUF spec (`is_gguf`) lies in the cache, made or not."""
    if name == DEFAULT_NAME:
        return cache_dir() / DEFAULT_FOLDER
    gguf_path = gguf_source(name, gguf_file)
    return cache_dir() / f"gguf-{gguf_path.stem}-{gguf_path.stat().st_size}"


def known_block_count(name: str | None, gguf_file: str | None = None) -> int | None:
    """The blocks of model ``name`` (``num_hidden_layers``) as far as they are known without transformers: the
    tiny model's; a local folder's ``config.json``; a converted GGUF folder's, while its ``config.json`` matches
    the folder's manifest. None otherwise (a Hub id, a GGUF file not converted yet, a folder whose config has no
    ``num_hidden_layers``): `decpo.models.loading.block_count` then reads the config with transformers."""
    if not name:
        return None
    if name == TINY_NAME:
        return TINY_NUM_LAYERS
    try:
        if is_gguf(name, gguf_file):
            folder = converted_folder(name, gguf_file)
            if not _config_matches_manifest(folder):
                return None
        else:
            folder = Path(name).expanduser()
        config = json.loads((folder / CONFIG_FILE).read_text())
    except (ModelError, OSError, ValueError):
        return None
    n = config.get("num_hidden_layers") if isinstance(config, dict) else None
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else None


def _config_matches_manifest(folder: Path) -> bool:
    """Whether a converted folder's ``config.json`` has the size and sha256 its manifest records (the weights
    are checked where they load, `decpo.models.gguf`)."""
    try:
        entry = json.loads((folder / MANIFEST).read_text())["files"][CONFIG_FILE]
        path = folder / CONFIG_FILE
        return path.stat().st_size == int(entry["size"]) and file_sha256(path) == str(entry["sha256"])
    except (OSError, ValueError, KeyError, TypeError):
        return False


def block_indices(n: int, layers: Sequence[int]) -> list[int]:
    """``layers`` of a model of ``n`` blocks as absolute indices (negative ones count from the end); a
    `ModelError` with the count for one out of range."""
    out = []
    for layer in layers:
        if not -n <= layer < n:
            raise ModelError(f"the model has {n} blocks (0..{n - 1}); layer {layer} does not exist")
        out.append(layer % n)
    return out
