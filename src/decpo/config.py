"""Typed run configuration: YAML files plus dotted command-line overrides, validated up front.

Every field carries its help text in ``metadata["help"]``. Unknown keys fail at once and suggest the
closest valid key, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from decpo.functional import DECORRELATION_FORMS, TOKEN_SELECTIONS

OBJECTIVES = ("dpo", "decpo", "l1", "sft", "simpo")
ROWS = ("both", "chosen", "rejected")


class ConfigError(ValueError):
    """A configuration file or override that cannot be used."""


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class ModelConfig:
    name: str = field(
        default="default",
        metadata=_help(
            "Model to train: 'default' (embedded SmolLM2-135M-Instruct), 'tiny-random-llama' (in-process, "
            "for smoke tests), a Hugging Face model id, a local directory, or a .gguf file."
        ),
    )
    gguf_file: str | None = field(default=None, metadata=_help("GGUF file name inside `name` (a directory)."))
    dtype: str = field(default="float32", metadata=_help("float32, bfloat16 or float16."))
    trust_remote_code: bool = field(
        default=False, metadata=_help("Allow model code from the Hub. Off unless you trust the source.")
    )
    revision: str | None = field(default=None, metadata=_help("Hub revision (branch, tag or commit)."))

    def __post_init__(self) -> None:
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise ConfigError(f"model.dtype must be float32, bfloat16 or float16, got {self.dtype!r}")


@dataclass
class DataConfig:
    task: str = field(
        default="synthetic",
        metadata=_help("Built-in task: synthetic, sycophancy, reframing, toxicity, toxicity_pairwise."),
    )
    path: str | None = field(
        default=None,
        metadata=_help("Your own preference file (JSONL/JSON/CSV or a saved dataset); overrides `task`."),
    )
    eval_path: str | None = field(
        default=None, metadata=_help("Held-out pairs; default: the last `eval_fraction` of `path`.")
    )
    data_dir: str | None = field(
        default=None, metadata=_help("Folder with the paper's data; default: $DECPO_DATA_DIR.")
    )
    eval_fraction: float = field(default=0.1, metadata=_help("Share of rows held out (the last ones)."))
    max_train_samples: int | None = field(default=None, metadata=_help("Use only the first N train pairs."))
    max_eval_samples: int | None = field(default=64, metadata=_help("Use only the first N eval pairs."))
    chat_template: bool = field(
        default=False,
        metadata=_help("Wrap prompt/answers in the tokenizer's chat template (the paper: raw text, off)."),
    )
    on_error: str = field(
        default="raise", metadata=_help("Malformed records: 'raise' (stop before training) or 'skip'.")
    )
    synthetic_answer: str = field(
        default="option",
        metadata=_help(
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
        metadata=_help(
            "dpo, decpo (DPO + lambda * decorrelation), l1 (DPO + lambda * mean|z|), sft, simpo (reference-free)."
        ),
    )
    loss_type: str = field(
        default="sigmoid",
        metadata=_help(
            "TRL loss type of the preference loss: sigmoid (DPO, summed log-probs), sigmoid_norm "
            "(length-normalised, as in the authors' scripts), ipo, hinge, ..."
        ),
    )
    beta: float = field(default=0.1, metadata=_help("DPO temperature beta (the paper: 0.1)."))
    reg_weight: float | str = field(
        default="auto",
        metadata=_help(
            "lambda: weight of the regularizer, or 'auto': set before training so that lambda * R = reg_balance x "
            "the preference loss on the first batches (logged, and written into the run's config.yaml). A fixed "
            "value depends on the form and the model: the paper's 1e-4 is for the raw 'paper' form on Llama-7B."
        ),
    )
    reg_balance: float = field(
        default=0.3,
        metadata=_help(
            "With reg_weight=auto: the penalty's share of the preference loss at the start (> 0)."
        ),
    )
    reg_form: str = field(default="cosine", metadata=_help("cosine, paper or code_literal."))
    layers: list[int] = field(
        default_factory=lambda: [15],
        metadata=_help("Regularized block(s); negative indices count from the end."),
    )
    site: str = field(default="mlp.up_proj", metadata=_help("Activation site: mlp.up_proj (the paper)."))
    tokens: str = field(
        default="last",
        metadata=_help(
            "Token whose activation is a row of Z: last (last real token of each sequence, the default), prompt_last (the last prompt token, where the answer is decided "
            "and the token the probes read; one row per pair) or completion_mean (mean over the answer's tokens)."
        ),
    )
    rows: str = field(default="both", metadata=_help("Rows of Z: both, chosen or rejected sequences."))
    simpo_gamma: float = field(
        default=0.2, metadata=_help("SimPO target reward margin gamma (the authors' SimPO baseline: 0.2).")
    )

    def __post_init__(self) -> None:
        if self.name not in OBJECTIVES:
            raise ConfigError(f"objective.name must be one of {OBJECTIVES}, got {self.name!r}")
        if self.reg_form not in DECORRELATION_FORMS:
            raise ConfigError(
                f"objective.reg_form must be one of {DECORRELATION_FORMS}, got {self.reg_form!r}"
            )
        if self.tokens not in TOKEN_SELECTIONS:
            raise ConfigError(f"objective.tokens must be one of {TOKEN_SELECTIONS}, got {self.tokens!r}")
        if self.rows not in ROWS:
            raise ConfigError(f"objective.rows must be one of {ROWS}, got {self.rows!r}")
        if isinstance(self.layers, int):
            self.layers = [self.layers]
        if not self.layers or not all(isinstance(x, int) for x in self.layers):
            raise ConfigError(f"objective.layers must be a non-empty list of integers, got {self.layers!r}")
        if isinstance(self.reg_weight, str) and self.reg_weight != "auto":
            raise ConfigError(
                f"objective.reg_weight must be a number >= 0 or 'auto', got {self.reg_weight!r}"
            )
        if not isinstance(self.reg_weight, str) and self.reg_weight < 0:
            raise ConfigError(f"objective.reg_weight must be >= 0 or 'auto', got {self.reg_weight}")
        if self.reg_weight == "auto" and not self.reg_balance > 0:
            raise ConfigError(
                f"objective.reg_balance must be > 0 with reg_weight=auto, got {self.reg_balance} (for no penalty "
                "set objective.reg_weight=0)"
            )
        if self.beta <= 0:
            raise ConfigError(f"objective.beta must be > 0, got {self.beta}")

    @property
    def regularizer(self) -> str | None:
        """``"decorrelation"``, ``"l1"`` or None."""
        return {"decpo": "decorrelation", "l1": "l1"}.get(self.name)


@dataclass
class LoraSettings:
    enabled: bool = field(default=True, metadata=_help("Train a LoRA adapter (off: full fine-tuning)."))
    r: int = field(default=8, metadata=_help("LoRA rank (the paper: 8)."))
    alpha: int = field(default=16, metadata=_help("LoRA alpha (the paper: 16)."))
    dropout: float = field(default=0.05, metadata=_help("LoRA dropout (the paper: 0.05)."))
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "v_proj", "up_proj"],
        metadata=_help("Modules that get an adapter (the paper: q_proj, v_proj, up_proj)."),
    )


@dataclass
class TrainConfig:
    max_steps: int = field(default=30, metadata=_help("Optimizer steps; -1: run `epochs` epochs."))
    epochs: float = field(default=1.0, metadata=_help("Passes over the train pairs when max_steps is -1."))
    batch_size: int = field(default=8, metadata=_help("Pairs per device per micro-batch."))
    grad_accum: int = field(default=1, metadata=_help("Micro-batches per optimizer step."))
    eval_batch_size: int = field(
        default=8,
        metadata=_help("Pairs per device at evaluation (same as batch_size keeps the penalty comparable)."),
    )
    lr: float = field(default=5e-4, metadata=_help("AdamW learning rate."))
    lr_scheduler: str = field(default="constant", metadata=_help("transformers scheduler name."))
    warmup_steps: int = field(default=0, metadata=_help("Linear warm-up steps."))
    weight_decay: float = field(default=0.0, metadata=_help("AdamW weight decay."))
    max_grad_norm: float = field(default=1.0, metadata=_help("Gradient clipping norm."))
    max_length: int = field(default=128, metadata=_help("Max tokens of prompt + answer (the paper: 256)."))
    seed: int = field(
        default=0, metadata=_help("Seed of model init, adapters, data order and synthetic data.")
    )
    logging_steps: int = field(default=5, metadata=_help("Log train metrics every N steps."))
    eval_steps: int = field(
        default=10, metadata=_help("Evaluate on held-out pairs every N steps (0: never).")
    )
    save_steps: int = field(default=10, metadata=_help("Checkpoint every N steps."))
    save_total_limit: int = field(default=2, metadata=_help("Checkpoints kept."))
    gradient_checkpointing: bool = field(default=False, metadata=_help("Recompute activations in backward."))
    precompute_ref: bool = field(
        default=True, metadata=_help("Compute reference log-probs once before training (saves a forward).")
    )
    ref_cache: bool = field(
        default=True,
        metadata=_help(
            "Reuse precomputed reference log-probs across runs with the same reference model, data and settings "
            "(in $DECPO_CACHE/ref_logps)."
        ),
    )
    group_by_length: bool = field(
        default=False,
        metadata=_help(
            "Batch pairs of similar length together (still shuffled, seeded): less padding per step on data "
            "of mixed lengths; every pair is still seen once per epoch. DPO-family objectives only (not simpo)."
        ),
    )
    share_prompt: bool = field(
        default=False,
        metadata=_help(
            "Process each pair's prompt once, not once per completion (packed prompt | chosen | rejected with a "
            "block attention mask; same losses and gradients). Needs sdpa or eager attention; not simpo."
        ),
    )
    pack_pairs: bool = field(
        default=False,
        metadata=_help(
            "With share_prompt: several short pairs per packed row (rows no longer than the longest pair)."
        ),
    )
    bf16: bool = field(default=False, metadata=_help("bf16 mixed precision (GPUs)."))
    resume: bool = field(default=True, metadata=_help("Resume from the latest checkpoint in the output dir."))
    report_to: list[str] = field(
        default_factory=lambda: ["none"],
        metadata=_help(
            "Trackers that also get every logged metric (metrics.jsonl is written anyway and stays the record): "
            "none; tensorboard (event files in <run>/<logging_dir>); wandb (WANDB_MODE=offline works; files in "
            "<run>/wandb unless $WANDB_DIR is set); trackio (local, in $TRACKIO_DIR); all (every installed one); "
            "or another transformers integration (mlflow, comet_ml, ...). `pip install decpo[trackers]`."
        ),
    )
    run_name: str | None = field(
        default=None, metadata=_help("Name of the run in the trackers (W&B, trackio, ...); null: theirs.")
    )
    logging_dir: str = field(
        default="tb", metadata=_help("TensorBoard event folder, relative to the run folder (or absolute).")
    )

    def __post_init__(self) -> None:
        if isinstance(self.report_to, str):
            self.report_to = [self.report_to]
        self.report_to = check_report_to(self.report_to)
        for name in ("batch_size", "grad_accum", "eval_batch_size", "max_length", "logging_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ConfigError(f"train.lr must be > 0, got {self.lr}")


# what train.report_to takes besides the transformers integrations' names
REPORT_TO_WORDS = ("none", "all")


def check_report_to(names: list[str]) -> list[str]:
    """``train.report_to`` as given (``[]`` reads as ``["none"]``), or a `ConfigError` naming the valid values.

    The names are those of the installed transformers' integrations (``INTEGRATION_TO_CALLBACK``); the
    default ``["none"]`` is accepted without importing transformers. Whether a tracker is installed is
    checked when the trainer is built (`decpo.training.run.tracker_callbacks`), so that a saved config
    still loads where it is not.
    """
    names = list(names) or ["none"]
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
        default=0, metadata=_help("Run probes on the policy every N steps during training (0: off).")
    )
    num_texts: int = field(default=64, metadata=_help("Probe inputs: the first N held-out prompts."))
    probes: list[str] = field(
        default_factory=lambda: ["decorrelation"],
        metadata=_help("decorrelation, reg_cosine, mean_sq_cosine, variance, near_zero, hoyer, mono_scale."),
    )
    sites: list[str] = field(default_factory=lambda: ["mlp.up_proj"], metadata=_help("Activation sites."))
    layers: list[int] = field(default_factory=list, metadata=_help("Blocks to probe; empty: all."))
    batch_size: int = field(default=16, metadata=_help("Batch size of the probe pass."))


@dataclass
class PairsSettings:
    source: str | None = field(
        default=None,
        metadata=_help(
            "Train on pairs built from the model's own samples (`decpo pairs`): prompts from a task (toxicity, "
            "reframing) or a file (RealToxicityPrompts JSONL, {prompt: ...} JSONL, or one prompt a line); "
            "null: off. Built once, cached by content in $DECPO_CACHE/pairs."
        ),
    )
    split: str = field(
        default="train",
        metadata=_help(
            "Prompts of the source used: train (about 2/3, disjoint from the eval split that the toxicity "
            "evaluation reads), eval or all."
        ),
    )
    limit: int | None = field(default=None, metadata=_help("Only the first N prompts of the split."))
    model: str | None = field(
        default=None, metadata=_help("Model that samples; null: model.name (the policy's own samples).")
    )
    num_samples: int = field(default=4, metadata=_help("Sampled continuations per prompt."))
    include_greedy: bool = field(
        default=False, metadata=_help("Add the greedy continuation as one more sample.")
    )
    temperature: float = field(default=1.0, metadata=_help("Sampling temperature."))
    top_p: float = field(default=1.0, metadata=_help("Nucleus sampling top-p (1: off)."))
    max_new_tokens: int = field(default=20, metadata=_help("Tokens per continuation."))
    scorer: str = field(
        default="toxicity",
        metadata=_help(
            "toxicity (the offline profanity-check classifier), sentiment (VADER positivity), hf:<id|dir> or "
            "detoxify:<ckpt> (see decpo.evaluation.classifiers)."
        ),
    )
    prefer: str = field(
        default="auto", metadata=_help("Which score is better: low, high or auto (low for toxicity).")
    )
    min_gap: float = field(
        default=0.1, metadata=_help("Keep a pair only when best and worst scores differ by more than this.")
    )
    seed: int = field(default=0, metadata=_help("Sampling seed (the same seed gives the same pairs)."))
    batch_size: int = field(default=32, metadata=_help("Prompts per generation batch."))

    def __post_init__(self) -> None:
        if self.split not in ("train", "eval", "all"):
            raise ConfigError(f"pairs.split must be train, eval or all, got {self.split!r}")
        if self.prefer not in ("low", "high", "auto"):
            raise ConfigError(f"pairs.prefer must be low, high or auto, got {self.prefer!r}")
        for name in ("num_samples", "max_new_tokens", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"pairs.{name} must be >= 1, got {getattr(self, name)}")
        if self.temperature <= 0 or not 0 < self.top_p <= 1 or self.min_gap < 0:
            raise ConfigError("pairs: temperature must be > 0, top_p in (0, 1] and min_gap >= 0")


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
        default=None, metadata=_help("Slurm partition of every job (sbatch --partition).")
    )
    account: str | None = field(default=None, metadata=_help("Slurm account (sbatch --account)."))
    qos: str | None = field(default=None, metadata=_help("Slurm quality of service (sbatch --qos)."))
    constraint: str | None = field(
        default=None, metadata=_help("Slurm node constraint (sbatch --constraint).")
    )
    gpus_per_job: int = field(
        default=1,
        metadata=_help("GPUs of each job; a training with --num-processes N asks for N times as many."),
    )
    cpus_per_job: int | None = field(
        default=None, metadata=_help("CPUs of each job; null: the cluster's default.")
    )
    mem_gb: float | None = field(
        default=None, metadata=_help("Memory of each job in GB; null: the cluster's default.")
    )
    time_min: int = field(default=1440, metadata=_help("Time limit of each job in minutes."))
    setup: list[str] = field(
        default_factory=list,
        metadata=_help(
            "Shell lines run before each job, e.g. ['module load cuda', 'source .venv/bin/activate']."
        ),
    )
    additional: dict[str, Any] = field(
        default_factory=dict,
        metadata=_help("More sbatch options, e.g. {mail-type: END, exclude: node12}."),
    )

    def __post_init__(self) -> None:
        _check_counts("experiment.slurm", self, gpus_per_job=0, cpus_per_job=1, mem_gb=0, time_min=1)


@dataclass
class RaySettings:
    address: str | None = field(
        default=None,
        metadata=_help(
            "Ray cluster to join ('auto': the one this node belongs to, or ray://host:10001); null: start a "
            "local Ray with experiment.max_parallel CPUs (each job asks for one)."
        ),
    )
    gpus_per_job: int | None = field(
        default=None,
        metadata=_help(
            "GPUs of each job (a training with --num-processes N: N times as many); null: 1 when the cluster "
            "has GPUs, else 0."
        ),
    )
    cpus_per_job: int = field(default=1, metadata=_help("CPUs of each job (Ray's num_cpus)."))

    def __post_init__(self) -> None:
        _check_counts("experiment.ray", self, gpus_per_job=0, cpus_per_job=0)


@dataclass
class StageResources:
    gpus: int | None = field(
        default=None, metadata=_help("GPUs of each job of this kind; null: the executor's default.")
    )
    cpus: int | None = field(
        default=None,
        metadata=_help(
            "CPUs of each job of this kind (Slurm's cpus-per-task, Ray's num_cpus; with local and Ray also "
            "torch's threads in the job); null: the executor's default (local: torch's own, as sequential)."
        ),
    )
    mem_gb: float | None = field(
        default=None, metadata=_help("Memory in GB (Slurm, Ray); null: the executor's default.")
    )
    time_min: int | None = field(
        default=None, metadata=_help("Time limit in minutes; null: the executor's default.")
    )
    partition: str | None = field(
        default=None, metadata=_help("Slurm partition; null: experiment.slurm.partition.")
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
        metadata=_help("Methods trained from the same base by `decpo run`: dpo, decpo, l1, sft, simpo."),
    )
    seeds: list[int] = field(default_factory=lambda: [0], metadata=_help("Training seeds of `decpo run`."))
    eval_tasks: list[str] = field(
        default_factory=list,
        metadata=_help(
            "Tasks evaluated by `decpo run`: registered evaluation tasks (decpo.evaluation.registry; "
            "module:name for a task of your own); empty: the training task, plus sycophancy when real data "
            "is found."
        ),
    )
    eval_limit: int | None = field(
        default=None, metadata=_help("Evaluate only the first N items of each set.")
    )
    eval_batch_size: int = field(default=16, metadata=_help("Batch size of evaluation."))
    eval_generate: bool = field(
        default=True,
        metadata=_help("Generation-based measures too (slow on CPU); false: log-prob measures only."),
    )
    eval_chat_template: bool | str = field(
        default="auto",
        metadata=_help(
            "Layout of prompts and answers in evaluation, for log-prob measures and generation prompts: auto "
            "(or null): as trained, i.e. `data.chat_template`, for the base model and every trained one; true: "
            "the tokenizer's chat template; false: raw text."
        ),
    )
    eval_prompts: str | None = field(
        default=None,
        metadata=_help(
            "Prompts of the toxicity evaluation: a RealToxicityPrompts-format JSONL used whole; null: the eval "
            "split of the data directory's challenging prompts (disjoint from the train split used for pairs)."
        ),
    )
    probe_num_texts: int = field(
        default=64, metadata=_help("Held-out texts of the final probes (base and every trained model).")
    )
    strength_sweep_dir: str = field(
        default="strength",
        metadata=_help(
            "Folder of a `decpo sweep --reg-weights` run whose strength.md the report of `decpo run` links, "
            "relative to the experiment folder (or absolute)."
        ),
    )
    executor: str = field(
        default="sequential",
        metadata=_help(
            "Where the stages of `decpo run` / `decpo sweep` run: sequential (one after another in this "
            "process), local (submitit's local executor: experiment.max_parallel jobs at once on this machine), "
            "slurm (one Slurm job per stage, through submitit) or ray (one Ray task per stage)."
        ),
    )
    max_parallel: int = field(
        default=0,
        metadata=_help(
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
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    lora: LoraSettings = field(default_factory=LoraSettings)
    train: TrainConfig = field(default_factory=TrainConfig)
    pairs: PairsSettings = field(default_factory=PairsSettings)
    probe: ProbeSettings = field(default_factory=ProbeSettings)
    experiment: ExperimentSettings = field(default_factory=ExperimentSettings)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **dotted: Any) -> RunConfig:
        """A validated copy with dotted keys changed: ``cfg.replace(**{"objective.name": "dpo"})``."""
        tree = self.to_dict()
        for key, value in dotted.items():
            if key not in VALID_KEYS:
                raise _unknown_key(key, "replace()")
            _set(tree, key, _check_type(key, value))
        return RunConfig(**{name: cls(**tree[name]) for name, cls in SECTIONS.items()})  # type: ignore[misc]


def _set(tree: dict[str, Any], key: str, value: Any) -> None:
    """``tree["experiment"]["slurm"]["partition"] = value`` for ``key="experiment.slurm.partition"``."""
    *path, leaf = key.split(".")
    for part in path:
        tree = tree.setdefault(part, {})
    tree[leaf] = value


SECTIONS = {f.name: f.default_factory for f in dataclasses.fields(RunConfig)}


def _leaves(prefix: str, cls: type) -> dict[str, dataclasses.Field]:
    """The dotted keys of a section; a field holding a dataclass is a subsection (``experiment.slurm.*``)."""
    out: dict[str, dataclasses.Field] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        sub = f.default_factory() if f.default_factory is not dataclasses.MISSING else None  # type: ignore[misc]
        if dataclasses.is_dataclass(sub):
            SUBSECTIONS.add(f"{prefix}{f.name}")
            out.update(_leaves(f"{prefix}{f.name}.", type(sub)))
        else:
            out[f"{prefix}{f.name}"] = f
    return out


# dotted names of the sections inside sections ("experiment.slurm", "experiment.resources.train", ...)
SUBSECTIONS: set[str] = set()
FIELDS = {key: f for section, cls in SECTIONS.items() for key, f in _leaves(f"{section}.", cls).items()}  # type: ignore[arg-type]


def _check_type(key: str, value: Any) -> Any:
    """Reject a value whose type does not fit the field's default (ints are accepted for floats)."""
    f = FIELDS[key]
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
    if value is None or default is None:
        return value
    if key in BOOL_OR_AUTO:
        if value == "auto" or isinstance(value, bool):
            return value
        raise ConfigError(f"config key {key!r} expects true, false or 'auto', got {value!r}")
    if key in NUMBER_OR_AUTO:
        if value == "auto":
            return value
        default = 0.0
    expected = type(default)
    if expected is float and isinstance(value, str):  # YAML 1.1 reads `1e-3` (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected is list and not isinstance(value, list):
        value = [value]
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        what = "a number or 'auto'" if key in NUMBER_OR_AUTO else expected.__name__
        raise ConfigError(f"config key {key!r} expects {what}, got {value!r}")
    return value


VALID_KEYS = tuple(FIELDS)
# keys that take a number or the string "auto"
NUMBER_OR_AUTO = ("objective.reg_weight",)
# keys that take true, false or the string "auto"
BOOL_OR_AUTO = ("experiment.eval_chat_template",)


def _unknown_key(key: str, source: str) -> ConfigError:
    close = difflib.get_close_matches(key, VALID_KEYS, n=1, cutoff=0.5)
    if not close:  # a right leaf under a wrong section, e.g. `beta` for `objective.beta`
        close = [k for k in VALID_KEYS if k.rsplit(".", 1)[-1] == key.rsplit(".", 1)[-1]][:1]
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return ConfigError(f"unknown config key {key!r} in {source}{hint} (see `decpo config-keys`)")


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and (key in SECTIONS or key in SUBSECTIONS):
            flat.update(_flatten(v, key + "."))
        else:
            flat[key] = v
    return flat


def parse_override(item: str) -> tuple[str, Any]:
    """``"objective.beta=0.2"`` -> ``("objective.beta", 0.2)``; the value is parsed as YAML."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like section.key=value, e.g. objective.beta=0.2")
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
            if key not in VALID_KEYS:
                raise _unknown_key(key, str(path))
            flat[key] = _check_type(key, value)
    for item in overrides:
        key, value = parse_override(item)
        if key not in VALID_KEYS:
            raise _unknown_key(key, "the command line")
        flat[key] = _check_type(key, value)
    sections: dict[str, dict[str, Any]] = {}
    for key, value in flat.items():
        _set(sections, key, value)
    try:
        return RunConfig(**{name: cls(**sections.get(name, {})) for name, cls in SECTIONS.items()})  # type: ignore[misc]
    except TypeError as e:  # a value of the wrong shape
        raise ConfigError(f"bad config value: {e}") from e


def save_config(cfg: RunConfig, path: str | Path) -> None:
    """Write the resolved config as YAML, atomically."""
    from decpo.io import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def describe_keys(cfg: RunConfig | None = None) -> str:
    """One line per valid key with its value in ``cfg`` (default: the defaults) and help text; a value that
    differs from the default says so."""
    values = _flatten(cfg.to_dict()) if cfg is not None else {}
    lines = []
    for key, f in FIELDS.items():
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        value = values.get(key, default)
        note = "" if value == default else f" (default {default!r})"
        lines.append(f"{key} = {value!r}{note}  # {f.metadata.get('help', '')}")
    return "\n".join(lines)
