"""Data parallelism through accelerate: 2 CPU processes (gloo) equal 1 process with the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from decpo.cli import main

from conftest import REPO

pytestmark = pytest.mark.slow  # two extra Python processes: about a minute

SMOKE = str(REPO / "configs" / "smoke.yaml")
# Plain DPO (the decorrelation penalty is a property of each process's own rows), no LoRA dropout (random).
# 8 pairs = one global batch: every step sees all of them whatever the order, since accelerate's sharded
# sampler draws another permutation than the single-process one.
COMMON = [
    "objective.name=dpo",
    "lora.dropout=0.0",
    "train.max_steps=3",
    "train.eval_steps=0",
    "train.save_steps=100",
    "data.max_train_samples=8",
    "train.lr=1e-2",
]


def losses(run):
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["train/loss"] for r in rows if "train/loss" in r]


@pytest.mark.parametrize("extra", [[], ["train.share_prompt=true"]], ids=["trl-layout", "shared-prompt"])
def test_two_processes_equal_one_with_the_same_global_batch(tmp_path, extra):
    one = tmp_path / "one"
    args = [*COMMON, *extra]
    assert main(["train", "--config", SMOKE, "--output-dir", str(one), "train.batch_size=8", *args]) == 0

    two = tmp_path / "two"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "TQDM_DISABLE": "1"}
    cmd = [
        sys.executable,
        "-m",
        "decpo",
        "train",
        "--num-processes",
        "2",
        "--config",
        SMOKE,
        "--output-dir",
        str(two),
        "train.batch_size=4",
        *args,
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    assert losses(two) == pytest.approx(losses(one), abs=1e-5)
    a = load_file(str(one / "final" / "adapter_model.safetensors"))
    b = load_file(str(two / "final" / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-5), key
