"""Resuming, in one process without FSDP, a checkpoint that FSDP saved.

transformers' Trainer refuses it ("only supported when using PyTorch FSDP"): FSDP saves the weights in
``pytorch_model_fsdp.bin`` and the optimizer in ``optimizer.bin``, keyed by parameter name, where a plain run reads
``optimizer.pt``, keyed by position. With ``fsdp_state_dict_type: FULL_STATE_DICT`` (configs/accelerate/fsdp.yaml)
both files hold whole tensors, so a plain run can take them: `FSDPCheckpointMixin` loads them, the optimizer state
renumbered by `positional_optimizer_state`. A sharded checkpoint (``SHARDED_STATE_DICT``: folders of per-process
shards) is refused with what to do instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from accelerate.utils.constants import FSDP_MODEL_NAME

from decpo.errors import DecPOError

FULL_WEIGHTS = f"{FSDP_MODEL_NAME}.bin"
FULL_OPTIMIZER = "optimizer.bin"


class FSDPCheckpointError(DecPOError, ValueError):
    """A checkpoint FSDP saved that this run cannot take (the command line prints it, no traceback)."""


def fsdp_checkpoint_kind(ckpt: Path) -> str | None:
    """``"full"`` when FSDP saved ``ckpt`` with whole tensors (``pytorch_model_fsdp.bin``), ``"sharded"`` when in
    per-process shards (a ``pytorch_model_fsdp*`` folder), None when FSDP did not save it."""
    if (ckpt / FULL_WEIGHTS).is_file():
        return "full"
    if any(p.is_dir() for p in ckpt.glob(f"{FSDP_MODEL_NAME}*")):
        return "sharded"
    return None


def positional_optimizer_state(saved: dict[str, Any], optimizer, names: dict[int, str]) -> dict[str, Any]:
    """FSDP's whole optimizer state (``state`` and each group's ``params`` keyed by parameter name) as
    ``optimizer.load_state_dict`` takes it (keyed by position over the groups), for ``optimizer``'s parameters,
    named by ``names`` (``id(parameter)`` -> name). Raises when the two do not hold the same parameters."""
    if len(saved["param_groups"]) != len(optimizer.param_groups):
        raise FSDPCheckpointError(
            f"the saved optimizer has {len(saved['param_groups'])} parameter groups, this run's "
            f"{len(optimizer.param_groups)}"
        )
    state: dict[int, Any] = {}
    groups = []
    position = 0
    for group, saved_group in zip(optimizer.param_groups, saved["param_groups"], strict=True):
        ours = [names[id(p)] for p in group["params"]]
        if sorted(ours) != sorted(saved_group["params"]):
            differ = sorted(set(ours) ^ set(saved_group["params"]))
            raise FSDPCheckpointError(
                f"the saved optimizer and this run train different parameters (e.g. {differ[0]})"
            )
        positions = []
        for name in ours:
            if name in saved["state"]:
                state[position] = saved["state"][name]
            positions.append(position)
            position += 1
        groups.append({**{k: v for k, v in saved_group.items() if k != "params"}, "params": positions})
    return {"state": state, "param_groups": groups}


class FSDPCheckpointMixin:
    """A Trainer that resumes, in one process without FSDP, a checkpoint FSDP saved whole (see module
    docstring); any other checkpoint, or a run under FSDP, goes through transformers' own loading."""

    def _fsdp_checkpoint(self, checkpoint) -> Path | None:
        if checkpoint is None or self.is_fsdp_enabled:
            return None
        ckpt = Path(checkpoint)
        kind = fsdp_checkpoint_kind(ckpt)
        if kind == "sharded":
            raise FSDPCheckpointError(
                f"{ckpt} was saved by FSDP in per-process shards (fsdp_state_dict_type: SHARDED_STATE_DICT): "
                "resume it under FSDP (accelerate launch --config_file <the same FSDP config>), or save with "
                "FULL_STATE_DICT (configs/accelerate/fsdp.yaml) to resume anywhere"
            )
        return ckpt if kind == "full" else None

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        ckpt = self._fsdp_checkpoint(resume_from_checkpoint)
        if ckpt is None:
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        model = self.model if model is None else model
        weights = torch.load(ckpt / FULL_WEIGHTS, map_location="cpu", weights_only=True)
        missing, unexpected = model.load_state_dict(weights, strict=False)
        missing = set(missing)
        trained = [n for n, p in model.named_parameters() if p.requires_grad and n in missing]
        if unexpected or trained:
            name = (unexpected or trained)[0]
            what = "is not a parameter of this model" if unexpected else "is missing"
            raise FSDPCheckpointError(f"{ckpt / FULL_WEIGHTS}: {name} {what}")

    def _load_optimizer_and_scheduler(self, checkpoint):
        ckpt = self._fsdp_checkpoint(checkpoint)
        if ckpt is None or (ckpt / "optimizer.pt").is_file():
            return super()._load_optimizer_and_scheduler(checkpoint)
        saved = torch.load(ckpt / FULL_OPTIMIZER, map_location=self.args.device, weights_only=True)
        names = {id(p): n for n, p in self.model.named_parameters()}
        self.optimizer.load_state_dict(positional_optimizer_state(saved, self.optimizer, names))
        self.lr_scheduler.load_state_dict(torch.load(ckpt / "scheduler.pt", weights_only=True))
