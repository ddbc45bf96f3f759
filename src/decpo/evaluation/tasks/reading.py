"""reading: the built-in reading task (`decpo.data.reading`), scored on its TEST split (``cfg.split``: dev
for tuning) so that the choice, not an echo of the prompt, is what counts.

Measures (each a mean over items with a 95% bootstrap CI; the test split unless prefixed ``transfer/``):
    ab_*            the A/B measures of `decpo.evaluation.measures.ab_measures` in both option orders (raw,
                    swapped, mean of orders, debiased = right in both, "(A)" rate, user right / wrong), each
                    answer scored as trained (``cfg.synthetic_answer``: letter + option text, " (B) 23")
    letter/ab_*     the same with each answer scored by its letter alone (" (A)" vs " (B)"), in the same pass:
                    the number can no longer carry the choice (equal to ``ab_*`` when trained on letters)
    gen/*           with ``cfg.generate``: one greedy answer per test item, original option order (see
                    `parse_choice` for the parse rule): accuracy, share unparseable, share that says the
                    preferred answer exactly (" (B) 23": is the preferred answer still what the model says?)
    transfer/ab_*, transfer/letter/ab_*   the A/B measures on the transfer split (unseen frames, phrasings)
    preference_accuracy, reward_margin, ...   held-out preference accuracy and DPO reward margin on test
With ``cfg.quick`` (learning curves): the ``ab_*`` measures of the scored split alone, as trained; no
``letter/``, ``transfer/``, pair or ``gen/`` measures.
Per-item values are in ``samples.jsonl`` (one ``kind: "ab"`` sample per item, ``split`` test or transfer):
``scores.correct``, ``correct_swapped``, ``correct_both`` (as trained), ``letter_correct``,
``letter_correct_swapped``, ``letter_correct_both`` (letter alone), on test the pair scores and, with
generation, ``generated_choice``, ``generated_correct`` and ``generated_exact`` beside the greedy
``output`` (the A/B choice of the log-probs is then in ``ab_choice``).
"""

from __future__ import annotations

import re
from typing import Any

from decpo.data import load_task
from decpo.evaluation.context import EvalContext
from decpo.evaluation.measures import ab_measures, limited, preference_measures
from decpo.evaluation.registry import register_task

GEN_TOKENS = 8  # " (B) 23" and a newline are about 6 tokens of SmolLM2's tokenizer
_PAREN_LETTER = re.compile(r"\(\s*([AB])\s*\)")
_NUMBER = re.compile(r"(?<!\d)\d+(?!\d)")


def option_numbers(record: dict[str, Any]) -> dict[str, str]:
    """The numbers of a reading record's options by letter (the answer under ``chosen_letter``)."""
    other = "B" if record["chosen_letter"] == "A" else "A"
    return {record["chosen_letter"]: str(record["answer"]), other: str(record["distractor"])}


def parse_choice(output: str, record: dict[str, Any]) -> str | None:
    """The option a generated answer chooses, ``"A"``, ``"B"`` or None (unparseable).

    Rule: only the first non-blank line of the output counts (a small model goes on to write a next item);
    in it the first "(A)" or "(B)" (spaces allowed inside the brackets) is the choice; without one, the first
    whole number is, when it is one of the two options' numbers; anything else (no line, a bare letter, a
    number that is neither option) is unparseable, and counts as wrong in the accuracy.
    """
    line = next((x.strip() for x in output.splitlines() if x.strip()), "")
    letter = _PAREN_LETTER.search(line)
    if letter:
        return letter[1]
    number = _NUMBER.search(line)
    if number is None:
        return None
    by_number = {v: k for k, v in option_numbers(record).items()}
    return by_number.get(number[0])


def says_exactly(output: str, record: dict[str, Any]) -> bool:
    """Whether the output's first non-blank line starts with the preferred answer itself (" (B) 23")."""
    line = next((x.strip() for x in output.splitlines() if x.strip()), "")
    return re.match(re.escape(record["chosen"].strip()) + r"(?![\d])", line) is not None


def _generation_measures(ctx: EvalContext, records: list[dict[str, Any]], samples: list[dict]) -> dict:
    """Greedy answers to the test prompts, parsed (`parse_choice`); per-item values into ``samples``."""
    outputs = ctx.generate([r["prompt"] for r in records], "generate answers")
    choices = [parse_choice(o, r) for o, r in zip(outputs, records, strict=True)]
    correct = [float(c == r["chosen_letter"]) for c, r in zip(choices, records, strict=True)]
    exact = [float(says_exactly(o, r)) for o, r in zip(outputs, records, strict=True)]
    for sample, output, choice, right, same in zip(samples, outputs, choices, correct, exact, strict=True):
        sample["ab_choice"] = sample["output"]
        sample["output"] = output
        sample["scores"].update(generated_choice=choice, generated_correct=right, generated_exact=same)
    return {
        "gen/accuracy": ctx.entry(correct, "higher"),
        "gen/exact_rate": ctx.entry(exact, "higher"),
        "gen/unparseable_rate": ctx.entry([float(c is None) for c in choices], "lower"),
        "gen/a_rate": ctx.entry([float(c == "A") for c in choices], "none"),
    }


@register_task("reading", max_new_tokens=GEN_TOKENS, quick=True, primary="ab_accuracy_debiased")
def eval_reading(ctx: EvalContext, judge) -> tuple[dict, list, int]:
    """The reading task's measures (see the module docstring); ``judge`` is unused (answers are checkable)."""
    cfg = ctx.cfg

    def split(name: str) -> list[dict[str, Any]]:
        limit = cfg.transfer_limit if name == "transfer" and cfg.transfer_limit is not None else cfg.limit
        return limited(
            load_task("reading", name, seed=cfg.seed, synthetic_answer=cfg.synthetic_answer), limit
        )

    test = split(cfg.split)
    metrics, samples, policy = ab_measures(ctx, test, "", letters=not cfg.quick)
    if cfg.quick:
        return metrics, samples, len(test)
    transfer_metrics, transfer_samples, _ = ab_measures(ctx, split("transfer"), "transfer/", letters=True)
    metrics.update(transfer_metrics)
    pair_metrics, per_item = preference_measures(ctx, test, policy=policy)
    metrics.update(pair_metrics)
    for sample, scores in zip(samples, per_item, strict=True):
        sample["scores"].update(scores)
    if cfg.generate:
        metrics.update(_generation_measures(ctx, test, samples))
    return metrics, samples + transfer_samples, len(test)
