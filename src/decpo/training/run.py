"""One training run: config -> data -> model -> `DecPOTrainer` -> run directory.

The run directory holds ``config.yaml`` (the config as given), ``env.json``, ``reg_weight.json`` (with
``train.reg_weight: auto``: the lambda it resolved to, `decpo.records`), ``metrics.jsonl``, the Trainer's
``checkpoint-*`` folders (safetensors) and ``final/`` (a peft adapter or full weights, loadable with
``from_pretrained``). Re-running the same command resumes from the latest complete checkpoint, provided
the config is the saved one up to `decpo.training.checkpoints.RESUMABLE_KEYS`.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from decpo.config import RunConfig, save_config
from decpo.env import environment
from decpo.io import atomic_write_json, check_writable
from decpo.records import write_reg_weight
from decpo.training.args import trainer_args
from decpo.training.build import build_trainer
from decpo.training.checkpoints import check_resume_config, resume_checkpoint
from decpo.training.checks import check_hub_upload, check_model_options
from decpo.training.data import load_records
from decpo.training.trackers import tracker_env

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    output_dir: Path
    final_dir: Path
    metrics: dict[str, float]
    wall_time_s: float


def train(
    cfg: RunConfig,
    output_dir: str | Path,
    *,
    allow_config_change: bool = False,
    pairs_path: str | Path | None = None,
) -> TrainResult:
    """Train per ``cfg`` into ``output_dir``, resuming from its latest complete checkpoint.

    A checkpoint is resumed only under the config it was trained with, up to ``RESUMABLE_KEYS``; otherwise
    a `ConfigError` names the changed keys, unless ``allow_config_change``. With ``pairs.source`` the pairs
    are read from ``pairs_path``, the file the pairs step built (`decpo.training.data.load_records`).
    """
    output_dir = Path(output_dir)
    check_writable(output_dir)
    args = trainer_args(cfg, output_dir)  # TRL's own checks, then the Hub's: before data and model
    check_hub_upload(args)
    check_model_options(cfg.model)
    resume = resume_checkpoint(cfg, output_dir)
    if resume:
        check_resume_config(cfg, output_dir, resume, allow_config_change)
    t0 = time.perf_counter()
    train_records, eval_records = load_records(cfg, pairs_path)
    logger.info("data: %d train pairs, %d eval pairs", len(train_records), len(eval_records))
    main_process = int(os.environ.get("RANK", "0")) == 0  # under accelerate/torchrun only rank 0 writes
    if main_process:
        save_config(cfg, output_dir / "config.yaml")
        atomic_write_json(output_dir / "env.json", environment())

    with tracker_env(output_dir):
        trainer = build_trainer(cfg, output_dir, train_records, eval_records, args)
        if main_process and trainer.reg_weight_calibration:
            # the one record of the lambda `auto` resolved to; config.yaml keeps `auto` (the calibration is
            # deterministic, so `--config <run>/config.yaml` resolves it to the same lambda)
            write_reg_weight(output_dir, trainer.reg_weight_calibration)
        if main_process and resume is None and (output_dir / "metrics.jsonl").exists():
            (output_dir / "metrics.jsonl").unlink()  # a fresh start: old metrics would mix with new ones
        if resume:
            logger.info("resuming from %s", resume)
        trainer.train(resume_from_checkpoint=str(resume) if resume else None)
        final_dir = _save_final(trainer, output_dir, main_process)
        metrics = _final_metrics(trainer) if eval_records else {}
    wall = time.perf_counter() - t0
    if main_process:
        atomic_write_json(output_dir / "final_metrics.json", {**metrics, "wall_time_s": wall})
    return TrainResult(output_dir, final_dir, metrics, wall)


def _save_final(trainer, output_dir: Path, main_process: bool) -> Path:
    """``final/``: the weights and tokenizer, written under a temporary name and renamed when complete
    (save_model writes on rank 0); then the upload with ``train.push_to_hub``."""
    final_dir = output_dir / "final"
    tmp = output_dir / ".final.tmp"
    if main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    trainer.save_model(str(tmp), _internal_call=True)  # the upload (train.push_to_hub) comes after, once
    if main_process:
        trainer.processing_class.save_pretrained(str(tmp))
        shutil.rmtree(final_dir, ignore_errors=True)
        os.replace(tmp, final_dir)
    trainer.accelerator.wait_for_everyone()
    if trainer.args.push_to_hub:
        # as TRL's scripts end: the Trainer saves the final model and its card at the top of the run folder and
        # uploads the folder (its checkpoint-* aside) to train.hub_model_id
        trainer.push_to_hub()
    return final_dir


def _final_metrics(trainer) -> dict[str, float]:
    """The eval metrics at the last step (``eval/...``): the last evaluation when it ran at the last step,
    else one more."""
    evals = [h for h in trainer.state.log_history if "eval_loss" in h]
    last = evals[-1] if evals and evals[-1].get("step") == trainer.state.global_step else trainer.evaluate()
    return {k.replace("eval_", "eval/", 1): v for k, v in last.items() if k.startswith("eval_")}
