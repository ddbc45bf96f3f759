"""The prompt-last token selection and `reg_balance` (lambda set from the first batches) on tiny models."""

from __future__ import annotations

import logging

import pytest
import torch

from decpo.config.trainer_args import DecPOConfig
from decpo.functional import decorrelation_penalty
from decpo.models import capture_activations

from conftest import PAIRS, make_trainer


def _batch(trainer, n=4):
    return trainer._prepare_inputs(trainer.data_collator([trainer.train_dataset[i] for i in range(n)]))


def test_prompt_last_penalty_equals_a_hand_written_gather(tmp_path):
    trainer = make_trainer(tmp_path, dtype=torch.float64, reg_tokens="prompt_last", reg_weight=1.0)
    batch = _batch(trainer)
    trainer.model.eval()
    with torch.no_grad():
        with capture_activations(trainer.model, [1], "mlp.up_proj") as acts:  # block -1 of 2
            trainer.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        trainer.compute_loss(trainer.model, batch)
    comp = batch["completion_mask"]
    rows = []
    for i in range(4):  # the chosen half: one row per pair; the token just before the first completion token
        first = comp[i].tolist().index(1)
        rows.append(acts[1][i, first - 1])
    expected = decorrelation_penalty(torch.stack(rows), "cosine").item()
    assert trainer._metrics["eval"]["decorr/value"][-1] == pytest.approx(
        expected, rel=1e-6
    )  # the penalty runs in float32
    # and the rejected sequences hold the same activations at that position (so one row per pair is all)
    for i in range(4):
        first = comp[i].tolist().index(1)
        torch.testing.assert_close(acts[1][i, first - 1], acts[1][4 + i, comp[4 + i].tolist().index(1) - 1])


def test_prompt_last_under_prefix_sharing_equals_trl_layout(tmp_path):
    values = []
    for share in (False, True):
        trainer = make_trainer(
            tmp_path / str(share), dtype=torch.float64, reg_tokens="prompt_last", share_prompt=share
        )
        batch = _batch(trainer)
        trainer.model.train()
        trainer.compute_loss(trainer.model, batch)
        values.append(trainer._metrics["train"]["decorr/value"][-1])
    assert values[1] == pytest.approx(values[0], rel=1e-6)


@pytest.mark.parametrize("balance", [0.3, 1.0])
def test_reg_balance_sets_lambda_to_the_requested_share_at_the_start(tmp_path, balance):
    trainer = make_trainer(
        tmp_path,
        reg_weight="auto",
        reg_balance=balance,
        reg_calibration_batches=2,
        per_device_train_batch_size=4,
        max_steps=1,
    )
    cal = trainer.reg_weight_calibration
    assert cal is not None and trainer.reg_weight == pytest.approx(cal["reg_weight"])
    assert trainer.args.reg_weight == "auto"  # the arguments keep what was asked; the trainer holds lambda
    assert cal["reg_weight"] * cal["penalty"] == pytest.approx(balance * cal["preference_loss"], rel=1e-9)
    # the first training step: lambda * R against the preference loss, within 5% of the balance
    trainer.model.train()
    trainer.compute_loss(trainer.model, _batch(trainer))
    m = trainer._metrics["train"]
    assert m["loss/decorr"][-1] / m["loss/pref"][-1] == pytest.approx(balance, rel=0.05)


def test_reg_balance_is_reproducible_and_leaves_the_random_state_alone(tmp_path):
    torch.manual_seed(123)
    a = make_trainer(tmp_path / "a", reg_weight="auto", reg_balance=0.3)
    after_a = torch.rand(3)
    torch.manual_seed(123)
    b = make_trainer(tmp_path / "b", reg_weight="auto", reg_balance=0.3)
    after_b = torch.rand(3)
    assert a.reg_weight == b.reg_weight > 0
    torch.testing.assert_close(after_a, after_b)
    torch.manual_seed(123)
    make_trainer(tmp_path / "c", reg_weight=0.1)  # no calibration: the same random state after init
    torch.testing.assert_close(torch.rand(3), after_a)


@pytest.mark.parametrize("balance", [0.0, -0.5])
def test_reg_balance_must_be_positive(tmp_path, balance):
    with pytest.raises(ValueError, match="reg_balance must be > 0"):
        DecPOConfig(output_dir=str(tmp_path), reg_weight="auto", reg_balance=balance)


@pytest.mark.parametrize(
    "args, why",
    [
        ({"reg_tokens": "prompt_last", "per_device_train_batch_size": 1}, "per_device_train_batch_size=1"),
        ({"reg_rows": "chosen", "per_device_train_batch_size": 1}, "per_device_train_batch_size=1"),
        ({"reg_rows": "rejected", "per_device_eval_batch_size": 1}, "per_device_eval_batch_size=1"),
        ({"reg_rows": "chosen", "pairs": PAIRS[:1]}, "the train set of 1 pair"),
        ({"reg_tokens": "prompt_last", "eval_pairs": PAIRS[:1]}, "the eval set of 1 pair"),
    ],
    ids=["prompt-last-batch-1", "chosen-batch-1", "rejected-eval-batch-1", "train-set-of-1", "eval-set-of-1"],
)
def test_one_row_per_device_is_refused(tmp_path, args, why):
    with pytest.raises(ValueError, match=rf"at least 2 rows.*{why}.*exactly 0"):
        make_trainer(tmp_path, **args)


def test_two_rows_per_device_are_enough(tmp_path):
    make_trainer(tmp_path, reg_rows="both", per_device_train_batch_size=1, per_device_eval_batch_size=1)
    make_trainer(tmp_path, reg_rows="chosen", pairs=PAIRS[:2], eval_pairs=PAIRS[:2])


def test_data_parallel_is_refused(tmp_path, monkeypatch):
    """nn.DataParallel (several GPUs, one process) would give each replica's hooks a slice of the rows: with 2
    GPUs and 1 pair per GPU, one chosen row each."""
    from decpo.config.trainer_args import SimPOConfig

    from conftest import make_simpo_trainer

    for config in (DecPOConfig, SimPOConfig):  # TRL's DPOTrainer refuses it too, its CPOTrainer does not
        monkeypatch.setattr(config, "n_gpu", property(lambda self: 2))
    with pytest.raises(ValueError, match="DataParallel"):
        make_trainer(tmp_path / "dpo", reg_rows="chosen", per_device_train_batch_size=2)
    with pytest.raises(ValueError, match="activation regularizer does not support torch.nn.DataParallel"):
        make_simpo_trainer(tmp_path / "simpo", reg_rows="chosen", per_device_train_batch_size=2)


def test_auto_find_batch_size_down_to_one_row_is_refused(tmp_path, monkeypatch):
    from trl import DPOTrainer

    tried = []

    def inner(self, batch_size=None, *args, **kwargs):
        tried.append(batch_size)
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(DPOTrainer, "_inner_training_loop", inner)
    trainer = make_trainer(
        tmp_path, reg_rows="chosen", per_device_train_batch_size=2, auto_find_batch_size=True
    )
    with pytest.raises(ValueError, match="auto_find_batch_size.*1 pair.*exactly 0"):
        trainer.train()
    assert tried == [2]  # the loop ran at 2 pairs, and was refused at 1


def test_a_last_batch_of_one_row_is_reported(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="decpo.training.trainer"):
        make_trainer(tmp_path, reg_rows="chosen", per_device_train_batch_size=7)  # 8 pairs: 7 + 1
    assert any("last train batch" in r.getMessage() and "drop_last" in r.getMessage() for r in caplog.records)


def test_calibration_averages_full_batches_only(tmp_path):
    # 8 pairs in batches of 7: the second batch's single chosen row has penalty 0 and would halve the mean
    trainer = make_trainer(
        tmp_path, reg_rows="chosen", per_device_train_batch_size=7, reg_weight="auto", reg_balance=1.0
    )
    assert trainer.reg_weight_calibration["batches"] == 1


def test_reg_balance_with_simpo_leaves_no_calibration_metrics(tmp_path):
    from conftest import make_simpo_trainer

    trainer = make_simpo_trainer(tmp_path, max_steps=1, reg_weight="auto", reg_balance=0.5)
    cal = trainer.reg_weight_calibration
    assert trainer.reg_weight == cal["reg_weight"] > 0
    assert cal["reg_weight"] * cal["penalty"] == pytest.approx(0.5 * cal["preference_loss"], rel=1e-9)
    assert not any(trainer._stored_metrics[k] for k in list(trainer._stored_metrics))  # nothing left behind


def test_reg_rows_take_the_right_half_and_prompt_last_one_row_per_pair():
    from decpo.functional import activation_penalty

    torch.manual_seed(0)
    chosen, rejected = torch.randn(4, 6), torch.randn(4, 6) + 3.0  # distinct halves, chosen first (TRL)
    z = torch.cat([chosen, rejected])
    for rows, expected in (("both", z), ("chosen", chosen), ("rejected", rejected)):
        got = activation_penalty(z, reg_type="decorrelation", rows=rows)
        assert got.item() == pytest.approx(decorrelation_penalty(expected, "cosine").item(), rel=1e-6), rows
    got = activation_penalty(z, reg_type="decorrelation", rows="both", tokens="prompt_last")
    assert got.item() == pytest.approx(decorrelation_penalty(chosen, "cosine").item(), rel=1e-6)
    # a lone remainder row gives no penalty (the configured batch is refused at start, see above)
    assert activation_penalty(z[:2], reg_type="decorrelation", rows="chosen").item() == 0.0


@pytest.mark.parametrize("share", [False, True], ids=["trl-layout", "shared-prompt"])
@pytest.mark.parametrize("rows", ["chosen", "rejected"])
def test_reg_rows_in_the_trainer_are_the_chosen_or_rejected_sequences(tmp_path, rows, share):
    """The trainer's Z for reg_rows=chosen (rejected) is the last tokens of the chosen (rejected) sequences, each
    run alone through the model: not the other half, whatever the batch layout."""
    trainer = make_trainer(
        tmp_path, dtype=torch.float64, reg_rows=rows, reg_weight=1.0, share_prompt=share, reg_layers=[1]
    )
    batch = _batch(trainer)
    trainer.model.eval()
    with torch.no_grad():
        trainer.compute_loss(trainer.model, batch)
        z = []
        for i in range(4):
            ex = trainer.train_dataset[i]
            ids = torch.tensor([ex["prompt_ids"] + ex[f"{rows}_ids"]])
            with capture_activations(trainer.model, [1], "mlp.up_proj") as acts:
                trainer.model(input_ids=ids)
            z.append(acts[1][0, -1])
    expected = decorrelation_penalty(torch.stack(z), "cosine").item()
    assert trainer._metrics["eval"]["decorr/value"][-1] == pytest.approx(expected, rel=1e-6)


def test_split_batches_over_processes_down_to_one_row_is_refused(tmp_path, monkeypatch):
    from accelerate import Accelerator

    trainer = make_trainer(
        tmp_path, reg_rows="chosen", per_device_train_batch_size=2, accelerator_config={"split_batches": True}
    )
    trainer._check_rows_per_device()  # one process: 2 pairs per device
    monkeypatch.setattr(Accelerator, "num_processes", property(lambda self: 2))
    with pytest.raises(ValueError, match="split over 2 processes.*1 pair"):
        trainer._check_rows_per_device()


@pytest.mark.parametrize(
    "args, warns",
    [
        ({"reg_weight": "auto", "reg_balance": 1.0}, False),  # the default preset: equal by design
        ({"reg_weight": "auto", "reg_balance": 1.5}, False),  # what the user asked for, not a surprise
        ({"reg_weight": 1e3}, True),  # a fixed lambda whose term dwarfs the preference loss
    ],
)
def test_the_term_exceeding_the_preference_loss_warns_only_when_not_asked_for(tmp_path, caplog, args, warns):
    trainer = make_trainer(
        tmp_path, reg_calibration_batches=2, per_device_train_batch_size=4, max_steps=1, **args
    )
    trainer.model.train()
    with caplog.at_level("WARNING", logger="decpo.training.trainer"):
        trainer.compute_loss(trainer.model, _batch(trainer))
    assert ("exceeds" in caplog.text) is warns
    if warns:
        assert "consider a smaller reg_weight" in caplog.text
