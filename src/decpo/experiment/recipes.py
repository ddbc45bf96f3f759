"""The paper's experiment in one command: base -> DPO and DecPO (and baselines) -> probes -> eval -> report.

Stages and where they write (under the experiment folder), in run order:

    train/<method>-s<seed>/     training runs (resumable on their own), every method x every seed
    probes/                     one stage probing base and every trained model (labels ``dpo-s0``,
                                ``decpo-s1``, ...): probes.csv (all probe sets), probe_sets.json, and one
                                subfolder per probe set with its own probes.csv and plots
    eval/<task>/<model>/        results.json, samples.jsonl per model and task
    report.md, figures/         the report
    stages.json                 each stage's config key, status, start and end time, wall time and position in
                                the plan (and, run as a job, its job id and log)
    jobs/<stage>/               with experiment.executor local, slurm or ray: each stage's job files and log

Probe sets (`probe_sets`): the held-out prompts, read at their last token (the paper's probe, and the
penalty's position when ``train.reg_tokens`` is ``prompt_last``); for any other ``train.reg_tokens``
also the held-out prompt + chosen answer (+ EOS, as TRL appends it), read at its last token, with
``@answer_last`` appended to the site in probes.csv.

`sweep_strength` (``decpo sweep --reg-weights``) trains DecPO once per strength and seed and writes
``strength.md``; the report of ``decpo run`` links it when ``<output_dir>/<experiment.strength_sweep_dir>/
strength.md`` exists (default ``strength/``; an absolute path is used as is).

Re-running the same command skips finished stages (same key) and resumes an interrupted training. A
changed config changes the keys of the stages that depend on it: those run again, and an old training
folder is kept aside as ``<name>.stale-<key>`` rather than deleted. Every key holds the decpo version
(`stage_key`), so a new version reruns every stage instead of reusing the old code's results.

Where the stages run (``experiment.executor``): ``sequential`` (the default) runs them one after another in
this process, in the plan's order. ``local``, ``slurm`` and ``ray`` run each stage as a job of that engine
(`decpo.experiment.executors.dispatch`: submitit's local executor, Slurm through submitit, Ray tasks), several at a time: each stage
starts once the stages it comes after (`Plan.add`'s ``after``) are done: the pairs stage before everything,
a model's training before its probes and evaluations, the report after all of them. Only the driver writes
``stages.json``, as each job ends, with the job's own start and end times (``started_at``, ``ended_at``).
The stage keys, and so the results, do not depend on the executor: the experiment section is no part of any
key.

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

import dataclasses
import json
import logging
import os
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import decpo
from decpo.config import RunConfig, save_config
from decpo.config.sweeps import parse_values, strength_label, strength_overrides
from decpo.io import atomic_write_json, atomic_write_text, check_writable
from decpo.io import stable_hash as config_key
from decpo.models.hooks import parse_layers
from decpo.names import BASE, MLP_UP_PROJ
from decpo.records import StageLog

if TYPE_CHECKING:
    from decpo.experiment.executors.dispatch import Engine

logger = logging.getLogger(__name__)



def stage_key(parts: dict[str, Any]) -> str:
    """The config key of a stage: a hash of what it depends on and of the decpo version that runs it."""
    return config_key({**parts, "decpo": decpo.__version__})


def training_key(run_cfg: RunConfig) -> str:
    """The key of a training stage: its run's whole config but the experiment section, which only chooses
    what runs (methods, seeds, executor)."""
    return stage_key({k: v for k, v in run_cfg.to_dict().items() if k != "experiment"})


class Step(NamedTuple):
    """One stage of a plan: its name, config key, function, and the stages it comes after."""

    name: str
    key: str
    fn: Callable[[], Any]
    after: tuple[str, ...] = ()


@dataclass
class Plan:
    """The stages of one experiment, in order, with what each comes after, and a progress overview."""

    log: StageLog
    steps: list[Step] = field(default_factory=list)

    def add(
        self, name: str, key: str, fn: Callable[[], Any], after: list[str] | tuple[str, ...] = ()
    ) -> None:
        """Add a stage that runs once the stages ``after`` are done (each must be in the plan already, so
        the plan's order is always a valid order to run it in)."""
        missing = [a for a in after if a not in self.order]
        if missing:
            raise ValueError(f"stage {name!r} comes after {missing}, which are not in the plan (yet)")
        self.steps.append(Step(name, key, fn, tuple(after)))

    @property
    def order(self) -> list[str]:
        return [s.name for s in self.steps]

    def run(self, engine: Engine | None = None, output_dir: Path | None = None) -> None:
        """Run the stages not done yet: in this process in the plan's order (``engine`` None; a stage that
        raises stops the run), or as jobs of ``engine`` (`decpo.experiment.executors.dispatch.dispatch`; its job folders under
        ``output_dir``), which raises `decpo.experiment.executors.dispatch.StagesFailed` once every stage that can run has run."""
        if engine is not None:
            from decpo.experiment.executors.dispatch import dispatch

            dispatch(self, engine, output_dir if output_dir is not None else self.log.path.parent)
            return
        total = len(self.steps)
        todo = [s.name for s in self.steps if not self.log.done(s.name, s.key)]
        logger.info("%d stages, %d to run: %s", total, len(todo), ", ".join(todo) or "none")
        for i, (name, key, fn, _) in enumerate(self.steps, 1):
            if self.log.done(name, key):
                logger.info("[%d/%d] %s: done before, skipped", i, total, name)
                continue
            logger.info("[%d/%d] %s ...", i, total, name)
            started = round(time.time(), 3)
            self.log.mark(name, key, "running", order=i, started_at=started)
            t0 = time.perf_counter()
            try:
                fn()
            except Exception as e:
                self.log.mark(
                    name,
                    key,
                    "failed",
                    order=i,
                    started_at=started,
                    ended_at=round(time.time(), 3),
                    error=repr(e),
                )
                raise
            wall = time.perf_counter() - t0
            self.log.mark(
                name,
                key,
                "done",
                wall_time_s=round(wall, 1),
                order=i,
                started_at=started,
                ended_at=round(time.time(), 3),
            )
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
    from decpo.config import ConfigError
    from decpo.evaluation.registry import EvalError, get_task, task_names

    if cfg.experiment.eval_tasks:
        for name in cfg.experiment.eval_tasks:  # a typo stops the run now, not at its first evaluation
            try:
                get_task(name)
            except EvalError as e:
                raise ConfigError(f"experiment.eval_tasks: {e}") from e
        return list(cfg.experiment.eval_tasks)
    tasks = [cfg.data.task] if cfg.data.task in task_names() and not cfg.data.path else []
    if "sycophancy" not in tasks and _real_data_available(cfg):
        tasks.append("sycophancy")
    return tasks


def _train_stage(
    run_cfg: RunConfig, folder: Path, log: StageLog, name: str, key: str, num_processes: int = 1
) -> Callable[[], None]:
    previous = log.stages.get(name, {}).get("key")  # read now: the plan marks the stage with the new key

    def stage() -> None:
        from decpo.training.launch import launch
        from decpo.training.run import train

        if previous is not None and previous != key and folder.exists():
            aside = folder.with_name(f"{folder.name}.stale-{previous}")
            logger.info("config changed: keeping the old %s as %s", folder, aside)
            os.replace(folder, aside)
        if num_processes <= 1:
            train(run_cfg, folder)
            return
        # `decpo train` on this config in N processes; not config.yaml, which the run writes (and a resumed
        # run compares with its config)
        launch_config = folder / "launch.yaml"
        save_config(run_cfg, launch_config)
        args = ["train", "--config", str(launch_config), "--output-dir", str(folder)]
        code = launch(num_processes, args)
        if code != 0:
            raise RuntimeError(
                f"{name}: the {num_processes}-process training exited with code {code} (its output is above); "
                "re-run the same command to resume it"
            )

    return stage


def eval_chat_template(cfg: RunConfig) -> bool:
    """Whether evaluation uses the chat template: ``experiment.eval_chat_template``, or with ``auto`` the
    layout the models were trained on (``data.chat_template``), for the base model too."""
    setting = cfg.experiment.eval_chat_template
    return cfg.data.chat_template if setting == "auto" else bool(setting)


def _eval_settings(cfg: RunConfig) -> dict:
    """What an evaluation stage depends on besides the model and the task."""
    settings = {
        k: v for k, v in cfg.to_dict()["experiment"].items() if k.startswith("eval_") and k != "eval_tasks"
    }
    return {
        **settings,
        "chat_template": eval_chat_template(cfg),
        "beta": cfg.train.beta,
        "data_dir": cfg.data.data_dir,
        "synthetic_answer": cfg.data.synthetic_answer,
        "pairs": cfg.to_dict()["pairs"] if cfg.pairs.source else None,  # the held-out pairs scored
    }


def _eval_stage(
    cfg: RunConfig, task: str, model_spec: str, out: Path, pairs_path: Path | None = None
) -> Callable[[], None]:
    def stage() -> None:
        from decpo.evaluation.config import EvalConfig
        from decpo.evaluation.runner import evaluate

        evaluate(
            EvalConfig(
                task=task,
                model=model_spec,
                prompts_path=cfg.experiment.eval_prompts,
                pairs_path=str(pairs_path) if pairs_path is not None and task == "toxicity" else None,
                limit=cfg.experiment.eval_limit,
                seed=0,  # the same items for every method and seed
                batch_size=cfg.experiment.eval_batch_size,
                data_dir=cfg.data.data_dir,
                beta=cfg.train.beta,
                dtype=cfg.model.dtype,
                generate=cfg.experiment.eval_generate,
                chat_template=eval_chat_template(cfg),
                synthetic_answer=cfg.data.synthetic_answer,  # the answers as trained
                progress=True,
            ),
            out,
        )

    return stage


@dataclass(frozen=True)
class ProbeSet:
    """One set of probe texts and the token the probes read (always the last token of each text)."""

    name: str  # subfolder of probes/ and key of probe_sets.json
    texts: str  # "prompt" (held-out prompts) or "prompt+chosen" (held-out prompt + chosen answer + EOS)
    site_suffix: str  # appended to the site in the merged probes.csv ("" for the held-out prompts)
    position: str  # in words, for the report
    penalty_position: bool  # whether this set reads the token the penalty is computed on


def probe_sets(cfg: RunConfig) -> list[ProbeSet]:
    """The held-out prompts (the paper's probe); plus prompt + chosen answer when the penalty is elsewhere."""
    tokens = cfg.train.reg_tokens
    sets = [
        ProbeSet(
            "heldout_prompts",
            "prompt",
            "",
            "last token of each held-out prompt (the paper's probe)",
            tokens == "prompt_last",
        )
    ]
    if tokens != "prompt_last":
        where = (
            "the penalty's token (train.reg_tokens=last)"
            if tokens == "last"
            else f"its last token; the penalty (train.reg_tokens={tokens}) averages the answer's tokens, so "
            "this is the nearest single-token probe, not the penalty's exact input"
        )
        sets.append(
            ProbeSet(
                "penalty_position",
                "prompt+chosen",
                "@answer_last",
                f"last token of held-out prompt + chosen answer + EOS: {where}",
                tokens == "last",
            )
        )
    return sets


def heldout_records(cfg: RunConfig) -> list[dict]:
    """The held-out pairs of the training data, as training holds them out (`decpo.training.run.load_records`:
    ``data.eval_path``, the last ``eval_fraction`` of ``data.path``, or the task's eval split), with the data
    seed 0 (the same texts for every model and seed) and no ``data.max_eval_samples`` cap."""
    from decpo.training.data import load_records

    return load_records(cfg.replace(**{"train.seed": 0, "data.max_eval_samples": None}))[1]


def probe_texts(cfg: RunConfig, probe_set: ProbeSet, eos_token: str | None = None) -> list[str]:
    """The texts of ``probe_set``: the first ``experiment.probe_num_texts`` held-out records."""
    from decpo.data import DataError
    from decpo.probes.runner import _prompt_text

    records = heldout_records(cfg)
    texts = []
    for r in records:
        text = _prompt_text(r["prompt"])
        if probe_set.texts == "prompt+chosen":
            text += _prompt_text(r["chosen"])
            if eos_token and not text.endswith(eos_token):
                text += eos_token  # TRL appends EOS to each answer: the penalty's `last` token
        if text.strip():
            texts.append(text)
    texts = texts[: cfg.experiment.probe_num_texts]
    if len(texts) < 2:
        raise DataError(f"the probes need at least 2 held-out texts, found {len(texts)}")
    return texts


def probe_sites(cfg: RunConfig) -> list[str]:
    return list(dict.fromkeys([MLP_UP_PROJ, cfg.train.reg_site]))


def _probe_key(cfg: RunConfig, model_keys: dict[str, str]) -> str:
    return stage_key(
        {
            "models": model_keys,
            "n": cfg.experiment.probe_num_texts,
            "texts": {k: v for k, v in cfg.to_dict()["data"].items() if k != "max_train_samples"},
            "sets": [dataclasses.asdict(s) for s in probe_sets(cfg)],
            "sites": probe_sites(cfg),
            "max_length": cfg.train.max_length,
            "dtype": cfg.model.dtype,
        }
    )


def _probe_stage(cfg: RunConfig, models: dict[str, str], out: Path) -> Callable[[], None]:
    def stage() -> None:
        from decpo.models import load_tokenizer
        from decpo.probes.runner import WEIGHT_SITE, probe_models, rows_to_csv

        m = cfg.model
        eos = load_tokenizer(
            m.model_name_or_path, m.gguf_file, m.trust_remote_code, m.model_revision
        ).eos_token
        rows: list[dict] = []
        info: dict[str, dict] = {}
        for i, ps in enumerate(probe_sets(cfg)):
            texts = probe_texts(cfg, ps, eos)
            report = probe_models(
                models,
                texts,
                out / ps.name,
                sites=probe_sites(cfg),
                batch_size=16,
                max_length=cfg.train.max_length,
                dtype=cfg.model.dtype,
                weights=i == 0,  # the weight proxy does not depend on the texts
            )
            for r in report.rows:
                if ps.site_suffix and r["site"] != WEIGHT_SITE:
                    r = {**r, "site": r["site"] + ps.site_suffix}
                rows.append(r)
            info[ps.name] = {**dataclasses.asdict(ps), "n_texts": len(texts), "models": list(models)}
        atomic_write_text(out / "probes.csv", rows_to_csv(rows))
        atomic_write_json(out / "probe_sets.json", info)

    return stage


def check_single_process(what: str = "decpo run") -> None:
    """Refuse to drive an experiment from several processes (see the module docstring for why)."""
    from decpo.config import ConfigError
    from decpo.training.launch import world_size as _world_size

    if _world_size() > 1:
        raise ConfigError(
            f"{what} is driven by one process, but this is one of {_world_size()} (WORLD_SIZE): run it without "
            "`accelerate launch` or `torchrun`, and add `--num-processes N` to train each stage on N "
            "processes (the probes, evaluations and report run on one device)"
        )


def _begin(
    cfg: RunConfig, output_dir: str | Path, argv: list[str] | None
) -> tuple[Path, str, StageLog, Plan]:
    """An experiment folder made ready: checked, its config saved; the command line, stage log and plan."""
    check_single_process()
    output_dir = Path(output_dir)
    check_writable(output_dir)
    save_config(cfg, output_dir / "config.yaml")
    command = "decpo " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    log = StageLog(output_dir / "stages.json")
    return output_dir, command, log, Plan(log)


def run_experiment(
    cfg: RunConfig, output_dir: str | Path, argv: list[str] | None = None, num_processes: int = 1
) -> Path:
    """Train, probe, evaluate and report; returns the path of ``report.md``.

    ``num_processes`` > 1: each training stage runs as that many data-parallel processes.
    """
    output_dir, command, log, plan = _begin(cfg, output_dir, argv)
    exp = cfg.experiment

    tasks = eval_tasks(cfg)
    first = _add_pairs(plan, cfg, tasks, output_dir)
    models: dict[str, str] = {BASE: cfg.model.model_name_or_path}
    train_keys: dict[str, str] = {BASE: stage_key(cfg.to_dict()["model"])}
    for seed in exp.seeds:
        for method in exp.methods:
            label = f"{method}-s{seed}"
            run_cfg = cfg.replace(**{"objective.name": method, "train.seed": seed})
            key = training_key(run_cfg)
            folder = output_dir / "train" / label
            stage = _train_stage(run_cfg, folder, log, f"train/{label}", key, num_processes)
            plan.add(f"train/{label}", key, stage, after=first)
            models[label] = str(folder / "final")
            train_keys[label] = key

    # one probe stage: base and every trained model, every seed
    trainings = [f"train/{label}" for label in models if label != BASE]
    probes = _probe_stage(cfg, models, output_dir / "probes")
    plan.add("probes", _probe_key(cfg, train_keys), probes, after=[*first, *trainings])

    _add_evals(plan, cfg, tasks, models, train_keys, output_dir, first)

    t0 = time.perf_counter()
    _run(plan, cfg, output_dir, num_processes)
    from decpo.reports.experiment_report import write_report

    report = write_report(
        output_dir,
        cfg,
        models=list(models),
        tasks=tasks,
        command=command,
        total_wall_s=time.perf_counter() - t0,
        stage_order=plan.order,
    )
    return report


def _run(plan: Plan, cfg: RunConfig, output_dir: Path, num_processes: int) -> None:
    """Run ``plan`` on ``experiment.executor``: in this process, or as jobs (`decpo.experiment.executors.dispatch`)."""
    from decpo.experiment.executors.dispatch import make_engine

    plan.run(make_engine(cfg.experiment, num_processes), output_dir)


def _add_evals(
    plan: Plan,
    cfg: RunConfig,
    tasks: list[str],
    models: dict[str, str],
    keys: dict[str, str],
    out: Path,
    first: list[str],
) -> None:
    """``eval/<task>/<label>`` of every model, each after the model's training (and ``first``)."""
    heldout = out / PAIRS_DIR / "heldout.jsonl" if cfg.pairs.source else None
    for task in tasks:
        for label, spec in models.items():
            key = stage_key({"model": keys[label], "task": task, "eval": _eval_settings(cfg)})
            plan.add(
                f"eval/{task}/{label}",
                key,
                _eval_stage(cfg, task, spec, out / "eval" / task / label, heldout),
                after=[*first, *([f"train/{label}"] if label != BASE else [])],
            )


PAIRS_DIR = "pairs"


def check_pair_split(cfg: RunConfig, tasks: list[str]) -> dict[str, Any]:
    """The prompts the pairs are sampled from against the prompts evaluated by generation (toxicity):
    DataError when any is shared, before any long work; else what was compared, for the report."""
    from decpo.data.prompts import check_disjoint
    from decpo.evaluation.config import EvalConfig
    from decpo.evaluation.tasks.toxicity import toxicity_prompts
    from decpo.pairs.cache import config_prompts

    train = config_prompts(cfg)
    info: dict[str, Any] = {
        "pairs_source": cfg.pairs.source,
        "pairs_split": cfg.pairs.split,
        "n_train": len(train),
    }
    if "toxicity" in tasks:
        ecfg = EvalConfig(
            task="toxicity",
            data_dir=cfg.data.data_dir,
            prompts_path=cfg.experiment.eval_prompts,
            limit=cfg.experiment.eval_limit,
        )
        evals = [r["prompt"] for r in toxicity_prompts(ecfg)]
        where = cfg.experiment.eval_prompts or "toxicity (split eval)"
        check_disjoint(train, evals, f"pairs.source={cfg.pairs.source} (split {cfg.pairs.split})", where)
        info.update(eval_prompts=where, n_eval=len(evals), shared=0)
    return info


def _pairs_stage(cfg: RunConfig, out: Path, split: dict[str, Any]) -> Callable[[], None]:
    def stage() -> None:
        from decpo.pairs.cache import ensure_pairs
        from decpo.pairs.sampling import side_files

        path = ensure_pairs(cfg)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "summary.json", side_files(path)[1].read_text())
        atomic_write_json(out / "split.json", {**split, "pairs_file": str(path)})
        held = heldout_records(cfg)
        atomic_write_text(out / "heldout.jsonl", "".join(json.dumps(r, sort_keys=True) + "\n" for r in held))

    return stage


def _add_pairs(plan: Plan, cfg: RunConfig, tasks: list[str], out: Path) -> list[str]:
    """With ``pairs.source``: check the train/eval prompt split now, and build the pairs as the first stage.

    Returns what every other stage comes after: ``["pairs"]``, or ``[]`` without pairs."""
    if not cfg.pairs.source:
        return []
    from decpo.pairs.cache import pairs_key

    split = check_pair_split(cfg, tasks)
    plan.add(
        "pairs",
        stage_key({"pairs": pairs_key(cfg), "split": split, "data": cfg.to_dict()["data"]}),
        _pairs_stage(cfg, out / PAIRS_DIR, split),
    )
    return ["pairs"]


def sweep_layers(
    cfg: RunConfig,
    output_dir: str | Path,
    layers: list[int],
    argv: list[str] | None = None,
    num_processes: int = 1,
) -> Path:
    """DecPO once per regularized layer; the task's headline measure against the layer (the paper's Fig. 7)."""
    from decpo.reports.sweeps import write_sweep

    output_dir, command, log, plan = _begin(cfg, output_dir, argv)
    tasks = eval_tasks(cfg)
    first = _add_pairs(plan, cfg, tasks, output_dir)
    runs = {}
    for layer in layers:
        label = f"decpo-L{layer:02d}-s{cfg.train.seed}"
        run_cfg = cfg.replace(**{"objective.name": "decpo", "train.reg_layers": [layer]})
        key = training_key(run_cfg)
        folder = output_dir / "train" / label
        stage = _train_stage(run_cfg, folder, log, f"train/{label}", key, num_processes)
        plan.add(f"train/{label}", key, stage, after=first)
        for task in tasks:
            ekey = stage_key({"model": key, "task": task, "eval": _eval_settings(cfg)})
            heldout = output_dir / PAIRS_DIR / "heldout.jsonl" if cfg.pairs.source else None
            plan.add(
                f"eval/{task}/{label}",
                ekey,
                _eval_stage(cfg, task, str(folder / "final"), output_dir / "eval" / task / label, heldout),
                after=[*first, f"train/{label}"],
            )
        runs[layer] = label
    _run(plan, cfg, output_dir, num_processes)
    return write_sweep(output_dir, runs, tasks, command)


def sweep_strength(
    cfg: RunConfig,
    output_dir: str | Path,
    values: list[float],
    argv: list[str] | None = None,
    num_processes: int = 1,
) -> Path:
    """DecPO once per strength and per seed of ``experiment.seeds``; returns the path of ``strength.md``.

    Stages: ``train/decpo-w<value>-s<seed>`` for each value x seed (value: see `strength_overrides`),
    ``probes`` (base and every run, the probe sets of `probe_sets`), ``eval/<task>/<label>`` for base and
    each run. Writes ``strength.csv``, ``strength.md`` and ``strength.png``: decorrelation at the
    regularized layer(s) and the headline task measures against the strength, with 95% intervals over
    seeds (with one seed: the evaluation's bootstrap over items for task measures, none for probes), and
    each strength minus strength 0 paired by seed (one seed: paired bootstrap over items). Resumable as
    `run_experiment` is.
    """
    from decpo.reports.sweeps import write_strength

    output_dir, command, log, plan = _begin(cfg, output_dir, argv)
    tasks = eval_tasks(cfg)
    first = _add_pairs(plan, cfg, tasks, output_dir)
    models: dict[str, str] = {BASE: cfg.model.model_name_or_path}
    keys: dict[str, str] = {BASE: stage_key(cfg.to_dict()["model"])}
    runs: dict[float, dict[int, str]] = {}
    for value in values:
        overrides = strength_overrides(cfg, value)
        for seed in cfg.experiment.seeds:
            label = strength_label(value, seed)
            run_cfg = cfg.replace(**{"objective.name": "decpo", "train.seed": seed, **overrides})
            key = training_key(run_cfg)
            folder = output_dir / "train" / label
            stage = _train_stage(run_cfg, folder, log, f"train/{label}", key, num_processes)
            plan.add(f"train/{label}", key, stage, after=first)
            models[label] = str(folder / "final")
            keys[label] = key
            runs.setdefault(value, {})[seed] = label
    trainings = [f"train/{label}" for label in models if label != BASE]
    probes = _probe_stage(cfg, models, output_dir / "probes")
    plan.add("probes", _probe_key(cfg, keys), probes, after=[*first, *trainings])
    _add_evals(plan, cfg, tasks, models, keys, output_dir, first)
    _run(plan, cfg, output_dir, num_processes)
    return write_strength(output_dir, cfg, runs, tasks, command, stage_order=plan.order)


__all__ = [
    "ProbeSet",
    "config_key",
    "eval_chat_template",
    "eval_tasks",
    "heldout_records",
    "parse_layers",
    "parse_values",
    "probe_sets",
    "check_single_process",
    "probe_texts",
    "run_experiment",
    "stage_key",
    "strength_label",
    "strength_overrides",
    "sweep_layers",
    "sweep_strength",
]
