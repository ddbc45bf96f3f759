"""``reg_weight: auto``: lambda set from ``reg_balance`` on the first train batches, before training.

`calibrate` runs the trainer's own loss (penalty weight 1, so the recorded term is R itself) over the first
``reg_calibration_batches`` full batches in dataset order, dropout off and without gradients, and returns
the calibration record (``reg_weight`` and the numbers it came from, as ``reg_weight.json`` holds it). The
random state, the trainer's metric stores and the model's train mode are restored afterwards
(`untouched_state`), so the training that follows is the one a fixed lambda would give.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader


def calibration_loader(trainer) -> DataLoader:
    """The first ``reg_calibration_batches`` FULL batches of the train set, in order (all of it when it holds
    less than one batch): a short last batch could hold one row (penalty 0), and would weigh like a full one."""
    cfg, dataset = trainer.args, trainer.train_dataset
    batch = cfg.per_device_train_batch_size
    full = min(len(dataset) // batch, cfg.reg_calibration_batches)
    n = full * batch if full else len(dataset)
    if n == 0:
        raise ValueError("reg_balance: the train set is empty, nothing to calibrate reg_weight on")
    return DataLoader(
        dataset.select(range(n)) if hasattr(dataset, "select") else dataset,
        batch_size=batch,
        shuffle=False,
        collate_fn=trainer.data_collator,
    )


@contextlib.contextmanager
def untouched_state(trainer) -> Iterator[None]:
    """The model in eval mode for the body; afterwards its train mode, torch's random state and the metrics
    the trainer had recorded are as before (the body's forwards leave no trace)."""
    rng = torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    # the metric stores the calibration forwards write to: TRL's DPO `_metrics`, CPO's `_stored_metrics`
    stores = [
        m
        for m in (getattr(trainer, "_metrics", None), getattr(trainer, "_stored_metrics", None))
        if m is not None
    ]
    saved = [{k: {kk: list(vv) for kk, vv in v.items()} for k, v in m.items()} for m in stores]
    was_training = trainer.model.training
    trainer.model.eval()
    try:
        yield
    finally:
        trainer.model.train(was_training)
        torch.set_rng_state(rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)
        for store, before in zip(stores, saved, strict=True):
            for k in list(store):
                store[k].clear()
                store[k].update(before.get(k, {}))


def _mean_terms(trainer) -> tuple[float, float, int]:
    """``(preference loss, penalty, batches)``: the means of the two terms over the calibration batches, as
    the trainer's loss recorded them (``trainer._last_terms``) with the model as it is."""
    prefs, penalties = [], []
    with untouched_state(trainer):
        for batch in calibration_loader(trainer):
            trainer.compute_loss(trainer.model, trainer._prepare_inputs(batch))
            pref, penalty = trainer._last_terms
            prefs.append(pref)
            penalties.append(penalty)
    return sum(prefs) / len(prefs), sum(penalties) / len(penalties), len(prefs)


@torch.no_grad()
def calibrate(trainer) -> dict[str, Any]:
    """The calibration record of ``trainer`` (its loss must weigh the penalty by 1 while this runs): lambda
    such that ``lambda * R = reg_balance * L_pref`` averaged over the first batches."""
    cfg = trainer.args
    pref_mean, penalty_mean, batches = _mean_terms(trainer)
    if not penalty_mean > 0:
        raise ValueError(
            f"reg_balance: the {cfg.reg_type} penalty is {penalty_mean} on the first {batches} batches, so no "
            "reg_weight can give it a share of the preference loss; set reg_weight directly"
        )
    if not pref_mean > 0:
        raise ValueError(
            f"reg_balance: the preference loss is {pref_mean} at the start (loss_type {getattr(cfg, 'loss_type', '?')}); "
            "a balance against it is undefined: set reg_weight directly"
        )
    return {
        "reg_weight": cfg.reg_balance * pref_mean / penalty_mean,
        "reg_balance": cfg.reg_balance,
        "preference_loss": pref_mean,
        "penalty": penalty_mean,
        "batches": batches,
    }
