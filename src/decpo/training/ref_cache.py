"""A persistent, content-addressed cache of precomputed reference log-probs.

TRL's `DPOTrainer._precompute_ref_logps` keys its cache on the in-memory dataset's random fingerprint and
writes it to a temporary folder, so two trainers on the same base model and data (``decpo run`` trains DPO,
then DecPO) each run the full reference pass. `CachedReferenceMixin` keys the values instead on what they
depend on (the tokenized pairs, the reference weights and the settings of the pass) and keeps them as
``{cache}/{key}.safetensors``; the second trainer reads them back. Each file records the sha256 of its values
(`values_sha256`, in its metadata): a damaged or edited entry is recomputed with a warning, never used.

The weights are hashed when TRL hashes them, before it shards the reference (DeepSpeed ZeRO-3, FSDP): a
partitioned parameter holds an empty tensor (or a slice) on each rank, so two checkpoints of one
architecture would hash alike. Weights that are already partitioned then (a model loaded under ZeRO-3's
``zero.Init``) cannot be hashed: the cache is off, with a warning, and TRL computes the values.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
import transformers
import trl
from accelerate.utils import broadcast_object_list, is_peft_model
from datasets import Dataset
from safetensors import safe_open
from safetensors.torch import save

from decpo.errors import DecPOError
from decpo.io import atomic_write_bytes, stable_hash

logger = logging.getLogger(__name__)

REF_COLUMNS = ("ref_chosen_logps", "ref_rejected_logps")
TOKEN_COLUMNS = ("prompt_ids", "chosen_ids", "rejected_ids")
# config keys that do not change the reference forward (paths, versions, generation-time settings)
_IGNORED_CONFIG_KEYS = {
    "_name_or_path",
    "name_or_path",
    "transformers_version",
    "_commit_hash",
    "use_cache",
    "architectures",
    "dtype",
    "torch_dtype",
}
_PEFT_PREFIX = "base_model.model."
_PEFT_WRAPPER_SEGMENTS = ("base_layer", "original_module")


def hash_dataset_tokens(dataset, columns=TOKEN_COLUMNS) -> str:
    """sha256 of the token lists of ``columns``, row by row (an indices mapping, from `filter` or `select`, is
    followed; row order matters)."""
    table = dataset.select_columns(list(columns)).with_format("arrow")[:]
    h = hashlib.sha256()
    h.update(str(len(dataset)).encode())
    for name in columns:
        col = table.column(name).combine_chunks()
        if col.null_count:
            raise ValueError(f"column {name} has missing values")
        lengths = pc.list_value_length(col).to_numpy(zero_copy_only=False).astype("<i8")
        values = pc.cast(col.flatten(), pa.int64()).to_numpy(zero_copy_only=False).astype("<i8")
        h.update(name.encode())
        h.update(lengths.tobytes())
        h.update(values.tobytes())
    return h.hexdigest()


def hash_named_tensors(named) -> str:
    """sha256 of ``(name, tensor)`` pairs, sorted by name: names, shapes, dtypes and raw bytes."""
    h = hashlib.sha256()
    for name, tensor in sorted(named, key=lambda kv: kv[0]):
        t = tensor.detach()
        if hasattr(t, "full_tensor"):  # DTensor (FSDP2): gather the full value
            t = t.full_tensor()
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}|".encode())
        t = t.cpu().contiguous().reshape(-1)
        h.update(t.view(torch.uint8).numpy().data if t.numel() else b"")
    return h.hexdigest()


class ShardedWeightsError(DecPOError, ValueError):
    """The weights on this rank are shards of the model's (ZeRO-3, FSDP1): their bytes do not identify it."""


def _logical_numel(t: torch.Tensor) -> int | None:
    """The full size of a tensor as its sharding framework records it, or None when none does."""
    numel = getattr(t, "ds_numel", None)  # DeepSpeed ZeRO-3 (which also records ds_shape)
    if isinstance(numel, int):
        return numel
    # FSDP1's FlatParameter: its local shard of the flattened, concatenated parameters
    shape = getattr(t, "ds_shape", None) or getattr(t, "_unpadded_unsharded_size", None)
    return None if shape is None else math.prod(shape)


def sharded_tensor_names(named) -> list[str]:
    """Names of the ``(name, tensor)`` pairs whose local value is not the whole tensor: empty data of a larger (or
    unknown) logical size, a size other than the recorded full one, or an FSDP1 view (``_fsdp_flattened``). A DTensor
    is not one: `hash_named_tensors` gathers it."""
    out = []
    for name, t in named:
        if hasattr(t, "full_tensor"):
            continue
        logical = _logical_numel(t)
        empty = t.numel() == 0 and logical != 0
        if empty or logical not in (None, t.numel()) or getattr(t, "_fsdp_flattened", False):
            out.append(name)
    return out


def _normalize_peft_name(name: str) -> str:
    """The base model's own name of a parameter of a PEFT model (wrapper segments removed)."""
    if name.startswith(_PEFT_PREFIX):
        name = name[len(_PEFT_PREFIX) :]
    return ".".join(part for part in name.split(".") if part not in _PEFT_WRAPPER_SEGMENTS)


def _config_dict(model) -> dict[str, Any]:
    config = getattr(model, "config", None)
    if config is None:
        return {}
    d = {k: v for k, v in config.to_dict().items() if k not in _IGNORED_CONFIG_KEYS}
    d["_attn_implementation"] = getattr(config, "_attn_implementation", None)
    return d


def reference_fingerprint(trainer) -> dict[str, Any]:
    """What identifies the reference model of a `DPOTrainer`, for the cache key.

    - an explicit ``ref_model``: all its parameters and buffers;
    - a PEFT policy without one (the reference is the base model with the adapter disabled, or TRL's frozen
      "ref" adapter when there is one): its parameters and buffers except the trainable ones of its own
      adapters, named as in the base model (so LoRA on other modules, or full fine-tuning, share the entry);
    - full fine-tuning without one: the policy at init, all its parameters and buffers.
    """
    extra: dict[str, Any] = {}
    if trainer.ref_model is not None:
        model = trainer.accelerator.unwrap_model(trainer.ref_model)
        named = list(model.named_parameters()) + list(model.named_buffers())
    else:
        model = trainer.accelerator.unwrap_model(trainer.model)
        if is_peft_model(model):
            adapters = {a for a in model.peft_config if a != "ref"}

            def adapter_param(name: str, p: torch.Tensor) -> bool:
                return p.requires_grad and bool(adapters.intersection(name.split(".")))

            named = [
                (_normalize_peft_name(n), p) for n, p in model.named_parameters() if not adapter_param(n, p)
            ]
            named += [(_normalize_peft_name(n), b) for n, b in model.named_buffers()]
            if "ref" in model.peft_config:  # its scaling (alpha / r) is not a tensor
                extra["ref_adapter"] = stable_hash(model.peft_config["ref"].to_dict())
            model = model.get_base_model()
        else:
            named = list(model.named_parameters()) + list(model.named_buffers())
    # before any gather, and from attributes every rank has, so that all ranks stop here or none does
    sharded = sharded_tensor_names(named)
    if sharded:
        raise ShardedWeightsError(
            f"the reference weights are partitioned (DeepSpeed ZeRO-3 or FSDP): {len(sharded)} of {len(named)} "
            f"tensors hold only a shard on this rank (e.g. {', '.join(sharded[:3])}), so their hash would not tell "
            "two checkpoints apart; the cache is off for this pass"
        )
    return {
        "weights": hash_named_tensors(named),
        "class": type(model).__name__,
        "config": stable_hash(_config_dict(model)),
        "dtype": str(getattr(model, "dtype", None)),
        **extra,
    }


class CachedReferenceMixin:
    """Keeps a `DPOTrainer`'s precomputed reference log-probs in ``args.ref_logps_cache`` (a folder), keyed on
    content; ``ref_logps_cache=None`` (or absent) keeps TRL's behaviour. Sits before `DPOTrainer` in the MRO, after
    any mixin that swaps the collator in its own ``_precompute_ref_logps`` (the key records the collator).

    The reference is fingerprinted at the point where TRL hashes it (TRL's ``_precompute_model_hash`` is set just
    before the reference is sharded), and that fingerprint keys the passes of ``__init__``. Later passes
    (``evaluate(eval_dataset=...)``) fingerprint the reference as it is then. Should TRL stop setting the attribute,
    every pass fingerprints late: sharded weights are then detected and the cache is turned off.
    """

    def __init__(self, *args, **kwargs):
        self._ref_cache_reference: dict[str, Any] | Exception | None = None
        try:
            super().__init__(*args, **kwargs)
        finally:
            self._ref_cache_reference = None

    @property
    def _precompute_model_hash(self):
        return self.__dict__.get("_trl_precompute_model_hash")

    @_precompute_model_hash.setter
    def _precompute_model_hash(self, value) -> None:
        self.__dict__["_trl_precompute_model_hash"] = value
        if value is not None and getattr(self.args, "ref_logps_cache", None):
            try:
                self._ref_cache_reference = reference_fingerprint(self)
            except Exception as e:  # noqa: BLE001 - reported when a pass asks for the key
                self._ref_cache_reference = e

    def _ref_cache_key(self, dataset, batch_size: int) -> tuple[str, dict[str, Any]]:
        args = self.args
        t0 = time.perf_counter()
        reference = getattr(self, "_ref_cache_reference", None) or reference_fingerprint(self)
        if isinstance(reference, Exception):
            raise reference
        t_weights = time.perf_counter() - t0
        parts = {
            "format": 3,  # 3: the values' sha256 in the file's metadata
            "data": hash_dataset_tokens(dataset),
            "rows": len(dataset),
            "reference": reference,
            "max_length": args.max_length,
            "truncation_mode": args.truncation_mode,
            "pad_to_multiple_of": args.pad_to_multiple_of,
            "batch_size": batch_size,
            "ld_alpha": getattr(self, "ld_alpha", args.ld_alpha),
            "bf16": bool(args.bf16),
            "fp16": bool(args.fp16),
            "share_prompt": getattr(args, "share_prompt", False),
            "pack_pairs": getattr(args, "pack_pairs", False),
            "collator": type(self.data_collator).__qualname__,
            "pad_token_id": getattr(self.data_collator, "pad_token_id", None),
            "device": self.accelerator.device.type,
            "num_processes": self.accelerator.num_processes,
            "trl": trl.__version__,
            "transformers": transformers.__version__,
            "torch": torch.__version__.split("+")[0],
        }
        logger.debug(
            "reference log-prob cache key in %.2f s (weights %.2f s)", time.perf_counter() - t0, t_weights
        )
        return stable_hash(parts), parts

    def _precompute_ref_logps(self, dataset, name: str, batch_size: int):
        if isinstance(dataset, Dataset) and self.accelerator.num_processes > 1 and not dataset.cache_files:
            dataset = self._file_backed(dataset, name)
        cache = getattr(self.args, "ref_logps_cache", None)
        if not cache or not isinstance(dataset, Dataset):
            logger.info(
                "reference log-probs for %s: computing them with the reference model (not cached)", name
            )
            return super()._precompute_ref_logps(dataset, name, batch_size)

        # Every rank hashes (a DTensor gather is collective); rank 0's key and cached values are used by all
        # (a ZeRO-3 shard hashes differently per rank), so every rank takes the same path.
        key = parts = None
        try:
            key, parts = self._ref_cache_key(dataset, batch_size)
        except Exception as e:  # noqa: BLE001 - an unhashable model or dataset: TRL's own path
            logger.warning("reference log-probs for %s: not cached (%s: %s)", name, type(e).__name__, e)
        path = Path(cache) / f"{key}.safetensors" if key else None
        cached = None
        if path is not None and self.accelerator.is_main_process:
            cached = _read_cached(path, len(dataset), name)
        key, cached = broadcast_object_list([key, cached], from_process=0)
        if key is None:
            return super()._precompute_ref_logps(dataset, name, batch_size)
        path = Path(cache) / f"{key}.safetensors"
        if cached is not None:
            logger.info("reference log-probs for %s: cache hit (%s)", name, path)
            chosen, rejected = cached
            return dataset.add_column(REF_COLUMNS[0], chosen).add_column(REF_COLUMNS[1], rejected)

        logger.info(
            "reference log-probs for %s: computing %d pairs with the reference model (once: then cached)",
            name,
            len(dataset),
        )
        out = super()._precompute_ref_logps(dataset, name, batch_size)
        if self.accelerator.is_main_process:
            table = out.select_columns(list(REF_COLUMNS)).with_format("arrow")[:]
            tensors = {
                c: torch.from_numpy(
                    np.array(table.column(c).to_numpy(zero_copy_only=False), dtype=np.float32)
                )
                for c in REF_COLUMNS
            }
            try:
                _write_cached(
                    path, tensors, {"name": name, "key": json.dumps(parts, sort_keys=True, default=str)}
                )
                logger.info("reference log-probs for %s: cached (%s)", name, path)
            except OSError as e:
                logger.warning("reference log-probs for %s: could not write %s (%s)", name, path, e)
        self.accelerator.wait_for_everyone()
        return out

    def _file_backed(self, dataset: Dataset, name: str) -> Dataset:
        """``dataset`` written by the main process to one Arrow file in the run folder, read by every process.

        TRL hands the reference log-probs from the main process to the others through an Arrow file in the
        folder of the dataset's own files. An in-memory dataset has none: each process would look in its
        own temporary folder, and all but the main one fail (FileNotFoundError) when there are several.
        """
        path = Path(self.args.output_dir) / "ref_logps_data" / f"{name}.arrow"
        if self.accelerator.is_main_process:
            path.parent.mkdir(parents=True, exist_ok=True)
            dataset = dataset.map(
                lambda batch: batch,
                batched=True,
                cache_file_name=str(path),
                load_from_cache_file=False,
                desc=f"Writing the {name} dataset for the other processes",
            )
        self.accelerator.wait_for_everyone()
        return dataset if self.accelerator.is_main_process else Dataset.from_file(str(path))


def values_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 of the cached columns' values (`REF_COLUMNS` in order, their raw bytes)."""
    h = hashlib.sha256()
    for c in REF_COLUMNS:
        h.update(tensors[c].contiguous().numpy().tobytes())
    return h.hexdigest()


def _read_cached(path: Path, rows: int, name: str) -> tuple[np.ndarray, np.ndarray] | None:
    """The two cached columns, or None (with a warning when the file exists but is unusable: unreadable, of
    another shape, or not matching the checksum it was written with)."""
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            tensors = {c: f.get_tensor(c) for c in REF_COLUMNS}
            recorded = (f.metadata() or {}).get("sha256")
        chosen, rejected = (tensors[c] for c in REF_COLUMNS)
        for t in (chosen, rejected):
            if t.dtype != torch.float32 or t.dim() != 1 or t.numel() != rows:
                raise ValueError(f"expected float32 vectors of {rows} values, got {t.dtype} {tuple(t.shape)}")
        if recorded != values_sha256(tensors):
            raise ValueError("its values do not match the sha256 it was written with (damaged or edited)")
    except Exception as e:  # noqa: BLE001 - a truncated or foreign file: recompute and overwrite
        logger.warning(
            "reference log-probs for %s: ignoring unreadable cache file %s (%s); recomputing", name, path, e
        )
        return None
    return chosen.numpy(), rejected.numpy()


def _write_cached(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    atomic_write_bytes(path, save(tensors, metadata={**metadata, "sha256": values_sha256(tensors)}))
