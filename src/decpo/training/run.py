"""One training run: config -> data -> model -> `DecPOTrainer` -> run directory.

The run directory holds ``config.yaml`` (resolved), ``env.json``, ``metrics.jsonl``, the Trainer's
``checkpoint-*`` folders (safetensors) and ``final/`` (a peft adapter or full weights, loadable with
``from_pretrained``). Re-running the same command resumes from the latest complete checkpoint, provided
the config is the saved one up to `RESUMABLE_KEYS` (`check_resume_config`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from datasets import Dataset

from decpo.config import ConfigError, RunConfig, save_config
from decpo.env import environment
from decpo.io import atomic_write_json, check_writable

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    output_dir: Path
    final_dir: Path
    metrics: dict[str, float]
    wall_time_s: float


def load_records(cfg: RunConfig) -> tuple[list[dict], list[dict]]:
    """Train and eval pairs, validated before any model is loaded."""
    from decpo.data import load_pairs, load_task, split_train_eval

    d = cfg.data
    path = d.path
    if cfg.pairs.source:  # pairs from the model's own samples, built once and cached by content
        if d.path:
            raise ConfigError(
                "set data.path (your pairs) or pairs.source (pairs sampled from the model), not both"
            )
        from decpo.pairs.cache import ensure_pairs

        path = str(ensure_pairs(cfg))
    if path:
        records = load_pairs(path, on_error=d.on_error)
        if d.eval_path:
            train, evals = records, load_pairs(d.eval_path, on_error=d.on_error)
        else:
            train, evals = split_train_eval(records, d.eval_fraction)
    else:
        kwargs = {
            "data_dir": d.data_dir,
            "seed": cfg.train.seed,
            "on_error": d.on_error,
            "synthetic_answer": d.synthetic_answer,
        }
        train = load_task(d.task, "train", **kwargs)
        evals = load_task(d.task, "eval", **kwargs)
    if d.max_train_samples:
        train = train[: d.max_train_samples]
    t = cfg.train
    needed = t.max_steps * t.per_device_train_batch_size * t.gradient_accumulation_steps * _world_size()
    if t.max_steps > 0 and len(train) > needed:
        # a run of max_steps sees only `needed` pairs: do not tokenize and precompute the rest
        logger.info("using the first %d of %d train pairs (max_steps x global batch)", needed, len(train))
        train = train[:needed]
    if d.max_eval_samples:
        evals = evals[: d.max_eval_samples]
    return train, evals


def _world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


# set by `launch` in the launched processes: how many there should be (see `check_launched_world`)
NUM_PROCESSES_ENV = "DECPO_NUM_PROCESSES"


def launch_command(num_processes: int, decpo_args: list[str]) -> list[str]:
    """The command running ``python -m decpo <decpo_args>`` as ``num_processes`` data-parallel processes.

    GPUs: ``accelerate launch --multi_gpu`` (one process per GPU). CPU: ``torch.distributed.run
    --standalone`` (gloo; the Trainer's accelerate state reads its environment): ``accelerate launch --cpu
    --num_processes N`` starts ONE process (its simple launcher), not N.
    """
    if num_processes < 2:
        raise ConfigError(f"a launch needs 2 processes or more, got {num_processes}")
    if torch.cuda.is_available():
        if torch.cuda.device_count() < num_processes:
            raise ConfigError(
                f"--num-processes {num_processes}: only {torch.cuda.device_count()} GPU(s) are visible"
            )
        launcher = ["accelerate.commands.launch", "--multi_gpu", "--num_processes", str(num_processes)]
    else:
        launcher = ["torch.distributed.run", "--standalone", "--nproc_per_node", str(num_processes)]
    return [sys.executable, "-m", *launcher, "-m", "decpo", *decpo_args]


def launch(num_processes: int, decpo_args: list[str]) -> int:
    """Run ``decpo <decpo_args>`` as ``num_processes`` processes (`launch_command`); returns the exit code."""
    env = {**os.environ, NUM_PROCESSES_ENV: str(num_processes)}
    return subprocess.call(launch_command(num_processes, decpo_args), env=env)


def check_launched_world() -> None:
    """In a process started by `launch`: fail unless it is one of as many processes as were asked for."""
    expected = os.environ.get(NUM_PROCESSES_ENV)
    if expected is not None and int(expected) != _world_size():
        raise ConfigError(
            f"launched for {expected} data-parallel processes, but this process is one of {_world_size()} "
            f"(WORLD_SIZE): the launcher did not start them"
        )


def to_dataset(records: list[dict], chat_template: bool) -> Dataset:
    """Keep the three TRL columns; wrap in messages when the chat template is asked for."""
    from decpo.data import chat_messages

    if chat_template and isinstance(records[0]["prompt"], str):
        rows = [
            {
                "prompt": chat_messages(r["prompt"]),
                "chosen": chat_messages(answer=r["chosen"]),
                "rejected": chat_messages(answer=r["rejected"]),
            }
            for r in records
        ]
    else:
        rows = [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in records]
    return Dataset.from_list(rows)


def check_prompt_lengths(tokenizer, records: list[dict], max_length: int, split: str) -> None:
    """Count the pairs whose prompt alone fills ``max_length`` tokens: TRL drops them without a word.

    A logged, counted skip; an error when no pair would be left.
    """
    if not records or not isinstance(records[0]["prompt"], str):
        return
    lengths = [len(ids) for ids in tokenizer([r["prompt"] for r in records])["input_ids"]]
    too_long = [i for i, n in enumerate(lengths) if n >= max_length]
    if len(too_long) == len(records):
        from decpo.data import DataError

        raise DataError(
            f"every {split} prompt has {max_length} tokens or more (train.max_length); the longest has "
            f"{max(lengths)}: raise train.max_length"
        )
    if too_long:
        logger.warning(
            "%d of %d %s pairs have a prompt of train.max_length=%d tokens or more and are skipped (first: pair %d, "
            "%d tokens); raise train.max_length to keep them",
            len(too_long),
            len(records),
            split,
            max_length,
            too_long[0],
            lengths[too_long[0]],
        )


def trainer_args(cfg: RunConfig, output_dir: Path):
    """`DecPOConfig` (or `SimPOConfig`) from the ``train`` section, field for field, with ``output_dir`` and
    the method's ``reg_type``; TRL's and transformers' own checks run here (a `ConfigError` naming them)."""
    import dataclasses

    from decpo.config.trainer_args import DecPOConfig, SimPOConfig
    from decpo.config.trl_sections import SIMPO_ONLY

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
        if values["train_sampling_strategy"] == "group_by_length":
            raise ConfigError(
                "train.train_sampling_strategy=group_by_length is not supported with objective.name=simpo"
            )
        if values["share_prompt"]:
            raise ConfigError(
                "train.share_prompt is not supported with objective.name=simpo (TRL's CPOTrainer)"
            )
        # TRL's CPOTrainer as SimPO: reference-free, length-normalised, target margin gamma
        names = {f.name for f in dataclasses.fields(SimPOConfig) if f.init}
        kwargs = {k: v for k, v in values.items() if k in names}
        kwargs.update(loss_type="simpo", remove_unused_columns=False)
        cls = SimPOConfig
    else:
        kwargs = {k: v for k, v in values.items() if k not in SIMPO_ONLY}
        if o.name == "sft":
            kwargs["loss_type"] = ["sft"]
        if not kwargs["precompute_ref_log_probs"]:
            kwargs["ref_logps_cache"] = None
        cls = DecPOConfig
    try:
        return cls(**kwargs)
    except (ValueError, TypeError, ImportError) as e:  # TRL's and transformers' checks
        raise ConfigError(f"train: {e}") from e


def model_load_kwargs(m) -> dict[str, Any]:
    """`decpo.models.load_model`'s options from the ``model`` section (TRL's `ModelConfig` fields)."""
    return dict(
        gguf_file=m.gguf_file,
        dtype=m.dtype,
        trust_remote_code=m.trust_remote_code,
        revision=m.model_revision,
        attn_implementation=m.attn_implementation,
        load_in_4bit=m.load_in_4bit,
        load_in_8bit=m.load_in_8bit,
        bnb_4bit_quant_type=m.bnb_4bit_quant_type,
        use_bnb_nested_quant=m.use_bnb_nested_quant,
        bnb_4bit_quant_storage=m.bnb_4bit_quant_storage,
    )


def check_model_options(m) -> None:
    """The ``model`` section's loading options checked before any data or model work: a valid
    ``attn_implementation``, and bitsandbytes quantization where it can run (CUDA, bitsandbytes, a model of
    full-precision weights); a `ConfigError` naming the key otherwise."""
    from decpo.models import ModelError
    from decpo.models.loading import check_attn_implementation, check_quantizable, quantization_config

    kwargs = model_load_kwargs(m)
    try:
        check_attn_implementation(m.attn_implementation)
        q = {
            k: kwargs[k]
            for k in ("load_in_4bit", "load_in_8bit", "bnb_4bit_quant_type", "use_bnb_nested_quant")
        }
        if (
            quantization_config(**q, bnb_4bit_quant_storage=m.bnb_4bit_quant_storage, dtype=m.dtype)
            is not None
        ):
            option = "load_in_4bit" if m.load_in_4bit else "load_in_8bit"
            check_quantizable(m.model_name_or_path, gguf_file=m.gguf_file, option=option)
    except ModelError as e:
        raise ConfigError(str(e)) from e


def check_hub_upload(args) -> None:
    """With ``train.push_to_hub``: a `ConfigError` at once, before any training, when the Hub cannot take the
    upload (offline mode, an unreachable endpoint, no token); the run would otherwise train and then fail (or
    retry) at its first upload."""
    if not args.push_to_hub:
        return
    from huggingface_hub import constants, get_token

    from decpo.models.loading import hub_unreachable

    what = f"train.push_to_hub=true (hub_model_id {args.hub_model_id or '<output folder name>'!r})"
    fix = "set train.push_to_hub=false and upload <run>/final later (`hf upload <repo> <run>/final`)"
    if constants.is_offline_mode():
        raise ConfigError(f"{what}, but HF_HUB_OFFLINE is set: the Hub is not asked; {fix}")
    problem = hub_unreachable(constants.ENDPOINT)
    if problem:
        raise ConfigError(f"{what}, but the Hub ({constants.ENDPOINT}) is unreachable: {problem}; {fix}")
    if not (args.hub_token or get_token()):
        raise ConfigError(f"{what} needs a Hugging Face token: `hf auth login`, $HF_TOKEN or train.hub_token")


def report_to(t) -> str | list[str]:
    """``train.report_to`` in the form `TrainingArguments` takes: ``"none"``, ``"all"`` or a list of names."""
    names = list(t.report_to)
    return names[0] if names in (["none"], ["all"]) else names


def tracker_callbacks(t, output_dir: Path) -> list:
    """One callback per tracker of ``train.report_to`` (none: ``[]``), built before the model loads so that
    a tracker that is not installed stops the run at once. TensorBoard writes into
    ``<output_dir>/<train.logging_dir>``, not transformers' default ``runs/<date>_<host>``."""
    from transformers.integrations import TensorBoardCallback
    from transformers.integrations.integration_utils import get_reporting_integration_callbacks

    try:
        callbacks = [cls() for cls in get_reporting_integration_callbacks(report_to(t))]
    except (RuntimeError, ImportError, ModuleNotFoundError) as e:  # the integration's package is missing
        raise ConfigError(f"train.report_to={list(t.report_to)}: {e} (`pip install decpo[trackers]`)") from e
    for cb in callbacks:
        if isinstance(cb, TensorBoardCallback) and t.logging_dir:
            cb.logging_dir = str(output_dir / Path(t.logging_dir).expanduser())  # an absolute one replaces
    return callbacks


@contextlib.contextmanager
def tracker_env(output_dir: Path):
    """W&B's files go under the run folder (``<output_dir>/wandb``) unless ``$WANDB_DIR`` says otherwise."""
    saved = os.environ.get("WANDB_DIR")
    if saved is None:
        os.environ["WANDB_DIR"] = str(output_dir)
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("WANDB_DIR", None)


def build_trainer(cfg: RunConfig, output_dir: Path, train_records: list[dict], eval_records: list[dict]):
    """Load the model and tokenizer and assemble a `DecPOTrainer` (no training yet)."""
    from transformers.trainer_callback import ProgressCallback
    from trl import get_peft_config

    from decpo.models import frozen_copy, load_model, load_tokenizer, resolve_layers
    from decpo.models.loading import is_quantized, prepare_for_kbit
    from decpo.training.callbacks import (
        LogLineCallback,
        MetricsJsonlCallback,
        NonFiniteGuardCallback,
        QuietProgressCallback,
    )
    from decpo.training.trainer import DecPOTrainer, SimPOTrainer

    args = trainer_args(cfg, output_dir)
    trackers = tracker_callbacks(cfg.train, output_dir)
    m = cfg.model
    tokenizer = load_tokenizer(m.model_name_or_path, m.gguf_file, m.trust_remote_code, m.model_revision)
    model = load_model(m.model_name_or_path, **model_load_kwargs(m), seed=cfg.train.seed)
    if is_quantized(model):  # load_in_4bit/8bit, or a checkpoint saved quantized: LoRA only, prepared by peft
        if not m.use_peft:
            raise ConfigError(
                "a 4-bit or 8-bit model trains through LoRA only: set model.use_peft=true (QLoRA)"
            )
        model = prepare_for_kbit(model, gradient_checkpointing=cfg.train.gradient_checkpointing)
    if cfg.objective.regularizer:
        resolve_layers(model, cfg.train.reg_layers)  # a clear error before anything slow
    check_prompt_lengths(tokenizer, train_records, cfg.train.max_length, "train")
    check_prompt_lengths(tokenizer, eval_records, cfg.train.max_length, "eval")
    peft_config = get_peft_config(
        m.to_trl()
    )  # TRL's LoraConfig from the model section; None without use_peft
    # Full fine-tuning without precomputed reference log-probs needs a frozen copy; TRL would otherwise
    # reload the model by name, which fails for the embedded and in-process models.
    extra = {}
    if cfg.objective.name != "simpo":  # SimPO has no reference model
        keep = cfg.model.use_peft or cfg.train.precompute_ref_log_probs
        extra["ref_model"] = None if keep else frozen_copy(model)
    callbacks = [
        MetricsJsonlCallback(output_dir / "metrics.jsonl"),
        LogLineCallback(),
        NonFiniteGuardCallback(),
    ]
    probe = None
    if cfg.probe.every_n_steps > 0:
        probe = probe_callback(cfg, tokenizer, eval_records or train_records)
        callbacks.insert(0, probe)
    trainer_cls = SimPOTrainer if cfg.objective.name == "simpo" else DecPOTrainer
    trainer = trainer_cls(
        model=model,
        **extra,
        args=args,
        train_dataset=to_dataset(train_records, cfg.data.chat_template),
        eval_dataset=to_dataset(eval_records, cfg.data.chat_template) if eval_records else None,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=callbacks,
    )
    # the Trainer put its own tracker callbacks first; ours go last, after the probe callback has added its
    # values to the logs (and with TensorBoard's folder set)
    for cb in trackers:
        trainer.remove_callback(type(cb))
        trainer.add_callback(cb)
    if probe is not None:
        probe.bind(trainer)  # it logs the step-0 values through trainer.log
    # keep the progress bar, drop its printing of every log dict (our log line says it once)
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(QuietProgressCallback())
    return trainer


def probe_callback(cfg: RunConfig, tokenizer, records: list[dict]):
    """Probes on a fixed set of prompts every ``probe.every_n_steps`` steps (first in the callback list, so
    that its values are in the logs before the metrics line is written)."""
    from decpo.probes.callback import ProbeCallback

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
    """The newest checkpoint whose files are complete (a truncated one is skipped with a warning)."""
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

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
    """None when ``ckpt`` can be resumed from, else what is wrong with it."""
    if not (ckpt / "trainer_state.json").is_file():
        return "no trainer_state.json (interrupted while saving)"
    weights = list(ckpt.glob("*.safetensors"))
    if not weights:
        return "no safetensors weights"
    for w in weights:
        try:
            expected = _safetensors_size(w)
        except (OSError, ValueError, KeyError) as e:
            return f"{w.name} is unreadable: {e}"
        if w.stat().st_size < expected:
            return f"{w.name} is truncated ({w.stat().st_size} of {expected} bytes)"
    for name in ("optimizer.pt", "scheduler.pt"):
        if not (ckpt / name).is_file():
            return f"no {name}"
    return None


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
    resumes. A run whose ``reg_weight: auto`` was resolved (``reg_weight.json``) matches ``auto`` again.
    """
    path = output_dir / "config.yaml"
    if not path.is_file():
        logger.warning(
            "%s has checkpoints but no config.yaml: resuming without checking the config", output_dir
        )
        return
    saved = yaml.safe_load(path.read_text()) or {}
    calibration = output_dir / "reg_weight.json"
    section = saved.get("train") if isinstance(saved.get("train"), dict) else {}
    if cfg.train.reg_weight == "auto" and calibration.is_file():
        if section.get("reg_weight") == json.loads(calibration.read_text()).get("reg_weight"):
            section["reg_weight"] = "auto"  # the saved config holds the lambda that `auto` resolved to
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


def train(cfg: RunConfig, output_dir: str | Path, *, allow_config_change: bool = False) -> TrainResult:
    """Train per ``cfg`` into ``output_dir``, resuming from its latest complete checkpoint.

    A checkpoint is resumed only under the config it was trained with, up to `RESUMABLE_KEYS`; otherwise
    a `ConfigError` names the changed keys, unless ``allow_config_change``.
    """
    output_dir = Path(output_dir)
    check_writable(output_dir)
    check_hub_upload(trainer_args(cfg, output_dir))  # TRL's own checks, then the Hub's: before data and model
    check_model_options(cfg.model)
    resume = resume_checkpoint(cfg, output_dir)
    if resume:
        check_resume_config(cfg, output_dir, resume, allow_config_change)
    t0 = time.perf_counter()
    train_records, eval_records = load_records(cfg)
    logger.info("data: %d train pairs, %d eval pairs", len(train_records), len(eval_records))
    main_process = int(os.environ.get("RANK", "0")) == 0  # under accelerate/torchrun only rank 0 writes
    if main_process:
        save_config(cfg, output_dir / "config.yaml")
        atomic_write_json(output_dir / "env.json", environment())

    with tracker_env(output_dir):
        return _train(cfg, output_dir, resume, train_records, eval_records, t0, main_process)


def _train(
    cfg: RunConfig,
    output_dir: Path,
    resume: Path | None,
    train_records: list[dict],
    eval_records: list[dict],
    t0: float,
    main_process: bool,
) -> TrainResult:
    """The body of `train` once the data is loaded and the run folder prepared (trackers' env set)."""
    trainer = build_trainer(cfg, output_dir, train_records, eval_records)
    calibration = getattr(trainer, "reg_weight_calibration", None)
    if main_process and calibration:
        # the resolved config holds the lambda this run used: `--config <run>/config.yaml` repeats it exactly
        save_config(
            cfg.replace(**{"train.reg_weight": calibration["reg_weight"]}), output_dir / "config.yaml"
        )
        atomic_write_json(output_dir / "reg_weight.json", calibration)
    if main_process and resume is None and (output_dir / "metrics.jsonl").exists():
        (output_dir / "metrics.jsonl").unlink()  # a fresh start: old metrics would mix with new ones
    if resume:
        logger.info("resuming from %s", resume)
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)

    # final weights: written under a temporary name, renamed when complete (save_model writes on rank 0)
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

    metrics: dict[str, float] = {}
    if eval_records:
        evals = [h for h in trainer.state.log_history if "eval_loss" in h]
        last = (
            evals[-1] if evals and evals[-1].get("step") == trainer.state.global_step else trainer.evaluate()
        )
        metrics = {k.replace("eval_", "eval/", 1): v for k, v in last.items() if k.startswith("eval_")}
    wall = time.perf_counter() - t0
    if main_process:
        atomic_write_json(output_dir / "final_metrics.json", {**metrics, "wall_time_s": wall})
    return TrainResult(output_dir, final_dir, metrics, wall)
