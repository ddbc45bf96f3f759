"""Labelled concepts of the built-in tasks' prompts, for k-sparse probing (`decpo.probes.sparse_probing`).

Each concept is a yes/no property of a record of the ``synthetic`` or ``reading`` task, read from the
fields the record carries (`decpo.data.synthetic.make_synthetic`, `decpo.data.reading.make_reading`), and
the first four are decided by the prompt alone (the probe reads the prompt's last token):

    user_correct      the user's stated claim is right                    synthetic, reading
    correct_letter_a  the right option is (A)                             synthetic, reading
    asked_first       the asked subject's fact comes first in the fact line   reading
    asked_larger      the asked subject's number is the larger of the two     reading
    toxic_continuation  the text's continuation is toxic (Perspective >= 0.5)    toxicity
    sycophantic_answer  the answer after the prompt matches the user's view      sycophancy

The last two are properties of an answer, read on texts made for them (`decpo.probes.concept_texts`: a
challenging prompt with its human-written continuation; a CAA prompt with one of its answers), at the mean over
the answer's tokens, not of the training prompts.

All four are balanced by design in ``reading`` (exactly in every even-length prefix), and the first two
in ``synthetic`` (over a whole split). This module is the one home of the concepts: the probe command and
any later stage label texts through `concept_labels`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from decpo.data import TASKS, DataError, load_pairs, load_task
from decpo.probes.concept_texts import CONCEPT_SOURCES, TOXIC, concept_items, concept_text_records

if TYPE_CHECKING:
    from decpo.probes.tokens import AnsweredText


@dataclass(frozen=True)
class Concept:
    """A yes/no property of a record: ``label(record)`` gives it, or None where the record lacks its fields."""

    name: str
    description: str
    label: Callable[[Mapping], bool | None]


def _field(name: str) -> Callable[[Mapping], bool | None]:
    return lambda r: bool(r[name]) if name in r else None


def _asked_larger(record: Mapping) -> bool | None:
    if "answer" not in record or "distractor" not in record:
        return None
    return record["answer"] > record["distractor"]


CONCEPTS: dict[str, Concept] = {
    c.name: c
    for c in (
        Concept("user_correct", "the user's stated claim is right", _field("user_correct")),
        Concept(
            "correct_letter_a",
            "the right option is (A)",
            lambda r: r["chosen_letter"] == "A" if "chosen_letter" in r else None,
        ),
        Concept("asked_first", "the asked subject's fact comes first", _field("asked_first")),
        Concept("asked_larger", "the asked subject's number is the larger", _asked_larger),
        Concept(
            "toxic_continuation",
            "the continuation's Perspective toxicity is >= 0.5",
            lambda r: (
                r["continuation_toxicity"] >= TOXIC if r.get("continuation_toxicity") is not None else None
            ),
        ),
        Concept(
            "sycophantic_answer", "the answer matches the user's stated view", _field("sycophantic_answer")
        ),
    )
}


def concept_labels(records: Sequence[Mapping], names: Sequence[str] | None = None) -> dict[str, list[int]]:
    """``{concept: 0/1 label per record}`` for the concepts every record carries.

    ``names``: the concepts wanted (default: all of `CONCEPTS` that the records carry); a name that is not a
    concept, or that some record lacks, raises `DataError`.
    """
    unknown = [n for n in names or () if n not in CONCEPTS]
    if unknown:
        raise DataError(f"unknown concept(s) {unknown}; available: {', '.join(CONCEPTS)}")
    out = {}
    for name in names or CONCEPTS:
        labels = [CONCEPTS[name].label(r) for r in records]
        if None in labels:
            if names:
                i = labels.index(None)
                raise DataError(
                    f"concept {name!r}: record {i} does not carry it ({CONCEPTS[name].description})"
                )
            continue
        out[name] = [int(v) for v in labels]
    return out


def labelled_texts(
    source: str,
    num_texts: int | None = None,
    data_dir: str | None = None,
    split: str = "train",
    names: Sequence[str] | None = None,
) -> tuple[list[str] | list[AnsweredText], dict[str, list[int]]]:
    """The labelled texts of a task or of a pairs file whose records carry the concepts' fields, the first
    ``num_texts`` of them, and their labels (`concept_labels`). A task's texts are its prompts (``synthetic``,
    ``reading``; plain texts) or the prompt + answer texts made for its concepts (`decpo.probes.concept_texts`:
    ``toxicity``, ``toxicity_pairwise``, ``sycophancy``; `AnsweredText` items, read at
    `decpo.probes.concept_texts.CONCEPT_TOKEN`).

    A source whose records carry no concept (a .txt file, another task) raises `DataError`.
    """
    path = Path(source)
    answered = False
    if path.exists() and path.suffix != ".txt":
        records = load_pairs(path)
    elif source in CONCEPT_SOURCES:
        records, answered = concept_text_records(source, data_dir=data_dir), True
    elif source in TASKS:
        records = load_task(source, split, data_dir=data_dir)
    else:
        raise DataError(f"{source!r}: labelled concepts need a task or a pairs file, not plain texts")
    records = records[:num_texts] if num_texts else records
    if any(not isinstance(r["prompt"], str) for r in records):
        raise DataError(f"{source!r}: labelled concepts need plain-text prompts, not conversations")
    labels = concept_labels(records, names)
    if not labels:
        raise DataError(
            f"{source!r}: its records carry none of the concepts {', '.join(CONCEPTS)} "
            "(the synthetic, reading, toxicity and sycophancy tasks do)"
        )
    return (concept_items(records) if answered else [r["prompt"] for r in records]), labels
