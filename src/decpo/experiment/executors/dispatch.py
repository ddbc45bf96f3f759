"""The stages of an experiment as jobs of an existing engine: submitit (Slurm, or its local executor) or Ray.

`dispatch` is the driver's loop: a stage is submitted once the stages it comes after are done
(`Step.after`), as many at a time as ``experiment.max_parallel`` allows; where it runs, and when, is the
engine's business. Only the driver writes ``stages.json`` (`decpo.experiment.recipes.StageLog`), as each job
ends: ``running`` with the job id and log when submitted, then ``done`` with the worker's start and end
times, or ``failed`` with the error and the log, and ``blocked`` for the stages after a failed one (not
run). The stages that can run all run; then `StagesFailed` names the failed and blocked ones.

A job runs `run_stage` in a fresh process: a submitit job (``python -m submitit...``, the driver's
environment: ``DECPO_*``, ``PYTHONPATH``, ``HF_*`` are inherited, by sbatch's ``--export=ALL`` on Slurm),
or a Ray task in a worker started for it alone (``max_calls=1``; the same variables are passed in the
job's ``runtime_env``). The stage function is pickled by cloudpickle (closures included). On success the
worker writes ``jobs/<stage>/done.json`` with the stage's key: a driver that was stopped while the job ran
(killed, logged out) finds it on the next run and records the stage as done instead of running it again.
Likewise a job of a stopped driver still running under the same executor (a Slurm job, or a local job's
process) is waited for, not submitted a second time; Ray's tasks end with the driver that started them.

Jobs are filed under ``<experiment>/jobs/<stage name>/`` (``jobs/train/dpo-s0/``): submitit's pickles and
the job's log (``<job id>_0_log.out``: stdout and stderr), or ``ray-<time>.log`` for Ray.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from decpo.errors import DecPOError
from decpo.io import atomic_write_json

if TYPE_CHECKING:  # not imported in the jobs: a job imports this module, and decpo.config.run_config imports torch
    from decpo.config.experiment_settings import ExperimentSettings
    from decpo.experiment.recipes import Plan, Step

logger = logging.getLogger(__name__)

JOBS_DIR = "jobs"
DONE_FILE = "done.json"
# what a job needs of the driver's environment (Ray passes these; submitit's jobs inherit all of it)
FORWARDED_ENV = ("PYTHONPATH", "TQDM_DISABLE", "TOKENIZERS_PARALLELISM")
FORWARDED_PREFIXES = ("DECPO_", "HF_", "TRANSFORMERS_")
# a local job without a time limit of its own: submitit's local default is 2 minutes
LOCAL_TIME_MIN = 30 * 24 * 60


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


def run_stage(
    fn: Callable[[], Any],
    name: str,
    key: str,
    folder: str,
    threads: int | None = None,
    log: str | None = None,
) -> dict[str, Any]:
    """The job: run one stage in this (worker) process; returns its start and end times.

    ``threads``: torch's intra-op threads; None: torch's default (`Resources.threads`). ``log``: send this
    process's stdout and stderr there (Ray; submitit files them itself). Writes ``done.json`` (with ``key``)
    at the end."""
    if log is not None:
        Path(log).parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        sys.stdout.flush(), sys.stderr.flush()
        os.dup2(fd, 1), os.dup2(fd, 2)  # launched subprocesses (an N-process training) write there too
    from decpo.log import setup_logging

    setup_logging(verbose=False)
    if threads:
        import torch

        torch.set_num_threads(threads)
    started = time.time()
    logger.info("%s: started on %s, pid %d (key %s)", name, socket.gethostname(), os.getpid(), key)
    try:
        fn()
    except Exception:
        if log is not None:  # Ray returns the error to the driver without a word in the log
            logger.exception("%s failed", name)
        raise
    ended = time.time()
    result = {"started_at": round(started, 3), "ended_at": round(ended, 3), "host": socket.gethostname()}
    atomic_write_json(Path(folder) / DONE_FILE, {"key": key, **result})
    logger.info("%s: done in %.1f s", name, ended - started)
    return result


def finished_result(folder: Path, key: str) -> dict[str, Any] | None:
    """What a job that finished stage ``key`` wrote in ``folder`` (`run_stage`), or None."""
    import json

    path = folder / DONE_FILE
    if not path.is_file():
        return None
    done = json.loads(path.read_text())
    return {k: v for k, v in done.items() if k != "key"} if done.get("key") == key else None


class Job(Protocol):
    job_id: str
    log: str

    def done(self) -> bool: ...

    def result(self) -> dict[str, Any]:
        """`run_stage`'s result; raises `JobFailed`."""
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


def _error_line(text: str) -> str:
    """The exception's own line (``ValueError: boom``) in an engine's failure message: the last line of the
    traceback, which submitit follows with a ``-----`` rule and the log paths."""
    if "Traceback (most recent call last):" in text:
        text = text.split("Traceback (most recent call last):", 1)[1]
        text = text.split("\n-----", 1)[0]
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else text.strip()


class _SubmititJob:
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
        from submitit.core.utils import UncompletedJobError

        try:
            return self._job.result()
        except UncompletedJobError as e:
            raise JobFailed(_error_line(str(e))) from e

    def cancel(self) -> None:
        self._job.cancel(check=False)


def _local_gpus() -> list[int]:
    """The GPU ids this machine shows (``CUDA_VISIBLE_DEVICES`` when set)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        ids = [v.strip() for v in visible.split(",") if v.strip()]
        if all(v.isdigit() for v in ids):
            return [int(v) for v in ids]
    try:
        import torch

        return list(range(torch.cuda.device_count()))
    except ImportError:
        return []


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    cmdline = Path(f"/proc/{pid}/cmdline")  # a reused pid is someone else's process
    return not cmdline.exists() or b"submitit" in cmdline.read_bytes()


class SubmititEngine:
    """``experiment.executor`` local (submitit's LocalExecutor) or slurm (its SlurmExecutor)."""

    def __init__(self, cluster: str, exp: ExperimentSettings, num_processes: int = 1):
        import submitit  # noqa: F401  (fails here, before any stage, when it is not installed)

        self.name = cluster
        self.exp, self.num_processes = exp, num_processes
        self.max_parallel = exp.max_parallel or (1 if cluster == "local" else 0)
        self.poll_s = 0.5 if cluster == "local" else 10.0
        self._free_gpus = _local_gpus() if cluster == "local" else []

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
            threads=(r.cpus if r.cpus is not None else _torch_threads()) if self.name == "local" else None,
            mem_gb=r.mem_gb if r.mem_gb is not None else slurm.mem_gb,
            time_min=r.time_min or (slurm.time_min if self.name == "slurm" else LOCAL_TIME_MIN),
            partition=r.partition or slurm.partition,
        )

    def can_start(self, res: Resources) -> bool:
        return self.name != "local" or res.gpus <= len(self._free_gpus)

    def executor(self, name: str, res: Resources, folder: Path, gpus: tuple[int, ...] = ()) -> Any:
        """The submitit executor of one job of stage ``name`` (local: on the GPUs ``gpus``)."""
        import submitit

        slurm = self.exp.slurm
        if self.name == "local":
            executor: Any = submitit.LocalExecutor(folder=folder)
            executor.update_parameters(
                timeout_min=res.time_min, gpus_per_node=len(gpus), visible_gpus=gpus, stderr_to_stdout=True
            )
            if slurm.setup:
                executor.update_parameters(setup=list(slurm.setup))
            return executor
        executor = submitit.SlurmExecutor(folder=folder)
        params: dict[str, Any] = {
            "job_name": f"decpo-{name}",
            "time": res.time_min,
            "nodes": 1,
            "ntasks_per_node": 1,  # one task: an N-process training is launched inside it
            "gpus_per_node": res.gpus or None,
            "cpus_per_task": res.cpus,
            "mem": _slurm_mem(res.mem_gb),
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
        return _SubmititJob(job, gpus=gpus)

    def release(self, job: Job) -> None:
        self._free_gpus = sorted([*self._free_gpus, *getattr(job, "gpus", ())])

    def reattach(self, entry: dict[str, Any], folder: Path) -> Job | None:
        import submitit

        job_id = str(entry["job_id"])
        if self.name == "local":
            if not job_id.isdigit() or not _pid_alive(int(job_id)):
                return None
            return _SubmititJob(submitit.LocalJob(folder, job_id), alive=lambda: _pid_alive(int(job_id)))
        job = submitit.SlurmJob(folder, job_id)
        return (
            None if job.done(force_check=True) and not job.paths.result_pickle.exists() else _SubmititJob(job)
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


def _slurm_mem(mem_gb: float | None) -> str | None:
    if mem_gb is None:
        return None
    return f"{int(mem_gb)}GB" if mem_gb == int(mem_gb) else f"{int(mem_gb * 1024)}MB"


class _RayJob:
    def __init__(self, ref: Any, log: str):
        self._ref, self.log = ref, log
        self.job_id = ref.task_id().hex()

    def done(self) -> bool:
        import ray

        ready, _ = ray.wait([self._ref], timeout=0)
        return bool(ready)

    def result(self) -> dict[str, Any]:
        import ray

        try:
            return ray.get(self._ref)
        except ray.exceptions.RayError as e:
            raise JobFailed(_error_line(str(e))) from e

    def cancel(self) -> None:
        import ray

        ray.cancel(self._ref, force=True)


class RayEngine:
    """``experiment.executor=ray``: one Ray task per stage, each in a worker process of its own."""

    name = "ray"
    poll_s = 0.5

    def __init__(self, exp: ExperimentSettings, num_processes: int = 1):
        from decpo.config import ConfigError

        try:
            import ray
        except ImportError as e:
            raise ConfigError("experiment.executor=ray needs Ray: pip install 'decpo[ray]' (or ray)") from e
        self.exp, self.num_processes = exp, num_processes
        self.max_parallel = exp.max_parallel
        self._started = False
        if not ray.is_initialized():
            runtime_env = {"env_vars": forwarded_env()}
            if exp.ray.address:
                ray.init(address=exp.ray.address, runtime_env=runtime_env, log_to_driver=False)
            else:  # a local Ray: as many one-CPU jobs at once as max_parallel
                ray.init(
                    num_cpus=self.max_parallel or os.cpu_count(),
                    runtime_env=runtime_env,
                    include_dashboard=False,
                    log_to_driver=False,
                )
            self._started = True
        self._has_gpus = ray.cluster_resources().get("GPU", 0) > 0
        # Ray gives a job OMP_NUM_THREADS = its num_cpus; a local Ray keeps torch's threads of this process
        # instead, so that CPU results are those of a sequential run
        self._threads = None if exp.ray.address else _torch_threads()
        self._remote = ray.remote(max_calls=1)(run_stage)  # a fresh worker process per stage

    def resources(self, kind: str) -> Resources:
        r, ray_cfg = getattr(self.exp.resources, kind), self.exp.ray
        per_job = self.num_processes if kind == "train" else 1
        gpus = ray_cfg.gpus_per_job if ray_cfg.gpus_per_job is not None else int(self._has_gpus)
        return Resources(
            gpus=r.gpus if r.gpus is not None else gpus * per_job,
            cpus=r.cpus if r.cpus is not None else ray_cfg.cpus_per_job,
            mem_gb=r.mem_gb,
            threads=r.cpus if r.cpus is not None else self._threads,
        )

    def can_start(self, res: Resources) -> bool:
        return True

    def submit(self, step: Step, res: Resources, folder: Path) -> Job:
        log = str(folder / f"ray-{time.strftime('%Y%m%d-%H%M%S')}.log")
        options: dict[str, Any] = {"num_cpus": res.cpus or 0, "num_gpus": res.gpus, "name": step.name}
        if res.mem_gb:
            options["memory"] = int(res.mem_gb * 2**30)
        ref = self._remote.options(**options).remote(
            step.fn, step.name, step.key, str(folder), res.threads, log
        )
        return _RayJob(ref, log)

    def release(self, job: Job) -> None:
        pass

    def reattach(self, entry: dict[str, Any], folder: Path) -> Job | None:
        return None  # a Ray task ends with the driver that started it

    def interrupt(self, running: dict[str, Job]) -> None:
        for job in running.values():
            job.cancel()

    def close(self) -> None:
        if self._started:
            import ray

            ray.shutdown()


def make_engine(exp: ExperimentSettings, num_processes: int = 1) -> Engine | None:
    """The engine of ``experiment.executor``; None for ``sequential`` (in this process, one at a time)."""
    from decpo.config import ConfigError

    if exp.executor == "sequential":
        return None
    if exp.executor == "ray":
        return RayEngine(exp, num_processes)
    try:
        return SubmititEngine(exp.executor, exp, num_processes)
    except ImportError as e:
        raise ConfigError(f"experiment.executor={exp.executor} needs submitit: pip install submitit") from e


def dispatch(plan: Plan, engine: Engine, output_dir: Path) -> None:
    """Run the stages of ``plan`` not done yet as jobs of ``engine``; raises `StagesFailed` at the end."""
    from decpo.config import ConfigError

    log = plan.log
    steps = {s.name: s for s in plan.steps}
    order = {name: i for i, name in enumerate(steps, 1)}
    finished = {s.name for s in plan.steps if log.done(s.name, s.key)}
    running: dict[str, Job] = {}
    for s in plan.steps:  # what an earlier driver left: jobs finished since, or still running
        entry = log.stages.get(s.name, {})
        if s.name in finished or entry.get("status") != "running" or entry.get("key") != s.key:
            continue
        if "job_id" not in entry:
            continue
        folder = job_folder(output_dir, s.name)
        if (times := finished_result(folder, s.key)) is not None:
            _mark_done(log, s, order[s.name], times, entry)
            finished.add(s.name)
            logger.info("%s: finished after the last driver stopped (job %s)", s.name, entry["job_id"])
        elif entry.get("executor") == engine.name and (job := engine.reattach(entry, folder)) is not None:
            running[s.name] = job
            logger.info("%s: job %s of the last driver still runs: waiting for it", s.name, job.job_id)
    waiting = [s for s in plan.steps if s.name not in finished and s.name not in running]
    logger.info(
        "%d stages, %d to run on %s (at most %s at once): %s",
        len(steps),
        len(waiting) + len(running),
        engine.name,
        engine.max_parallel or "no limit",
        ", ".join([*running, *(s.name for s in waiting)]) or "none",
    )
    failed: dict[str, str] = {}
    blocked: dict[str, list[str]] = {}
    try:
        while waiting or running:
            changed = False
            for name, job in list(running.items()):
                if not job.done():
                    continue
                changed = True
                del running[name]
                engine.release(job)
                s = steps[name]
                entry = log.stages.get(name, {})
                try:
                    times = job.result()
                except JobFailed as e:
                    failed[name] = f"{e} (log: {job.log})"
                    log.mark(
                        name,
                        s.key,
                        "failed",
                        **_job_info(entry),
                        error=str(e),
                        ended_at=round(time.time(), 3),
                    )
                    logger.error("%s failed: %s; its log: %s", name, e, job.log)
                else:
                    _mark_done(log, s, order[name], times, entry)
                    finished.add(name)
                    logger.info("%s: done in %.0f s", name, times["ended_at"] - times["started_at"])
            for s in list(waiting):  # after a failed stage: not run
                after = [d for d in s.after if d in failed or d in blocked]
                if after:
                    waiting.remove(s)
                    blocked[s.name] = after
                    log.mark(s.name, s.key, "blocked", order=order[s.name], blocked_by=after)
                    changed = True
            for s in list(waiting):
                if engine.max_parallel and len(running) >= engine.max_parallel:
                    break
                res = engine.resources(stage_kind(s.name))
                if not all(d in finished for d in s.after) or not engine.can_start(res):
                    continue
                folder = job_folder(output_dir, s.name)
                folder.mkdir(parents=True, exist_ok=True)
                (folder / DONE_FILE).unlink(missing_ok=True)  # a result of this stage is this job's
                job = engine.submit(s, res, folder)
                running[s.name] = job
                waiting.remove(s)
                changed = True
                now = round(time.time(), 3)
                log.mark(
                    s.name,
                    s.key,
                    "running",
                    order=order[s.name],
                    started_at=now,
                    submitted_at=now,
                    executor=engine.name,
                    job_id=job.job_id,
                    log=job.log,
                )
                logger.info("%s: submitted as job %s (%s); log: %s", s.name, job.job_id, _fmt(res), job.log)
            if waiting and not running and not changed:
                raise ConfigError(
                    f"{waiting[0].name} asks for {engine.resources(stage_kind(waiting[0].name)).gpus} GPU(s), "
                    f"more than {engine.name} has: lower experiment.resources.{stage_kind(waiting[0].name)}.gpus"
                )
            if not changed:
                time.sleep(engine.poll_s)
    except BaseException:
        engine.interrupt(running)
        raise
    finally:
        engine.close()
    if failed or blocked:
        raise StagesFailed(failed, blocked)


def _job_info(entry: dict[str, Any]) -> dict[str, Any]:
    keep = ("order", "started_at", "submitted_at", "executor", "job_id", "log")
    return {k: entry[k] for k in keep if k in entry}


def _mark_done(log: Any, step: Step, order: int, times: dict[str, Any], entry: dict[str, Any]) -> None:
    info = {
        **_job_info(entry),
        "order": order,
        "started_at": times["started_at"],
        "ended_at": times["ended_at"],
        "wall_time_s": round(times["ended_at"] - times["started_at"], 1),
        "host": times.get("host"),
    }
    log.mark(step.name, step.key, "done", **info)


def _fmt(res: Resources) -> str:
    parts = [f"{res.gpus} GPU(s)"]
    if res.cpus:
        parts.append(f"{res.cpus} CPU(s)")
    if res.partition:
        parts.append(f"partition {res.partition}")
    return ", ".join(parts)
