"""The paper's experiment in one command: base -> DPO and DecPO (and baselines) -> probes -> eval -> report.

Stages and where they write (under the experiment folder), in run order:

    train/<method>-s<seed>/     training runs (resumable on their own), every method x every seed
    probes/                     one stage probing base and every trained model (labels ``dpo-s0``,
                                ``decpo-s1``, ...): probes.csv (all probe sets), probe_sets.json, and one
                                subfolder per probe set with its own probes.csv and plots
    sae/                        with experiment.sae: the SAE stage (``probes/sae``, `decpo.experiment.sae_stage`):
                                sae.csv, sae.json and the SAE trained on base (sae/sae/, sparsify's format)
    eval/<task>/<model>/        results.json, samples.jsonl per model and task
    eval/<task>@<N>/<model>/    with experiment.curve_steps: the learning curve's points, each trained
                                model's checkpoint-<N> (quick evaluation, `decpo.reports.learning_curves`)
    primary.json                the primary outcome (task, measure), recorded before any stage runs
    report.md, figures/         the report
    stages.json                 each stage's config key, status, start and end time, wall time and position in
                                the plan (and, run as a job, its job id and log)
    jobs/<stage>/               with experiment.executor local, slurm or ray: each stage's job files and log

Probe sets: see `decpo.experiment.probe_texts`. The stages themselves: `decpo.experiment.stages`.

`sweep_strength` (``decpo sweep --reg-weights``) trains DecPO once per strength and seed and writes
``strength.md``; `sweep_layers` (``decpo sweep --layers``) trains DPO and DecPO at each layer per seed and
writes ``layers.md``. The report of ``decpo run`` links the strength sweep when
``<output_dir>/<experiment.strength_sweep_dir>/strength.md`` exists (default ``strength/``; an absolute path is
used as is).

Re-running the same command skips finished stages (same key) and resumes an interrupted training. A
changed config changes the keys of the stages that depend on it: those run again, and an old training
folder is kept aside as ``<name>.stale-<key>`` rather than deleted. Every key holds the decpo version
(`decpo.experiment.plan.stage_key`), so a new version reruns every stage instead of reusing the old code's
results.

Where the stages run (``experiment.executor``): ``sequential`` (the default) runs them one after another in
this process, in the plan's order. ``local``, ``slurm`` and ``ray`` run each stage as a job of that engine
(`decpo.experiment.executors.dispatch`: submitit's local executor, Slurm through submitit, Ray tasks),
several at a time: each stage starts once the stages it comes after (`Plan.add`'s ``after``) are done: the
pairs stage before everything, a model's training before its probes and evaluations, the report after all
of them. Only the driver writes ``stages.json``, as each job ends, with the job's own start and end times
(``started_at``, ``ended_at``). The stage keys, and so the results, do not depend on the executor: the
experiment section is no part of any key.

Several devices: the experiment is driven by ONE process. With ``num_processes`` > 1 (``decpo run
--num-processes N``) each training stage is launched as N data-parallel processes (``decpo train`` under
torchrun / ``accelerate launch``, `decpo.training.run.launch`) and waited for; probes, evaluations and the
report run in the driver. Launched itself as several processes (``accelerate launch``, ``torchrun``) it
refuses to start (`check_single_process`): the probe and evaluation stages are single-device code, and
the other processes would wait at a barrier through all of them, past the process group's timeout
(30 minutes by default), while every write of the stage log, the stale moves and the report would need
a guard of its own.
"""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path

from decpo.config import ConfigError, RunConfig, save_config
from decpo.config.sweeps import (
    layer_label,
    layer_overrides,
    strength_label,
    strength_overrides,
    sweep_layer_values,
)
from decpo.experiment.eval_stages import add_curve_evals, add_evals
from decpo.experiment.executors.dispatch import make_engine
from decpo.experiment.plan import Plan, stage_key, training_key
from decpo.experiment.sae_stage import SAE_DIR, SAE_STAGE, sae_key, sae_stage
from decpo.experiment.stages import (
    add_pairs,
    eval_tasks,
    probe_key,
    probe_stage,
    train_stage,
)
from decpo.io import check_writable
from decpo.names import BASE
from decpo.probes.sae_settings import require_sparsify
from decpo.records import StageLog, write_primary
from decpo.reports.experiment_report import write_report
from decpo.reports.primary import resolve_primary
from decpo.reports.sweeps import write_layers, write_strength
from decpo.training.launch import world_size


def check_single_process(what: str = "decpo run") -> None:
    """Refuse to drive an experiment from several processes (see the module docstring for why)."""
    if world_size() > 1:
        raise ConfigError(
            f"{what} is driven by one process, but this is one of {world_size()} (WORLD_SIZE): run it without "
            "`accelerate launch` or `torchrun`, and add `--num-processes N` to train each stage on N "
            "processes (the probes, evaluations and report run on one device)"
        )


def _begin(cfg: RunConfig, output_dir: str | Path, argv: list[str] | None) -> tuple[Path, str, Plan]:
    """An experiment folder made ready: checked, its config saved; the command line and the plan (with its
    stage log)."""
    check_single_process()
    output_dir = Path(output_dir)
    check_writable(output_dir)
    save_config(cfg, output_dir / "config.yaml")
    command = "decpo " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    return output_dir, command, Plan(StageLog(output_dir / "stages.json"))


def _run(plan: Plan, cfg: RunConfig, output_dir: Path, num_processes: int) -> None:
    """Run ``plan`` on ``experiment.executor``: in this process, or as jobs (`decpo.experiment.executors`)."""
    plan.run(make_engine(cfg.experiment, num_processes), output_dir)


def _add_training(
    plan: Plan, run_cfg: RunConfig, label: str, output_dir: Path, first: list[str], num_processes: int
) -> tuple[str, str]:
    """``train/<label>`` of ``run_cfg`` after ``first``; returns the trained model's path and the stage key."""
    key = training_key(run_cfg)
    folder = output_dir / "train" / label
    name = f"train/{label}"
    plan.add(name, key, train_stage(run_cfg, folder, plan.log, name, key, num_processes), after=first)
    return str(folder / "final"), key


def _base_model(cfg: RunConfig) -> tuple[dict[str, str], dict[str, str]]:
    """``(label -> model spec, label -> stage key)`` holding the base model, the trained ones to be added."""
    return {BASE: cfg.model.model_name_or_path}, {BASE: stage_key(cfg.to_dict()["model"])}


def _add_probes(
    plan: Plan,
    cfg: RunConfig,
    models: dict[str, str],
    keys: dict[str, str],
    output_dir: Path,
    first: list[str],
    layers: list[int] | None = None,
) -> None:
    """One probe stage: base and every trained model of ``models`` (at ``layers``, None: every layer), after
    all their trainings."""
    trainings = [f"train/{label}" for label in models if label != BASE]
    stage = probe_stage(cfg, models, output_dir / "probes", layers)
    plan.add("probes", probe_key(cfg, keys, layers), stage, after=[*first, *trainings])
    if cfg.experiment.sae:  # opt-in: minutes of SAE training
        require_sparsify("experiment.sae")  # before any stage runs
        sae = sae_stage(cfg, models, output_dir / SAE_DIR)
        plan.add(SAE_STAGE, sae_key(cfg, keys), sae, after=[*first, *trainings])


def run_experiment(
    cfg: RunConfig, output_dir: str | Path, argv: list[str] | None = None, num_processes: int = 1
) -> Path:
    """Train, probe, evaluate and report; returns the path of ``report.md``.

    ``num_processes`` > 1: each training stage runs as that many data-parallel processes.
    """
    tasks = eval_tasks(cfg)
    # the primary outcome, checked against the evaluated tasks before anything is written, and recorded
    # before any stage runs
    primary = resolve_primary(cfg.experiment.primary, tasks)
    output_dir, command, plan = _begin(cfg, output_dir, argv)
    if primary is not None:
        write_primary(output_dir, primary.record(), time.time())
    first = add_pairs(plan, cfg, tasks, output_dir)
    models, keys = _base_model(cfg)
    for seed in cfg.experiment.seeds:
        for method in cfg.experiment.methods:
            label = f"{method}-s{seed}"
            run_cfg = cfg.replace(**{"objective.name": method, "train.seed": seed})
            models[label], keys[label] = _add_training(plan, run_cfg, label, output_dir, first, num_processes)
    _add_probes(plan, cfg, models, keys, output_dir, first)
    add_evals(plan, cfg, tasks, models, keys, output_dir, first)
    add_curve_evals(plan, cfg, tasks, models, keys, output_dir, first)

    t0 = time.perf_counter()
    _run(plan, cfg, output_dir, num_processes)
    return write_report(
        output_dir,
        cfg,
        models=list(models),
        tasks=tasks,
        command=command,
        total_wall_s=time.perf_counter() - t0,
        stage_order=plan.order,
    )


def sweep_layers(
    cfg: RunConfig,
    output_dir: str | Path,
    layers: list[int],
    argv: list[str] | None = None,
    num_processes: int = 1,
) -> Path:
    """DPO and DecPO at each regularized layer, per seed of ``experiment.seeds``; returns ``layers.md``.

    Stages: per seed ``train/dpo-s<seed>`` (the same training as `run_experiment`'s DPO) and
    ``train/decpo-L<LL>-s<seed>`` per layer (``train.reg_layers=[layer]``, `decpo.config.sweeps.layer_label`),
    ``probes`` (base and every run at the swept layers, the probe sets of
    `decpo.experiment.probe_texts.probe_sets`), ``eval/<task>/<label>`` for base and each run. Writes
    ``layers.md``, ``layers.csv``, ``layers.png`` and ``layers_summary.txt`` (`decpo.reports.sweeps.write_layers`):
    per layer the manipulation checks (decorrelation at it, DecPO(L) - DPO paired by seed) and the primary
    outcome (DecPO(L) - DPO paired by seed and item). Resumable as `run_experiment` is.
    """
    layers = sweep_layer_values(layers)
    output_dir, command, plan = _begin(cfg, output_dir, argv)
    tasks = eval_tasks(cfg)
    first = add_pairs(plan, cfg, tasks, output_dir)
    models, keys = _base_model(cfg)
    runs: dict[int, dict[int, str]] = {}
    reference: dict[int, str] = {}
    for seed in cfg.experiment.seeds:
        reference[seed] = f"dpo-s{seed}"
        arms = {reference[seed]: {"objective.name": "dpo"}}  # as `run_experiment` trains DPO
        for layer in layers:
            runs.setdefault(layer, {})[seed] = layer_label(layer, seed)
            arms[runs[layer][seed]] = layer_overrides(layer)
        for label, overrides in arms.items():
            run_cfg = cfg.replace(**{**overrides, "train.seed": seed})
            models[label], keys[label] = _add_training(plan, run_cfg, label, output_dir, first, num_processes)
    # sparse probing at every swept layer (unless set, or off): the base model's neurons needed at each
    probe_cfg = cfg
    if cfg.experiment.sparse_probing_layers is None:
        probe_cfg = cfg.replace(**{"experiment.sparse_probing_layers": list(layers)})
    _add_probes(plan, probe_cfg, models, keys, output_dir, first, layers=layers)
    add_evals(plan, cfg, tasks, models, keys, output_dir, first)
    _run(plan, cfg, output_dir, num_processes)
    return write_layers(output_dir, cfg, runs, reference, tasks, command, stage_order=plan.order)


def sweep_strength(
    cfg: RunConfig,
    output_dir: str | Path,
    values: list[float],
    argv: list[str] | None = None,
    num_processes: int = 1,
) -> Path:
    """DecPO once per strength and per seed of ``experiment.seeds``; returns the path of ``strength.md``.

    Stages: ``train/decpo-w<value>-s<seed>`` for each value x seed (value: see `strength_overrides`),
    ``probes`` (base and every run, the probe sets of `decpo.experiment.probe_texts.probe_sets`),
    ``eval/<task>/<label>`` for base and each run. Writes ``strength.csv``, ``strength.md`` and
    ``strength.png``: decorrelation at the regularized layer(s) and the headline task measures against the
    strength, with 95% intervals over seeds (with one seed: the evaluation's bootstrap over items for task
    measures, none for probes), and each strength minus strength 0 paired by seed (one seed: paired
    bootstrap over items). Resumable as `run_experiment` is.
    """
    output_dir, command, plan = _begin(cfg, output_dir, argv)
    tasks = eval_tasks(cfg)
    first = add_pairs(plan, cfg, tasks, output_dir)
    models, keys = _base_model(cfg)
    runs: dict[float, dict[int, str]] = {}
    for value in values:
        overrides = strength_overrides(cfg, value)
        for seed in cfg.experiment.seeds:
            label = strength_label(value, seed)
            run_cfg = cfg.replace(**{"objective.name": "decpo", "train.seed": seed, **overrides})
            models[label], keys[label] = _add_training(plan, run_cfg, label, output_dir, first, num_processes)
            runs.setdefault(value, {})[seed] = label
    _add_probes(plan, cfg, models, keys, output_dir, first)
    add_evals(plan, cfg, tasks, models, keys, output_dir, first)
    _run(plan, cfg, output_dir, num_processes)
    return write_strength(output_dir, cfg, runs, tasks, command, stage_order=plan.order)


__all__ = ["check_single_process", "run_experiment", "sweep_layers", "sweep_strength"]
