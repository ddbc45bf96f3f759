"""What every executor shares: the errors, what a job asks for (`Resources`), where its files go, and the
`Job` and `Engine` protocols that `decpo.experiment.executors.dispatch` drives."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from decpo.errors import DecPOError
from decpo.records import StageLog

JOBS_DIR = "jobs"
DONE_FILE = "done.json"
# what a job needs of the driver's environment (Ray passes these; submitit's jobs inherit all of it)
FORWARDED_ENV = ("PYTHONPATH", "TQDM_DISABLE", "TOKENIZERS_PARALLELISM")
FORWARDED_PREFIXES = ("DECPO_", "HF_", "TRANSFORMERS_")


class Step(NamedTuple):
    """One stage of a plan: its name, config key, function, and the stages it comes after."""

    name: str
    key: str
    fn: Callable[[], Any]
    after: tuple[str, ...] = ()


class StagePlan(Protocol):
    """What the executors run: the steps in the plan's order and the stage log they mark
    (`decpo.experiment.plan.Plan` is one)."""

    steps: Sequence[Step]
    log: StageLog


class StagesFailed(DecPOError, RuntimeError):
    """Some stages failed (``failed``: name -> error and log) and their dependants were not run."""

    def __init__(self, failed: dict[str, str], blocked: dict[str, list[str]]):
        self.failed, self.blocked = failed, blocked
        lines = [f"{len(failed)} stage(s) failed:"] + [f"  {name}: {why}" for name, why in failed.items()]
        if blocked:
            lines.append(f"{len(blocked)} stage(s) not run, as they come after a failed one:")
            lines += [f"  {name} (after {', '.join(after)})" for name, after in blocked.items()]
        lines.append("fix the cause and re-run the same command: only these stages run")
        super().__init__("\n".join(lines))


class JobFailed(Exception):
    """A job ended without a result; the message says why (its error's last line, or how it ended)."""


@dataclass(frozen=True)
class Resources:
    """What one job asks its engine for."""

    gpus: int = 0
    cpus: int | None = None  # what the engine reserves (Slurm's cpus-per-task, Ray's num_cpus)
    # torch's CPU threads in the job; None: torch's default there, as in a sequential run (the thread
    # count changes the last digits of CPU results: torch's reductions split the work by thread)
    threads: int | None = None
    mem_gb: float | None = None
    time_min: int | None = None
    partition: str | None = None


def stage_kind(name: str) -> str:
    """``"train/dpo-s0"`` -> ``"train"``: the key of ``experiment.resources``."""
    return name.split("/", 1)[0]


def job_folder(output_dir: Path, name: str) -> Path:
    return output_dir / JOBS_DIR / name


def forwarded_env() -> dict[str, str]:
    """The driver's variables a job needs; ``PYTHONPATH`` made absolute (a Ray worker starts elsewhere)."""
    env = {k: v for k, v in os.environ.items() if k in FORWARDED_ENV or k.startswith(FORWARDED_PREFIXES)}
    if env.get("PYTHONPATH"):
        parts = env["PYTHONPATH"].split(os.pathsep)
        env["PYTHONPATH"] = os.pathsep.join(os.path.abspath(p) for p in parts if p)
    return env


def error_line(text: str) -> str:
    """The exception's own line (``ValueError: boom``) in an engine's failure message: the last line of the
    traceback, which submitit follows with a ``-----`` rule and the log paths."""
    if "Traceback (most recent call last):" in text:
        text = text.split("Traceback (most recent call last):", 1)[1]
        text = text.split("\n-----", 1)[0]
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else text.strip()


def torch_threads() -> int:
    """torch's CPU threads in this process (what a local job keeps, for the same CPU arithmetic)."""
    import torch  # lazy: torch loads slowly, and the engines' other code does not need it

    return torch.get_num_threads()


class Job(Protocol):
    job_id: str
    log: str

    def done(self) -> bool: ...

    def result(self) -> dict[str, Any]:
        """`decpo.experiment.executors.worker.run_stage`'s result; raises `JobFailed`."""
        ...

    def cancel(self) -> None: ...


class Engine(Protocol):
    name: str  # experiment.executor
    poll_s: float  # seconds between two looks at the running jobs
    max_parallel: int  # 0: no limit of decpo's own

    def resources(self, kind: str) -> Resources: ...

    def can_start(self, res: Resources) -> bool:
        """Whether a job asking ``res`` can start now besides the running ones (local GPUs)."""
        ...

    def submit(self, step: Step, res: Resources, folder: Path) -> Job: ...

    def release(self, job: Job) -> None:
        """A job ended: what it held is free again."""
        ...

    def reattach(self, entry: dict[str, Any], folder: Path) -> Job | None:
        """The job of a ``running`` stage of an earlier driver, when it is still alive."""
        ...

    def interrupt(self, running: dict[str, Job]) -> None:
        """The driver stops before its jobs end (Ctrl-C, an error)."""
        ...

    def close(self) -> None:
        """The driver is done with the engine."""
        ...
