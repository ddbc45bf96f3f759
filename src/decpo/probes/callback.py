"""Probes during training: a `TrainerCallback` that measures the policy every N steps and logs the values."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from transformers import TrainerCallback

from decpo.names import MLP_UP_PROJ
from decpo.probes.activation import probe_pass
from decpo.probes.stats import ACTIVATION_PROBES

logger = logging.getLogger(__name__)

PREFIX = "probe/"


def probe_key(probe: str, layer: int, site: str = MLP_UP_PROJ, default_site: str = MLP_UP_PROJ) -> str:
    """``probe/decorrelation/L07``; a site other than the default is named: ``probe/resid_post/hoyer/L07``."""
    middle = f"{probe}" if site == default_site else f"{site}/{probe}"
    return f"{PREFIX}{middle}/L{layer:02d}"


class ProbeCallback(TrainerCallback):
    """Runs activation probes on the policy at the start of training and every ``every_n_steps`` steps.

    The policy (``kwargs["model"]``, peft-wrapped or not) is put in eval mode under ``torch.no_grad()`` for
    the pass and its train mode is restored after it. Each measurement is logged once, at the step it was
    taken: ``probe/<probe>/L07`` (two-digit layer; a site other than the first is named,
    ``probe/<site>/<probe>/L07``), ``probe/seconds`` (the pass's cost) and ``probe/step``.

    - At the start (step 0; the checkpoint's step on resume): in the ``eval_on_start`` evaluation's log when
      there is one, else in a log of its own at that step, written through ``trainer.log`` before the first
      training step. Hence `bind` (or ``trainer=``): without the trainer the step-0 values would wait for
      the first training log and be overwritten by that step's own measurement.
    - Every ``every_n_steps`` steps: the callback asks the Trainer to log at that step
      (``control.should_log``, even between ``logging_steps``) and adds the values to that log.

    Distributed (DDP, DeepSpeed ZeRO-3, FSDP): every process runs the whole pass on all the texts and only
    the main process's logs are written (`MetricsJsonlCallback`). Under ZeRO-3 and FSDP every forward is a
    collective (each process gathers the sharded weights), so a pass on the main process alone would hang.
    The texts are not sharded across processes: the statistics are not mergeable into the single-process
    numbers (the monosemantic scale scores each text against the texts before it, and a wide layer keeps
    its first ``max_gram_rows`` rows), and the probe set is small. The replicas hold the same weights, so
    every process computes the same values and there is nothing to gather.

    Wiring (decpo.training.run.build_trainer): pass it in
    ``callbacks=[ProbeCallback(...), MetricsJsonlCallback(...), ...]``, BEFORE `MetricsJsonlCallback`
    (callbacks run in list order and ``on_log`` must add the keys before the JSONL line is written), then
    ``bind(trainer)``; make `namespaced` keep keys starting with ``probe/`` as they are (no ``train/``
    prefix). ``texts`` are e.g. the first ``probe.num_texts`` eval prompts.

    Args:
        texts: inputs of the probe pass (the same ones every time).
        tokenizer: the policy's tokenizer (needs a pad token).
        every_n_steps: period in optimizer steps; 0 measures at the start only.
        probes: names from `decpo.probes.stats.ACTIVATION_PROBES`.
        sites: activation sites; layers: ``None``/"all" or block indices; batch_size: of the probe pass.
        trainer: the `transformers.Trainer` it is added to (or `bind` it later).
    """

    def __init__(
        self,
        texts: Sequence[str],
        tokenizer,
        every_n_steps: int = 50,
        probes: Sequence[str] = ("decorrelation",),
        sites: Sequence[str] = (MLP_UP_PROJ,),
        layers: str | Sequence[int] | None = None,
        batch_size: int = 16,
        max_length: int = 256,
        trainer=None,
    ):
        unknown = [p for p in probes if p not in ACTIVATION_PROBES]
        if unknown:
            raise ValueError(f"unknown probe(s) {unknown}; available: {ACTIVATION_PROBES}")
        if every_n_steps < 0:
            raise ValueError(f"every_n_steps must be >= 0, got {every_n_steps}")
        if len(texts) < 2:
            raise ValueError("the probe callback needs at least 2 texts")
        self.texts = list(texts)
        self.tokenizer = tokenizer
        self.every_n_steps = every_n_steps
        self.probes = list(probes)
        self.sites = list(sites)
        self.layers = layers
        self.batch_size = batch_size
        self.max_length = max_length
        self.trainer = trainer
        self.pending: dict[str, float] = {}  # the last measurement, until a log takes it
        self.history: list[dict[str, float]] = []  # every measurement, for tests and reports

    def bind(self, trainer) -> ProbeCallback:
        """The Trainer whose ``log`` writes the start-of-training values; returns ``self``."""
        self.trainer = trainer
        return self

    def measure(self, model, step: int) -> dict[str, float]:
        """Run the probes on ``model`` now; returns (and queues for the next log) the ``probe/...`` values."""
        t0 = time.perf_counter()
        result = probe_pass(
            model,
            self.tokenizer,
            self.texts,
            sites=self.sites,
            layers=self.layers,
            batch_size=self.batch_size,
            max_length=self.max_length,
            progress=False,
        )
        values = {
            probe_key(probe, layer, site, self.sites[0]): value
            for (site, layer, probe), value in result.values(self.probes).items()
        }
        values[f"{PREFIX}seconds"] = time.perf_counter() - t0
        values[f"{PREFIX}step"] = float(step)
        self.pending = values
        self.history.append(values)
        logger.debug("probes at step %d: %.2f s", step, values[f"{PREFIX}seconds"])
        return values

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if model is None:
            return
        if self.trainer is None:
            raise RuntimeError(
                "ProbeCallback needs its trainer to log the start-of-training values: "
                "ProbeCallback(..., trainer=trainer) or callback.bind(trainer)"
            )
        self.measure(model, state.global_step)  # on every process: see the class docstring

    def on_step_begin(self, args, state, control, **kwargs):
        self._flush_start(state)

    def on_train_end(self, args, state, control, **kwargs):
        self._flush_start(state)  # a resumed run with no step left

    def _flush_start(self, state) -> None:
        """The start values, in a log of their own at their step, unless the ``eval_on_start`` log took them."""
        if self.pending and self.pending[f"{PREFIX}step"] == state.global_step:
            values, self.pending = self.pending, {}
            self.trainer.log(dict(values))

    def on_step_end(self, args, state, control, model=None, **kwargs):
        n = self.every_n_steps
        if model is not None and n > 0 and state.global_step % n == 0:
            self.measure(model, state.global_step)
            control.should_log = True  # the Trainer logs at this step; `on_log` adds the values

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is not None and self.pending:
            logs.update(self.pending)
            # `Trainer.log` has appended this log's copy to the history just before: it gets them too
            if state.log_history and state.log_history[-1].get("step") == state.global_step:
                state.log_history[-1].update(self.pending)
            self.pending = {}
