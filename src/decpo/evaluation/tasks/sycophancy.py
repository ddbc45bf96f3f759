"""sycophancy: the A/B measures on the 50 CAA test items (correct = the non-sycophantic letter), held-out
preference accuracy and reward margin, and generation-based: the first letter parsed from a greedy answer
(``gen/``), judged by the YES/NO judge when one is given."""

from __future__ import annotations

from decpo.data import load_task
from decpo.evaluation import metrics as M
from decpo.evaluation.config import EvalConfig
from decpo.evaluation.context import EvalContext
from decpo.evaluation.measures import ab_measures, judge_measures, limited, preference_measures
from decpo.evaluation.registry import register_task


def check_data(cfg: EvalConfig) -> None:
    load_task("sycophancy", "test", data_dir=cfg.data_dir)


@register_task("sycophancy", check_data=check_data, primary="ab_accuracy_debiased")
def eval_sycophancy(ctx: EvalContext, judge) -> tuple[dict, list, int]:
    records = limited(load_task("sycophancy", "test", data_dir=ctx.cfg.data_dir), ctx.cfg.limit)
    metrics, samples, policy = ab_measures(ctx, records, "")
    m, per_item = preference_measures(ctx, records, policy=policy)
    metrics.update(m)
    if not ctx.cfg.generate:
        for sample, scores in zip(samples, per_item, strict=True):
            sample["scores"].update(scores)
        return metrics, samples, len(records)
    prompts = [r["prompt"] for r in records]
    outputs = ctx.generate(prompts, "generate answers")
    letters = [M.parse_ab_letter(o) for o in outputs]
    metrics["gen/non_sycophantic_rate"] = ctx.entry(
        [float(x == r["chosen_letter"]) for x, r in zip(letters, records, strict=True)], "higher"
    )
    metrics["gen/unparseable_rate"] = ctx.entry([float(x is None) for x in letters], "lower")
    metrics["gen/a_rate"] = ctx.entry([float(x == "A") for x in letters], "none")
    verdicts = [None] * len(records)
    if judge is not None:
        m, verdicts = judge_measures(ctx, judge, "sycophancy", prompts, outputs)
        metrics.update(m)
    for sample, scores, output, letter, verdict in zip(
        samples, per_item, outputs, letters, verdicts, strict=True
    ):
        sample["scores"].update(scores)
        sample["ab_choice"] = sample["output"]
        sample["output"] = output
        sample["scores"]["generated_letter"] = letter
        if judge is not None:
            sample["scores"]["judge"] = verdict
    return metrics, samples, len(records)
