"""``experiment.executor=ray``: each stage a Ray task in a worker process started for it alone
(``max_calls=1``), the driver's ``DECPO_*``, ``HF_*``, ``PYTHONPATH`` passed in the job's ``runtime_env``.
Its log is ``ray-<time>.log`` in the stage's job folder. Ray's tasks end with the driver that started them.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from decpo.config import ConfigError
from decpo.experiment.executors.base import (
    Job,
    JobFailed,
    Resources,
    Step,
    error_line,
    forwarded_env,
    torch_threads,
)
from decpo.experiment.executors.worker import run_stage

if TYPE_CHECKING:
    from decpo.config.experiment_settings import ExperimentSettings


class RayJob:
    """One Ray task running a stage."""

    def __init__(self, ref: Any, log: str):
        self._ref, self.log = ref, log
        self.job_id = ref.task_id().hex()

    def done(self) -> bool:
        import ray  # lazy: optional

        ready, _ = ray.wait([self._ref], timeout=0)
        return bool(ready)

    def result(self) -> dict[str, Any]:
        import ray  # lazy: optional

        try:
            return ray.get(self._ref)
        except ray.exceptions.RayError as e:
            raise JobFailed(error_line(str(e))) from e

    def cancel(self) -> None:
        import ray  # lazy: optional

        ray.cancel(self._ref, force=True)


class RayEngine:
    """``experiment.executor=ray``: one Ray task per stage, each in a worker process of its own."""

    name = "ray"
    poll_s = 0.5

    def __init__(self, exp: ExperimentSettings, num_processes: int = 1):
        try:
            import ray  # lazy: optional
        except ImportError as e:
            raise ConfigError("experiment.executor=ray needs Ray: pip install 'decpo[ray]' (or ray)") from e
        self.exp, self.num_processes = exp, num_processes
        self.max_parallel = exp.max_parallel
        self._started = False
        if not ray.is_initialized():
            self._init(ray)
            self._started = True
        self._has_gpus = ray.cluster_resources().get("GPU", 0) > 0
        # Ray gives a job OMP_NUM_THREADS = its num_cpus; a local Ray keeps torch's threads of this process
        # instead, so that CPU results are those of a sequential run
        self._threads = None if exp.ray.address else torch_threads()
        self._remote = ray.remote(max_calls=1)(run_stage)  # a fresh worker process per stage

    def _init(self, ray: Any) -> None:
        """Connect to ``experiment.ray.address``, or start a local Ray."""
        runtime_env = {"env_vars": forwarded_env()}
        if self.exp.ray.address:
            ray.init(address=self.exp.ray.address, runtime_env=runtime_env, log_to_driver=False)
        else:  # a local Ray: as many one-CPU jobs at once as max_parallel
            ray.init(
                num_cpus=self.max_parallel or os.cpu_count(),
                runtime_env=runtime_env,
                include_dashboard=False,
                log_to_driver=False,
            )

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
        return RayJob(ref, log)

    def release(self, job: Job) -> None:
        pass

    def reattach(self, entry: dict[str, Any], folder: Path) -> Job | None:
        return None  # a Ray task ends with the driver that started it

    def interrupt(self, running: dict[str, Job]) -> None:
        for job in running.values():
            job.cancel()

    def close(self) -> None:
        if self._started:
            import ray  # lazy: optional

            ray.shutdown()
