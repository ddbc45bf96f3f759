"""Evaluation: A/B and preference scoring, generation, toxicity/sentiment scorers, a YES/NO judge, tasks."""

from decpo.evaluation.classifiers import Scorer, ScorerError, make_scorer
from decpo.evaluation.judge import (
    JUDGE_PROMPTS,
    JudgeError,
    LocalJudge,
    OpenAIJudge,
    make_judge,
    parse_yes_no,
)
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
from decpo.evaluation.tasks import EVAL_TASKS, EvalConfig, EvalError, EvalResult, evaluate

__all__ = [
    "EVAL_TASKS",
    "JUDGE_PROMPTS",
    "EvalConfig",
    "EvalError",
    "EvalResult",
    "JudgeError",
    "LocalJudge",
    "OpenAIJudge",
    "Scorer",
    "ScorerError",
    "ab_accuracy",
    "ab_predictions",
    "auroc",
    "bootstrap_ci",
    "debiased_ab",
    "evaluate",
    "make_judge",
    "make_scorer",
    "metric_entry",
    "parse_ab_letter",
    "parse_yes_no",
    "spearman",
]
