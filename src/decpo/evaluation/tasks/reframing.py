"""reframing: held-out preference accuracy and reward margin on pairs of situations unseen in training;
the VADER positivity of greedy generated thoughts (``gen/``), judged by the YES/NO judge when one is given."""

from __future__ import annotations

from decpo.data import load_task
from decpo.evaluation.config import EvalConfig
from decpo.evaluation.context import EvalContext
from decpo.evaluation.measures import judge_measures, limited, preference_measures
from decpo.evaluation.registry import register_task
from decpo.scoring.classifiers import VaderScorer


def check_data(cfg: EvalConfig) -> None:
    load_task("reframing", "eval", data_dir=cfg.data_dir)


@register_task("reframing", check_data=check_data, primary="gen/positive_rate")
def eval_reframing(ctx: EvalContext, judge) -> tuple[dict, list, int]:
    records = limited(load_task("reframing", "eval", data_dir=ctx.cfg.data_dir), ctx.cfg.limit)
    metrics, per_item = preference_measures(ctx, records)
    # rows come in pairs sharing a situation: generate once per distinct prompt
    prompts = list(dict.fromkeys(r["prompt"] for r in records))
    outputs = ctx.generate(prompts, "generate thoughts")
    compound = VaderScorer().compound(outputs)
    metrics["gen/positive_rate"] = ctx.entry([float(c >= VaderScorer.POSITIVE) for c in compound], "higher")
    metrics["gen/mean_compound"] = ctx.entry(compound, "higher")
    verdicts = [None] * len(prompts)
    if judge is not None:
        m, verdicts = judge_measures(ctx, judge, "reframing", prompts, outputs)
        metrics.update(m)
    samples = [
        {"kind": "generation", "prompt": p, "output": o, "scores": {"vader_compound": c, "judge": v}}
        for p, o, c, v in zip(prompts, outputs, compound, verdicts, strict=True)
    ]
    samples += [
        {"kind": "pair", "prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"], "scores": s}
        for r, s in zip(records, per_item, strict=True)
    ]
    return metrics, samples, len(records)
