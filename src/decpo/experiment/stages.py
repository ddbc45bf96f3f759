"""The stages of an experiment's plan and their keys: the pairs stage (`add_pairs`), trainings
(`train_stage`), the probe stage (`probe_stage`, `probe_key`), evaluations (`add_evals`, `eval_stage`) and the
learning curve's evaluations of checkpoints (`add_curve_evals`),
with the evaluation settings they share (`eval_tasks`, `eval_chat_template`, `eval_settings`).

Each builder returns the stage's function, a closure run later: in this process or, pickled by cloudpickle,
in a job (`decpo.experiment.executors`). Where the stages write is listed in `decpo.experiment.recipes`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from decpo.config import ConfigError, RunConfig, save_config
from decpo.data import DataError, resolve_data_dir
from decpo.data.prompts import EVAL_PARTS, check_disjoint
from decpo.evaluation.config import EvalConfig, scorer_specs
from decpo.evaluation.registry import EvalError, get_task, task_names
from decpo.evaluation.runner import evaluate
from decpo.evaluation.tasks.toxicity import toxicity_prompts
from decpo.experiment.plan import Plan, stage_key
from decpo.experiment.probe_texts import (
    SPARSE_FOLDS,
    heldout_records,
    pairs_file,
    probe_records,
    probe_sets,
    probe_sites,
    probe_texts,
    sparse_probing_layers,
    sparse_probing_plan,
)
from decpo.io import atomic_write_json, atomic_write_text
from decpo.models import load_tokenizer
from decpo.names import BASE
from decpo.pairs.cache import config_prompts, ensure_pairs, pairs_key
from decpo.pairs.sampling import side_files
from decpo.probes.options import SPARSE_PROBING
from decpo.probes.runner import WEIGHT_SITE, probe_models, rows_to_csv
from decpo.records import StageLog
from decpo.reports.learning_curves import curve_limit, curve_measure, result_path
from decpo.scoring.classifiers import make_scorer
from decpo.training.launch import launch
from decpo.training.run import train

logger = logging.getLogger(__name__)

PAIRS_DIR = "pairs"


def _real_data_available(cfg: RunConfig) -> bool:
    try:
        resolve_data_dir(cfg.data.data_dir)
        return True
    except DataError:
        return False


def eval_tasks(cfg: RunConfig) -> list[str]:
    """``experiment.eval_tasks``, or the training task plus sycophancy when real data is found."""
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


# --- pairs ---------------------------------------------------------------------------------------------------


def check_pair_split(cfg: RunConfig, tasks: list[str]) -> dict[str, Any]:
    """The prompts the pairs are sampled from against the prompts evaluated by generation (toxicity):
    DataError when any is shared, before any long work; else what was compared, for the report."""
    train_prompts = config_prompts(cfg)
    info: dict[str, Any] = {
        "pairs_source": cfg.pairs.source,
        "pairs_split": cfg.pairs.split,
        "n_train": len(train_prompts),
    }
    if "toxicity" in tasks:
        pairs_name = f"pairs.source={cfg.pairs.source} (split {cfg.pairs.split})"
        file = cfg.experiment.eval_prompts  # a file is evaluated whole; else the test part, dev for tuning
        parts: dict[str, list[str]] = {}
        for part in ("test",) if file else EVAL_PARTS:
            ecfg = EvalConfig(
                task="toxicity",
                data_dir=cfg.data.data_dir,
                prompts_path=file,
                limit=cfg.experiment.eval_limit,
                split=part,
            )
            parts[part] = [r["prompt"] for r in toxicity_prompts(ecfg)]
            check_disjoint(train_prompts, parts[part], pairs_name, file or f"toxicity (eval split, {part})")
        if "dev" in parts:
            check_disjoint(parts["dev"], parts["test"], "the dev prompts (tuning)", "the test prompts")
            info["n_dev"] = len(parts["dev"])
        where = file or "toxicity (eval split, test part)"
        info.update(eval_prompts=where, n_eval=len(parts["test"]), shared=0)
    return info


def pairs_stage(cfg: RunConfig, out: Path, split: dict[str, Any]) -> Callable[[], None]:
    """Build (or reuse) the pair file of ``pairs``; record its summary, the prompt split and the held-out pairs."""

    def stage() -> None:
        path = ensure_pairs(cfg)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "summary.json", side_files(path)[1].read_text())
        atomic_write_json(out / "split.json", {**split, "pairs_file": str(path)})
        held = heldout_records(cfg)
        atomic_write_text(out / "heldout.jsonl", "".join(json.dumps(r, sort_keys=True) + "\n" for r in held))

    return stage


def add_pairs(plan: Plan, cfg: RunConfig, tasks: list[str], out: Path) -> list[str]:
    """With ``pairs.source``: check the train/eval prompt split now, and build the pairs as the first stage.

    Returns what every other stage comes after: ``["pairs"]``, or ``[]`` without pairs."""
    if not cfg.pairs.source:
        return []
    split = check_pair_split(cfg, tasks)
    plan.add(
        "pairs",
        stage_key({"pairs": pairs_key(cfg), "split": split, "data": cfg.to_dict()["data"]}),
        pairs_stage(cfg, out / PAIRS_DIR, split),
    )
    return ["pairs"]


# --- training ------------------------------------------------------------------------------------------------


def train_stage(
    run_cfg: RunConfig, folder: Path, log: StageLog, name: str, key: str, num_processes: int = 1
) -> Callable[[], None]:
    """Train ``run_cfg`` into ``folder`` (an old folder of another key kept aside as ``<name>.stale-<key>``),
    in this process or as ``num_processes`` data-parallel processes; the pairs are the pairs stage's file."""
    previous = log.stages.get(name, {}).get("key")  # read now: the plan marks the stage with the new key

    def stage() -> None:
        if previous is not None and previous != key and folder.exists():
            aside = folder.with_name(f"{folder.name}.stale-{previous}")
            logger.info("config changed: keeping the old %s as %s", folder, aside)
            os.replace(folder, aside)
        if num_processes <= 1:
            train(run_cfg, folder, pairs_path=pairs_file(run_cfg))
            return
        # `decpo train` on this config in N processes; not config.yaml, which the run writes (and a resumed
        # run compares with its config). With pairs.source it finds the pairs stage's file (same content key)
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


# --- probes --------------------------------------------------------------------------------------------------


def probe_key(cfg: RunConfig, model_keys: dict[str, str], layers: list[int] | None = None) -> str:
    """The probe stage's key: the models' keys and what the probe texts, sites, layers (``layers`` None:
    every layer, a key without them) and pass depend on."""
    return stage_key(
        {
            **({"layers": list(layers)} if layers is not None else {}),
            "models": model_keys,
            "n": cfg.experiment.probe_num_texts,
            "texts": {k: v for k, v in cfg.to_dict()["data"].items() if k != "max_train_samples"},
            "sets": [dataclasses.asdict(s) for s in probe_sets(cfg)],
            "sites": probe_sites(cfg),
            "max_length": cfg.train.max_length,
            "dtype": cfg.model.dtype,
            # absent when off, so that turning it off gives the key of a stage without it
            **({"sparse_probing": sparse} if (sparse := sparse_probing_layers(cfg)) else {}),
        }
    )


def probe_stage(
    cfg: RunConfig, models: dict[str, str], out: Path, layers: list[int] | None = None
) -> Callable[[], None]:
    """Probe every model of ``models`` (label -> spec) on every probe set, at ``layers`` (None: every layer);
    ``probes.csv`` merges them. The held-out prompts' pass also runs k-sparse probing of their labelled
    concepts at ``experiment.sparse_probing_layers`` (`sparse_probing_plan`; what it covered and skipped in
    ``probe_sets.json``)."""

    def stage() -> None:
        m = cfg.model
        eos = load_tokenizer(
            m.model_name_or_path, m.gguf_file, m.trust_remote_code, m.model_revision
        ).eos_token
        rows: list[dict] = []
        info: dict[str, dict] = {}
        records = probe_records(cfg)
        sparse = sparse_probing_plan(cfg, records)
        for i, ps in enumerate(probe_sets(cfg)):
            texts = probe_texts(cfg, ps, eos, records)
            # the concepts are decided by the prompt: probed on the held-out prompts' set alone
            labels = sparse.labels if i == 0 and sparse.labels else None
            report = probe_models(
                models,
                texts,
                out / ps.name,
                sites=probe_sites(cfg),
                batch_size=cfg.probe.batch_size,
                max_length=cfg.train.max_length,
                dtype=cfg.model.dtype,
                weights=i == 0,  # the weight proxy does not depend on the texts
                layers="all" if layers is None else tuple(layers),
                regularized_layers=tuple(cfg.train.reg_layers),  # marked on the figures
                labels=labels,
                measures=(SPARSE_PROBING,) if labels else (),
                sparse_layers=tuple(sparse.layers),
                sparse_folds=SPARSE_FOLDS,
            )
            for r in report.rows:
                if ps.site_suffix and r["site"] != WEIGHT_SITE:
                    r = {**r, "site": r["site"] + ps.site_suffix}
                rows.append(r)
            info[ps.name] = {**dataclasses.asdict(ps), "n_texts": len(texts), "models": list(models)}
            if i == 0:
                info[ps.name]["sparse_probing"] = sparse.record()
        atomic_write_text(out / "probes.csv", rows_to_csv(rows))
        atomic_write_json(out / "probe_sets.json", info)

    return stage


# --- evaluation ----------------------------------------------------------------------------------------------


def eval_chat_template(cfg: RunConfig) -> bool:
    """Whether evaluation uses the chat template: ``experiment.eval_chat_template``, or with ``auto`` the
    layout the models were trained on (``data.chat_template``), for the base model too."""
    setting = cfg.experiment.eval_chat_template
    return cfg.data.chat_template if setting == "auto" else bool(setting)


def eval_settings(cfg: RunConfig) -> dict:
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


def pairs_scorer(cfg: RunConfig) -> str | None:
    """The scorer that ranked the training pairs: ``pairs.scorer`` when the run builds them, else unknown."""
    return cfg.pairs.scorer if cfg.pairs.source else None


def eval_config_scorer(cfg: RunConfig) -> str:
    """The toxicity evaluation's scorer(s): ``experiment.eval_scorer``, else the default that is not the
    pairs' scorer (`EvalConfig`)."""
    return EvalConfig(
        task="toxicity", scorer=cfg.experiment.eval_scorer, pairs_scorer=pairs_scorer(cfg)
    ).scorer


def eval_stage(
    cfg: RunConfig,
    task: str,
    model_spec: str,
    out: Path,
    pairs_path: Path | None = None,
    quick: bool = False,
    split: str = "test",
) -> Callable[[], None]:
    """Evaluate ``model_spec`` on ``task`` into ``out`` (toxicity also scores the held-out pairs ``pairs_path``);
    ``quick``: a learning-curve point, the quick evaluation (`EvalConfig.quick`) of `curve_limit` items;
    ``split``: `EvalConfig.split`, test (``decpo run``) or dev (``benchmarks/tune.py``, tuning)."""

    def stage() -> None:
        evaluate(
            EvalConfig(
                task=task,
                model=model_spec,
                prompts_path=cfg.experiment.eval_prompts,
                pairs_path=str(pairs_path) if pairs_path is not None and task == "toxicity" else None,
                limit=curve_limit(cfg) if quick else cfg.experiment.eval_limit,
                transfer_limit=cfg.experiment.eval_transfer_limit,
                seed=0,  # the same items for every method and seed
                batch_size=cfg.experiment.eval_batch_size,
                data_dir=cfg.data.data_dir,
                beta=cfg.train.beta,
                dtype=cfg.model.dtype,
                generate=cfg.experiment.eval_generate,
                num_samples=cfg.experiment.eval_num_samples,
                scorer=eval_config_scorer(cfg),
                pairs_scorer=pairs_scorer(cfg),
                chat_template=eval_chat_template(cfg),
                synthetic_answer=cfg.data.synthetic_answer,  # the answers as trained
                quick=quick,
                split=split,
                progress=True,
                # the user's own config of this command (never a run folder's config.yaml)
                trust_remote_code=cfg.model.trust_remote_code,
            ),
            out,
        )

    return stage


def heldout_path(cfg: RunConfig, out: Path) -> Path | None:
    """The held-out pairs the pairs stage wrote (``pairs/heldout.jsonl``), or None without ``pairs.source``."""
    return out / PAIRS_DIR / "heldout.jsonl" if cfg.pairs.source else None


def add_eval(
    plan: Plan, cfg: RunConfig, task: str, label: str, spec: str, model_key: str, out: Path, after: list[str]
) -> None:
    """``eval/<task>/<label>``: model ``spec`` (of key ``model_key``) on ``task``, after the stages ``after``."""
    key = {"model": model_key, "task": task, "eval": eval_settings(cfg)}
    if task == "toxicity":  # its prompts: the test part of the eval split since the dev/test division
        key["prompts"] = cfg.experiment.eval_prompts or "eval split, test part"
    stage = eval_stage(cfg, task, spec, out / "eval" / task / label, heldout_path(cfg, out))
    plan.add(f"eval/{task}/{label}", stage_key(key), stage, after=after)


def add_evals(
    plan: Plan,
    cfg: RunConfig,
    tasks: list[str],
    models: dict[str, str],
    keys: dict[str, str],
    out: Path,
    first: list[str],
) -> None:
    """``eval/<task>/<label>`` of every model, each after the model's training (and ``first``); the toxicity
    scorers are built once now, so that a missing one (package, key) stops the run before any training."""
    if "toxicity" in tasks:
        for scorer in scorer_specs(eval_config_scorer(cfg)):
            make_scorer(scorer)
    for task in tasks:
        for label, spec in models.items():
            after = [*first, *([f"train/{label}"] if label != BASE else [])]
            add_eval(plan, cfg, task, label, spec, keys[label], out, after)


def curve_points(cfg: RunConfig, models: dict[str, str]) -> list[tuple[int, str, str]]:
    """``(step, label, model spec)`` of every learning-curve point to evaluate: each trained model's
    ``checkpoint-<N>`` (beside its ``final/``) at each of ``experiment.curve_steps``. The ends (base at step 0,
    the final models) are read from the ordinary evaluations (`decpo.reports.learning_curves.end_point`)."""
    return [
        (n, label, str(Path(spec).with_name(f"checkpoint-{n}")))
        for label, spec in models.items()
        if label != BASE
        for n in cfg.experiment.curve_steps
    ]


def add_curve_evals(
    plan: Plan,
    cfg: RunConfig,
    tasks: list[str],
    models: dict[str, str],
    keys: dict[str, str],
    out: Path,
    first: list[str],
) -> None:
    """``eval/<task>@<N>/<label>``: the learning curve's points (`curve_points`) on the curve's task
    (`curve_measure`), quick evaluations of `curve_limit` items, each after its model's training."""
    if not cfg.experiment.curve_steps:
        return
    task, _ = curve_measure(cfg, tasks)
    if not get_task(task).quick:
        raise ConfigError(
            f"experiment.curve_steps: the curve follows {task!r} (the primary outcome's task), which has no quick "
            "evaluation (EvalConfig.quick); put a task that has one first in experiment.eval_tasks"
        )
    for step, label, spec in curve_points(cfg, models):
        folder = result_path(out, cfg, task, step, label).parent
        key = stage_key(
            {
                "model": keys[label],
                "step": step,
                "task": task,
                "eval": eval_settings(cfg),
                "curve": curve_limit(cfg),
            }
        )
        after = [*first, *([f"train/{label}"] if label != BASE else [])]
        plan.add(
            folder.relative_to(out).as_posix(), key, eval_stage(cfg, task, spec, folder, quick=True), after
        )
