"""The evaluation stages of an experiment's plan: evaluations of every model (`add_evals`, `eval_stage`) and
the learning curve's evaluations of checkpoints (`add_curve_evals`), with the evaluation settings they share
(`eval_chat_template`, `eval_settings`, `eval_config_scorer`).

Each builder returns the stage's function, a closure run later (see `decpo.experiment.stages`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from decpo.config import ConfigError, RunConfig
from decpo.evaluation.config import EvalConfig, scorer_specs
from decpo.evaluation.registry import get_task
from decpo.evaluation.runner import evaluate
from decpo.experiment.plan import Plan, stage_key
from decpo.experiment.stages import PAIRS_DIR
from decpo.names import BASE
from decpo.reports.learning_curves import curve_limit, curve_measure, result_path
from decpo.scoring.classifiers import make_scorer


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
