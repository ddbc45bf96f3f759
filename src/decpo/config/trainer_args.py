"""The trainer's arguments: TRL's `DPOConfig` / `CPOConfig` plus the activation regularizer's fields.

Kept apart from the trainer (as TRL keeps ``dpo_config.py`` apart from ``dpo_trainer.py``) so that the run
configuration can be built from these dataclasses without importing the training code.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import DPOConfig
from trl.experimental.cpo import CPOConfig

from decpo.config.train_checks import check_regularizer
from decpo.env import cache_dir
from decpo.names import DECORRELATION_FORMS, MLP_UP_PROJ, SITES, TOKEN_SELECTIONS


@dataclass
class RegularizerArgs:
    """Fields of the activation regularizer, shared by `DecPOConfig` and `SimPOConfig`."""

    reg_type: str | None = field(
        default="decorrelation",
        metadata={"help": "'decorrelation' (DecPO), 'l1' (L1-Reg baseline) or None (no regularizer)."},
    )
    reg_weight: float | str = field(
        default=1e-3,
        metadata={
            "help": "lambda, the weight of the regularizer (>= 0), or 'auto': chosen before training so that "
            "lambda * R = reg_balance * preference loss, both averaged over the first `reg_calibration_batches` "
            "train batches (dataset order, dropout off, no gradient, the random state untouched)."
        },
    )
    reg_balance: float = field(
        default=0.3,
        metadata={
            "help": "With reg_weight='auto': the penalty's share of the preference loss at the start (> 0)."
        },
    )
    reg_calibration_batches: int = field(
        default=4, metadata={"help": "Train batches averaged to set reg_weight from reg_balance."}
    )
    reg_form: str = field(
        default="cosine", metadata={"help": f"Decorrelation form, one of {DECORRELATION_FORMS}."}
    )
    reg_layers: list[int] = field(
        default_factory=lambda: [15], metadata={"help": "Blocks whose activations are regularized."}
    )
    reg_site: str = field(default=MLP_UP_PROJ, metadata={"help": f"Activation site, one of {SITES}."})
    reg_tokens: str = field(
        default="last",
        metadata={
            "help": f"Token selection, one of {TOKEN_SELECTIONS}. 'prompt_last' (the last prompt token) is the same "
            "position in a pair's chosen and rejected sequences, so Z then holds one row per pair."
        },
    )
    reg_rows: str = field(default="both", metadata={"help": "Rows of Z: 'both', 'chosen' or 'rejected'."})

    def _validate_regularizer(self) -> None:
        check_regularizer(self)


@dataclass
class LoggingDirArgs:
    """TensorBoard's folder, which transformers 5 no longer takes as a `TrainingArguments` field."""

    logging_dir: str | None = field(
        default=None,
        metadata={
            "help": "TensorBoard event folder (with report_to tensorboard), relative to output_dir or absolute; "
            "None: $TENSORBOARD_LOGGING_DIR, else transformers' output_dir/runs/<date>_<host>."
        },
    )


@dataclass
class DecPOConfig(DPOConfig, RegularizerArgs, LoggingDirArgs):
    r"""`DPOConfig` plus the activation regularizer of DecPO (Yan et al., EMNLP 2024).

    With ``reg_type=None`` or ``reg_weight=0`` it trains exactly like `DPOConfig`.
    """

    share_prompt: bool = field(
        default=False,
        metadata={
            "help": "Process each pair's prompt once (one packed row prompt | chosen | rejected with a block "
            "attention mask) instead of once per completion. Same losses and gradients as TRL's path."
        },
    )
    pack_pairs: bool = field(
        default=False,
        metadata={
            "help": "With share_prompt: put several short pairs in one row (no row longer than the longest pair)."
        },
    )

    ref_logps_cache: str | None = field(
        default=None,
        metadata={
            "help": "Folder of a persistent cache of the precomputed reference log-probs (with "
            "precompute_ref_log_probs), keyed on the tokenized data, the reference weights and the settings of the "
            "pass; 'auto': $DECPO_CACHE/ref_logps; None: TRL's own per-trainer precompute."
        },
    )

    def __post_init__(self):
        self._validate_regularizer()
        if self.ref_logps_cache == "auto":
            self.ref_logps_cache = str(cache_dir() / "ref_logps")
        super().__post_init__()


@dataclass
class SimPOConfig(CPOConfig, RegularizerArgs, LoggingDirArgs):
    """TRL's `CPOConfig` set up as SimPO (Meng et al. 2024: length-normalised, reference-free, margin gamma),
    plus the same activation regularizer. The authors' SimPO baseline used gamma = 0.2."""

    loss_type: str = field(default="simpo", metadata={"help": "'simpo' (CPO's other losses also work)."})
    cpo_alpha: float = field(default=0.0, metadata={"help": "Weight of the NLL term; 0 for SimPO."})

    def __post_init__(self):
        self._validate_regularizer()
        super().__post_init__()
