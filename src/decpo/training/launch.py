"""Data-parallel training: ``decpo <args>`` relaunched as N processes, and the check, inside each launched
process, that the launcher started as many as were asked for."""

from __future__ import annotations

import os
import subprocess
import sys

import torch

from decpo.config import ConfigError

# set by `launch` in the launched processes: how many there should be (see `check_launched_world`)
NUM_PROCESSES_ENV = "DECPO_NUM_PROCESSES"


def world_size() -> int:
    """How many data-parallel processes this one is part of (``WORLD_SIZE``; 1 outside a launch)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def launch_command(num_processes: int, decpo_args: list[str]) -> list[str]:
    """The command running ``python -m decpo <decpo_args>`` as ``num_processes`` data-parallel processes.

    GPUs: ``accelerate launch --multi_gpu`` (one process per GPU). CPU: ``torch.distributed.run
    --standalone`` (gloo; the Trainer's accelerate state reads its environment): ``accelerate launch --cpu
    --num_processes N`` starts ONE process (its simple launcher), not N.
    """
    if num_processes < 2:
        raise ConfigError(f"a launch needs 2 processes or more, got {num_processes}")
    if torch.cuda.is_available():
        if torch.cuda.device_count() < num_processes:
            raise ConfigError(
                f"--num-processes {num_processes}: only {torch.cuda.device_count()} GPU(s) are visible"
            )
        launcher = ["accelerate.commands.launch", "--multi_gpu", "--num_processes", str(num_processes)]
    else:
        launcher = ["torch.distributed.run", "--standalone", "--nproc_per_node", str(num_processes)]
    return [sys.executable, "-m", *launcher, "-m", "decpo", *decpo_args]


def launch(num_processes: int, decpo_args: list[str]) -> int:
    """Run ``decpo <decpo_args>`` as ``num_processes`` processes (`launch_command`); returns the exit code."""
    env = {**os.environ, NUM_PROCESSES_ENV: str(num_processes)}
    return subprocess.call(launch_command(num_processes, decpo_args), env=env)


def check_launched_world() -> None:
    """In a process started by `launch`: fail unless it is one of as many processes as were asked for."""
    expected = os.environ.get(NUM_PROCESSES_ENV)
    if expected is not None and int(expected) != world_size():
        raise ConfigError(
            f"launched for {expected} data-parallel processes, but this process is one of {world_size()} "
            f"(WORLD_SIZE): the launcher did not start them"
        )
