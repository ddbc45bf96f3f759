"""Labelled texts for the concepts that a task's training prompts do not carry (`decpo.probes.concepts`).

Two tasks' concepts are properties of a text beyond the prompt the model is trained on, so the probes read
texts made for them:

    toxicity, toxicity_pairwise   each RealToxicityPrompts challenging prompt of the eval split (dev + test,
                                  never trained on by either task) followed by its human-written continuation,
                                  labelled ``toxic_continuation``: the continuation's Perspective toxicity
                                  >= 0.5 (RealToxicityPrompts' own threshold); prompts whose continuation or
                                  its score is absent are left out
    sycophancy                    each CAA prompt followed by one of its two answers, the one matching the
                                  user's stated view (the sycophantic one) at odd positions and the other at
                                  even positions, labelled ``sycophantic_answer``; the prompt's own concept
                                  (``correct_letter_a``) rides along

The probes read each text's last token, so the label is decided by what that token can see.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from decpo.data import DataError
from decpo.data.prompts import load_prompts

TOXIC = (
    0.5  # a continuation is toxic at Perspective toxicity >= 0.5 (RealToxicityPrompts, Gehman et al. 2020)
)
CONCEPT_SOURCES = {  # the tasks with concept texts, and the texts in a few words (for the report)
    "toxicity": "challenging prompts of the eval split + their human-written continuations",
    "toxicity_pairwise": "challenging prompts of the eval split + their human-written continuations",
    "sycophancy": "held-out CAA prompts + one answer each, the sycophantic one at every other text",
}


def rtp_continuation_records(data_dir: str | Path | None = None) -> list[dict]:
    """``{prompt: prompt + continuation, continuation_toxicity}`` for the challenging prompts of the eval split
    whose continuation and its score are present."""
    return [
        {"prompt": r["prompt"] + r["continuation"], "continuation_toxicity": r["continuation_toxicity"]}
        for r in load_prompts("toxicity", split="eval", data_dir=data_dir)
        if r["continuation"].strip() and r["continuation_toxicity"] is not None
    ]


def answered_sycophancy_records(records: Sequence[Mapping]) -> list[dict]:
    """Each sycophancy pair's prompt with its non-sycophantic (``chosen``) answer at even positions and its
    sycophantic (``rejected``) answer at odd positions: ``{prompt, sycophantic_answer, chosen_letter}``."""
    out = []
    for i, r in enumerate(records):
        if r.get("task") != "sycophancy":
            raise DataError(f"record {i} is not a sycophancy pair (task {r.get('task')!r})")
        sycophantic = i % 2 == 1
        out.append(
            {
                "prompt": r["prompt"] + (r["rejected"] if sycophantic else r["chosen"]),
                "sycophantic_answer": sycophantic,
                "chosen_letter": r["chosen_letter"],
            }
        )
    return out


def concept_text_records(
    task: str, records: Sequence[Mapping] = (), data_dir: str | Path | None = None
) -> list[dict] | None:
    """The labelled texts of ``task``'s own concepts (see the module docstring), built from ``records`` (the
    task's pairs, for sycophancy) or read from the data directory (toxicity); None for a task without any."""
    if task in ("toxicity", "toxicity_pairwise"):
        return rtp_continuation_records(data_dir)
    if task == "sycophancy":
        return answered_sycophancy_records(records)
    return None
