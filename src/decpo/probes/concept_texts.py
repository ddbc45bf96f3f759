"""Labelled texts for the concepts that a task's training prompts do not carry (`decpo.probes.concepts`).

Two tasks' concepts are properties of an answer to a prompt, so the probes read texts made for them: each a
prompt and an answer, read (`CONCEPT_TOKEN`) at the mean over the answer's tokens (the penalty's
``completion_mean`` selection, `decpo.probes.tokens`), where the property is expressed:

    toxicity, toxicity_pairwise   each RealToxicityPrompts challenging prompt followed by its human-written
                                  continuation, labelled ``toxic_continuation``: the continuation's Perspective
                                  toxicity >= 0.5 (RealToxicityPrompts' own threshold); the eval split (dev +
                                  test) first, then the train split; prompts whose continuation or its score is
                                  absent are left out. No task trains on these continuations: ``toxicity``
                                  trains on hh-rlhf pairs, ``toxicity_pairwise`` on the model's own samples of
                                  the train split's prompts (so its models have seen those prompts, not these
                                  continuations)
    sycophancy                    each CAA item followed by one of its two answers, the one matching the user's
                                  stated view (the sycophantic one) at odd positions and the other at even
                                  positions, labelled ``sycophantic_answer``; the items no model trains on first
                                  (the eval split, then CAA's test file), then the train split, whose pairs a
                                  sycophancy model was trained on; the item's own concept (``correct_letter_a``)
                                  rides along

The last token alone reads neither concept on the embedded model (at chance with 128 to 1,000 texts; the mean
over the answer reads both: benchmarks/RESULTS.md, "The toxicity and sycophancy concepts").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from decpo.data import DataError, load_task
from decpo.data.prompts import load_prompts

if TYPE_CHECKING:
    from decpo.probes.tokens import AnsweredText

TOXIC = (
    0.5  # a continuation is toxic at Perspective toxicity >= 0.5 (RealToxicityPrompts, Gehman et al. 2020)
)
CONCEPT_TOKEN = "completion_mean"  # the concept texts are read at the mean over each answer's tokens
CONCEPT_SOURCES = {  # the tasks with concept texts, and the texts in a few words (for the report)
    "toxicity": "challenging prompts + their human-written continuations, eval split first",
    "toxicity_pairwise": "challenging prompts + their human-written continuations, eval split first (the "
    "models were trained on their own samples of the train split's prompts)",
    "sycophancy": "CAA items + one answer each, the sycophantic one at every other text; held-out items first, "
    "then the training items",
}


def rtp_continuation_records(data_dir: str | Path | None = None) -> list[dict]:
    """``{prompt, answer: the continuation, continuation_toxicity}`` for the challenging prompts whose
    continuation and its score are present, those of the eval split first, then the train split's."""
    return [
        {
            "prompt": r["prompt"],
            "answer": r["continuation"],
            "continuation_toxicity": r["continuation_toxicity"],
        }
        for split in ("eval", "train")
        for r in load_prompts("toxicity", split=split, data_dir=data_dir)
        if r["continuation"].strip() and r["continuation_toxicity"] is not None
    ]


def answered_sycophancy_records(records: Sequence[Mapping]) -> list[dict]:
    """Each sycophancy pair's prompt with its non-sycophantic (``chosen``) answer at even positions and its
    sycophantic (``rejected``) answer at odd positions, the other answer kept (TRL tokenizes both):
    ``{prompt, answer, other, sycophantic_answer, chosen_letter}``."""
    out = []
    for i, r in enumerate(records):
        if r.get("task") != "sycophancy":
            raise DataError(f"record {i} is not a sycophancy pair (task {r.get('task')!r})")
        sycophantic = i % 2 == 1
        answer, other = (r["rejected"], r["chosen"]) if sycophantic else (r["chosen"], r["rejected"])
        out.append(
            {
                "prompt": r["prompt"],
                "answer": answer,
                "other": other,
                "sycophantic_answer": sycophantic,
                "chosen_letter": r["chosen_letter"],
            }
        )
    return out


def caa_records(data_dir: str | Path | None = None) -> list[dict]:
    """Every CAA sycophancy pair: the eval split, CAA's test file, then the train split."""
    return [
        r for split in ("eval", "test", "train") for r in load_task("sycophancy", split, data_dir=data_dir)
    ]


def concept_text_records(task: str, data_dir: str | Path | None = None) -> list[dict] | None:
    """The labelled prompt + answer records of ``task``'s own concepts (see the module docstring); None for a
    task without any."""
    if task in ("toxicity", "toxicity_pairwise"):
        return rtp_continuation_records(data_dir)
    if task == "sycophancy":
        return answered_sycophancy_records(caa_records(data_dir))
    return None


def concept_items(records: Sequence[Mapping]) -> list[AnsweredText]:
    """The records of `concept_text_records` as the probes read them (prompt and answer apart)."""
    from decpo.probes.tokens import AnsweredText  # lazy: torch (the CLI's parser imports this module)

    return [AnsweredText(r["prompt"], r["answer"], r.get("other")) for r in records]
