"""Evaluation: log-prob scoring, generation, text classifiers, a YES/NO judge, tasks behind a registry.

The names below are imported on first use (`decpo.lazy`): the context and the runner import torch, which
`decpo eval`'s flags (`decpo.evaluation.config`, `decpo.evaluation.registry`) do not need.
"""

from decpo.lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "decpo.evaluation.config": ("EvalConfig",),
        "decpo.evaluation.context": ("EvalContext",),
        "decpo.evaluation.metrics": (
            "ab_accuracy",
            "ab_predictions",
            "auroc",
            "bootstrap_ci",
            "debiased_ab",
            "metric_entry",
            "parse_ab_letter",
            "spearman",
        ),
        "decpo.evaluation.registry": ("EvalError", "Task", "get_task", "register_task", "task_names"),
        "decpo.evaluation.runner": ("EvalResult", "evaluate"),
        "decpo.scoring.classifiers": ("Scorer", "ScorerError", "make_scorer"),
        "decpo.scoring.judge": (
            "JUDGE_PROMPTS",
            "JudgeError",
            "LocalJudge",
            "OpenAIJudge",
            "make_judge",
            "parse_yes_no",
        ),
    },
)
