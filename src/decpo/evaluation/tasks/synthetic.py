"""synthetic: A/B measures on the built-in synthetic sycophancy task's eval split and, prefixed
``transfer/``, its transfer split (unseen fact frames and phrasings); held-out preference accuracy and
reward margin on the eval split. With ``cfg.quick`` (learning curves): the eval split's A/B measures alone."""

from __future__ import annotations

from typing import Any

from decpo.data import load_task
from decpo.evaluation.context import EvalContext
from decpo.evaluation.measures import ab_measures, limited, preference_measures
from decpo.evaluation.registry import register_task


@register_task("synthetic", quick=True, primary="ab_accuracy_debiased")
def eval_synthetic(ctx: EvalContext, judge) -> tuple[dict, list, int]:
    metrics: dict[str, Any] = {}
    answer = ctx.cfg.synthetic_answer
    evals = limited(load_task("synthetic", "eval", seed=ctx.cfg.seed, synthetic_answer=answer), ctx.cfg.limit)
    m, samples, policy = ab_measures(ctx, evals, "")
    metrics.update(m)
    if ctx.cfg.quick:
        return metrics, samples, len(evals)
    transfer = limited(
        load_task("synthetic", "transfer", seed=ctx.cfg.seed, synthetic_answer=answer),
        ctx.cfg.limit if ctx.cfg.transfer_limit is None else ctx.cfg.transfer_limit,
    )
    m, transfer_samples, _ = ab_measures(ctx, transfer, "transfer/")
    metrics.update(m)
    m, per_item = preference_measures(ctx, evals, policy=policy)
    metrics.update(m)
    for sample, scores in zip(samples, per_item, strict=True):
        sample["scores"].update(scores)
    return metrics, samples + transfer_samples, len(evals)
