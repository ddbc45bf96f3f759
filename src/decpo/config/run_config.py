"""Typed run configuration: YAML files plus dotted command-line overrides, validated up front.

The sections are TRL's own dataclasses, field for field:

- ``model``: TRL's `trl.ModelConfig` (``model_name_or_path``, ``dtype``, ``attn_implementation``, the LoRA
  fields ``use_peft``, ``lora_r``, ..., the bitsandbytes fields ``load_in_4bit``, ...) plus decpo's ``gguf_file``
  (`DecPOModelConfig`);
- ``train``: every field of `decpo.training.trainer.DecPOConfig`, i.e. TRL's `DPOConfig` (and through it every
  `transformers.TrainingArguments` field) plus the regularizer's ``reg_*`` fields, and the fields SimPO's
  `SimPOConfig` adds (``simpo_gamma``, ``cpo_alpha``, ...). Only ``output_dir`` (``--output-dir``) and
  ``reg_type`` (set by ``objective.name``) are not keys;
- ``objective``: the method (``objective.name``); ``data``, ``pairs``, ``probe``, ``experiment``: decpo's own.

Each field is declared once, where it lives (TRL, transformers or decpo); the ``model`` and ``train`` sections
are built from those declarations (`_section_class`) with decpo's defaults where they differ from TRL's
(`DECPO_DEFAULTS`, each with its reason). Every field carries its help text in ``metadata["help"]``, and every
value is checked against the field's type annotation, None-defaults included (`check_value`); an enum-typed
field (``optim``, ``lr_scheduler_type``, ...) takes one of the enum's values. Unknown keys fail at once and
suggest the closest valid key (or name the new key of a renamed one), so a typo never silently falls back to a
default. TRL's own ``__post_init__`` checks run when a training builds its `DecPOConfig`, before the model
loads (`decpo.training.run.trainer_args`).

Why not `HfArgumentParser`/`TrlParser`: they take flat ``--key value`` flags (no sections) and their
``parse_dict``/``parse_yaml_file`` pass values to the constructor unchecked; why not OmegaConf structured
configs: they reject `TrainingArguments`' ``dict | str`` and enum unions. The checks here read the same
dataclass annotations both use.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import enum
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from trl import ModelConfig as TrlModelConfig

from decpo.config.fields import described
from decpo.config.sampling import SamplingSettings
from decpo.config.trainer_args import DecPOConfig, SimPOConfig
from decpo.data.errors import DataError
from decpo.errors import DecPOError
from decpo.names import MLP_UP_PROJ

OBJECTIVES = ("dpo", "decpo", "l1", "sft", "simpo")


class ConfigError(DecPOError, ValueError):
    """A configuration file or override that cannot be used."""


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


@dataclass
class DataConfig:
    task: str = field(
        default="synthetic",
        metadata=described("Built-in task: synthetic, sycophancy, reframing, toxicity, toxicity_pairwise."),
    )
    path: str | None = field(
        default=None,
        metadata=described("Your own preference file (JSONL/JSON/CSV or a saved dataset); overrides `task`."),
    )
    eval_path: str | None = field(
        default=None, metadata=described("Held-out pairs; default: the last `eval_fraction` of `path`.")
    )
    data_dir: str | None = field(
        default=None, metadata=described("Folder with the paper's data; default: $DECPO_DATA_DIR.")
    )
    eval_fraction: float = field(default=0.1, metadata=described("Share of rows held out (the last ones)."))
    max_train_samples: int | None = field(default=None, metadata=described("Use only the first N train pairs."))
    max_eval_samples: int | None = field(default=64, metadata=described("Use only the first N eval pairs."))
    chat_template: bool = field(
        default=False,
        metadata=described("Wrap prompt/answers in the tokenizer's chat template (the paper: raw text, off)."),
    )
    on_error: str = field(
        default="raise", metadata=described("Malformed records: 'raise' (stop before training) or 'skip'.")
    )
    synthetic_answer: str = field(
        default="option",
        metadata=described(
            "Answers of the synthetic task: option (letter and option text, ' (B) 23') or letter (' (B)' alone)."
        ),
    )

    def __post_init__(self) -> None:
        if not 0.0 < self.eval_fraction < 1.0:
            raise ConfigError(f"data.eval_fraction must be in (0, 1), got {self.eval_fraction}")
        if self.on_error not in ("raise", "skip"):
            raise ConfigError(f"data.on_error must be 'raise' or 'skip', got {self.on_error!r}")
        if self.synthetic_answer not in ("option", "letter"):
            raise ConfigError(
                f"data.synthetic_answer must be 'option' or 'letter', got {self.synthetic_answer!r}"
            )


@dataclass
class ObjectiveConfig:
    name: str = field(
        default="decpo",
        metadata=described(
            "dpo, decpo (DPO + lambda * decorrelation: train.reg_type=decorrelation), l1 (DPO + lambda * mean|z|), "
            "sft (train.loss_type=sft), simpo (TRL's CPOTrainer, reference-free: train.simpo_gamma). The train.reg_* "
            "fields apply to decpo and l1."
        ),
    )

    def __post_init__(self) -> None:
        if self.name not in OBJECTIVES:
            raise ConfigError(f"objective.name must be one of {OBJECTIVES}, got {self.name!r}")

    @property
    def regularizer(self) -> str | None:
        """``"decorrelation"``, ``"l1"`` or None: the ``reg_type`` of the method."""
        return {"decpo": "decorrelation", "l1": "l1"}.get(self.name)


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

# keys of earlier decpo versions -> the TRL field that replaced them (with a value that changed form)
RENAMED = {
    "model.name": "model.model_name_or_path",
    "model.revision": "model.model_revision",
    "lora.enabled": "model.use_peft",
    "lora.r": "model.lora_r",
    "lora.alpha": "model.lora_alpha",
    "lora.dropout": "model.lora_dropout",
    "lora.target_modules": "model.lora_target_modules",
    "objective.loss_type": "train.loss_type",
    "objective.beta": "train.beta",
    "objective.reg_weight": "train.reg_weight",
    "objective.reg_balance": "train.reg_balance",
    "objective.reg_form": "train.reg_form",
    "objective.layers": "train.reg_layers",
    "objective.site": "train.reg_site",
    "objective.tokens": "train.reg_tokens",
    "objective.rows": "train.reg_rows",
    "objective.simpo_gamma": "train.simpo_gamma",
    "train.lr": "train.learning_rate",
    "train.lr_scheduler": "train.lr_scheduler_type",
    "train.epochs": "train.num_train_epochs",
    "train.batch_size": "train.per_device_train_batch_size",
    "train.eval_batch_size": "train.per_device_eval_batch_size",
    "train.grad_accum": "train.gradient_accumulation_steps",
    "train.precompute_ref": "train.precompute_ref_log_probs",
    "train.ref_cache": "train.ref_logps_cache (auto or null)",
    "train.group_by_length": "train.train_sampling_strategy=group_by_length",
    "train.resume": "train.resume_from_checkpoint (last or null)",
    "train.warmup_ratio": "train.warmup_steps (transformers 5: a number in [0, 1) is a ratio of the steps)",
}


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

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            setattr(
                self,
                f.name,
                check_value(f"{name}.{f.name}", getattr(self, f.name), HINTS[f"{name}.{f.name}"], f),
            )
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
    from decpo.config.trainer_args import RegularizerArgs

    try:
        RegularizerArgs._validate_regularizer(self)
    except ValueError as e:
        raise ConfigError(f"train.{e}") from e
    for name in (
        "per_device_train_batch_size",
        "per_device_eval_batch_size",
        "gradient_accumulation_steps",
        "logging_steps",
    ):
        if not getattr(self, name) >= 1:
            raise ConfigError(f"train.{name} must be >= 1, got {getattr(self, name)}")
    if self.max_length is not None and self.max_length < 1:
        raise ConfigError(f"train.max_length must be >= 1 (or null), got {self.max_length}")
    if not self.learning_rate > 0:
        raise ConfigError(f"train.learning_rate must be > 0, got {self.learning_rate}")
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
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    valid = (*REPORT_TO_WORDS, *INTEGRATION_TO_CALLBACK)
    unknown = [n for n in names if n not in valid]
    if unknown:
        close = [c for n in unknown for c in difflib.get_close_matches(str(n), valid, n=1)]
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"train.report_to: unknown tracker(s) {unknown}{hint} (valid: {', '.join(valid)})")
    if len(names) > 1 and set(names) & set(REPORT_TO_WORDS):
        raise ConfigError(f"train.report_to: 'none' and 'all' stand alone, got {names}")
    return names


@dataclass
class ProbeSettings:
    every_n_steps: int = field(
        default=0, metadata=described("Run probes on the policy every N steps during training (0: off).")
    )
    num_texts: int = field(default=64, metadata=described("Probe inputs: the first N held-out prompts."))
    probes: list[str] = field(
        default_factory=lambda: ["decorrelation"],
        metadata=described("decorrelation, reg_cosine, mean_sq_cosine, variance, near_zero, hoyer, mono_scale."),
    )
    sites: list[str] = field(default_factory=lambda: [MLP_UP_PROJ], metadata=described("Activation sites."))
    layers: list[int] = field(default_factory=list, metadata=described("Blocks to probe; empty: all."))
    batch_size: int = field(default=16, metadata=described("Batch size of the probe pass."))


@dataclass(frozen=True)
class PairsSettings(SamplingSettings):
    """The ``pairs`` section: where the prompts come from, and the sampling fields of `SamplingSettings`
    (declared and checked there, once)."""

    source: str | None = field(
        default=None,
        metadata=described(
            "Train on pairs built from the model's own samples (`decpo pairs`): prompts from a task (toxicity, "
            "reframing) or a file (RealToxicityPrompts JSONL, {prompt: ...} JSONL, or one prompt a line); "
            "null: off. Built once, cached by content in $DECPO_CACHE/pairs."
        ),
    )
    split: str = field(
        default="train",
        metadata=described(
            "Prompts of the source used: train (about 2/3, disjoint from the eval split that the toxicity "
            "evaluation reads), eval or all."
        ),
    )
    limit: int | None = field(default=None, metadata=described("Only the first N prompts of the split."))
    model: str | None = field(
        default=None,
        metadata=described("Model that samples; null: model.model_name_or_path (the policy's own samples)."),
    )

    def __post_init__(self) -> None:
        if self.split not in ("train", "eval", "all"):
            raise ConfigError(f"pairs.split must be train, eval or all, got {self.split!r}")
        try:
            super().__post_init__()
        except DataError as e:
            raise ConfigError(f"pairs.{e}") from e


def _check_counts(section: str, obj: Any, **minimum: float) -> None:
    """Each named field of ``obj`` is None or a number >= its minimum."""
    for name, low in minimum.items():
        value = getattr(obj, name)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int | float) or value < low
        ):
            raise ConfigError(f"{section}.{name} must be a number >= {low:g} (or null), got {value!r}")


EXECUTORS = ("sequential", "local", "slurm", "ray")
STAGE_KINDS = ("pairs", "train", "probes", "eval")


@dataclass
class SlurmSettings:
    partition: str | None = field(
        default=None, metadata=described("Slurm partition of every job (sbatch --partition).")
    )
    account: str | None = field(default=None, metadata=described("Slurm account (sbatch --account)."))
    qos: str | None = field(default=None, metadata=described("Slurm quality of service (sbatch --qos)."))
    constraint: str | None = field(
        default=None, metadata=described("Slurm node constraint (sbatch --constraint).")
    )
    gpus_per_job: int = field(
        default=1,
        metadata=described("GPUs of each job; a training with --num-processes N asks for N times as many."),
    )
    cpus_per_job: int | None = field(
        default=None, metadata=described("CPUs of each job; null: the cluster's default.")
    )
    mem_gb: float | None = field(
        default=None, metadata=described("Memory of each job in GB; null: the cluster's default.")
    )
    time_min: int = field(default=1440, metadata=described("Time limit of each job in minutes."))
    setup: list[str] = field(
        default_factory=list,
        metadata=described(
            "Shell lines run before each job, e.g. ['module load cuda', 'source .venv/bin/activate']."
        ),
    )
    additional: dict[str, Any] = field(
        default_factory=dict,
        metadata=described("More sbatch options, e.g. {mail-type: END, exclude: node12}."),
    )

    def __post_init__(self) -> None:
        _check_counts("experiment.slurm", self, gpus_per_job=0, cpus_per_job=1, mem_gb=0, time_min=1)


@dataclass
class RaySettings:
    address: str | None = field(
        default=None,
        metadata=described(
            "Ray cluster to join ('auto': the one this node belongs to, or ray://host:10001); null: start a "
            "local Ray with experiment.max_parallel CPUs (each job asks for one)."
        ),
    )
    gpus_per_job: int | None = field(
        default=None,
        metadata=described(
            "GPUs of each job (a training with --num-processes N: N times as many); null: 1 when the cluster "
            "has GPUs, else 0."
        ),
    )
    cpus_per_job: int = field(default=1, metadata=described("CPUs of each job (Ray's num_cpus)."))

    def __post_init__(self) -> None:
        _check_counts("experiment.ray", self, gpus_per_job=0, cpus_per_job=0)


@dataclass
class StageResources:
    gpus: int | None = field(
        default=None, metadata=described("GPUs of each job of this kind; null: the executor's default.")
    )
    cpus: int | None = field(
        default=None,
        metadata=described(
            "CPUs of each job of this kind (Slurm's cpus-per-task, Ray's num_cpus; with local and Ray also "
            "torch's threads in the job); null: the executor's default (local: torch's own, as sequential)."
        ),
    )
    mem_gb: float | None = field(
        default=None, metadata=described("Memory in GB (Slurm, Ray); null: the executor's default.")
    )
    time_min: int | None = field(
        default=None, metadata=described("Time limit in minutes; null: the executor's default.")
    )
    partition: str | None = field(
        default=None, metadata=described("Slurm partition; null: experiment.slurm.partition.")
    )

    def __post_init__(self) -> None:
        _check_counts("experiment.resources.<kind>", self, gpus=0, cpus=1, mem_gb=0, time_min=1)


@dataclass
class ResourcesByKind:
    """Per stage kind, what a job asks for; each null value falls back to the executor's default."""

    pairs: StageResources = field(default_factory=StageResources)
    train: StageResources = field(default_factory=StageResources)
    probes: StageResources = field(default_factory=StageResources)
    eval: StageResources = field(default_factory=StageResources)

    def __post_init__(self) -> None:
        for kind in STAGE_KINDS:
            if isinstance(getattr(self, kind), dict):
                setattr(self, kind, StageResources(**getattr(self, kind)))


@dataclass
class ExperimentSettings:
    methods: list[str] = field(
        default_factory=lambda: ["dpo", "decpo"],
        metadata=described("Methods trained from the same base by `decpo run`: dpo, decpo, l1, sft, simpo."),
    )
    seeds: list[int] = field(default_factory=lambda: [0], metadata=described("Training seeds of `decpo run`."))
    eval_tasks: list[str] = field(
        default_factory=list,
        metadata=described(
            "Tasks evaluated by `decpo run`: registered evaluation tasks (decpo.evaluation.registry; "
            "module:name for a task of your own); empty: the training task, plus sycophancy when real data "
            "is found."
        ),
    )
    eval_limit: int | None = field(
        default=None, metadata=described("Evaluate only the first N items of each set.")
    )
    eval_batch_size: int = field(default=16, metadata=described("Batch size of evaluation."))
    eval_generate: bool = field(
        default=True,
        metadata=described("Generation-based measures too (slow on CPU); false: log-prob measures only."),
    )
    eval_chat_template: bool | str | None = field(
        default="auto",
        metadata=described(
            "Layout of prompts and answers in evaluation, for log-prob measures and generation prompts: auto "
            "(or null): as trained, i.e. `data.chat_template`, for the base model and every trained one; true: "
            "the tokenizer's chat template; false: raw text."
        ),
    )
    eval_prompts: str | None = field(
        default=None,
        metadata=described(
            "Prompts of the toxicity evaluation: a RealToxicityPrompts-format JSONL used whole; null: the eval "
            "split of the data directory's challenging prompts (disjoint from the train split used for pairs)."
        ),
    )
    probe_num_texts: int = field(
        default=64, metadata=described("Held-out texts of the final probes (base and every trained model).")
    )
    strength_sweep_dir: str = field(
        default="strength",
        metadata=described(
            "Folder of a `decpo sweep --reg-weights` run whose strength.md the report of `decpo run` links, "
            "relative to the experiment folder (or absolute)."
        ),
    )
    executor: str = field(
        default="sequential",
        metadata=described(
            "Where the stages of `decpo run` / `decpo sweep` run: sequential (one after another in this "
            "process), local (submitit's local executor: experiment.max_parallel jobs at once on this machine), "
            "slurm (one Slurm job per stage, through submitit) or ray (one Ray task per stage)."
        ),
    )
    max_parallel: int = field(
        default=0,
        metadata=described(
            "Most stages running at once with executor local, slurm or ray; 0: local runs 1, slurm and ray "
            "submit every stage that is ready and leave the rest to the cluster."
        ),
    )
    slurm: SlurmSettings = field(default_factory=SlurmSettings)
    ray: RaySettings = field(default_factory=RaySettings)
    resources: ResourcesByKind = field(default_factory=ResourcesByKind)

    def __post_init__(self) -> None:
        for name, cls in (("slurm", SlurmSettings), ("ray", RaySettings), ("resources", ResourcesByKind)):
            if isinstance(getattr(self, name), dict):  # built from a tree of sections
                setattr(self, name, cls(**getattr(self, name)))
        if self.executor not in EXECUTORS:
            raise ConfigError(f"experiment.executor must be one of {EXECUTORS}, got {self.executor!r}")
        if self.max_parallel < 0:
            raise ConfigError(f"experiment.max_parallel must be >= 0, got {self.max_parallel}")
        if self.eval_chat_template is None:
            self.eval_chat_template = "auto"
        if not (isinstance(self.eval_chat_template, bool) or self.eval_chat_template == "auto"):
            raise ConfigError(
                f"experiment.eval_chat_template must be true, false or 'auto', got {self.eval_chat_template!r}"
            )


@dataclass
class RunConfig:
    model: ModelSection = field(default_factory=ModelSection)  # type: ignore[valid-type]
    data: DataConfig = field(default_factory=DataConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    train: TrainSection = field(default_factory=TrainSection)  # type: ignore[valid-type]
    pairs: PairsSettings = field(default_factory=PairsSettings)
    probe: ProbeSettings = field(default_factory=ProbeSettings)
    experiment: ExperimentSettings = field(default_factory=ExperimentSettings)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **dotted: Any) -> RunConfig:
        """A validated copy with dotted keys changed: ``cfg.replace(**{"objective.name": "dpo"})``."""
        tree = self.to_dict()
        for key, value in dotted.items():
            if key not in FIELDS:
                raise _unknown_key(key, "replace()")
            _set(tree, key, _check_type(key, value))
        return _build(tree)


def _set(tree: dict[str, Any], key: str, value: Any) -> None:
    """``tree["experiment"]["slurm"]["partition"] = value`` for ``key="experiment.slurm.partition"``."""
    *path, leaf = key.split(".")
    for part in path:
        tree = tree.setdefault(part, {})
    tree[leaf] = value


SECTIONS = {f.name: f.default_factory for f in dataclasses.fields(RunConfig)}


def _build(tree: dict[str, dict[str, Any]]) -> RunConfig:
    try:
        return RunConfig(**{name: cls(**tree.get(name, {})) for name, cls in SECTIONS.items()})  # type: ignore[misc]
    except TypeError as e:  # a value of the wrong shape
        raise ConfigError(f"bad config value: {e}") from e


def _leaves(prefix: str, cls: type) -> dict[str, tuple[dataclasses.Field, Any]]:
    """The dotted keys of a section with their field and type annotation; a field holding a dataclass is a
    subsection (``experiment.slurm.*``)."""
    out: dict[str, tuple[dataclasses.Field, Any]] = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        sub = f.default_factory() if f.default_factory is not dataclasses.MISSING else None  # type: ignore[misc]
        if dataclasses.is_dataclass(sub):
            SUBSECTIONS.add(f"{prefix}{f.name}")
            out.update(_leaves(f"{prefix}{f.name}.", type(sub)))
        else:
            out[f"{prefix}{f.name}"] = (f, hints[f.name])
    return out


# dotted names of the sections inside sections ("experiment.slurm", "experiment.resources.train", ...)
SUBSECTIONS: set[str] = set()
_LEAVES = {key: fh for section, cls in SECTIONS.items() for key, fh in _leaves(f"{section}.", cls).items()}  # type: ignore[arg-type]
FIELDS: dict[str, dataclasses.Field] = {key: f for key, (f, _) in _LEAVES.items()}
HINTS: dict[str, Any] = {key: hint for key, (_, hint) in _LEAVES.items()}
VALID_KEYS = tuple(FIELDS)


# --- type checks from the annotations ------------------------------------------------------------------------


class _Mismatch(Exception):
    pass


def check_value(key: str, value: Any, hint: Any, f: dataclasses.Field | None = None) -> Any:
    """``value`` checked against the annotation ``hint`` of config key ``key`` (and the field's
    ``metadata["choices"]``), converted where YAML gives another form of the same thing: an int for a float,
    ``"1e-3"`` (YAML 1.1 reads it as a string) for a float, one item for a list. A `ConfigError` otherwise."""
    try:
        value = _conform(value, hint, wrap=False)
    except _Mismatch:
        try:
            value = _conform(value, hint, wrap=True)
        except _Mismatch:
            quote = (
                " (YAML reads yes/no/on/off as true/false: quote the word)" if isinstance(value, bool) else ""
            )
            raise ConfigError(f"config key {key!r} expects {_describe(hint)}, got {value!r}{quote}") from None
    choices = (f.metadata.get("choices") if f is not None else None) or ()
    if choices and value is not None and value not in choices:
        raise ConfigError(f"config key {key!r} expects one of {list(choices)}, got {value!r}")
    return value


def _arms(hint: Any) -> tuple[Any, ...]:
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        return typing.get_args(hint)
    return (hint,)


def _conform(value: Any, hint: Any, wrap: bool) -> Any:
    arms = _arms(hint)
    if len(arms) > 1:
        enums = [a for a in arms if isinstance(a, type) and issubclass(a, enum.Enum)]
        if enums and str in arms:  # `OptimizerNames | str`: a name of the enum
            if value is None and type(None) in arms:
                return None
            for e in enums:
                names = {m.value for m in e}
                if value is False and "no" in names:  # YAML 1.1 reads `eval_strategy: no` as false
                    return "no"
                if isinstance(value, e) or (isinstance(value, str) and value in names):
                    return value.value if isinstance(value, e) else value
            raise _Mismatch
        for arm in arms:
            try:
                return _conform(value, arm, wrap)
            except _Mismatch:
                continue
        raise _Mismatch
    return _conform_one(value, hint, wrap)


def _conform_one(value: Any, hint: Any, wrap: bool) -> Any:
    if hint is Any:
        return value
    if hint is type(None) or hint is None:
        if value is None:
            return None
        raise _Mismatch
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        if value in typing.get_args(hint) and type(value) in {type(a) for a in typing.get_args(hint)}:
            return value
        raise _Mismatch
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _Mismatch
    if hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return value  # an int stays one: `warmup_steps: 10` is a count, 0.1 a ratio
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise _Mismatch
    if hint is str:
        if isinstance(value, str):
            return value
        raise _Mismatch
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        if isinstance(value, hint):
            return value.value
        if value in {m.value for m in hint}:
            return value
        raise _Mismatch
    if origin in (list, tuple) or hint in (list, tuple):
        if not isinstance(value, list | tuple):
            if not wrap:
                raise _Mismatch
            value = [value]
        args = typing.get_args(hint)
        item = args[0] if args else Any
        return [_conform(v, item, wrap=False) for v in value]
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise _Mismatch
        args = typing.get_args(hint)
        return {k: _conform(v, args[1], wrap=False) for k, v in value.items()} if args else value
    if isinstance(hint, type):  # another class (e.g. accelerate's ParallelismConfig): an instance only
        if isinstance(value, hint):
            return value
        raise _Mismatch
    return value


def _describe(hint: Any) -> str:
    arms = _arms(hint)
    enums = [a for a in arms if isinstance(a, type) and issubclass(a, enum.Enum)]
    if enums and str in arms:
        names = [m.value for e in enums for m in e]
        return ("null or " if type(None) in arms else "") + f"one of {names}"
    words = []
    for a in arms:
        origin = typing.get_origin(a)
        if a is type(None):
            words.append("null")
        elif a is bool:
            words.append("true or false")
        elif a is int:
            words.append("an integer")
        elif a is float:
            words.append("a number")
        elif a is str:
            words.append("a string")
        elif origin is typing.Literal:
            words.append(" or ".join(repr(x) for x in typing.get_args(a)))
        elif origin in (list, tuple) or a in (list, tuple):
            args = typing.get_args(a)
            words.append(f"a list of {_describe(args[0])}" if args else "a list")
        elif origin is dict or a is dict:
            words.append("a mapping")
        elif isinstance(a, type) and issubclass(a, enum.Enum):
            words.append(f"one of {[m.value for m in a]}")
        elif isinstance(a, type):
            words.append(f"a {a.__name__} (not settable from YAML)")
        else:
            words.append(str(a))
    return " or ".join(dict.fromkeys(words))


def _check_type(key: str, value: Any) -> Any:
    return check_value(key, value, HINTS[key], FIELDS[key])


def _unknown_key(key: str, source: str) -> ConfigError:
    if key in RENAMED:
        return ConfigError(
            f"config key {key!r} in {source} was renamed: use {RENAMED[key]} (TRL's name; see `decpo config-keys`)"
        )
    close = difflib.get_close_matches(key, VALID_KEYS, n=1, cutoff=0.5)
    if not close:  # a right leaf under a wrong section, e.g. `beta` for `train.beta`
        close = [k for k in VALID_KEYS if k.rsplit(".", 1)[-1] == key.rsplit(".", 1)[-1]][:1]
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return ConfigError(f"unknown config key {key!r} in {source}{hint} (see `decpo config-keys`)")


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and (key in SECTIONS or key in SUBSECTIONS or key == "lora"):
            flat.update(_flatten(v, key + "."))
        else:
            flat[key] = v
    return flat


def parse_override(item: str) -> tuple[str, Any]:
    """``"train.beta=0.2"`` -> ``("train.beta", 0.2)``; the value is parsed as YAML."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like section.key=value, e.g. train.beta=0.2")
    key, raw = item.split("=", 1)
    if not raw.strip():
        return key.strip(), None
    try:
        return key.strip(), yaml.safe_load(raw)
    except yaml.YAMLError as e:  # e.g. a !!python tag, which the safe loader refuses (as in a file)
        raise ConfigError(f"override {item!r}: not valid YAML: {e}") from e


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Build a RunConfig from a YAML file (safe loader) and dotted overrides, in that order."""
    flat: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            tree = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from e
        if not isinstance(tree, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections")
        for key, value in _flatten(tree).items():
            if key not in FIELDS:
                raise _unknown_key(key, str(path))
            flat[key] = _check_type(key, value)
    for item in overrides:
        key, value = parse_override(item)
        if key not in FIELDS:
            raise _unknown_key(key, "the command line")
        flat[key] = _check_type(key, value)
    sections: dict[str, dict[str, Any]] = {}
    for key, value in flat.items():
        _set(sections, key, value)
    return _build(sections)


def save_config(cfg: RunConfig, path: str | Path) -> None:
    """Write the resolved config as YAML, atomically."""
    from decpo.io import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def describe_keys(cfg: RunConfig | None = None) -> str:
    """One line per valid key with its value in ``cfg`` (default: the defaults) and help text; a value that
    differs from the default says so, and a decpo default that differs from TRL's names TRL's."""
    values = _flatten(cfg.to_dict()) if cfg is not None else {}
    defaults = _flatten(RunConfig().to_dict())
    lines = []
    for key, f in FIELDS.items():
        default = defaults[key]
        value = values.get(key, default)
        notes = []
        if value != default:
            notes.append(f"default {default!r}")
        elif "decpo_default" in f.metadata:
            upstream = f.metadata["upstream_default"]
            notes.append(
                f"decpo's default; {f.metadata['declared_in']}'s is {upstream!r}: {f.metadata['decpo_default']}"
            )
        note = f" ({'; '.join(notes)})" if notes else ""
        lines.append(f"{key} = {value!r}{note}  # {_one_line(f.metadata.get('help', ''))}")
    return "\n".join(lines)
