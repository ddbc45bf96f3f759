"""The stages of an experiment's plan and their keys: the pairs stage (`add_pairs`), trainings
(`train_stage`) and the probe stage (`probe_stage`, `probe_key`); evaluations are in
`decpo.experiment.eval_stages`.

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
from decpo.evaluation.config import EvalConfig
from decpo.evaluation.registry import EvalError, get_task, task_names
from decpo.evaluation.tasks.toxicity import toxicity_prompts
from decpo.experiment.plan import Plan, stage_key
from decpo.experiment.probe_texts import (
    CONCEPT_TEXTS,
    SPARSE_FOLDS,
    SparsePlan,
    concept_task,
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
from decpo.pairs.cache import config_prompts, ensure_pairs, pairs_key
from decpo.pairs.sampling import side_files
from decpo.probes.concept_texts import CONCEPT_SOURCES, CONCEPT_TOKEN
from decpo.probes.options import SPARSE_PROBING
from decpo.probes.runner import WEIGHT_SITE, probe_models, rows_to_csv
from decpo.probes.sparse_probing import ROW_PREFIX as SPARSE_PREFIX
from decpo.records import StageLog
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


def _concept_text_rows(cfg: RunConfig, models: dict[str, str], sparse: SparsePlan, out: Path) -> list[dict]:
    """k-sparse probing of the task's concept texts (`decpo.experiment.probe_texts.ConceptTexts`) at the
    sparse-probing blocks, in a pass of their own (its full probes in ``out``); only the sparse-probing rows join
    probes.csv, the other measures there being those of the held-out prompts."""
    ct = sparse.concept_texts
    report = probe_models(
        models,
        ct.texts,
        out,
        sites=probe_sites(cfg),
        batch_size=cfg.probe.batch_size,
        max_length=cfg.train.max_length,
        dtype=cfg.model.dtype,
        weights=False,
        layers=tuple(sparse.layers),
        regularized_layers=tuple(cfg.train.reg_layers),
        labels=ct.labels,
        measures=(SPARSE_PROBING,),
        sparse_layers=tuple(sparse.layers),
        sparse_folds=SPARSE_FOLDS,
        token=ct.token,
    )
    return [r for r in report.rows if r["probe"].startswith(SPARSE_PREFIX)]


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
            # the task's concept texts (`decpo.probes.concept_texts`): a run probed before they existed re-probes
            **(
                {"concept_texts": [task, CONCEPT_TOKEN, cfg.experiment.concept_num_texts]}
                if sparse and (task := concept_task(cfg)) in CONCEPT_SOURCES
                else {}
            ),
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
        if sparse.concept_texts:
            rows += _concept_text_rows(cfg, models, sparse, out / CONCEPT_TEXTS)
        atomic_write_text(out / "probes.csv", rows_to_csv(rows))
        atomic_write_json(out / "probe_sets.json", info)

    return stage
