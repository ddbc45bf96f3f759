"""The value checks of the ``train`` section (and the ``model`` section's LoRA values, `check_lora_values`), on
plain values and without trl, transformers or torch: one home for each, called by the live section (`decpo.config.trl_sections`), by `RunConfig` (the check across sections),
by the trainer's arguments (`decpo.config.trainer_args`) and, before any heavy import, by
`decpo.config.catalogue.precheck`, so that a bad value answers in well under 2 seconds.

Each check reads attributes of ``train``: the live section, TRL's arguments, or a namespace of the values a
config gives over the saved defaults (``trl_keys.json``).
"""

from __future__ import annotations

from typing import Any

from decpo.config.errors import ConfigError
from decpo.names import DECORRELATION_FORMS, SITES, TOKEN_SELECTIONS, did_you_mean
from decpo.records import is_auto

REGULARIZERS = ("decorrelation", "l1")
REG_ROWS = ("both", "chosen", "rejected")  # the rows of Z: both sides of each pair, or one
# counts that mean nothing below 1 (transformers would divide by them, or loop forever)
COUNTS = (
    "per_device_train_batch_size",
    "per_device_eval_batch_size",
    "gradient_accumulation_steps",
    "logging_steps",
)
# the fields each check reads: the precheck runs a check only when it knows them all
REGULARIZER_FIELDS = (
    "reg_form",
    "reg_tokens",
    "reg_rows",
    "reg_site",
    "reg_weight",
    "reg_balance",
    "reg_calibration_batches",
)
TRAIN_FIELDS = (*COUNTS, "max_steps", "max_length", "learning_rate")
ROWS_FIELDS = (
    "reg_weight",
    "reg_tokens",
    "reg_rows",
    "per_device_train_batch_size",
    "per_device_eval_batch_size",
)


def check_regularizer(args: Any) -> None:
    """ValueError (a message without the section, as TRL's arguments raise) for a regularizer field out of range."""
    if getattr(args, "reg_type", None) not in (None, *REGULARIZERS):  # (the config section has none)
        raise ValueError(f"reg_type must be one of {REGULARIZERS} or None, got {args.reg_type!r}")
    for name, valid in (
        ("reg_form", DECORRELATION_FORMS),
        ("reg_tokens", TOKEN_SELECTIONS),
        ("reg_rows", REG_ROWS),
        ("reg_site", SITES),
    ):
        value = getattr(args, name)
        if value not in valid:
            raise ValueError(f"{name} must be one of {valid}, got {value!r}{did_you_mean(value, valid)}")
    if isinstance(args.reg_weight, str) and args.reg_weight != "auto":
        raise ValueError(f"reg_weight must be a number >= 0 or 'auto', got {args.reg_weight!r}")
    if not isinstance(args.reg_weight, str) and not args.reg_weight >= 0:
        raise ValueError(f"reg_weight must be >= 0 or 'auto', got {args.reg_weight}")
    if is_auto(args.reg_weight) and not args.reg_balance > 0:
        raise ValueError(
            f"reg_balance must be > 0 (the penalty's share of the preference loss at the start), got "
            f"{args.reg_balance}; for no penalty set reg_weight=0"
        )
    if args.reg_calibration_batches < 1:
        raise ValueError(f"reg_calibration_batches must be >= 1, got {args.reg_calibration_batches}")


def check_train_values(train: Any) -> None:
    """A `ConfigError` naming the ``train`` key of a count below 1, a ``max_steps`` of 0 or below -1, a
    ``max_length`` below 1 or a ``learning_rate`` not above 0."""
    for name in COUNTS:
        if not getattr(train, name) >= 1:
            raise ConfigError(f"train.{name} must be >= 1, got {getattr(train, name)}")
    if train.max_steps == 0 or train.max_steps < -1:  # transformers would read 0 as "train num_train_epochs"
        raise ConfigError(
            f"train.max_steps must be >= 1, or -1 to train num_train_epochs epochs, got {train.max_steps}"
        )
    if train.max_length is not None and train.max_length < 1:
        raise ConfigError(f"train.max_length must be >= 1 (or null), got {train.max_length}")
    if not train.learning_rate > 0:
        raise ConfigError(f"train.learning_rate must be > 0, got {train.learning_rate}")


LORA_FIELDS = ("use_peft", "lora_r", "lora_alpha", "lora_dropout")


def check_lora_values(model: Any) -> None:
    """A `ConfigError` naming the ``model`` key of a LoRA rank below 1, an alpha not above 0 or a dropout
    outside [0, 1), when the adapter is on (peft would refuse the rank only once the model has loaded)."""
    if not model.use_peft:
        return
    if not model.lora_r >= 1:
        raise ConfigError(f"model.lora_r must be >= 1 (the adapter's rank), got {model.lora_r}")
    if not model.lora_alpha > 0:
        raise ConfigError(f"model.lora_alpha must be > 0, got {model.lora_alpha}")
    if not 0 <= model.lora_dropout < 1:
        raise ConfigError(f"model.lora_dropout must be in [0, 1), got {model.lora_dropout}")


def check_decorrelation_rows(regularizer: str | None, train: Any) -> None:
    """DecPO (``regularizer`` ``"decorrelation"``, the objective's) with a batch that gives the decorrelation
    penalty one row per forward (one pair and one side, ``train.reg_rows`` chosen or rejected, or
    ``reg_tokens=prompt_last``): its penalty would be exactly 0, so a `ConfigError` at config load, before any
    model, pairs or reference log-probs. The trainer checks again what only it knows (processes splitting a
    batch, a data set smaller than a batch)."""
    if regularizer != "decorrelation" or not (is_auto(train.reg_weight) or train.reg_weight > 0):
        return
    one_side = train.reg_tokens == "prompt_last" or train.reg_rows != "both"
    for what in ("train", "eval"):
        key = f"per_device_{what}_batch_size"
        if one_side and getattr(train, key) == 1:
            why = (
                f"train.reg_rows={train.reg_rows!r}"
                if train.reg_rows != "both"
                else "train.reg_tokens=prompt_last"
            )
            raise ConfigError(
                f"train.{key}=1 with {why} gives the decorrelation penalty 1 row per forward, and the penalty of "
                f"one row is exactly 0 (DecPO would train as DPO): set train.{key}=2 or more (gradient "
                "accumulation does not help: the penalty is computed per micro-batch)"
            )
