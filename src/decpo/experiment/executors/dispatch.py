"""The stages of an experiment as jobs of an existing engine: submitit (Slurm, or its local executor) or Ray.

`dispatch` is the driver's loop: a stage is submitted once the stages it comes after are done
(`Step.after`), as many at a time as ``experiment.max_parallel`` allows; where it runs, and when, is the
engine's business. Only the driver writes ``stages.json`` (`decpo.records.StageLog`), as each job
ends: ``running`` with the job id and log when submitted, then ``done`` with the worker's start and end
times, or ``failed`` with the error and the log, and ``blocked`` for the stages after a failed one (not
run). The stages that can run all run; then `StagesFailed` names the failed and blocked ones.

A job runs `decpo.experiment.executors.worker.run_stage` in a fresh process: a submitit job (``python -m
submitit...``, the driver's environment: ``DECPO_*``, ``PYTHONPATH``, ``HF_*`` are inherited, by sbatch's
``--export=ALL`` on Slurm), or a Ray task in a worker started for it alone (``max_calls=1``; the same
variables are passed in the job's ``runtime_env``). The stage function is pickled by cloudpickle (closures
included). On success the worker writes ``jobs/<stage>/done.json`` with the stage's key: a driver that was
stopped while the job ran (killed, logged out) finds it on the next run and records the stage as done
instead of running it again. Likewise a job of a stopped driver still running under the same executor (a
Slurm job, or a local job's process) is waited for, not submitted a second time; Ray's tasks end with the
driver that started them.

Jobs are filed under ``<experiment>/jobs/<stage name>/`` (``jobs/train/dpo-s0/``): submitit's pickles and
the job's log (``<job id>_0_log.out``: stdout and stderr), or ``ray-<time>.log`` for Ray.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from decpo.config import ConfigError
from decpo.experiment.executors.base import (
    DONE_FILE,
    Engine,
    Job,
    JobFailed,
    Resources,
    StagePlan,
    StagesFailed,
    Step,
    job_folder,
    stage_kind,
)
from decpo.experiment.executors.ray import RayEngine
from decpo.experiment.executors.submitit import SubmititEngine
from decpo.experiment.executors.worker import finished_result
from decpo.records import StageLog

if TYPE_CHECKING:
    from decpo.config.experiment_settings import ExperimentSettings

logger = logging.getLogger(__name__)


def make_engine(exp: ExperimentSettings, num_processes: int = 1) -> Engine | None:
    """The engine of ``experiment.executor``; None for ``sequential`` (in this process, one at a time)."""
    if exp.executor == "sequential":
        return None
    if exp.executor == "ray":
        return RayEngine(exp, num_processes)
    try:
        return SubmititEngine(exp.executor, exp, num_processes)
    except ImportError as e:
        raise ConfigError(f"experiment.executor={exp.executor} needs submitit: pip install submitit") from e


def dispatch(plan: StagePlan, engine: Engine, output_dir: Path) -> None:
    """Run the stages of ``plan`` not done yet as jobs of ``engine``; raises `StagesFailed` at the end."""
    driver = _Driver(plan, engine, output_dir)
    driver.pick_up_earlier_jobs()
    driver.log_overview()
    try:
        while driver.waiting or driver.running:
            ended = driver.collect_ended()
            blocked = driver.block_after_failures()
            submitted = driver.submit_ready()
            changed = ended or blocked or submitted
            if driver.waiting and not driver.running and not changed:
                raise driver.too_big(driver.waiting[0])
            if not changed:
                time.sleep(engine.poll_s)
    except BaseException:
        engine.interrupt(driver.running)
        raise
    finally:
        engine.close()
    if driver.failed or driver.blocked:
        raise StagesFailed(driver.failed, driver.blocked)


class _Driver:
    """The state of one `dispatch`: which stages are finished, running, waiting, failed or blocked."""

    def __init__(self, plan: StagePlan, engine: Engine, output_dir: Path):
        self.log: StageLog = plan.log
        self.engine, self.output_dir = engine, output_dir
        self.plan_steps = list(plan.steps)
        self.steps = {s.name: s for s in plan.steps}
        self.order = {name: i for i, name in enumerate(self.steps, 1)}
        self.finished = {s.name for s in plan.steps if self.log.done(s.name, s.key)}
        self.running: dict[str, Job] = {}
        self.waiting: list[Step] = []
        self.failed: dict[str, str] = {}
        self.blocked: dict[str, list[str]] = {}

    def pick_up_earlier_jobs(self) -> None:
        """What an earlier driver left: jobs finished since (recorded as done), or still running (waited
        for); every other stage not done waits to be submitted."""
        for s in self.plan_steps:
            entry = self.log.stages.get(s.name, {})
            if s.name in self.finished or entry.get("status") != "running" or entry.get("key") != s.key:
                continue
            if "job_id" not in entry:
                continue
            folder = job_folder(self.output_dir, s.name)
            if (times := finished_result(folder, s.key)) is not None:
                self._mark_done(s, times, entry)
                logger.info("%s: finished after the last driver stopped (job %s)", s.name, entry["job_id"])
                continue
            job = self.engine.reattach(entry, folder) if entry.get("executor") == self.engine.name else None
            if job is not None:
                self.running[s.name] = job
                logger.info("%s: job %s of the last driver still runs: waiting for it", s.name, job.job_id)
        self.waiting = [
            s for s in self.plan_steps if s.name not in self.finished and s.name not in self.running
        ]

    def log_overview(self) -> None:
        logger.info(
            "%d stages, %d to run on %s (at most %s at once): %s",
            len(self.steps),
            len(self.waiting) + len(self.running),
            self.engine.name,
            self.engine.max_parallel or "no limit",
            ", ".join([*self.running, *(s.name for s in self.waiting)]) or "none",
        )

    def collect_ended(self) -> bool:
        """Record the jobs that ended (done or failed); whether any did."""
        changed = False
        for name, job in list(self.running.items()):
            if not job.done():
                continue
            changed = True
            del self.running[name]
            self.engine.release(job)
            entry = self.log.stages.get(name, {})
            try:
                times = job.result()
            except JobFailed as e:
                self.failed[name] = f"{e} (log: {job.log})"
                ended = round(time.time(), 3)
                key = self.steps[name].key
                self.log.mark(name, key, "failed", **_job_info(entry), error=str(e), ended_at=ended)
                logger.error("%s failed: %s; its log: %s", name, e, job.log)
            else:
                self._mark_done(self.steps[name], times, entry)
                logger.info("%s: done in %.0f s", name, times["ended_at"] - times["started_at"])
        return changed

    def block_after_failures(self) -> bool:
        """Mark the waiting stages that come after a failed or blocked one as blocked (not run); whether any."""
        changed = False
        for s in list(self.waiting):
            after = [d for d in s.after if d in self.failed or d in self.blocked]
            if after:
                self.waiting.remove(s)
                self.blocked[s.name] = after
                self.log.mark(s.name, s.key, "blocked", order=self.order[s.name], blocked_by=after)
                changed = True
        return changed

    def submit_ready(self) -> bool:
        """Submit the waiting stages whose predecessors are done, while the engine has room; whether any."""
        changed = False
        for s in list(self.waiting):
            if self.engine.max_parallel and len(self.running) >= self.engine.max_parallel:
                break
            res = self.engine.resources(stage_kind(s.name))
            if not all(d in self.finished for d in s.after) or not self.engine.can_start(res):
                continue
            self._submit(s, res)
            changed = True
        return changed

    def _submit(self, s: Step, res: Resources) -> None:
        folder = job_folder(self.output_dir, s.name)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / DONE_FILE).unlink(missing_ok=True)  # a result of this stage is this job's
        job = self.engine.submit(s, res, folder)
        self.running[s.name] = job
        self.waiting.remove(s)
        now = round(time.time(), 3)
        self.log.mark(
            s.name,
            s.key,
            "running",
            order=self.order[s.name],
            started_at=now,
            submitted_at=now,
            executor=self.engine.name,
            job_id=job.job_id,
            log=job.log,
        )
        logger.info("%s: submitted as job %s (%s); log: %s", s.name, job.job_id, _fmt(res), job.log)

    def too_big(self, s: Step) -> ConfigError:
        """The error when stage ``s`` can never start: it asks for more GPUs than the engine has."""
        kind = stage_kind(s.name)
        return ConfigError(
            f"{s.name} asks for {self.engine.resources(kind).gpus} GPU(s), "
            f"more than {self.engine.name} has: lower experiment.resources.{kind}.gpus"
        )

    def _mark_done(self, step: Step, times: dict[str, Any], entry: dict[str, Any]) -> None:
        info = {
            **_job_info(entry),
            "order": self.order[step.name],
            "started_at": times["started_at"],
            "ended_at": times["ended_at"],
            "wall_time_s": round(times["ended_at"] - times["started_at"], 1),
            "host": times.get("host"),
        }
        self.log.mark(step.name, step.key, "done", **info)
        self.finished.add(step.name)


def _job_info(entry: dict[str, Any]) -> dict[str, Any]:
    keep = ("order", "started_at", "submitted_at", "executor", "job_id", "log")
    return {k: entry[k] for k in keep if k in entry}


def _fmt(res: Resources) -> str:
    parts = [f"{res.gpus} GPU(s)"]
    if res.cpus:
        parts.append(f"{res.cpus} CPU(s)")
    if res.partition:
        parts.append(f"partition {res.partition}")
    return ", ".join(parts)
