"""The trainer's arguments from a run config: the ``train`` section, field for field, as a `DecPOConfig`
(or a `SimPOConfig` for ``objective.name: simpo``), with the run folder and the method's regularizer."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from decpo.config import ConfigError, RunConfig
from decpo.config.trainer_args import DecPOConfig, SimPOConfig
from decpo.training.trackers import report_to


def _init_fields(cls) -> set[str]:
    """The arguments ``cls(...)`` takes."""
    return {f.name for f in dataclasses.fields(cls) if f.init}


def _simpo_kwargs(values: dict[str, Any]) -> dict[str, Any]:
    """The `SimPOConfig` arguments among ``values`` (TRL's CPOTrainer as SimPO: reference-free,
    length-normalised, target margin gamma); the DPO-only features it lacks are refused."""
    if values["train_sampling_strategy"] == "group_by_length":
        raise ConfigError(
            "train.train_sampling_strategy=group_by_length is not supported with objective.name=simpo"
        )
    if values["share_prompt"]:
        raise ConfigError("train.share_prompt is not supported with objective.name=simpo (TRL's CPOTrainer)")
    names = _init_fields(SimPOConfig)
    kwargs = {k: v for k, v in values.items() if k in names}
    kwargs.update(loss_type="simpo", remove_unused_columns=False)
    return kwargs


def _decpo_kwargs(values: dict[str, Any], objective: str) -> dict[str, Any]:
    """The `DecPOConfig` arguments among ``values`` (DPO, DecPO, L1-Reg, SFT): all but SimPO's own."""
    names = _init_fields(DecPOConfig)
    kwargs = {k: v for k, v in values.items() if k in names}
    if objective == "sft":
        kwargs["loss_type"] = ["sft"]
    if not kwargs["precompute_ref_log_probs"]:
        kwargs["ref_logps_cache"] = None
    return kwargs


def trainer_args(cfg: RunConfig, output_dir: Path) -> DecPOConfig | SimPOConfig:
    """`DecPOConfig` (or `SimPOConfig`) from the ``train`` section, field for field, with ``output_dir`` and
    the method's ``reg_type``; TRL's and transformers' own checks run here (a `ConfigError` naming them)."""
    values = dataclasses.asdict(cfg.train)
    o = cfg.objective
    values.update(output_dir=str(output_dir), reg_type=o.regularizer, report_to=report_to(cfg.train))
    if not o.regularizer:
        values["reg_weight"] = 0.0
    if not torch.cuda.is_available():
        values["use_cpu"] = True  # transformers refuses a mixed-precision setting on a machine without a GPU
    if values["eval_strategy"] == "no":
        values["eval_on_start"] = False  # nothing to evaluate at the start either
    if o.name == "simpo":
        cls, kwargs = SimPOConfig, _simpo_kwargs(values)
    else:
        cls, kwargs = DecPOConfig, _decpo_kwargs(values, o.name)
    try:
        return cls(**kwargs)
    except (ValueError, TypeError, ImportError) as e:  # TRL's and transformers' checks
        raise ConfigError(f"train: {e}") from e
