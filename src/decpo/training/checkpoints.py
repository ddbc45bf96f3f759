"""Resuming a training run: which checkpoint (the newest complete one, or the one
``train.resume_from_checkpoint`` names) and under which config (the run's saved ``config.yaml``, up to
`RESUMABLE_KEYS`)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import yaml
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from decpo.config import ConfigError, RunConfig
from decpo.integrity import manifest_problem
from decpo.training.fsdp_resume import FSDP_MODEL_NAME, FULL_OPTIMIZER, FULL_WEIGHTS, fsdp_checkpoint_kind

logger = logging.getLogger(__name__)


def resume_checkpoint(cfg: RunConfig, output_dir: Path) -> Path | None:
    """The checkpoint ``train.resume_from_checkpoint`` names: ``last`` the newest complete one in
    ``output_dir`` (None: a fresh start), a path that checkpoint, null none."""
    where = cfg.train.resume_from_checkpoint
    if where is None:
        return None
    if where == "last":
        return latest_checkpoint(output_dir)
    path = Path(where).expanduser()
    problem = checkpoint_problem(path) if path.is_dir() else "no such folder"
    if problem:
        raise ConfigError(f"train.resume_from_checkpoint={where!r}: cannot resume from it ({problem})")
    return path


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The newest complete checkpoint (`checkpoint_problem`); a damaged or truncated one is skipped with a
    warning naming the file."""
    candidates = sorted(
        (p for p in output_dir.glob(f"{PREFIX_CHECKPOINT_DIR}-*") if p.name.split("-")[-1].isdigit()),
        key=lambda p: int(p.name.split("-")[-1]),
        reverse=True,
    )
    for ckpt in candidates:
        problem = checkpoint_problem(ckpt)
        if problem is None:
            return ckpt
        logger.warning("skipping checkpoint %s: %s", ckpt, problem)
    return None


def checkpoint_problem(ckpt: Path) -> str | None:
    """None when ``ckpt`` can be resumed from, else what is wrong with it (naming the file): a checkpoint is
    complete only when its manifest (`decpo.integrity`, written last at save) exists and matches its files.

    Under DeepSpeed the optimizer state (and, under ZeRO-3 without gathered weights, the weights) are in the
    folder that its ``latest`` file names, one file per process, not in ``optimizer.pt``. Under FSDP they are
    in ``optimizer.bin`` and ``pytorch_model_fsdp.bin`` (``fsdp_state_dict_type: FULL_STATE_DICT``) or in the
    folders ``optimizer_0/`` and ``pytorch_model_fsdp_0/`` (``SHARDED_STATE_DICT``)."""
    if not (ckpt / "trainer_state.json").is_file():
        return "no trainer_state.json (interrupted while saving)"
    deepspeed = _deepspeed_states(ckpt)
    if isinstance(deepspeed, str):
        return deepspeed
    fsdp = _fsdp_states(ckpt)
    if isinstance(fsdp, str):
        return fsdp
    weights = list(ckpt.glob("*.safetensors"))
    if not weights and not (deepspeed and deepspeed["model"]) and not fsdp:
        return "no safetensors weights"
    for w in weights:
        try:
            expected = _safetensors_size(w)
        except (OSError, ValueError, KeyError) as e:
            return f"{w.name} is unreadable: {e}"
        if w.stat().st_size < expected:
            return f"{w.name} is truncated ({w.stat().st_size} of {expected} bytes)"
    for name in ("scheduler.pt",) if deepspeed or fsdp else ("optimizer.pt", "scheduler.pt"):
        if not (ckpt / name).is_file():
            return f"no {name}"
    return manifest_problem(ckpt)


def _deepspeed_states(ckpt: Path) -> dict[str, list[Path]] | str | None:
    """A DeepSpeed checkpoint's state files ``{"optim": [...], "model": [...]}`` in the folder its ``latest``
    names (``global_step<N>``); None when it is no DeepSpeed checkpoint; what is missing as a string."""
    latest = ckpt / "latest"
    if not latest.is_file():
        return None
    tag = latest.read_text().strip()
    states = {kind: sorted((ckpt / tag).glob(f"*_{kind}_states.pt")) for kind in ("optim", "model")}
    if not states["optim"]:
        return f"no DeepSpeed optimizer states in {tag}/ (named by latest)"
    return states


def _fsdp_states(ckpt: Path) -> list[Path] | str | None:
    """An FSDP checkpoint's model and optimizer states (`decpo.training.fsdp_resume.fsdp_checkpoint_kind`: whole
    in ``pytorch_model_fsdp.bin`` and ``optimizer.bin``, or sharded in folders that must hold files, their
    ``.distcp`` shards and ``.metadata``); None when it is no FSDP checkpoint; what is missing as a string."""
    kind = fsdp_checkpoint_kind(ckpt)
    if kind is None:
        return None
    filled = lambda pattern: [p for p in ckpt.glob(pattern) if p.is_dir() and any(p.iterdir())]  # noqa: E731
    model = [ckpt / FULL_WEIGHTS] if kind == "full" else filled(f"{FSDP_MODEL_NAME}*")
    if not model:
        return f"the FSDP model state folder in {ckpt.name} is empty"
    optim = [ckpt / FULL_OPTIMIZER] if (ckpt / FULL_OPTIMIZER).is_file() else filled("optimizer*")
    if not optim:
        return "no FSDP optimizer state (optimizer.bin or optimizer_0/)"
    return [*model, *optim]


def _safetensors_size(path: Path) -> int:
    with open(path, "rb") as f:
        header_len = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(header_len))
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    return 8 + header_len + end


# Keys a resumed run may change (`config_changes` skips them; a key ending in "." is a whole section): how
# long it trains, how often it logs, evaluates and saves, the resume switch, the trackers and the Hub upload
# (a key ending in "_" is a prefix: train.hub_*), the reference log-prob cache
# switch (the same numbers either way), the probes during training (measurements under no_grad, no effect on
# the weights) and the `decpo run` section (not read by training). Any other change refuses to resume.
RESUMABLE_KEYS = (
    "train.max_steps",
    "train.num_train_epochs",
    "train.logging_steps",
    "train.logging_first_step",
    "train.eval_strategy",
    "train.eval_steps",
    "train.eval_on_start",
    "train.save_strategy",
    "train.save_steps",
    "train.save_total_limit",
    "train.resume_from_checkpoint",
    "train.ref_logps_cache",
    "train.report_to",
    "train.run_name",
    "train.logging_dir",
    "train.disable_tqdm",
    "train.push_to_hub",
    "train.hub_",
    "probe.",
    "experiment.",
)


def _flat(tree: dict[str, Any]) -> dict[str, Any]:
    return {
        f"{section}.{key}": value
        for section, values in tree.items()
        if isinstance(values, dict)
        for key, value in values.items()
    }


def config_changes(saved: dict[str, Any], new: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``key -> (old, new)`` for the dotted keys whose values differ between two config trees (sections of
    keys, as in ``config.yaml``), except `RESUMABLE_KEYS`; a key missing on one side has the value None."""
    old, now = _flat(saved), _flat(new)
    return {
        key: (old.get(key), now.get(key))
        for key in sorted(set(old) | set(now))
        if old.get(key) != now.get(key) and not _resumable(key)
    }


def _resumable(key: str) -> bool:
    return any(key == k or (k.endswith((".", "_")) and key.startswith(k)) for k in RESUMABLE_KEYS)


def check_resume_config(
    cfg: RunConfig, output_dir: Path, checkpoint: Path, allow_config_change: bool = False
) -> None:
    """Refuse to resume ``checkpoint`` under a config that differs from the run's saved ``config.yaml``.

    The differing keys are named (old -> new); with ``allow_config_change`` they are logged and the run
    resumes. ``config.yaml`` holds the config as given (``reg_weight: auto`` stays ``auto``; the lambda it
    resolved to is ``reg_weight.json``), so it compares like with like.
    """
    path = output_dir / "config.yaml"
    if not path.is_file():
        logger.warning(
            "%s has checkpoints but no config.yaml: resuming without checking the config", output_dir
        )
        return
    try:
        saved = yaml.safe_load(path.read_text()) or {}
        if not isinstance(saved, dict):
            raise ValueError(f"a {type(saved).__name__}, not a mapping of sections")
    except (yaml.YAMLError, ValueError) as e:
        raise ConfigError(
            f"{path} is damaged, so resuming {checkpoint.name} cannot be checked against it "
            f"({' '.join(str(e).split())}); restore it, or use another --output-dir"
        ) from e
    new = yaml.safe_load(yaml.safe_dump(cfg.to_dict()))  # the types config.yaml holds
    changes = config_changes(saved, new)
    if not changes:
        return
    listed = ", ".join(f"{key}: {old!r} -> {now!r}" for key, (old, now) in changes.items())
    if allow_config_change:
        logger.warning("resuming %s with a changed config (allowed): %s", checkpoint, listed)
        return
    raise ConfigError(
        f"{output_dir} holds a run with another config, and resuming {checkpoint.name} would go on under the new "
        f"one: {listed}. Use another --output-dir, restore these keys, or pass --allow-config-change "
        f"(train(..., allow_config_change=True)) to resume anyway. These may change on resume: "
        f"{', '.join(k + '*' if k.endswith(('.', '_')) else k for k in RESUMABLE_KEYS)}."
    )
