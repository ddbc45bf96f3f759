"""The labelled concepts of the built-in tasks (probes/concepts.py): each label agrees with the prompt's text,
the tasks carry the concepts they should, and unusable sources are refused."""

from __future__ import annotations

import pytest

from decpo.data import DataError, make_reading, make_synthetic
from decpo.probes.concepts import CONCEPTS, concept_labels, labelled_texts


def test_reading_labels_agree_with_the_prompt():
    records = make_reading("train", n=32)
    labels = concept_labels(records)
    assert set(labels) == set(CONCEPTS)
    for i, r in enumerate(records):
        fact, claim, _, option_a = r["prompt"].splitlines()[:4]
        assert labels["asked_first"][i] == fact.startswith(f"Fact: {r['subject']} ")
        assert labels["correct_letter_a"][i] == (option_a == f" (A) {r['answer']}")
        assert labels["user_correct"][i] == (f" {r['answer']} " in claim)
        assert labels["asked_larger"][i] == (r["answer"] > r["distractor"])
    # the reading task balances each concept in every even-length prefix
    assert all(sum(v) == 16 for v in labels.values())


def test_synthetic_carries_the_user_and_the_letter_only():
    records = make_synthetic("train", n=40)
    labels = concept_labels(records)
    assert set(labels) == {"user_correct", "correct_letter_a"}
    assert labels["correct_letter_a"] == [int(r["chosen_letter"] == "A") for r in records]
    with pytest.raises(DataError, match="'asked_first': record 0 does not carry it"):
        concept_labels(records, ["asked_first"])
    with pytest.raises(DataError, match="unknown concept"):
        concept_labels(records, ["user_right"])


def test_labelled_texts_of_a_task_and_refusals(tmp_path):
    texts, labels = labelled_texts("reading", num_texts=20)
    assert texts == [r["prompt"] for r in make_reading("train")[:20]]
    assert all(len(v) == 20 for v in labels.values())
    plain = tmp_path / "texts.txt"
    plain.write_text("a text\nanother\n")
    with pytest.raises(DataError, match="labelled concepts need a task or a pairs file"):
        labelled_texts(str(plain))
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"prompt": "p", "chosen": " a", "rejected": " b"}\n')
    with pytest.raises(DataError, match="carry none of the concepts"):
        labelled_texts(str(pairs))
