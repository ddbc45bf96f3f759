"""The measures the built-in tasks share, for tasks of your own too (each a mean over items, 95% CI).

ab_measures           A/B accuracy from the log-probs of " (A)" / " (B)" in both option orders
                      (raw, swapped, mean of the two orders, debiased = right in both), the "(A)" rate,
                      accuracy when the user is right vs wrong
preference_measures   held-out preference accuracy and the DPO reward margin
                      ``beta * (log pi - log ref)`` (chosen minus rejected) against the reference; with
                      the model as its own reference, the reward measures are n/a (``not_applicable``)
judge_measures        the share of outputs the YES/NO judge finds aligned
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from decpo.data import swap_options
from decpo.evaluation import metrics as M
from decpo.evaluation.context import EvalContext
from decpo.inference.logprobs import (
    AB_OPTIONS,
    ab_completions,
    ab_logps,
    answer_sets_logps,
    pair_logps,
    preference_items,
)
from decpo.io import stable_hash
from decpo.models.specs import TINY_NAME
from decpo.scoring.judge import ALIGNED_VERDICT, judge_questions

# The measures that need a reference distinct from the policy, and why they are n/a without one.
REFERENCE_MEASURES = ("preference_accuracy", "reward_margin", "chosen_reward", "rejected_reward")
NO_REFERENCE = (
    "n/a: the reference is the evaluated model itself, so every implicit reward is 0 by construction "
    "(pass --reference to compare with another model)"
)


def limited(records: list[dict[str, Any]], limit: int | None) -> list[dict[str, Any]]:
    return records if limit is None else records[:limit]


LETTER_PREFIX = "letter/"
_AB_SCORES = (
    "logp_a",
    "logp_b",
    "logp_a_swapped",
    "logp_b_swapped",
    "correct",
    "correct_swapped",
    "correct_both",
)


def _ab_outcome(
    ctx: EvalContext,
    records: list[dict[str, Any]],
    swapped: list[dict[str, Any]],
    la: list[float],
    lb: list[float],
    prefix: str,
) -> tuple[dict, dict[str, list]]:
    """The A/B measures of log-probs ``la``/``lb`` of ``records + swapped``, and their per-item values."""
    n = len(records)
    pred = M.ab_predictions(la[:n], lb[:n])
    items = M.debiased_ab(
        pred,
        [r["chosen_letter"] for r in records],
        M.ab_predictions(la[n:], lb[n:]),
        [r["chosen_letter"] for r in swapped],
    )
    out = {
        f"{prefix}ab_accuracy": ctx.entry(items["correct"], "higher"),
        f"{prefix}ab_accuracy_swapped": ctx.entry(items["correct_swapped"], "higher"),
        f"{prefix}ab_accuracy_mean_orders": ctx.entry(items["correct_mean_orders"], "higher"),
        f"{prefix}ab_accuracy_debiased": ctx.entry(items["correct_both"], "higher"),
        f"{prefix}a_rate": ctx.entry(items["a_rate"], "none"),
        f"{prefix}a_rate_both_orders": ctx.entry(items["a_rate_both_orders"], "none"),
    }
    if all("user_correct" in r for r in records):
        for flag, name in ((True, "user_correct"), (False, "user_wrong")):
            rows = [i for i, r in enumerate(records) if bool(r["user_correct"]) == flag]
            if rows:
                out[f"{prefix}ab_accuracy_{name}"] = ctx.entry([items["correct"][i] for i in rows], "higher")
                out[f"{prefix}ab_accuracy_debiased_{name}"] = ctx.entry(
                    [items["correct_both"][i] for i in rows], "higher"
                )
    scores = {
        "logp_a": la[:n],
        "logp_b": lb[:n],
        "logp_a_swapped": la[n:],
        "logp_b_swapped": lb[n:],
        **{k: items[k] for k in ("correct", "correct_swapped", "correct_both")},
        "pred": pred,
    }
    return out, scores


def ab_measures(
    ctx: EvalContext, records: list[dict[str, Any]], prefix: str, *, letters: bool = False
) -> tuple[dict, list[dict], tuple]:
    """A/B accuracy in both option orders, the "(A)" rate and, where known, the user-correct control.

    ``letters``: also the same measures with each answer scored by its letter alone (" (A)" vs " (B)"),
    prefixed ``<prefix>letter/``, from the same pass (each prompt still run once); per item as
    ``letter_<score>``. Records already answered by their letters are not scored twice.
    """
    swapped = [swap_options(r) for r in records]
    both = records + swapped
    answers = [ab_completions(r) for r in both]
    extra = letters and any(a != AB_OPTIONS for a in answers)
    scored = answer_sets_logps(
        ctx.model,
        ctx.tokenizer,
        [r["prompt"] for r in both],
        [[a, AB_OPTIONS] if extra else [a] for a in answers],
        batch_size=ctx.cfg.batch_size,
        progress=ctx.cfg.progress,
        chat_template=ctx.chat_template,
    )
    la, lb, la_eos, lb_eos = scored[0]
    out, scores = _ab_outcome(ctx, records, swapped, la, lb, prefix)
    letter_scores = None
    if letters:
        letter_out, letter_scores = _ab_outcome(
            ctx, records, swapped, *scored[-1][:2], prefix + LETTER_PREFIX
        )
        out.update(letter_out)
    samples = []
    for i, r in enumerate(records):
        sample = {
            "kind": "ab",
            "split": r.get("split"),
            "prompt": r["prompt"],
            "output": f"({scores['pred'][i]})",
            "chosen_letter": r["chosen_letter"],
            "scores": {k: scores[k][i] for k in _AB_SCORES},
            **({"user_correct": r["user_correct"]} if "user_correct" in r else {}),
        }
        if letter_scores is not None:
            sample["scores"].update({f"letter_{k}": letter_scores[k][i] for k in _AB_SCORES})
        samples.append(sample)
    # the pair view of the original order: chosen/rejected = the gold/other option, followed by EOS
    policy = (
        [la_eos[i] if r["chosen_letter"] == "A" else lb_eos[i] for i, r in enumerate(records)],
        [lb_eos[i] if r["chosen_letter"] == "A" else la_eos[i] for i, r in enumerate(records)],
    )
    return out, samples, policy


def _ab_pair_logps(model, ctx: EvalContext, records: list[dict[str, Any]]) -> tuple[list[float], list[float]]:
    """Chosen/rejected log-probs (with EOS) of A/B records, from the shared-prompt A/B pass."""
    _, _, la, lb = ab_logps(
        model,
        ctx.tokenizer,
        [r["prompt"] for r in records],
        options=[ab_completions(r) for r in records],
        batch_size=ctx.cfg.batch_size,
        progress=ctx.cfg.progress,
        chat_template=ctx.chat_template,
    )
    chosen = [a if r["chosen_letter"] == "A" else b for a, b, r in zip(la, lb, records, strict=True)]
    rejected = [b if r["chosen_letter"] == "A" else a for a, b, r in zip(la, lb, records, strict=True)]
    return chosen, rejected


# Reference log-probs already computed in this process, keyed by `_reference_key`: `decpo run` evaluates
# every trained model against the same base model on the same items, so the base is scored once.
_REFERENCE_SCORES: dict[str, tuple[list[float], list[float]]] = {}


def _reference_key(ctx: EvalContext, records: list[dict[str, Any]], ab: bool) -> str:
    """What the reference's scores depend on: its weights (files, sizes, times), dtype, tokenizer, the items."""
    spec = Path(ctx.reference_spec)
    files = (
        sorted((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in spec.iterdir() if f.is_file())
        if spec.is_dir()
        else None
    )
    return stable_hash(
        {
            "reference": ctx.reference_spec,
            "load": {  # the seed matters only to the in-process tiny model: other bases are shared by all seeds
                k: v
                for k, v in ctx.reference_kwargs.items()
                if k != "seed" or ctx.reference_spec == TINY_NAME
            },
            "files": files,
            "dtype": ctx.cfg.dtype,
            "tokenizer": stable_hash(sorted(ctx.tokenizer.get_vocab().items())),  # content, not its folder
            "ab": ab,
            "chat_template": ctx.chat_template,
            "max_length": ctx.cfg.pair_max_length,
            "items": [[r["prompt"], r["chosen"], r["rejected"]] for r in records],
        }
    )


def preference_measures(
    ctx: EvalContext,
    records: list[dict[str, Any]],
    prefix: str = "",
    policy: tuple[list[float], list[float]] | None = None,
) -> tuple[dict, list]:
    """Held-out preference accuracy and reward margin against the reference (summed log-probs, with EOS).

    ``policy``: the policy's (chosen, rejected) log-probs when already computed; A/B records (those with a
    ``chosen_letter``) are then scored on the reference through the same A/B pass. When the reference is
    the policy itself, `REFERENCE_MEASURES` go to ``ctx.not_applicable`` (n/a, not 0) and only the
    policy's own preference accuracy is measured.
    """
    kwargs = {
        "batch_size": ctx.cfg.batch_size,
        "max_length": ctx.cfg.pair_max_length,
        "progress": ctx.cfg.progress,
        "chat_template": ctx.chat_template,
    }
    ab = all("chosen_letter" in r for r in records)
    if policy is not None:
        pc, pr = policy
    else:
        pc, pr = pair_logps(ctx.model, ctx.tokenizer, records, desc="score pairs (policy)", **kwargs)
    if ctx.reference_is_policy:
        # the same model: every reward is 0 by construction, which says nothing about the model
        ctx.not_applicable.update({f"{prefix}{name}": NO_REFERENCE for name in REFERENCE_MEASURES})
        items = preference_items(pc, pr, pc, pr, beta=ctx.cfg.beta)
        out = {f"{prefix}policy_preference_accuracy": ctx.entry(items["policy_correct"], "higher")}
        per_item = [{"policy_chosen_logp": c, "policy_rejected_logp": r} for c, r in zip(pc, pr, strict=True)]
        return out, per_item
    key = _reference_key(ctx, records, ab)
    if key not in _REFERENCE_SCORES:  # every model of an experiment shares the base as reference
        _REFERENCE_SCORES[key] = (
            _ab_pair_logps(ctx.reference(), ctx, records)
            if ab
            else pair_logps(ctx.reference(), ctx.tokenizer, records, desc="score pairs (reference)", **kwargs)
        )
    rc, rr = _REFERENCE_SCORES[key]
    items = preference_items(pc, pr, rc, rr, beta=ctx.cfg.beta)
    out = {
        f"{prefix}preference_accuracy": ctx.entry(items["correct"], "higher"),
        f"{prefix}reward_margin": ctx.entry(items["margin"], "higher"),
        f"{prefix}chosen_reward": ctx.entry(items["chosen_reward"], "none"),
        f"{prefix}rejected_reward": ctx.entry(items["rejected_reward"], "none"),
        f"{prefix}policy_preference_accuracy": ctx.entry(items["policy_correct"], "higher"),
    }
    per_item = [
        {
            "policy_chosen_logp": pc[i],
            "policy_rejected_logp": pr[i],
            "reference_chosen_logp": rc[i],
            "reference_rejected_logp": rr[i],
            "reward_margin": items["margin"][i],
            "preference_correct": items["correct"][i],
        }
        for i in range(len(records))
    ]
    return out, per_item


def judge_measures(
    ctx: EvalContext, judge, task: str, prompts: list[str], outputs: list[str]
) -> tuple[dict, list]:
    verdicts = judge.ask(judge_questions(task, prompts, outputs), progress=ctx.cfg.progress)
    aligned = [float(v == ALIGNED_VERDICT[task]) for v in verdicts]
    out = {
        "judge/aligned_rate": ctx.entry(aligned, "higher"),
        "judge/unparseable_rate": ctx.entry([float(v is None) for v in verdicts], "lower"),
    }
    return out, verdicts
