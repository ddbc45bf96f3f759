"""Counters that a resumed run continues from its checkpoint's log history instead of starting again.

The Trainer restores the step, the optimizer and the RNG from a checkpoint, but TRL's token count
(``num_tokens``) restarts at 0, the summary's ``train_loss`` is the mean over the steps of this call only
(0.0 when resumed at the last step), and ``eval_on_start`` evaluates again at the checkpoint's step, whose
evaluation (if it had one) is already in ``metrics.jsonl``. `ResumedCountersMixin` carries the first two
over and skips that evaluation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from transformers import TrainerCallback


def last_logged(history: Sequence[dict[str, Any]], key: str, step: int) -> float | None:
    """The last value of ``key`` logged at or before ``step``, or None."""
    values = [h[key] for h in history if key in h and h.get("step", 0) <= step]
    return values[-1] if values else None


def whole_run_train_loss(
    history: Sequence[dict[str, Any]], resumed_at: int, train_loss: float, steps_now: int
) -> float:
    """The mean training loss per step over the whole run: the steps logged up to ``resumed_at`` (each log's
    ``loss`` is the mean over the steps since the one before) and the ``steps_now`` steps of this call, whose
    mean is ``train_loss``."""
    loss_sum, last = 0.0, 0
    for h in history:
        step = h.get("step", 0)
        if "loss" in h and last < step <= resumed_at:
            loss_sum, last = loss_sum + h["loss"] * (step - last), step
    steps = last + steps_now
    return (loss_sum + train_loss * steps_now) / steps if steps else train_loss


class ResumedCountersMixin:
    """Continues ``num_tokens`` and the summary's ``train_loss`` across a resume, and does not evaluate again
    at the checkpoint's step (`eval_on_start`). Sits before TRL's trainer in the MRO."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.add_callback(_RestoreTokenCount(self))

    def _evaluate(self, trial, ignore_keys_for_eval, skip_scheduler=False):
        # the Trainer's eval_on_start is its one call with skip_scheduler; after a resume the checkpoint's step
        # was evaluated already when its eval_steps said so
        if skip_scheduler and self.state.global_step > 0:
            return {}
        return super()._evaluate(trial, ignore_keys_for_eval, skip_scheduler=skip_scheduler)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        resumed_at = getattr(self, "_initial_global_step", 0)
        if "train_loss" in logs and resumed_at:  # the summary of a resumed call
            steps_now = self.state.global_step - resumed_at
            logs = {
                **logs,
                "train_loss": whole_run_train_loss(
                    self.state.log_history, resumed_at, logs["train_loss"], steps_now
                ),
            }
        super().log(logs, start_time)


class _RestoreTokenCount(TrainerCallback):
    """At the start of a resumed run, TRL's token count from the last ``num_tokens`` the checkpoint logged."""

    def __init__(self, trainer):
        self.trainer = trainer

    def on_train_begin(self, args, state, control, **kwargs):
        tokens = last_logged(state.log_history, "num_tokens", state.global_step)
        if state.global_step > 0 and tokens is not None and hasattr(self.trainer, "_total_train_tokens"):
            self.trainer._total_train_tokens = int(tokens)
