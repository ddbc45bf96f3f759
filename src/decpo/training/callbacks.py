"""Trainer callbacks: namespaced metrics JSONL, one log line per interval, numeric guards, checkpoint
manifests."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sys
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm
from transformers import TrainerCallback
from transformers.trainer_callback import ProgressCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from decpo.errors import DecPOError
from decpo.integrity import read_jsonl_log, write_manifest
from decpo.io import append_jsonl, atomic_write_text

logger = logging.getLogger(__name__)

_SKIP = {"epoch", "total_flos", "train_runtime", "train_samples_per_second", "train_steps_per_second"}


def namespaced(logs: dict[str, float]) -> dict[str, float]:
    """TRL/Trainer log keys -> ``train/...`` and ``eval/...`` (``eval_rewards/margins`` -> ``eval/rewards/margins``)."""
    out = {}
    for key, value in logs.items():
        if key in _SKIP or not isinstance(value, int | float):
            continue
        if key.startswith("probe/"):  # probes during training keep their own namespace
            out[key] = value
        elif key.startswith("eval_"):
            out["eval/" + key[len("eval_") :]] = value
        else:
            out["train/" + key] = value
    return out


class MetricsJsonlCallback(TrainerCallback):
    """Appends one JSON object per logged step to ``metrics.jsonl`` (rank 0 only).

    On resume, lines logged after the checkpoint was saved are dropped first, so the file never holds a step twice; a
    torn last line (a kill or a full disk while appending) is dropped with a warning, a damaged line before it
    stops the run naming the file and the line (`decpo.integrity.read_jsonl_log`).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero or not self.path.exists():
            return
        step = state.global_step
        # the rows the checkpoint's own history has at its step (not the ones logged after it was saved, such
        # as the summary of a run killed before its final/ was written)
        at_step = sum(1 for h in state.log_history if h.get("step") == step)
        rows = read_jsonl_log(self.path)
        kept = [r for r in rows if r.get("step", 0) < step]
        kept += [r for r in rows if r.get("step", 0) == step][:at_step]
        atomic_write_text(self.path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept))

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        record = namespaced(logs)
        if record:
            append_jsonl(self.path, {"step": state.global_step, "time": time.time(), **record})


class ManifestCallback(TrainerCallback):
    """Writes each checkpoint's manifest (`decpo.integrity.write_manifest`) once all its files are saved: the
    Trainer calls ``on_save`` after the checkpoint is written, on every rank; the ranks meet first (each writes
    its own RNG state), then rank 0 writes the manifest."""

    def on_save(self, args, state, control, **kwargs):
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.barrier()
        folder = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        if state.is_world_process_zero and folder.is_dir():
            write_manifest(folder)


def eta(seconds: float) -> str:
    """``"45 s"``, ``"3 min 20 s"``, ``"1 h 05 min"``: the time left at the pace so far."""
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


class LogLineCallback(TrainerCallback):
    """``step 20/40 | loss 0.512 (pref 0.498, decorr 0.014) | margin 0.83 | acc 0.75 | 410 ms/step | eta 8 s``:
    the step of the total, and the time left at this run's pace (evaluations included)."""

    def __init__(self):
        self._t0 = None
        self._step0 = 0

    def on_train_begin(self, args, state, control, **kwargs):
        self._t0, self._step0 = time.perf_counter(), state.global_step

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        ms = 1000 * (time.perf_counter() - self._t0) / max(state.global_step - self._step0, 1)
        if "loss" in logs:
            terms = ", ".join(
                f"{k.split('/')[1]} {logs[k]:.4g}" for k in sorted(logs) if k.startswith("loss/")
            )
            logger.info(
                "step %d/%d | loss %.4g%s | margin %.3g | acc %.2f | %.0f ms/step | eta %s",
                state.global_step,
                state.max_steps,
                logs["loss"],
                f" ({terms})" if terms else "",
                logs.get("rewards/margins", float("nan")),
                logs.get("rewards/accuracies", float("nan")),
                ms,
                eta(ms * max(state.max_steps - state.global_step, 0) / 1000),
            )
        elif "eval_loss" in logs:
            logger.info(
                "eval @ step %d | loss %.4g | margin %.3g | acc %.2f",
                state.global_step,
                logs["eval_loss"],
                logs.get("eval_rewards/margins", float("nan")),
                logs.get("eval_rewards/accuracies", float("nan")),
            )


class NonFiniteError(DecPOError, FloatingPointError):
    """A loss term, a gradient or a resumed optimizer state became NaN or infinite (the command line prints its
    message in one line)."""


# what a user can change when training diverges
DIVERGED_HINT = "lower the learning rate or reg_weight, or use float32"


class NonFiniteGuardCallback(TrainerCallback):
    """Stops the run when a gradient becomes NaN/inf, naming the step and the parameters."""

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        bad = [
            name
            for name, p in model.named_parameters()
            if p.grad is not None and not torch.isfinite(p.grad).all()
        ]
        if bad:
            raise NonFiniteError(
                f"non-finite gradient at step {state.global_step + 1} in {len(bad)} parameter(s), e.g. "
                f"{', '.join(bad[:2])}; {DIVERGED_HINT}"
            )

    def on_log(self, args, state, control, logs=None, **kwargs):
        grad_norm = (logs or {}).get("grad_norm")
        if isinstance(grad_norm, float) and not math.isfinite(grad_norm):
            raise NonFiniteError(f"non-finite gradient norm at step {state.global_step}; {DIVERGED_HINT}")


def check_optimizer_state(optimizer: torch.optim.Optimizer, checkpoint: str | Path) -> None:
    """After a resume: NonFiniteError naming the checkpoint when a loaded optimizer state holds NaN or inf (a
    damaged file: the next steps would turn the weights into NaN, shown as a diverged training)."""
    for state in optimizer.state.values():
        for name, value in state.items():
            if (
                isinstance(value, torch.Tensor)
                and value.is_floating_point()
                and not torch.isfinite(value).all()
            ):
                raise NonFiniteError(
                    f"the optimizer state in {checkpoint} holds non-finite values ({name}): the checkpoint is "
                    f"damaged; remove {checkpoint} to resume from the previous checkpoint, or train into a new "
                    "--output-dir"
                )


def _prints_to_console(handler: logging.Handler) -> bool:
    """Whether a log handler writes to the terminal (the handlers `logging_redirect_tqdm` replaces)."""
    return isinstance(handler, logging.StreamHandler) and handler.stream in (sys.stdout, sys.stderr)


def bar_disabled() -> bool | None:
    """tqdm's ``disable`` for the training bar: True under ``TQDM_DISABLE`` (read now: tqdm reads it once, when
    imported), else None, tqdm's "in a terminal only" (a redirected log keeps the log lines, not the redraws)."""
    return True if os.environ.get("TQDM_DISABLE", "").lower() not in ("", "0", "false") else None


class QuietProgressCallback(ProgressCallback):
    """The Trainer's progress bar, named ``train`` (steps of the total, ETA), without its print of every log dict.

    While the bar is open, the console log lines (decpo's, through the root logger, and transformers' own) go
    through ``tqdm.write`` (`tqdm.contrib.logging.logging_redirect_tqdm`): printed above the bar, not into its line.
    The bar shows in a terminal only (`bar_disabled`); the handlers are restored at the end of training.
    """

    def __init__(self):
        super().__init__()
        self._redirect = contextlib.ExitStack()

    def on_train_begin(self, args, state, control, **kwargs):
        self.current_step = state.global_step  # a resumed run's bar starts at its step
        if not state.is_world_process_zero:
            return
        self.training_bar = tqdm(
            total=state.max_steps,
            initial=state.global_step,
            desc="train",
            dynamic_ncols=True,
            disable=bar_disabled(),
        )
        if not self.training_bar.disable:
            loggers = [logging.root, logging.getLogger("transformers")]
            consoles = [lg for lg in loggers if any(_prints_to_console(h) for h in lg.handlers)]
            self._redirect.enter_context(logging_redirect_tqdm(loggers=consoles))

    def on_log(self, args, state, control, logs=None, **kwargs):
        pass

    def on_train_end(self, args, state, control, **kwargs):
        try:
            super().on_train_end(args, state, control, **kwargs)
        finally:
            self._redirect.close()
