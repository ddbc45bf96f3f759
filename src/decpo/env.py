"""What a run folder records about where it ran (``env.json`` of training, ``run.json`` of evaluation)."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import decpo

_CPU_MATH_READY = False


def cache_dir() -> Path:
    """decpo's cache: converted models, reference log-probs, pairs ($DECPO_CACHE, default ~/.cache/decpo)."""
    return Path(os.environ.get("DECPO_CACHE", Path.home() / ".cache" / "decpo"))


def warm_up_cpu_math() -> None:
    """Initialise oneMKL's vector math in this thread, once per process, before any parallel computation.

    torch's CPU ``cos``, ``sin``, ``exp``, ``tanh``... call oneMKL's vector math (VML), which sets itself up on
    first use, and that set-up is not safe when the first use is in two threads at once: in a fresh process
    whose first such call is parallel (more than 32768 elements, e.g. the rotary embedding's cos of an
    evaluation batch), the second OpenMP thread computes its half with another kernel about one time in
    five, one ulp off, and every log-prob after it moves in its last digits. A process that had already
    called one (the driver of a sequential run, after its first stage) never does, so a stage's results
    depended on what had run before it in its process (issue 13). One tiny call here, in one thread, sets
    VML up before any parallel one. Idempotent; cheap (microseconds)."""
    global _CPU_MATH_READY
    if _CPU_MATH_READY:
        return
    import torch

    with torch.no_grad():
        x = torch.zeros(8)  # 8 elements: one thread
        x.cos(), x.sin(), x.exp(), x.tanh()
    _CPU_MATH_READY = True


def environment() -> dict[str, Any]:
    """Versions, git hash, device, threads and data-parallel world size."""
    # lazy: the versions of heavy libraries, imported only when a run records them
    import accelerate
    import peft
    import torch
    import transformers
    import trl

    try:
        git = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent, timeout=5
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        git = ""
    return {
        "decpo": decpo.__version__,
        "git": git or None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "trl": trl.__version__,
        "peft": peft.__version__,
        "accelerate": accelerate.__version__,
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "world_size": int(os.environ.get("WORLD_SIZE", "1")),  # data-parallel processes
    }
