"""The paper's experiment in one command: base -> DPO and DecPO (and baselines) -> probes -> eval -> report.

Stages and where they write (under the experiment folder):

    train/<method>-s<seed>/     training runs (resumable on their own)
    probes/                     probes.csv and plots: base vs each method (seed of the first run)
    eval/<task>/<model>/        results.json, samples.jsonl per model and task
    report.md, figures/         the report
    stages.json                 each stage's config key, status and wall time

Re-running the same command skips finished stages (same key) and resumes an interrupted training. A
changed config changes the keys of the stages that depend on it: those run again, and an old training
folder is kept aside as ``<name>.stale-<key>`` rather than deleted.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from decpo.config import RunConfig, save_config
from decpo.io import atomic_write_json, check_writable
from decpo.io import stable_hash as config_key

logger = logging.getLogger("decpo.run")

BASE = "base"


class StageLog:
    """``stages.json``: per stage its key, status and wall time; written atomically after each change."""

    def __init__(self, path: Path):
        self.path = path
        self.stages: dict[str, dict] = json.loads(path.read_text()) if path.exists() else {}

    def done(self, name: str, key: str) -> bool:
        entry = self.stages.get(name, {})
        return entry.get("key") == key and entry.get("status") == "done"

    def mark(self, name: str, key: str, status: str, **extra: Any) -> None:
        self.stages[name] = {"key": key, "status": status, **extra}
        atomic_write_json(self.path, self.stages)


@dataclass
class Plan:
    """The stages of one experiment, in order, with a progress overview."""

    log: StageLog
    steps: list[tuple[str, str, Callable[[], Any]]] = field(default_factory=list)

    def add(self, name: str, key: str, fn: Callable[[], Any]) -> None:
        self.steps.append((name, key, fn))

    def run(self) -> None:
        total = len(self.steps)
        todo = [name for name, key, _ in self.steps if not self.log.done(name, key)]
        logger.info("%d stages, %d to run: %s", total, len(todo), ", ".join(todo) or "none")
        for i, (name, key, fn) in enumerate(self.steps, 1):
            if self.log.done(name, key):
                logger.info("[%d/%d] %s: done before, skipped", i, total, name)
                continue
            logger.info("[%d/%d] %s ...", i, total, name)
            self.log.mark(name, key, "running")
            t0 = time.perf_counter()
            fn()
            wall = time.perf_counter() - t0
            self.log.mark(name, key, "done", wall_time_s=round(wall, 1))
            logger.info("[%d/%d] %s: done in %.0f s", i, total, name, wall)


def _real_data_available(cfg: RunConfig) -> bool:
    from decpo.data import DataError, resolve_data_dir

    try:
        resolve_data_dir(cfg.data.data_dir)
        return True
    except DataError:
        return False


def eval_tasks(cfg: RunConfig) -> list[str]:
    """``experiment.eval_tasks``, or the training task plus sycophancy when real data is found."""
    from decpo.evaluation.tasks import EVAL_TASKS

    if cfg.experiment.eval_tasks:
        return list(cfg.experiment.eval_tasks)
    tasks = [cfg.data.task] if cfg.data.task in EVAL_TASKS and not cfg.data.path else []
    if "sycophancy" not in tasks and _real_data_available(cfg):
        tasks.append("sycophancy")
    return tasks


def _train_stage(run_cfg: RunConfig, folder: Path, log: StageLog, name: str, key: str) -> Callable[[], None]:
    previous = log.stages.get(name, {}).get("key")  # read now: the plan marks the stage with the new key

    def stage() -> None:
        from decpo.training.run import train

        if previous is not None and previous != key and folder.exists():
            aside = folder.with_name(f"{folder.name}.stale-{previous}")
            logger.info("config changed: keeping the old %s as %s", folder, aside)
            os.replace(folder, aside)
        train(run_cfg, folder)

    return stage


def _eval_settings(cfg: RunConfig) -> dict:
    """What an evaluation stage depends on besides the model and the task."""
    settings = {
        k: v for k, v in cfg.to_dict()["experiment"].items() if k.startswith("eval_") and k != "eval_tasks"
    }
    return {**settings, "beta": cfg.objective.beta, "data_dir": cfg.data.data_dir}


def _eval_stage(cfg: RunConfig, task: str, model_spec: str, out: Path) -> Callable[[], None]:
    def stage() -> None:
        from decpo.evaluation.tasks import EvalConfig, evaluate

        evaluate(
            EvalConfig(
                task=task,
                model=model_spec,
                limit=cfg.experiment.eval_limit,
                seed=0,  # the same items for every method and seed
                batch_size=cfg.experiment.eval_batch_size,
                data_dir=cfg.data.data_dir,
                beta=cfg.objective.beta,
                dtype=cfg.model.dtype,
                generate=cfg.experiment.eval_generate,
                chat_template=cfg.experiment.eval_chat_template,
                progress=True,
            ),
            out,
        )

    return stage


def _probe_stage(cfg: RunConfig, models: dict[str, str], out: Path) -> Callable[[], None]:
    def stage() -> None:
        from decpo.probes.cli import load_texts, probe_models

        source = cfg.data.path or cfg.data.task
        texts = load_texts(source, cfg.experiment.probe_num_texts, data_dir=cfg.data.data_dir)
        probe_models(
            models, texts, out, batch_size=16, max_length=cfg.train.max_length, dtype=cfg.model.dtype
        )

    return stage


def run_experiment(cfg: RunConfig, output_dir: str | Path, argv: list[str] | None = None) -> Path:
    """Train, probe, evaluate and report; returns the path of ``report.md``."""
    output_dir = Path(output_dir)
    check_writable(output_dir)
    save_config(cfg, output_dir / "config.yaml")
    command = "decpo " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    log = StageLog(output_dir / "stages.json")
    plan = Plan(log)
    exp = cfg.experiment
    # what every trained model depends on; the experiment section itself only chooses methods and seeds
    shared = {k: v for k, v in cfg.to_dict().items() if k != "experiment"}

    models: dict[str, str] = {BASE: cfg.model.name}
    train_keys: dict[str, str] = {BASE: config_key(cfg.to_dict()["model"])}
    for seed in exp.seeds:
        for method in exp.methods:
            label = f"{method}-s{seed}"
            run_cfg = cfg.replace(**{"objective.name": method, "train.seed": seed})
            key = config_key({**shared, "objective": run_cfg.to_dict()["objective"], "seed": seed})
            folder = output_dir / "train" / label
            plan.add(f"train/{label}", key, _train_stage(run_cfg, folder, log, f"train/{label}", key))
            models[label] = str(folder / "final")
            train_keys[label] = key

    first_seed = exp.seeds[0]
    probed = {BASE: models[BASE], **{m: models[f"{m}-s{first_seed}"] for m in exp.methods}}
    probe_key = config_key(
        {
            "models": {k: train_keys[k if k == BASE else f"{k}-s{first_seed}"] for k in probed},
            "n": exp.probe_num_texts,
            "texts": cfg.data.path or cfg.data.task,
        }
    )
    plan.add("probes", probe_key, _probe_stage(cfg, probed, output_dir / "probes"))

    tasks = eval_tasks(cfg)
    for task in tasks:
        for label, spec in models.items():
            key = config_key({"model": train_keys[label], "task": task, "eval": _eval_settings(cfg)})
            plan.add(
                f"eval/{task}/{label}", key, _eval_stage(cfg, task, spec, output_dir / "eval" / task / label)
            )

    t0 = time.perf_counter()
    plan.run()
    from decpo.reports.report import write_report

    report = write_report(
        output_dir,
        cfg,
        models=list(models),
        tasks=tasks,
        command=command,
        total_wall_s=time.perf_counter() - t0,
    )
    return report


def sweep_layers(
    cfg: RunConfig, output_dir: str | Path, layers: list[int], argv: list[str] | None = None
) -> Path:
    """DecPO once per regularized layer; the task's headline measure against the layer (the paper's Fig. 7)."""
    from decpo.reports.report import write_sweep

    output_dir = Path(output_dir)
    check_writable(output_dir)
    save_config(cfg, output_dir / "config.yaml")
    log = StageLog(output_dir / "stages.json")
    plan = Plan(log)
    tasks = eval_tasks(cfg)
    shared = {k: v for k, v in cfg.to_dict().items() if k != "experiment"}
    runs = {}
    for layer in layers:
        label = f"decpo-L{layer:02d}-s{cfg.train.seed}"
        run_cfg = cfg.replace(**{"objective.name": "decpo", "objective.layers": [layer]})
        key = config_key({**shared, "objective": run_cfg.to_dict()["objective"]})
        folder = output_dir / "train" / label
        plan.add(f"train/{label}", key, _train_stage(run_cfg, folder, log, f"train/{label}", key))
        for task in tasks:
            ekey = config_key({"model": key, "task": task, "eval": _eval_settings(cfg)})
            plan.add(
                f"eval/{task}/{label}",
                ekey,
                _eval_stage(cfg, task, str(folder / "final"), output_dir / "eval" / task / label),
            )
        runs[layer] = label
    plan.run()
    command = "decpo " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    return write_sweep(output_dir, runs, tasks, command)


def parse_layers(text: str) -> list[int]:
    """``"0-29"``, ``"3,7,15"`` or ``"0-29:4"`` (every 4th) -> a list of layers."""
    out: list[int] = []
    for part in text.split(","):
        part, _, step = part.partition(":")
        if "-" in part.strip()[1:]:
            lo, hi = part.rsplit("-", 1)
            out += list(range(int(lo), int(hi) + 1, int(step or 1)))
        else:
            out.append(int(part))
    if not out:
        raise ValueError(f"no layers in {text!r}")
    return out


__all__ = ["run_experiment", "sweep_layers", "parse_layers", "eval_tasks", "config_key"]
