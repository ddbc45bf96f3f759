"""Assemble the trainer of a run: model and tokenizer from the config's ``model`` section, the datasets, the
reference model, the callbacks (metrics, log line, guards, probes, trackers), as `DecPOTrainer` or
`SimPOTrainer`. Nothing trains here."""

from __future__ import annotations

import os
from pathlib import Path

from transformers.trainer_callback import PrinterCallback, ProgressCallback
from trl import get_peft_config

from decpo.config import ConfigError, RunConfig
from decpo.models import (
    frozen_copy,
    is_quantized,
    load_model_from_config,
    load_tokenizer_from_config,
    prepare_for_kbit,
    resolve_layers,
)
from decpo.probes.callback import ProbeCallback
from decpo.training.args import trainer_args
from decpo.training.callbacks import (
    LogLineCallback,
    ManifestCallback,
    MetricsJsonlCallback,
    NonFiniteGuardCallback,
    QuietProgressCallback,
)
from decpo.training.data import check_prompt_lengths, to_dataset
from decpo.training.trackers import tracker_callbacks
from decpo.training.trainer import DecPOTrainer, SimPOTrainer


def build_trainer(
    cfg: RunConfig, output_dir: Path, train_records: list[dict], eval_records: list[dict], args=None
):
    """Load the model and tokenizer and assemble a `DecPOTrainer` (no training yet).

    ``args``: the trainer's arguments when the caller has built them already (`trainer_args`)."""
    args = args if args is not None else trainer_args(cfg, output_dir)
    trackers = tracker_callbacks(cfg.train, output_dir)
    tokenizer = load_tokenizer_from_config(cfg.model)
    model = _policy(cfg)
    if cfg.objective.regularizer:
        resolve_layers(model, cfg.train.reg_layers)  # a clear error before anything slow
    check_prompt_lengths(tokenizer, train_records, cfg.train.max_length, "train")
    check_prompt_lengths(tokenizer, eval_records, cfg.train.max_length, "eval")
    extra = {}
    if cfg.objective.name != "simpo":  # SimPO has no reference model
        extra["ref_model"] = reference_model(cfg, args, model)
    probe = (
        probe_callback(cfg, tokenizer, eval_records or train_records) if cfg.probe.every_n_steps > 0 else None
    )
    trainer_cls = SimPOTrainer if cfg.objective.name == "simpo" else DecPOTrainer
    trainer = trainer_cls(
        model=model,
        **extra,
        args=args,
        train_dataset=to_dataset(train_records, cfg.data.chat_template),
        eval_dataset=to_dataset(eval_records, cfg.data.chat_template) if eval_records else None,
        processing_class=tokenizer,
        # TRL's LoraConfig from the model section; None without use_peft
        peft_config=get_peft_config(cfg.model.to_trl()),
        callbacks=[
            *([probe] if probe is not None else []),
            MetricsJsonlCallback(output_dir / "metrics.jsonl"),
            LogLineCallback(),
            NonFiniteGuardCallback(),
            ManifestCallback(),
        ],
    )
    _order_callbacks(trainer, trackers, probe)
    return trainer


def reference_model(cfg: RunConfig, args, model):
    """The ``ref_model`` handed to TRL: None where TRL needs none (LoRA: the adapter disabled; precomputed
    reference log-probs), else a frozen copy of the policy.

    Full fine-tuning without precomputed log-probs, or under FSDP (where TRL loads a reference for the
    precompute too), needs one; TRL would otherwise reload the model by name, which fails for the embedded
    and in-process models."""
    fsdp = (
        bool(args.fsdp) or os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
    )  # or accelerate's
    if cfg.model.use_peft or (cfg.train.precompute_ref_log_probs and not fsdp):
        return None
    return frozen_copy(model)


def _policy(cfg: RunConfig):
    """The model to train, per the ``model`` section; a 4-/8-bit one prepared for LoRA by peft (QLoRA)."""
    model = load_model_from_config(cfg.model, seed=cfg.train.seed)
    if is_quantized(model):  # load_in_4bit/8bit, or a checkpoint saved quantized: LoRA only, prepared by peft
        if not cfg.model.use_peft:
            raise ConfigError(
                "a 4-bit or 8-bit model trains through LoRA only: set model.use_peft=true (QLoRA)"
            )
        model = prepare_for_kbit(model, gradient_checkpointing=cfg.train.gradient_checkpointing)
    return model


def _order_callbacks(trainer, trackers: list, probe: ProbeCallback | None) -> None:
    """The trackers last, the probe callback bound, and a progress bar that does not print the logs."""
    # the Trainer put its own tracker callbacks first; ours go last, after the probe callback has added its
    # values to the logs (and with TensorBoard's folder set)
    for cb in trackers:
        trainer.remove_callback(type(cb))
        trainer.add_callback(cb)
    if probe is not None:
        probe.bind(trainer)  # it logs the step-0 values through trainer.log
    # keep the progress bar (none with train.disable_tqdm), drop the printing of every log dict, the bar's or,
    # without it, the Trainer's PrinterCallback (our log line says it once)
    kinds = {type(cb) for cb in trainer.callback_handler.callbacks}
    trainer.remove_callback(PrinterCallback)
    if ProgressCallback in kinds:
        trainer.remove_callback(ProgressCallback)
        trainer.add_callback(QuietProgressCallback())


def probe_callback(cfg: RunConfig, tokenizer, records: list[dict]) -> ProbeCallback:
    """Probes on a fixed set of prompts every ``probe.every_n_steps`` steps (first in the callback list, so
    that its values are in the logs before the metrics line is written)."""

    def text(prompt) -> str:
        return prompt if isinstance(prompt, str) else "\n".join(m["content"] for m in prompt)

    p = cfg.probe
    return ProbeCallback(
        texts=[text(r["prompt"]) for r in records[: p.num_texts]],
        tokenizer=tokenizer,
        every_n_steps=p.every_n_steps,
        probes=list(p.probes),
        sites=list(p.sites),
        layers=list(p.layers) or None,
        batch_size=p.batch_size,
        max_length=cfg.train.max_length,
    )
