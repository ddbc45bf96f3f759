"""Crash and resume: SIGKILL at a random step, then the same command, gives the uninterrupted result."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from decpo.cli import main
from decpo.integrity import MANIFEST, write_manifest
from decpo.training.checkpoints import checkpoint_problem, latest_checkpoint

from conftest import REPO

SMOKE = str(REPO / "configs" / "smoke.yaml")
ARGS = [
    "train.max_steps=6",
    "train.save_steps=1",
    "train.eval_steps=3",
    "train.save_total_limit=10",
    "data.max_train_samples=48",
]


def train_rows(run):
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["train/loss"]) for r in rows if "train/loss" in r]


def final_weights(run):
    return load_file(str(run / "final" / "adapter_model.safetensors"))


def test_sigkill_then_resume_equals_uninterrupted(tmp_path):
    reference = tmp_path / "reference"
    assert main(["train", "--config", SMOKE, "--output-dir", str(reference), *ARGS]) == 0

    run = tmp_path / "killed"
    kill_after = random.Random(os.getpid()).randint(1, 4)  # a random step, logged on failure
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "TQDM_DISABLE": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "decpo", "train", "--config", SMOKE, "--output-dir", str(run), *ARGS],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while not (run / f"checkpoint-{kill_after}" / "trainer_state.json").exists():
        assert proc.poll() is None, "training ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (run / "final").exists(), f"killed too late (after step {kill_after})"

    assert main(["train", "--config", SMOKE, "--output-dir", str(run), *ARGS]) == 0
    assert train_rows(run) == train_rows(reference), f"killed after step {kill_after}"
    ours, theirs = final_weights(run), final_weights(reference)
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert torch.equal(ours[key], theirs[key]), f"{key} differs (killed after step {kill_after})"


def test_truncated_checkpoint_falls_back_to_the_previous_one(tmp_path, caplog):
    run = tmp_path / "run"
    assert (
        main(
            ["train", "--config", SMOKE, "--output-dir", str(run), "train.max_steps=2", "train.save_steps=1"]
        )
        == 0
    )
    newest = run / "checkpoint-2" / "adapter_model.safetensors"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    with caplog.at_level("WARNING"):
        assert latest_checkpoint(run) == run / "checkpoint-1"
    assert "checkpoint-2" in caplog.text and "truncated" in caplog.text
    # and a resumed run goes on from checkpoint-1 to the end
    assert (
        main(
            ["train", "--config", SMOKE, "--output-dir", str(run), "train.max_steps=3", "train.save_steps=1"]
        )
        == 0
    )
    assert [s for s, _ in train_rows(run)] == [1, 2, 3]


@pytest.mark.parametrize("missing", ["trainer_state.json", "optimizer.pt"])
def test_incomplete_checkpoint_is_skipped(tmp_path, missing):
    run = tmp_path / "run"
    assert (
        main(
            ["train", "--config", SMOKE, "--output-dir", str(run), "train.max_steps=2", "train.save_steps=1"]
        )
        == 0
    )
    (run / "checkpoint-2" / missing).unlink()
    assert latest_checkpoint(run) == run / "checkpoint-1"


@pytest.fixture(scope="module")
def two_checkpoints(tmp_path_factory):
    """A run saved at steps 1 and 2 (copied by each test before it damages it)."""
    run = tmp_path_factory.mktemp("saved") / "run"
    args = ["train", "--config", SMOKE, "--output-dir", str(run), "train.max_steps=2", "train.save_steps=1"]
    assert main(args) == 0
    return run


def _flip_a_bit(path):
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x40  # in the last tensor's values: the same size, another number
    path.write_bytes(bytes(data))


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize(
    ("name", "damage"),
    [
        ("adapter_model.safetensors", _flip_a_bit),
        ("trainer_state.json", _truncate),
        ("optimizer.pt", _truncate),
        ("scheduler.pt", _truncate),
        ("rng_state.pth", _truncate),
    ],
)
def test_damaged_checkpoint_falls_back_to_the_previous_one(two_checkpoints, tmp_path, caplog, name, damage):
    run = tmp_path / "run"
    shutil.copytree(two_checkpoints, run)
    assert all((run / f"checkpoint-{n}" / MANIFEST).is_file() for n in (1, 2))
    damage(run / "checkpoint-2" / name)
    with caplog.at_level("WARNING"):
        assert latest_checkpoint(run) == run / "checkpoint-1"
    assert f"checkpoint-2: {name}" in caplog.text


def test_checkpoint_without_its_manifest_is_incomplete(two_checkpoints, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(two_checkpoints, run)
    (run / "checkpoint-2" / MANIFEST).unlink()  # killed after the Trainer's files, before the manifest
    assert latest_checkpoint(run) == run / "checkpoint-1"
    # the resumed run goes on from checkpoint-1 and writes checkpoint-2 again, with its manifest
    assert (
        main(
            ["train", "--config", SMOKE, "--output-dir", str(run), "train.max_steps=2", "train.save_steps=1"]
        )
        == 0
    )
    assert latest_checkpoint(run) == run / "checkpoint-2"


def test_a_torn_last_metrics_line_is_dropped_with_a_warning(two_checkpoints, tmp_path, caplog):
    run = tmp_path / "run"
    shutil.copytree(two_checkpoints, run)
    shutil.rmtree(run / "checkpoint-2")  # killed after step 2 was logged, while appending the next line
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 2, "train/lo')  # a full disk cut it
    args = ["train", "--config", SMOKE, "--output-dir", str(run), "train.max_steps=3", "train.save_steps=1"]
    with caplog.at_level("WARNING"):
        assert main(args) == 0
    assert "metrics.jsonl: dropping its torn last line" in caplog.text
    assert [s for s, _ in train_rows(run)] == [1, 2, 3]


def test_a_damaged_middle_metrics_line_is_one_error_naming_it(two_checkpoints, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(two_checkpoints, run)
    lines = (run / "metrics.jsonl").read_text().splitlines(True)
    (run / "metrics.jsonl").write_text("".join([lines[0], "{not json\n", *lines[1:]]))
    args = ["train", "--config", SMOKE, "--output-dir", str(run), "train.max_steps=3", "train.save_steps=1"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"{run / 'metrics.jsonl'} line 2 is damaged" in err and "Traceback" not in err


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The smoke run whole: 4 steps, evaluated and saved at steps 2 and 4."""
    run = tmp_path_factory.mktemp("whole") / "run"
    assert main(["train", "--config", SMOKE, "--output-dir", str(run)]) == 0
    return run


def _rows(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("resume_at", [2, 4], ids=["mid-run", "last-step"])
def test_counters_continue_after_a_resume(uninterrupted, tmp_path, resume_at):
    run = tmp_path / "run"
    shutil.copytree(uninterrupted, run)
    shutil.rmtree(run / "final")
    for n in (2, 4):
        if n > resume_at:
            shutil.rmtree(run / f"checkpoint-{n}")  # killed before it was saved
    assert main(["train", "--config", SMOKE, "--output-dir", str(run)]) == 0
    ours, theirs = _rows(run), _rows(uninterrupted)
    kinds = lambda rows: [(r["step"], sorted(k.split("/")[0] for k in r if "/" in k)) for r in rows]  # noqa: E731
    assert kinds(ours) == kinds(theirs)  # no eval row again at the resume step, nothing twice
    tokens = lambda rows: [r["train/num_tokens"] for r in rows if "train/num_tokens" in r]  # noqa: E731
    assert tokens(ours) == tokens(theirs)
    summary = lambda rows: [r["train/train_loss"] for r in rows if "train/train_loss" in r]  # noqa: E731
    assert summary(ours) == pytest.approx(summary(theirs), rel=1e-6)


def test_fsdp_checkpoint_is_complete_with_its_model_and_optimizer_states(two_checkpoints, tmp_path):
    # FSDP saves no optimizer.pt: optimizer.bin and pytorch_model_fsdp.bin (FULL_STATE_DICT) or the folders
    # optimizer_0/ and pytorch_model_fsdp_0/ (SHARDED_STATE_DICT)
    ckpt = tmp_path / "checkpoint-2"
    shutil.copytree(two_checkpoints / "checkpoint-2", ckpt)
    (ckpt / "optimizer.pt").rename(ckpt / "optimizer.bin")
    (ckpt / "pytorch_model_fsdp.bin").write_bytes(b"weights")
    write_manifest(ckpt)
    assert checkpoint_problem(ckpt) is None
    (ckpt / "optimizer.bin").unlink()
    write_manifest(ckpt)
    assert checkpoint_problem(ckpt) == "no FSDP optimizer state (optimizer.bin or optimizer_0/)"
    (ckpt / "optimizer_0").mkdir()
    assert checkpoint_problem(ckpt) == "no FSDP optimizer state (optimizer.bin or optimizer_0/)"  # empty
    (ckpt / "optimizer_0" / "__0_0.distcp").write_bytes(b"state")
    (ckpt / "pytorch_model_fsdp.bin").unlink()
    (ckpt / "pytorch_model_fsdp_0").mkdir()
    assert checkpoint_problem(ckpt) == "the FSDP model state folder in checkpoint-2 is empty"
    (ckpt / "pytorch_model_fsdp_0" / "__0_0.distcp").write_bytes(b"weights")
    (ckpt / "adapter_model.safetensors").unlink()  # the weights only in FSDP's shards
    write_manifest(ckpt)
    assert checkpoint_problem(ckpt) is None
    (ckpt / "pytorch_model_fsdp_0" / "__0_0.distcp").write_bytes(b"w")  # the manifest still guards the shards
    assert "__0_0.distcp" in checkpoint_problem(ckpt)


def test_deepspeed_checkpoint_is_complete_with_its_states_where_latest_says(two_checkpoints, tmp_path):
    # DeepSpeed saves no optimizer.pt: each process's optimizer state goes to the folder `latest` names
    ckpt = tmp_path / "checkpoint-2"
    shutil.copytree(two_checkpoints / "checkpoint-2", ckpt)
    (ckpt / "optimizer.pt").unlink()
    (ckpt / "latest").write_text("global_step2")
    states = ckpt / "global_step2"
    states.mkdir()
    assert checkpoint_problem(ckpt) == "no DeepSpeed optimizer states in global_step2/ (named by latest)"
    for rank in (0, 1):
        (states / f"zero_pp_rank_{rank}_mp_rank_00_optim_states.pt").write_bytes(b"state")
    write_manifest(ckpt)
    assert checkpoint_problem(ckpt) is None
    _truncate(states / "zero_pp_rank_1_mp_rank_00_optim_states.pt")
    assert "global_step2/zero_pp_rank_1_mp_rank_00_optim_states.pt has 2 bytes" in checkpoint_problem(ckpt)
    # ZeRO-3 without gathered weights: no safetensors, the weights in the per-process model states
    (states / "zero_pp_rank_1_mp_rank_00_optim_states.pt").write_bytes(b"state")
    (ckpt / "adapter_model.safetensors").unlink()
    write_manifest(ckpt)
    assert checkpoint_problem(ckpt) == "no safetensors weights"
    (states / "zero_pp_rank_0_mp_rank_00_model_states.pt").write_bytes(b"weights")
    write_manifest(ckpt)
    assert checkpoint_problem(ckpt) is None
