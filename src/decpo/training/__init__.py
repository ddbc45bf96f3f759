"""Training: `DecPOTrainer` (TRL's DPOTrainer + activation regularizer) and the run driver."""

from decpo.config.trainer_args import DecPOConfig
from decpo.training.trainer import DecPOTrainer, activation_penalty

__all__ = ["DecPOConfig", "DecPOTrainer", "activation_penalty"]
