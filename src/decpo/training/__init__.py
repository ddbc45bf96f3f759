"""Training: `DecPOTrainer` (TRL's DPOTrainer + activation regularizer) and the run driver."""

from decpo.training.trainer import DecPOConfig, DecPOTrainer, activation_penalty

__all__ = ["DecPOConfig", "DecPOTrainer", "activation_penalty"]
