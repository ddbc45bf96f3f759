"""The ``model`` and ``train`` sections, generated from the dataclasses that declare their fields.

- ``model``: TRL's `trl.ModelConfig` (``model_name_or_path``, ``dtype``, ``attn_implementation``, the LoRA
  fields ``use_peft``, ``lora_r``, ..., the bitsandbytes fields ``load_in_4bit``, ...) plus decpo's ``gguf_file``
  (`DecPOModelConfig`);
- ``train``: every field of `decpo.config.trainer_args.DecPOConfig`, i.e. TRL's `DPOConfig` (and through it every
  `transformers.TrainingArguments` field) plus the regularizer's ``reg_*`` fields, and the fields SimPO's
  `SimPOConfig` adds (``simpo_gamma``, ``cpo_alpha``, ...). Only ``output_dir`` (``--output-dir``) and
  ``reg_type`` (set by ``objective.name``) are not keys.

Each field is declared once, where it lives (TRL, transformers or decpo); the sections are built from those
declarations (`_section_class`) with decpo's defaults where they differ from TRL's (`DECPO_DEFAULTS`, each with
its reason). TRL's own ``__post_init__`` checks run when a training builds its `DecPOConfig`, before the model
loads (`decpo.training.run.trainer_args`).
"""

from __future__ import annotations

import copy
import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any

from trl import ModelConfig as TrlModelConfig

from decpo.config.errors import ConfigError
from decpo.config.fields import described
from decpo.config.train_checks import check_lora_values, check_regularizer, check_train_values
from decpo.config.trainer_args import DecPOConfig, SimPOConfig
from decpo.config.typecheck import check_value
from decpo.names import did_you_mean


@dataclass
class DecPOModelConfig(TrlModelConfig):
    """TRL's `ModelConfig` plus the GGUF file of a folder that holds one, and ``trust_remote_code`` (which
    TRL 1.x's `ModelConfig` no longer declares)."""

    gguf_file: str | None = field(
        default=None, metadata=described("GGUF file name inside `model_name_or_path` (a directory).")
    )
    trust_remote_code: bool = field(
        default=False,
        metadata=described(
            "Run model code from the Hub (a model with its own modeling files); off unless you trust it."
        ),
    )


# decpo's defaults where TRL's do not suit a run of `decpo train` / `decpo run`, with the reason; every other
# field keeps the default of the dataclass that declares it (`decpo config-keys` marks these).
DECPO_DEFAULTS: dict[str, dict[str, tuple[Any, str]]] = {
    "model": {
        "model_name_or_path": (
            "default",
            "'default': the embedded SmolLM2-135M-Instruct (offline, CPU); 'tiny-random-llama': in-process, for "
            "smoke tests; else a Hugging Face id, a local folder or a .gguf file",
        ),
        "use_peft": (True, "the paper's LoRA adapter"),
        "lora_r": (8, "the paper's rank"),
        "lora_alpha": (16, "the paper's alpha"),
        "lora_target_modules": (
            ["q_proj", "v_proj", "up_proj"],
            "the paper's modules, the regularized site among them",
        ),
    },
    "train": {
        "learning_rate": (5e-4, "LoRA on small models (TRL's 1e-6 is for full fine-tuning of large ones)"),
        "max_steps": (30, "a short run that shows an effect; -1: num_train_epochs epochs"),
        "num_train_epochs": (1.0, "with max_steps -1"),
        "lr_scheduler_type": ("constant", "short runs"),
        "max_length": (128, "the built-in tasks' prompts and answers are short (the paper: 256)"),
        "seed": (0, "seed of model init (tiny model), adapters, data order and synthetic data"),
        "logging_steps": (5, "short runs"),
        "eval_strategy": ("steps", "held-out reward accuracy during training"),
        "eval_steps": (10, "with eval_strategy steps"),
        "eval_on_start": (True, "held-out measures at step 0 too (off by itself with eval_strategy no)"),
        "save_steps": (10, "checkpoints to resume from"),
        "save_total_limit": (2, "checkpoints kept"),
        "gradient_checkpointing": (False, "faster on small models; turn on for 7-8B models"),
        "activation_checkpointing_kwargs": ({"use_reentrant": False}, "when gradient_checkpointing is on"),
        "bf16": (False, "TRL: on where supported, which a CPU refuses; true on a GPU"),
        "disable_tqdm": (False, "the progress bar"),
        "precompute_ref_log_probs": (True, "the reference pass once, before training"),
        "ref_logps_cache": ("auto", "the precomputed reference log-probs reused across runs"),
        "resume_from_checkpoint": ("last", "an interrupted run resumes where it stopped"),
        "reg_weight": ("auto", "lambda set from reg_balance on the first batches"),
        "logging_dir": ("tb", "TensorBoard events in <run>/tb"),
        "simpo_gamma": (0.2, "the authors' SimPO baseline"),
    },
}

# TRL fields decpo sets itself: output_dir (--output-dir), reg_type (objective.name)
TRAIN_NOT_KEYS = ("output_dir", "reg_type")


def _section_class(
    name: str, sources: tuple[type, ...], exclude: tuple[str, ...], defaults: dict[str, tuple]
):
    """The fields of a section: the init fields of ``sources`` (first declaration wins) with their annotations
    and help, and decpo's ``(value, reason)`` defaults in place of theirs (``metadata["upstream_default"]``
    keeps the declaring class's, ``metadata["declared_in"]`` names that class); and its ``__post_init__``."""
    specs, seen = [], set()
    for src in sources:
        hints = typing.get_type_hints(src)
        for f in dataclasses.fields(src):
            if not f.init or f.name.startswith("_") or f.name in exclude or f.name in seen:
                continue
            seen.add(f.name)
            upstream = _default_of(f)
            value, reason = defaults.get(f.name, (upstream, None))
            meta = {**f.metadata, "upstream_default": upstream, "declared_in": _declaring_class(src, f.name)}
            if reason:
                meta["decpo_default"] = reason
            specs.append(
                (
                    f.name,
                    hints[f.name],
                    field(default_factory=lambda v=value: copy.deepcopy(v), metadata=meta),
                )
            )
    unknown = set(defaults) - seen
    if unknown:
        raise AssertionError(f"DECPO_DEFAULTS[{name!r}] names no field: {sorted(unknown)}")
    hints = {spec_name: hint for spec_name, hint, _ in specs}

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            setattr(self, f.name, check_value(f"{name}.{f.name}", getattr(self, f.name), hints[f.name], f))
        self._validate()

    return specs, __post_init__


def _declaring_class(cls: type, name: str) -> str:
    """``"transformers.TrainingArguments"``: the class whose annotation of ``name`` is the one in effect."""
    owner = next(k for k in cls.__mro__ if name in vars(k).get("__annotations__", {}))
    return f"{owner.__module__.split('.')[0]}.{owner.__name__}"


def _default_of(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return None


_model_fields, _model_post_init = _section_class("model", (DecPOModelConfig,), (), DECPO_DEFAULTS["model"])


def _validate_model(self) -> None:
    check_lora_values(self)
    try:
        self.to_trl()  # TRL's own checks (4-bit and 8-bit at once, ...)
    except ValueError as e:
        raise ConfigError(f"model: {e}") from e
    if (self.load_in_4bit or self.load_in_8bit) and not self.use_peft:
        raise ConfigError("a 4-bit or 8-bit model trains through LoRA only: set model.use_peft=true (QLoRA)")


def _model_to_trl(self) -> DecPOModelConfig:
    """The section as TRL's `ModelConfig` (decpo's subclass)."""
    return DecPOModelConfig(**dataclasses.asdict(self))


ModelSection = dataclasses.make_dataclass(
    "ModelSection",
    _model_fields,
    namespace={
        "__post_init__": _model_post_init,
        "_validate": _validate_model,
        "to_trl": _model_to_trl,
        "__doc__": "The ``model`` section: the fields of `DecPOModelConfig` (TRL's `ModelConfig` + gguf_file).",
    },
)
ModelSection.__module__ = __name__

_train_fields, _train_post_init = _section_class(
    "train", (DecPOConfig, SimPOConfig), TRAIN_NOT_KEYS, DECPO_DEFAULTS["train"]
)

# fields SimPO's config adds (its CPOConfig), used with objective.name=simpo only
SIMPO_ONLY = tuple(
    f.name
    for f in dataclasses.fields(SimPOConfig)
    if f.init and f.name not in {g.name for g in dataclasses.fields(DecPOConfig)}
)


def _validate_train(self) -> None:
    try:
        check_regularizer(self)
    except ValueError as e:
        raise ConfigError(f"train.{e}") from e
    check_train_values(self)
    self.report_to = check_report_to(self.report_to)


TrainSection = dataclasses.make_dataclass(
    "TrainSection",
    _train_fields,
    namespace={
        "__post_init__": _train_post_init,
        "_validate": _validate_train,
        "__doc__": "The ``train`` section: every field of `DecPOConfig` (TRL's `DPOConfig` + the regularizer) and "
        "of `SimPOConfig`, except ``output_dir`` and ``reg_type``.",
    },
)
TrainSection.__module__ = __name__


# what train.report_to takes besides the transformers integrations' names
REPORT_TO_WORDS = ("none", "all")


def check_report_to(names: str | list[str] | None) -> list[str]:
    """``train.report_to`` as a list (``[]``, None and ``"none"`` read as ``["none"]``), or a `ConfigError`
    naming the valid values.

    The names are those of the installed transformers' integrations (``INTEGRATION_TO_CALLBACK``). Whether a
    tracker is installed is checked when the trainer is built (`decpo.training.run.tracker_callbacks`), so
    that a saved config still loads where it is not.
    """
    names = [names] if isinstance(names, str) else list(names or [])
    names = names or ["none"]
    if names == ["none"]:
        return names
    # lazy: transformers' integrations module, needed only when a tracker is named
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    valid = (*REPORT_TO_WORDS, *INTEGRATION_TO_CALLBACK)
    unknown = [n for n in names if n not in valid]
    if unknown:
        hint = next((h for n in unknown if (h := did_you_mean(n, valid))), "")
        raise ConfigError(f"train.report_to: unknown tracker(s) {unknown}{hint} (valid: {', '.join(valid)})")
    if len(names) > 1 and set(names) & set(REPORT_TO_WORDS):
        raise ConfigError(f"train.report_to: 'none' and 'all' stand alone, got {names}")
    return names
