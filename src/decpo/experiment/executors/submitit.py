"""``experiment.executor`` local or slurm: each stage a submitit job (its LocalExecutor, or Slurm through its
SlurmExecutor), with the resources of ``experiment.resources`` and ``experiment.slurm``.

A job of a stopped driver still running under the same executor (a Slurm job, or a local job's process) is
found again by its id (`SubmititEngine.reattach`) and waited for, not submitted a second time. Its files
(submitit's pickles and ``<job id>_0_log.out``: stdout and stderr) are in the stage's job folder.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from decpo.experiment.executors.base import Job, JobFailed, Resources, Step, error_line, torch_threads
from decpo.experiment.executors.worker import run_stage

if TYPE_CHECKING:
    from decpo.config.experiment_settings import ExperimentSettings

logger = logging.getLogger(__name__)

# a local job without a time limit of its own: submitit's local default is 2 minutes
LOCAL_TIME_MIN = 30 * 24 * 60


class SubmititJob:
    """A submitit job (local or Slurm), or one found again by its id (`SubmititEngine.reattach`)."""

    def __init__(self, job: Any, alive: Callable[[], bool] | None = None, gpus: tuple[int, ...] = ()):
        self._job, self._alive, self.gpus = job, alive, gpus
        self.job_id = str(job.job_id)
        self.log = str(job.paths.stdout)

    def done(self) -> bool:
        if self._alive is not None:  # a local job of an earlier driver: its process is all there is
            return self._job.paths.result_pickle.exists() or not self._alive()
        return self._job.done()

    def result(self) -> dict[str, Any]:
        from submitit.core.utils import UncompletedJobError  # lazy: submitit is optional

        try:
            return self._job.result()
        except UncompletedJobError as e:
            raise JobFailed(error_line(str(e))) from e

    def cancel(self) -> None:
        self._job.cancel(check=False)


def local_gpus() -> list[int]:
    """The GPU ids this machine shows (``CUDA_VISIBLE_DEVICES`` when set)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        ids = [v.strip() for v in visible.split(",") if v.strip()]
        if all(v.isdigit() for v in ids):
            return [int(v) for v in ids]
    try:
        import torch  # lazy: torch loads slowly, and is only asked when CUDA_VISIBLE_DEVICES says nothing

        return list(range(torch.cuda.device_count()))
    except ImportError:
        return []


def pid_alive(pid: int) -> bool:
    """Whether the local job's process ``pid`` still runs (and is a submitit job, not a reused pid)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    cmdline = Path(f"/proc/{pid}/cmdline")  # a reused pid is someone else's process
    return not cmdline.exists() or b"submitit" in cmdline.read_bytes()


def slurm_mem(mem_gb: float | None) -> str | None:
    """Slurm's ``--mem`` of ``mem_gb`` (whole GB, else MB)."""
    if mem_gb is None:
        return None
    return f"{int(mem_gb)}GB" if mem_gb == int(mem_gb) else f"{int(mem_gb * 1024)}MB"


class SubmititEngine:
    """``experiment.executor`` local (submitit's LocalExecutor) or slurm (its SlurmExecutor)."""

    def __init__(self, cluster: str, exp: ExperimentSettings, num_processes: int = 1):
        import submitit  # noqa: F401  (lazy: optional; fails here, before any stage, when it is not installed)

        self.name = cluster
        self.exp, self.num_processes = exp, num_processes
        self.max_parallel = exp.max_parallel or (1 if cluster == "local" else 0)
        self.poll_s = 0.5 if cluster == "local" else 10.0
        self._free_gpus = local_gpus() if cluster == "local" else []

    def resources(self, kind: str) -> Resources:
        r, slurm = getattr(self.exp.resources, kind), self.exp.slurm
        per_job = self.num_processes if kind == "train" else 1  # one GPU per training process
        if self.name == "slurm":
            default_gpus, default_cpus = slurm.gpus_per_job * per_job, slurm.cpus_per_job
        else:  # local: no CPUs reserved; torch threads as in this process unless asked for
            default_gpus, default_cpus = (per_job if self._free_gpus else 0), None
        return Resources(
            gpus=r.gpus if r.gpus is not None else default_gpus,
            cpus=r.cpus if r.cpus is not None else default_cpus,
            # local: the driver's torch threads (not the job's default, which an inherited OMP_NUM_THREADS, e.g.
            # from ray.init, can change): the same CPU arithmetic as a sequential run in this process
            threads=(r.cpus if r.cpus is not None else torch_threads()) if self.name == "local" else None,
            mem_gb=r.mem_gb if r.mem_gb is not None else slurm.mem_gb,
            time_min=r.time_min or (slurm.time_min if self.name == "slurm" else LOCAL_TIME_MIN),
            partition=r.partition or slurm.partition,
        )

    def can_start(self, res: Resources) -> bool:
        return self.name != "local" or res.gpus <= len(self._free_gpus)

    def executor(self, name: str, res: Resources, folder: Path, gpus: tuple[int, ...] = ()) -> Any:
        """The submitit executor of one job of stage ``name`` (local: on the GPUs ``gpus``)."""
        return self._local(res, folder, gpus) if self.name == "local" else self._slurm(name, res, folder)

    def _local(self, res: Resources, folder: Path, gpus: tuple[int, ...]) -> Any:
        import submitit  # lazy: optional

        executor: Any = submitit.LocalExecutor(folder=folder)
        executor.update_parameters(
            timeout_min=res.time_min, gpus_per_node=len(gpus), visible_gpus=gpus, stderr_to_stdout=True
        )
        if self.exp.slurm.setup:
            executor.update_parameters(setup=list(self.exp.slurm.setup))
        return executor

    def _slurm(self, name: str, res: Resources, folder: Path) -> Any:
        import submitit  # lazy: optional

        slurm = self.exp.slurm
        executor = submitit.SlurmExecutor(folder=folder)
        params: dict[str, Any] = {
            "job_name": f"decpo-{name}",
            "time": res.time_min,
            "nodes": 1,
            "ntasks_per_node": 1,  # one task: an N-process training is launched inside it
            "gpus_per_node": res.gpus or None,
            "cpus_per_task": res.cpus,
            "mem": slurm_mem(res.mem_gb),
            "partition": res.partition,
            "account": slurm.account,
            "qos": slurm.qos,
            "constraint": slurm.constraint,
            "setup": list(slurm.setup) or None,
            "additional_parameters": dict(slurm.additional) or None,
            "stderr_to_stdout": True,
        }
        executor.update_parameters(**{k: v for k, v in params.items() if v is not None})
        return executor

    def submit(self, step: Step, res: Resources, folder: Path) -> Job:
        gpus: tuple[int, ...] = ()
        if self.name == "local":  # GPUs of its own for each local job
            gpus, self._free_gpus = tuple(self._free_gpus[: res.gpus]), self._free_gpus[res.gpus :]
        executor = self.executor(step.name, res, folder, gpus)
        job = executor.submit(run_stage, step.fn, step.name, step.key, str(folder), res.threads)
        return SubmititJob(job, gpus=gpus)

    def release(self, job: Job) -> None:
        self._free_gpus = sorted([*self._free_gpus, *getattr(job, "gpus", ())])

    def reattach(self, entry: dict[str, Any], folder: Path) -> Job | None:
        import submitit  # lazy: optional

        job_id = str(entry["job_id"])
        if self.name == "local":
            if not job_id.isdigit() or not pid_alive(int(job_id)):
                return None
            return SubmititJob(submitit.LocalJob(folder, job_id), alive=lambda: pid_alive(int(job_id)))
        job = submitit.SlurmJob(folder, job_id)
        return (
            None if job.done(force_check=True) and not job.paths.result_pickle.exists() else SubmititJob(job)
        )

    def interrupt(self, running: dict[str, Job]) -> None:
        if self.name == "local":  # the jobs would go on without a driver
            for job in running.values():
                job.cancel()
        elif running:
            logger.warning(
                "the driver stops; its Slurm jobs go on (%s): re-run the same command to wait for them, or "
                "scancel them",
                ", ".join(f"{name} {job.job_id}" for name, job in running.items()),
            )

    def close(self) -> None:
        pass
