"""Evaluation: log-prob scoring, generation, text classifiers, a YES/NO judge, tasks behind a registry."""

from decpo.evaluation.config import EvalConfig
from decpo.evaluation.context import EvalContext
from decpo.evaluation.metrics import (
    ab_accuracy,
    ab_predictions,
    auroc,
    bootstrap_ci,
    debiased_ab,
    metric_entry,
    parse_ab_letter,
    spearman,
)
from decpo.evaluation.registry import EvalError, Task, get_task, register_task, task_names
from decpo.evaluation.runner import EvalResult, evaluate
from decpo.scoring.classifiers import Scorer, ScorerError, make_scorer
from decpo.scoring.judge import (
    JUDGE_PROMPTS,
    JudgeError,
    LocalJudge,
    OpenAIJudge,
    make_judge,
    parse_yes_no,
)

__all__ = [
    "JUDGE_PROMPTS",
    "EvalConfig",
    "EvalContext",
    "EvalError",
    "EvalResult",
    "JudgeError",
    "LocalJudge",
    "OpenAIJudge",
    "Scorer",
    "ScorerError",
    "Task",
    "ab_accuracy",
    "ab_predictions",
    "auroc",
    "bootstrap_ci",
    "debiased_ab",
    "evaluate",
    "get_task",
    "make_judge",
    "make_scorer",
    "metric_entry",
    "parse_ab_letter",
    "parse_yes_no",
    "register_task",
    "spearman",
    "task_names",
]
