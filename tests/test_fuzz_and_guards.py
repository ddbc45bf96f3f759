"""Faults: fuzzed preference files never crash deep inside, non-finite values stop the run, bad output dirs."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from decpo.data import DataError, load_pairs
from decpo.io import check_writable
from decpo.training.callbacks import NonFiniteError, NonFiniteGuardCallback

from conftest import make_trainer

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)
records = st.dictionaries(
    st.sampled_from(["prompt", "chosen", "rejected", "extra", "role"]) | st.text(max_size=6),
    json_values,
    max_size=5,
)
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def check_outcome(path, on_error="raise"):
    """Either valid pairs come back, or a DataError that names the file."""
    try:
        pairs = load_pairs(path, on_error=on_error)
    except DataError as e:
        assert path.name in str(e)
        return
    for pair in pairs:
        for field in ("prompt", "chosen", "rejected"):
            assert pair[field]
        assert pair["chosen"] != pair["rejected"]


@FUZZ
@given(rows=st.lists(records, max_size=6))
def test_fuzzed_jsonl_records(tmp_path, rows):
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    check_outcome(path)
    check_outcome(path, on_error="skip")


@FUZZ
@given(data=st.binary(max_size=300))
def test_fuzzed_bytes(tmp_path, data):
    for name in ("pairs.jsonl", "pairs.json", "pairs.csv", "pairs.jsonl.gz"):
        path = tmp_path / name
        path.write_bytes(data)
        check_outcome(path)


@FUZZ
@given(
    rows=st.lists(
        st.fixed_dictionaries({"prompt": json_values, "chosen": json_values, "rejected": json_values})
    )
)
def test_fuzzed_json_list(tmp_path, rows):
    path = tmp_path / "pairs.json"
    path.write_text(json.dumps(rows))
    check_outcome(path)


def test_enormous_line_and_duplicate_pairs(tmp_path):
    path = tmp_path / "pairs.jsonl"
    big = {"prompt": "x" * 2_000_000, "chosen": "a", "rejected": "b"}
    path.write_text(json.dumps(big) + "\n" + json.dumps(big) + "\n")
    assert len(load_pairs(path)) == 2  # long prompts are truncated by the trainer, not rejected here


def test_non_finite_loss_stops_with_the_step(tmp_path):
    trainer = make_trainer(tmp_path)
    with torch.no_grad():
        trainer.model.lm_head.weight[0, 0] = float("nan")
    with pytest.raises(NonFiniteError, match=r"non-finite preference loss .* at step 1"):
        trainer.train()


def test_overflowing_regularizer_names_the_term(tmp_path):
    trainer = make_trainer(tmp_path, reg_form="paper", reg_layers=[-1])
    with torch.no_grad():
        trainer.model.model.layers[-1].mlp.up_proj.weight.mul_(1e19)
    with pytest.raises(NonFiniteError, match="non-finite decorrelation term"):
        trainer.train()


def test_non_finite_gradient_is_caught():
    model = torch.nn.Linear(2, 2)
    model.weight.grad = torch.full((2, 2), float("inf"))

    class State:
        global_step = 4

    with pytest.raises(FloatingPointError, match=r"step 5 .*weight"):
        NonFiniteGuardCallback().on_pre_optimizer_step(None, State(), None, model=model)


def test_a_diverging_training_is_one_line_naming_the_step_not_a_traceback(tmp_path, capsys):
    from decpo.cli import main

    from conftest import REPO

    smoke = str(REPO / "configs" / "smoke.yaml")
    argv = ["train", "--config", smoke, "--output-dir", str(tmp_path / "run"), "train.learning_rate=1e8"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "decpo: error: non-finite gradient at step " in err and "lower the learning rate" in err


def test_a_damaged_optimizer_state_is_named_at_resume_not_a_divergence(tmp_path):
    trainer = make_trainer(tmp_path, max_steps=1, save_strategy="steps", save_steps=1)
    trainer.train()
    ckpt = tmp_path / "out" / "checkpoint-1"
    state = torch.load(ckpt / "optimizer.pt", weights_only=True)
    next(iter(state["state"].values()))["exp_avg"].view(-1)[0] = float("nan")
    torch.save(state, ckpt / "optimizer.pt")
    resumed = make_trainer(tmp_path, max_steps=2, save_strategy="no")
    with pytest.raises(NonFiniteError, match=r"optimizer state in .*checkpoint-1 holds non-finite values"):
        resumed.train(resume_from_checkpoint=str(ckpt))


@pytest.mark.parametrize(
    "error",
    [OSError(28, "No space left on device"), RuntimeError("[enforce fail] unexpected pos 704 vs 598")],
)
def test_a_full_disk_at_a_checkpoint_names_the_checkpoint(tmp_path, monkeypatch, error):
    import collections

    def full(*args, **kwargs):
        raise error

    monkeypatch.setattr(torch, "save", full)  # the optimizer's state; torch's own error on a full disk
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr("decpo.training.trainer.shutil.disk_usage", lambda path: usage(1, 1, 0))
    trainer = make_trainer(tmp_path, max_steps=1, save_strategy="steps", save_steps=1)
    with pytest.raises(OSError, match=r"no space left on the device while writing .*checkpoint-1: free some"):
        trainer.train()


def test_unwritable_output_directory_fails_before_training(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(OSError, match="not writable"):
        check_writable(blocker / "run")
