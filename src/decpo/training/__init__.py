"""Training: `DecPOTrainer` (TRL's DPOTrainer + activation regularizer) and the run driver."""

from decpo.config.trainer_args import DecPOConfig
from decpo.functional import activation_penalty
from decpo.training.trainer import DecPOTrainer

__all__ = ["DecPOConfig", "DecPOTrainer", "activation_penalty"]
