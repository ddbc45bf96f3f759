"""decpo's own sections of the run configuration: ``data``, ``objective``, ``pairs`` and ``probe``."""

from __future__ import annotations

from dataclasses import dataclass, field

from decpo.config.errors import ConfigError
from decpo.config.fields import described
from decpo.config.sampling import SamplingSettings
from decpo.data.errors import DataError
from decpo.data.pairs import ON_ERROR
from decpo.data.reading import ANSWER_FORMATS
from decpo.names import MLP_UP_PROJ, did_you_mean

OBJECTIVES = ("dpo", "decpo", "l1", "sft", "simpo")


def check_method(name: object, where: str) -> None:
    """A `ConfigError` unless ``name`` is one of `OBJECTIVES`, naming ``where`` it was chosen (``objective.name``,
    ``experiment.methods``, ``--methods``) and the closest method."""
    if name not in OBJECTIVES:
        raise ConfigError(
            f"{where} must be one of {OBJECTIVES}, got {name!r}{did_you_mean(name, OBJECTIVES)}"
        )


@dataclass
class DataConfig:
    task: str = field(
        default="synthetic",
        metadata=described(
            "Built-in task: synthetic, reading (two facts: answered by reading the question, not by copying; "
            "held out during training: its dev split), sycophancy, reframing, toxicity, toxicity_pairwise."
        ),
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
    max_train_samples: int | None = field(
        default=None, metadata=described("Use only the first N train pairs.")
    )
    max_eval_samples: int | None = field(default=64, metadata=described("Use only the first N eval pairs."))
    chat_template: bool = field(
        default=False,
        metadata=described(
            "Wrap prompt/answers in the tokenizer's chat template (the paper: raw text, off)."
        ),
    )
    on_error: str = field(
        default="raise", metadata=described("Malformed records: 'raise' (stop before training) or 'skip'.")
    )
    synthetic_answer: str = field(
        default="option",
        metadata=described(
            "Answers of the synthetic and reading tasks: option (letter and option text, ' (B) 23'), letter "
            "(' (B)' alone) or, reading only, number (' 23' alone)."
        ),
    )

    def __post_init__(self) -> None:
        if not 0.0 < self.eval_fraction < 1.0:
            raise ConfigError(f"data.eval_fraction must be in (0, 1), got {self.eval_fraction}")
        if self.on_error not in ON_ERROR:
            raise ConfigError(
                f"data.on_error must be 'raise' or 'skip', got {self.on_error!r}{did_you_mean(self.on_error, ON_ERROR)}"
            )
        if self.synthetic_answer not in ANSWER_FORMATS:
            raise ConfigError(
                f"data.synthetic_answer must be 'option', 'letter' or 'number' (reading only), got "
                f"{self.synthetic_answer!r}{did_you_mean(self.synthetic_answer, ANSWER_FORMATS)}"
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
        check_method(self.name, "objective.name")

    @property
    def regularizer(self) -> str | None:
        """``"decorrelation"``, ``"l1"`` or None: the ``reg_type`` of the method."""
        return {"decpo": "decorrelation", "l1": "l1"}.get(self.name)


@dataclass
class ProbeSettings:
    every_n_steps: int = field(
        default=0, metadata=described("Run probes on the policy every N steps during training (0: off).")
    )
    num_texts: int = field(default=64, metadata=described("Probe inputs: the first N held-out prompts."))
    probes: list[str] = field(
        default_factory=lambda: ["decorrelation"],
        metadata=described(
            "decorrelation, reg_cosine, mean_sq_cosine, variance, near_zero, hoyer, mono_scale."
        ),
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
            raise ConfigError(
                f"pairs.split must be train, eval or all, got {self.split!r}"
                f"{did_you_mean(self.split, ('train', 'eval', 'all'))}"
            )
        try:
            super().__post_init__()
        except DataError as e:
            raise ConfigError(f"pairs.{e}") from e
