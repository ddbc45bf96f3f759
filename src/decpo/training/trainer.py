"""`DecPOTrainer`: TRL's `DPOTrainer` plus an activation regularizer (DecPO or L1-Reg).

A TRL user drops it in for `DPOTrainer` with a `DecPOConfig`. Only the public `compute_loss` is
overridden: the preference loss (any TRL `loss_type`) is TRL's own, and the penalty is added to it:

    L = L_pref + reg_weight * sum_l R(Z_l)

where ``Z_l`` holds one row per sequence (last real token by default) of the ``reg_site`` output of
block ``l``, captured during the policy forward (see `decpo.functional.decorrelation_penalty`).

Composition. `DecPOTrainer` is TRL's `DPOTrainer` behind four mixins, each a feature of its own. Python's MRO
runs them in the order below (first = outermost), and the order matters where noted:

    order  mixin                          on when                                  why here
    1      ActivationRegularizerMixin     reg_type set and reg_weight != 0        its compute_loss wraps the whole
                                          (DecPO, L1-Reg)                          forward, shared or not, to hook it
    2      SharedPromptMixin              args.share_prompt (pack_pairs)           swaps the collator and forward;
                                                                                   before 4, whose cache key records
                                                                                   the collator it swapped in
    3      LengthGroupedMixin             train_sampling_strategy=group_by_length  adds a length column after TRL
                                                                                   tokenizes (knows share_prompt)
    4      CachedReferenceMixin           precompute_ref_log_probs and             last before DPOTrainer: keys the
                                          ref_logps_cache set                      reference pass TRL runs in __init__

Every feature is off by default and then leaves TRL's behaviour unchanged; every combination gives the same
losses as the plain trainer on the same batch (``tests/test_trainer.py::test_every_feature_combination...``).
`SimPOTrainer` composes only the regularizer with TRL's `CPOTrainer`.
"""

from __future__ import annotations

import errno
import logging
import math
import shutil
from pathlib import Path

import torch
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, has_length
from trl import DPOTrainer
from trl.experimental.cpo import CPOTrainer

from decpo.env import warm_up_cpu_math
from decpo.functional import activation_penalty, select_spans, token_spans
from decpo.io import disk_full_error
from decpo.models.hooks import capture_activations, resolve_layers
from decpo.records import is_auto
from decpo.training.batching import LengthGroupedMixin
from decpo.training.calibration import calibrate
from decpo.training.callbacks import DIVERGED_HINT, NonFiniteError, check_optimizer_state
from decpo.training.fsdp_resume import FSDPCheckpointMixin
from decpo.training.model_card import ModelCardMixin
from decpo.training.prefix_sharing import SharedPromptMixin
from decpo.training.ref_cache import CachedReferenceMixin
from decpo.training.resume_counters import ResumedCountersMixin

logger = logging.getLogger(__name__)

# metric name of each regularizer's weighted term, beside TRL's `loss`
TERM_NAMES = {"decorrelation": "decorr", "l1": "l1"}


class ActivationRegularizerMixin:
    """Adds ``reg_weight * sum_l R(Z_l)`` to a TRL trainer's loss; the host class supplies the masks."""

    def _init_regularizer(self) -> None:
        cfg = self.args
        auto = is_auto(getattr(cfg, "reg_weight", 0.0))
        self._reg_on = getattr(cfg, "reg_type", None) is not None and (
            auto or getattr(cfg, "reg_weight", 0.0) > 0
        )
        self._warned_balance = False
        self.reg_weight_calibration: dict | None = None
        self._calibrated_reg_weight: float | None = None
        if not self._reg_on:
            return
        # fail now, not at the first step, when the model lacks the layer or the site
        self._reg_layers = resolve_layers(self.model, cfg.reg_layers)
        with capture_activations(self.model, self._reg_layers, cfg.reg_site):
            pass
        if cfg.reg_type == "decorrelation":
            self._check_rows_per_device()
        if auto:
            self._calibrate_reg_weight()

    def _rows(self, pairs: int) -> int:
        """Rows of Z that ``pairs`` pairs in one forward give (see `activation_penalty`)."""
        cfg = self.args
        return pairs if (cfg.reg_tokens == "prompt_last" or cfg.reg_rows != "both") else 2 * pairs

    def _refuse_one_row(self, pairs: int, source: str) -> None:
        rows = self._rows(pairs)
        if rows < 2:
            cfg = self.args
            raise ValueError(
                f"the decorrelation penalty needs at least 2 rows per forward on each device; {source} gives "
                f"{pairs} pair(s) per device, so {rows} row(s) with reg_rows={cfg.reg_rows!r}, reg_tokens="
                f"{cfg.reg_tokens!r}, and the penalty of one row is exactly 0 (DecPO would train as DPO): use 2 "
                "pairs or more per device (gradient accumulation does not help: the penalty is computed per "
                "micro-batch)"
            )

    def _check_rows_per_device(self) -> None:
        """Refuse, before training, every setting whose forwards give the decorrelation penalty one row."""
        cfg = self.args
        if cfg.n_gpu > 1:
            raise ValueError(
                f"the activation regularizer does not support torch.nn.DataParallel ({cfg.n_gpu} GPUs in one "
                "process): each replica's hooks see its own slice of the rows (with 2 GPUs, the chosen or the "
                "rejected half alone). Launch one process per GPU (accelerate launch, torchrun) or make one GPU "
                "visible (CUDA_VISIBLE_DEVICES)"
            )
        processes, split_over = self.accelerator.num_processes, self._split_over()
        eval_sets = self.eval_dataset if isinstance(self.eval_dataset, dict) else {"eval": self.eval_dataset}
        for what, batch, datasets in (
            ("train", cfg.per_device_train_batch_size, {"train": self.train_dataset}),
            ("eval", cfg.per_device_eval_batch_size, eval_sets),
        ):
            per_device = batch // split_over
            source = f"per_device_{what}_batch_size={batch}"
            split = f" split over {split_over} processes (split_batches)" if split_over > 1 else ""
            self._refuse_one_row(per_device, source + split)
            for name, dataset in datasets.items():
                if dataset is None or not has_length(dataset):
                    continue
                n = len(dataset)
                self._refuse_one_row(
                    min(per_device, math.ceil(n / processes)), f"the {name} set of {n} pair(s)"
                )
                last = n % per_device
                if processes == 1 and last and not cfg.dataloader_drop_last and self._rows(last) < 2:
                    logger.warning(
                        "the last %s batch of each pass holds %d pair(s) (%d %% %s): the decorrelation penalty of "
                        "its single row is 0; set dataloader_drop_last=True to skip it",
                        name,
                        last,
                        n,
                        source,
                    )

    def _split_over(self) -> int:
        """How many devices share one dataloader batch: with ``split_batches`` accelerate splits each batch of
        ``per_device_*_batch_size`` over the processes; else each process has its own."""
        split = bool(getattr(self.args.accelerator_config, "split_batches", False))
        return self.accelerator.num_processes if split else 1

    def _inner_training_loop(self, batch_size=None, *rest, **kwargs):
        # auto_find_batch_size lowers the batch after an out-of-memory error and calls this again
        cfg = self.args
        if self._reg_on and cfg.reg_type == "decorrelation" and cfg.auto_find_batch_size and batch_size:
            self._refuse_one_row(
                batch_size // max(1, cfg.n_gpu) // self._split_over(),
                f"auto_find_batch_size, after out-of-memory errors, with a train batch of {batch_size}",
            )
        return super()._inner_training_loop(batch_size, *rest, **kwargs)

    @property
    def reg_weight(self) -> float:
        """The lambda of the loss: ``args.reg_weight``, or with ``auto`` the one `_calibrate_reg_weight` set
        (``args.reg_weight`` stays ``auto``; the calibration is ``reg_weight_calibration``)."""
        weight = self.args.reg_weight
        return self._calibrated_reg_weight if is_auto(weight) else weight

    def _calibrate_reg_weight(self) -> None:
        """Set the lambda so that ``lambda * R = reg_balance * L_pref`` at the start of training.

        Both terms are averaged over the first ``reg_calibration_batches`` full batches of the train set (all
        of it when it holds less than one) in dataset order, with dropout off and without gradients, on the
        model as it is before training (before a resumed checkpoint is loaded), so the same run always gets
        the same lambda. The random state is saved and restored, and the metrics these forwards record are
        discarded: the training that follows is the one a fixed lambda would give (`decpo.training.calibration`).
        """
        cfg = self.args
        self._calibrated_reg_weight = 1.0  # so that the recorded term is R itself
        self.reg_weight_calibration = calibrate(self)
        self._calibrated_reg_weight = self.reg_weight_calibration["reg_weight"]
        logger.info(
            "reg_weight set to %.6g: %.3g x preference loss %.4g / %s penalty %.4g (mean of %d batches)",
            self._calibrated_reg_weight,
            cfg.reg_balance,
            self.reg_weight_calibration["preference_loss"],
            cfg.reg_type,
            self.reg_weight_calibration["penalty"],
            self.reg_weight_calibration["batches"],
        )

    def _masks(self, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """``(attention_mask, completion_mask)``, each ``(2B, T)``, chosen rows first."""
        raise NotImplementedError

    def _record(self, mode: str, key: str, value: float) -> None:
        raise NotImplementedError

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if not self._reg_on:
            out = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            self._check_finite(out[0] if return_outputs else out, "preference loss")
            return out
        cfg = self.args
        attention_mask, completion_mask = self._masks(inputs)
        packed = inputs.get("shared_input_ids")  # prefix sharing: the activations are packed rows
        spans = token_spans(
            attention_mask,
            cfg.reg_tokens,
            completion_mask,
            index=inputs.get("full_gather"),
            row_length=None if packed is None else packed.size(1),
        )
        # The policy forward is the first one through the hooked modules (a LoRA reference forward with the
        # adapter disabled comes after it and is ignored). The hook keeps only the selected (2B, D) rows, by
        # slicing, so under gradient checkpointing the full activations are not held (see `token_spans`).
        with capture_activations(
            model,
            self._reg_layers,
            cfg.reg_site,
            first_call_only=True,
            transform=lambda t: select_spans(t, spans),
        ) as selected:
            out = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        pref_loss = out[0] if return_outputs else out
        penalty = sum(
            activation_penalty(
                selected[layer],
                reg_type=cfg.reg_type,
                form=cfg.reg_form,
                rows=cfg.reg_rows,
                tokens=cfg.reg_tokens,
            )
            for layer in self._reg_layers
        )
        if model.training and torch.is_grad_enabled() and not penalty.requires_grad:
            raise RuntimeError(
                "the regularizer has no gradient: the hooked activations were computed without autograd. This "
                "happens with reentrant gradient checkpointing (forced by some PEFT + DeepSpeed ZeRO-3 setups) or "
                "when no trainable parameter precedes the hooked layer. Use non-reentrant checkpointing "
                "(gradient_checkpointing_kwargs={'use_reentrant': False}) or regularize a later layer."
            )
        weight = self.reg_weight
        term = weight * penalty
        self._check_finite(pref_loss, "preference loss")
        self._check_finite(term, f"{cfg.reg_type} term")
        mode = "train" if self.model.training else "eval"
        name = TERM_NAMES[cfg.reg_type]
        # One scalar per process, averaged as the Trainer averages its loss. Not `gather_for_metrics`: at the
        # end of a dataloader that cuts the gathered tensor to the remainder's count of SAMPLES, which for one
        # scalar per process keeps the first processes' values only (all but rank 0's when the remainder is 1).
        pref_value = self.accelerator.gather(pref_loss.detach()).mean().item()
        term_value = self.accelerator.gather(term.detach()).mean().item()
        self._last_terms = (pref_value, term_value / weight if weight else 0.0)
        self._record(mode, "loss/pref", pref_value)
        self._record(mode, f"loss/{name}", term_value)
        self._record(mode, f"{name}/value", term_value / weight)
        if mode == "train" and not self._warned_balance:
            self._warned_balance = True
            self._warn_unbalanced(term_value, weight, pref_value)
        total = pref_loss + term
        return (total, out[1]) if return_outputs else total

    def _warn_unbalanced(self, term_value: float, weight: float, pref_value: float) -> None:
        """Warn once when the first step's penalty term exceeds the preference loss, which the user did not
        intend: with ``reg_weight=auto`` only when it is over twice ``reg_balance`` x the preference loss (the
        balance sets their ratio by design, from other batches), else whenever it exceeds it."""
        cfg = self.args
        if is_auto(cfg.reg_weight):
            if term_value <= 2 * cfg.reg_balance * pref_value:
                return
            intent, change = f"twice reg_balance ({cfg.reg_balance:g}) x", "a smaller reg_balance"
        elif term_value > pref_value:
            intent, change = "", "a smaller reg_weight"
        else:
            return
        if cfg.reg_type == "decorrelation" and cfg.reg_form != "cosine":
            change += " or reg_form=cosine"
        logger.warning(
            "the %s term (%.4g = %.3g x %.4g) exceeds %sthe preference loss (%.4g) at the first step: training "
            "may optimise the penalty alone; consider %s",
            cfg.reg_type,
            term_value,
            weight,
            term_value / weight,
            f"{intent} " if intent else "",
            pref_value,
            change,
        )

    def _save_checkpoint(self, model, trial) -> None:
        try:
            super()._save_checkpoint(model, trial)
        except (OSError, RuntimeError) as e:  # torch.save on a full disk: a RuntimeError naming no file
            folder = Path(self.args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
            full = (
                getattr(e, "errno", None) == errno.ENOSPC
                or shutil.disk_usage(self.args.output_dir).free < 2**20
            )
            if full:
                raise disk_full_error(folder) from e
            raise

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is not None:  # a damaged state would turn the weights into NaN, seen as a divergence
            check_optimizer_state(self.optimizer, checkpoint)

    def _check_finite(self, value: torch.Tensor, what: str) -> None:
        v = value.detach().float()
        if not torch.isfinite(v).all():
            raise NonFiniteError(
                f"non-finite {what} ({v.item() if v.numel() == 1 else v}) at step {self.state.global_step + 1} "
                f"(epoch {self.state.epoch or 0:.2f}); {DIVERGED_HINT}"
            )


class DecPOTrainer(
    ModelCardMixin,
    ResumedCountersMixin,
    ActivationRegularizerMixin,
    FSDPCheckpointMixin,
    SharedPromptMixin,
    LengthGroupedMixin,
    CachedReferenceMixin,
    DPOTrainer,
):
    """`DPOTrainer` whose loss adds ``reg_weight * R`` on hooked activations (see module docstring)."""

    def __init__(self, *args, **kwargs):
        warm_up_cpu_math()  # before TRL's first forward (the reference pass), for a model not from load_model
        super().__init__(*args, **kwargs)
        self._init_regularizer()

    def _masks(self, inputs):
        if (
            "full_attention_mask" in inputs
        ):  # prefix sharing: TRL's usual layout, rebuilt from the packed rows
            return inputs["full_attention_mask"], inputs["full_completion_mask"]
        return inputs["attention_mask"], inputs["completion_mask"]

    def _record(self, mode, key, value):
        self._metrics[mode][key].append(value)


class SimPOTrainer(
    ModelCardMixin, ResumedCountersMixin, ActivationRegularizerMixin, FSDPCheckpointMixin, CPOTrainer
):
    """TRL's `CPOTrainer` with `SimPOConfig` (SimPO), plus the same activation regularizer."""

    def __init__(self, *args, **kwargs):
        warm_up_cpu_math()  # before TRL's first forward (the reference pass), for a model not from load_model
        super().__init__(*args, **kwargs)
        self._init_regularizer()

    def _masks(self, inputs):
        batch = self.concatenated_inputs(
            inputs, padding_value=self.pad_token_id, device=self.accelerator.device
        )
        return batch["concatenated_attention_mask"], (batch["concatenated_labels"] != -100).long()

    def _record(self, mode, key, value):
        self.store_metrics({("eval_" if mode == "eval" else "") + key: value}, train_eval=mode)
