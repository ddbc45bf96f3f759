"""The ``experiment`` section: what `decpo run` / `decpo sweep` run, and where (the executor, Slurm, Ray, and
the resources of each stage kind)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from decpo.config.errors import ConfigError
from decpo.config.fields import described
from decpo.config.sections import check_method
from decpo.names import did_you_mean


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
    seeds: list[int] = field(
        default_factory=lambda: [0], metadata=described("Training seeds of `decpo run`.")
    )
    eval_tasks: list[str] = field(
        default_factory=list,
        metadata=described(
            "Tasks evaluated by `decpo run`: registered evaluation tasks (decpo.evaluation.registry; "
            "module:name for a task of your own); empty: the training task, plus sycophancy when real data "
            "is found."
        ),
    )
    primary: str | None = field(
        default=None,
        metadata=described(
            "The primary outcome of `decpo run`, declared before the run: task:measure, an evaluated task "
            "and one of its measures with per-item scores (e.g. reading:ab_accuracy_debiased); null: the "
            "first evaluated task's declared primary measure. The report leads with DecPO - DPO on it."
        ),
    )
    eval_limit: int | None = field(
        default=None, metadata=described("Evaluate only the first N items of each set.")
    )
    eval_transfer_limit: int | None = field(
        default=None,
        metadata=described(
            "Evaluate only the first N items of the transfer split (reading, synthetic; a secondary measure); "
            "null: experiment.eval_limit."
        ),
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
    eval_num_samples: int = field(
        default=4,
        metadata=described(
            "Toxicity: sampled continuations per prompt of the RealToxicityPrompts protocol (expected maximum "
            "toxicity, toxicity probability; `EvalConfig.num_samples`), beside the greedy measures; 0: greedy "
            "only. The published protocol draws 25; 4 keeps a CPU run short."
        ),
    )
    eval_scorer: str | None = field(
        default=None,
        metadata=described(
            "Toxicity scorer of the evaluation (`EvalConfig.scorer`); null: jigsaw-bilstm, or profanity-check "
            "when pairs.scorer is jigsaw-bilstm: never the scorer that ranked the training pairs by default. "
            "Set to pairs.scorer, the report opens with 'evaluated by the scorer it was trained on'."
        ),
    )
    eval_prompts: str | None = field(
        default=None,
        metadata=described(
            "Prompts of the toxicity evaluation: a RealToxicityPrompts-format JSONL used whole; null: the eval "
            "split of the data directory's challenging prompts (disjoint from the train split used for pairs)."
        ),
    )
    curve_steps: list[int] = field(
        default_factory=list,
        metadata=described(
            "Training steps at which `decpo run` also evaluates every trained model's checkpoint on the primary "
            "outcome (a learning curve: base at step 0, these steps, the final model): each a multiple of "
            "train.save_steps below train.max_steps, in increasing order; empty: no curve."
        ),
    )
    curve_limit: int | None = field(
        default=None,
        metadata=described(
            "Items of each learning-curve point (the first N of the evaluated split, the same for every model); "
            "null: experiment.eval_limit."
        ),
    )
    probe_num_texts: int = field(
        default=64, metadata=described("Held-out texts of the final probes (base and every trained model).")
    )
    sparse_probing_layers: list[int] | None = field(
        default=None,
        metadata=described(
            "Blocks where the probe stage also runs k-sparse probing (decpo.probes.sparse_probing) of the "
            "training task's labelled concepts (synthetic, reading: on the held-out prompts, in the same pass; "
            "sycophancy, toxicity: also on texts made for their concepts, decpo.probes.concept_texts, in a "
            "pass of their own, experiment.concept_num_texts of them; other tasks: skipped, with the reason "
            "logged and in the report), experiment.probe_num_texts held-out texts (a concept with fewer than "
            "10 texts per class is skipped, its reason in the report); negative indices count from the end. null: the regularized layer(s), "
            "train.reg_layers, which keeps the default run's probe stage within its time budget (about 0.2 s "
            "of fits per model, concept, layer and site on 2 cores); empty list: off."
        ),
    )
    concept_num_texts: int | None = field(
        default=None,
        metadata=described(
            "Texts made for the training task's own concepts (decpo.probes.concept_texts; toxicity: 593 "
            "challenging prompts with their continuation, sycophancy: 1,050 CAA items with one answer) that "
            "the probe stage's sparse probing reads, the first N; null: all of them. On the embedded model the "
            "toxicity concept is decodable from all 593, the sycophancy one only weakly from all 1,050 "
            "(benchmarks/RESULTS.md). About 40 s per model for the 593 toxicity texts, 3.5 min for the 1,050 "
            "CAA texts, on 2 cores."
        ),
    )
    sae: bool = field(
        default=False,
        metadata=described(
            "Add the SAE stage (decpo.probes.sae_runner; needs pip install 'decpo[sae]', EleutherAI's sparsify): "
            "a TopK sparse autoencoder trained on the base model's activations at experiment.sae_layer and the "
            "penalty's site (train.reg_site), on every token but the first of the training pairs' prompt + "
            "chosen answer (or loaded, experiment.sae_path); then L0, FVU, dead and dense latents, and the "
            "share of latents whose activations shifted vs base, of base and every trained model on the first "
            "experiment.probe_num_texts held-out pairs; in sae/ and the report. About 6 minutes of training "
            "on one CPU core with the embedded model."
        ),
    )
    sae_layer: int | None = field(
        default=None,
        metadata=described(
            "Block of the SAE stage, negative from the end; null: the first of train.reg_layers."
        ),
    )
    sae_path: str | None = field(
        default=None,
        metadata=described(
            "A local SAE folder of sparsify's format (cfg.json, sae.safetensors) the SAE stage loads instead of "
            "training one (its width must be the site's)."
        ),
    )
    sae_train_tokens: int | None = field(
        default=None,
        metadata=described(
            "Tokens the SAE stage trains on; null: decpo.probes.sae_settings.SaeSettings' default (150000, "
            "about 6 minutes on one CPU core with the embedded model; on a GPU train longer or load a "
            "published SAE)."
        ),
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
            raise ConfigError(
                f"experiment.executor must be one of {EXECUTORS}, got {self.executor!r}"
                f"{did_you_mean(self.executor, EXECUTORS)}"
            )
        if self.max_parallel < 0:
            raise ConfigError(f"experiment.max_parallel must be >= 0, got {self.max_parallel}")
        for method in self.methods:
            check_method(method, "experiment.methods")
        if self.methods and not self.seeds:  # it would train nothing and report on the base model alone
            raise ConfigError(
                f"experiment.seeds is empty: methods {self.methods} need at least one seed (e.g. [0, 1, 2])"
            )
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"experiment.seeds lists a seed twice: {self.seeds}")
        _check_counts(
            "experiment",
            self,
            curve_limit=1,
            eval_transfer_limit=1,
            eval_num_samples=0,
            sae_train_tokens=1,
            concept_num_texts=1,
        )
        steps = self.curve_steps
        if any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in steps) or any(
            b <= a for a, b in zip(steps, steps[1:], strict=False)
        ):
            raise ConfigError(
                f"experiment.curve_steps must be positive whole numbers in strictly increasing order, got {steps!r}"
            )
        if self.primary is not None:
            task, _, measure = str(self.primary).rpartition(":")
            if not isinstance(self.primary, str) or not task or not measure:
                raise ConfigError(
                    f"experiment.primary must be task:measure (e.g. reading:ab_accuracy_debiased) or null, "
                    f"got {self.primary!r}"
                )
        if self.eval_chat_template is None:
            self.eval_chat_template = "auto"
        if not (isinstance(self.eval_chat_template, bool) or self.eval_chat_template == "auto"):
            raise ConfigError(
                f"experiment.eval_chat_template must be true, false or 'auto', got {self.eval_chat_template!r}"
            )
