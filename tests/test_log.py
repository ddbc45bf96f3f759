"""The command line's logging set-up drops the library log lines a user cannot act on (DeepSpeed's accelerator
report, transformers' mtime note), emitted by the libraries' own code, and nothing else those loggers say."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

from conftest import REPO

# the libraries' own code says each line; then a line of each logger that must still show
SCRIPT = """
import logging, sys, tempfile
from pathlib import Path
if sys.argv[1] == "setup":
    from decpo.log import setup_logging
    setup_logging()
import deepspeed.accelerator.real_accelerator as accelerator
accelerator.ds_accelerator = None  # detect again: its report, whenever the import came
accelerator.get_accelerator()
from transformers.trainer_utils import sort_checkpoints
runs = Path(tempfile.mkdtemp())
for step in (1, 2):  # saved within a second of each other, as a fast run does
    (runs / f"checkpoint-{step}").mkdir()
sort_checkpoints(str(runs), use_mtime=True)
logging.getLogger("DeepSpeed").warning("another DeepSpeed line")
logging.getLogger("transformers.trainer_utils").warning("another transformers line")
"""


def said(mode: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "CUDA_VISIBLE_DEVICES": ""}
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode], env=env, capture_output=True, text=True, timeout=300, check=True
    )
    return out.stdout + out.stderr


@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="DeepSpeed not installed")
def test_the_accelerator_and_mtime_lines_are_dropped_and_only_them():
    plain = said("none")  # the lines, as a library user sees them (the test would catch a renamed message)
    assert "Setting accelerator to CPU" in plain and "mtime may not be reliable" in plain, plain
    quiet = said("setup")
    assert "Setting accelerator" not in quiet and "mtime may not be reliable" not in quiet, quiet
    assert "another DeepSpeed line" in quiet and "another transformers line" in quiet, quiet
