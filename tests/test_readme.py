"""The README's quick start: set-up and the main job are separate commands, torch comes from PyTorch's CPU
index as PyTorch documents it, the test command is `pytest -q`; CI installs from PyPI alone."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CPU_TORCH = "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"


def quick_start_commands() -> list[str]:
    """The command lines of the bash blocks of the README's "Quick start" section, in order."""
    text = (REPO / "README.md").read_text()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    return [line for block in blocks for line in block.splitlines() if line.strip()]


def test_set_up_and_main_job_are_two_commands():
    commands = quick_start_commands()
    set_up = next(c for c in commands if "pip install" in c)
    assert set_up.startswith(CPU_TORCH + " && ")  # the CPU wheel first, named as PyTorch's selector names it
    assert "decpo " not in set_up  # pasting the set-up starts nothing long
    assert "decpo run --output-dir runs/paper-demo --config configs/default.yaml" in commands
    assert "pytest -q" in commands  # the README's test command, which CI runs


def test_ci_installs_from_pypi_only_and_outputs_are_ignored():
    ci = (REPO / ".ci" / "run").read_text()
    assert "pip install --quiet torch==2.13.0\n" in ci and "index-url" not in ci  # CI reaches PyPI alone
    assert "\npytest -q\n" in ci
    ignored = (REPO / ".gitignore").read_text().split()
    assert {"/runs/", "/probes/", "/evals/", "/pairs/"} <= set(ignored)
