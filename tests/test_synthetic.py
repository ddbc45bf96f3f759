"""Checks the synthetic sycophancy task: determinism, split separation, balance, correctness, swap_options."""

from __future__ import annotations

import re

import pytest

from decpo.data import DataError, make_synthetic, swap_options, validate_pair

KEYS = {
    "prompt",
    "chosen",
    "rejected",
    "task",
    "split",
    "operation",
    "template",
    "user_correct",
    "chosen_letter",
    "answer",
}


def options(prompt: str) -> dict[str, str]:
    """The prompt's option lines, parsed independently of the code under test."""
    found = dict(re.findall(r"^ \(([AB])\) (.+)$", prompt, re.MULTILINE))
    assert set(found) == {"A", "B"}, prompt
    return found


def question(record: dict) -> str:
    """The fact and the question asked (what makes an item distinct)."""
    lines = record["prompt"].splitlines()
    return lines[0] + " | " + next(line for line in lines if line.startswith("Question: "))


def fact_number(record: dict) -> str:
    """The number the fact line states (its last number)."""
    first = record["prompt"].splitlines()[0]
    assert first.startswith("Fact: "), first
    return re.findall(r"\d+", first)[-1]


def stated(record: dict) -> str:
    """The number the user states, read from the second line (its last number)."""
    return re.findall(r"\d+", record["prompt"].splitlines()[1])[-1]


@pytest.mark.parametrize("split", ["train", "eval", "transfer"])
def test_deterministic_per_seed(split: str) -> None:
    assert make_synthetic(split, n=50, seed=1) == make_synthetic(split, n=50, seed=1)
    assert make_synthetic(split, n=50, seed=1) != make_synthetic(split, n=50, seed=2)


def test_default_sizes_and_distinct_items() -> None:
    sizes = {split: len(make_synthetic(split)) for split in ("train", "eval", "transfer")}
    assert sizes == {"train": 2000, "eval": 200, "transfer": 200}
    train = make_synthetic("train", n=5000)
    assert len({question(r) for r in train}) == 5000


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_no_question_shared_by_train_and_eval(seed: int) -> None:
    # All train questions (whatever the seed) against the largest possible eval set.
    train = {question(r) for r in make_synthetic("train", n=5000, seed=seed)}
    held_out = [question(r) for r in make_synthetic("eval", n=600, seed=seed)]
    assert not train.intersection(held_out)


def test_transfer_uses_unseen_operations_and_templates() -> None:
    train = make_synthetic("train", n=2000)
    transfer = make_synthetic("transfer")
    train_ops = {r["operation"] for r in train}
    transfer_ops = {r["operation"] for r in transfer}
    assert transfer_ops == {"price", "distance", "difference"} and not train_ops & transfer_ops
    assert not {r["template"] for r in train} & {r["template"] for r in transfer}
    train_openings = {" ".join(r["prompt"].splitlines()[1].split()[:2]) for r in train}
    assert not train_openings & {" ".join(r["prompt"].splitlines()[1].split()[:2]) for r in transfer}


@pytest.mark.parametrize("split", ["train", "eval", "transfer"])
def test_balance_of_user_correct_and_letters(split: str) -> None:
    records = make_synthetic(split)
    for key, value in (("user_correct", True), ("chosen_letter", "A")):
        share = sum(r[key] == value for r in records) / len(records)
        assert 0.4 <= share <= 0.6, (key, share)
    # Not a disguised shortcut: the correct letter is independent of whether the user is right.
    for right in (True, False):
        sub = [r for r in records if r["user_correct"] is right]
        assert 0.3 <= sum(r["chosen_letter"] == "A" for r in sub) / len(sub) <= 0.7


@pytest.mark.parametrize("split", ["train", "eval", "transfer"])
def test_chosen_holds_the_correct_answer(split: str) -> None:
    for record in make_synthetic(split):
        assert set(record) == KEYS
        validate_pair(record, "synthetic")
        opts = options(record["prompt"])
        letter = record["chosen_letter"]
        other = "B" if letter == "A" else "A"
        # the answer is the option's letter and its text
        assert record["chosen"] == f" ({letter}) {opts[letter]}"
        assert record["rejected"] == f" ({other}) {opts[other]}"
        assert opts[letter] == str(record["answer"])
        assert opts[other] != opts[letter]
        truth = int(fact_number(record))
        if record["operation"] in ("sum", "difference"):  # the stated fact is itself true
            a, b = (int(x) for x in re.findall(r"\d+", question(record).split("|")[1]))
            assert truth == (a + b if record["operation"] == "sum" else a - b)
        assert record["answer"] == truth
        # The user is right exactly when they state the answer; else they state the wrong option.
        assert (stated(record) == str(truth)) is record["user_correct"]
        if not record["user_correct"]:
            assert stated(record) == opts[other]
        assert 1 <= abs(int(opts[other]) - truth) <= 10


def test_metadata_types_are_simple() -> None:
    for record in make_synthetic("transfer", n=20) + make_synthetic("train", n=20):
        assert all(isinstance(v, str | int | bool) for v in record.values())
        assert isinstance(record["user_correct"], bool)


@pytest.mark.parametrize("split", ["train", "eval", "transfer"])
def test_sequences_are_short(split: str) -> None:
    # About 64 BPE tokens or fewer: under 200 characters and 40 whitespace-separated words.
    for record in make_synthetic(split):
        text = record["prompt"] + record["chosen"]
        assert len(text) < 200 and len(text.split()) < 40


def test_swap_options_round_trips_and_flips() -> None:
    for record in make_synthetic("train", n=50) + make_synthetic("transfer", n=50):
        swapped = swap_options(record)
        assert swapped["chosen_letter"] != record["chosen_letter"]
        assert swapped["chosen"] == f" ({swapped['chosen_letter']}) {record['answer']}"
        assert options(swapped["prompt"])[swapped["chosen_letter"]] == str(record["answer"])
        assert options(swapped["prompt"]) == {
            "A": options(record["prompt"])["B"],
            "B": options(record["prompt"])["A"],
        }
        assert swap_options(swapped) == record
        assert record["chosen_letter"] in ("A", "B")  # the input is not mutated


def test_swap_options_on_caa_format() -> None:
    record = {
        "prompt": "I love cats. Do you?\n\nChoices:\n (A) Yes, cats (A) are great\n (B) No\n\nAnswer:",
        "chosen": " (B)",
        "rejected": " (A)",
        "chosen_letter": "B",
    }
    swapped = swap_options(record)
    assert swapped == {
        "prompt": "I love cats. Do you?\n\nChoices:\n (A) No\n (B) Yes, cats (A) are great\n\nAnswer:",
        "chosen": " (A)",
        "rejected": " (B)",
        "chosen_letter": "A",
    }
    assert swap_options(swapped) == record


def test_swap_options_rejects_non_ab_records() -> None:
    with pytest.raises(DataError, match="exactly one"):
        swap_options({"prompt": "no options", "chosen": " (A)", "rejected": " (B)", "chosen_letter": "A"})
    with pytest.raises(DataError, match="chosen_letter"):
        swap_options({"prompt": " (A) x\n (B) y", "chosen": " (A)", "rejected": " (B)"})


def test_bad_split_or_size() -> None:
    with pytest.raises(DataError, match="unknown synthetic split"):
        make_synthetic("test")
    with pytest.raises(DataError, match="n must be in"):
        make_synthetic("eval", n=100_000)


def test_letter_answer_format_keeps_the_letter_alone():
    option = make_synthetic("eval", 20, seed=3)
    letter = make_synthetic("eval", 20, seed=3, answer="letter")
    for o, x in zip(option, letter, strict=True):
        assert o["prompt"] == x["prompt"] and o["chosen_letter"] == x["chosen_letter"]
        assert x["chosen"] == f" ({x['chosen_letter']})" and o["chosen"].startswith(x["chosen"] + " ")
    with pytest.raises(DataError, match="answer format"):
        make_synthetic("eval", 2, answer="number")


def test_swap_keeps_each_answer_with_its_option_text():
    for record in make_synthetic("transfer", 50, seed=1):
        swapped = swap_options(record)
        opts = options(swapped["prompt"])
        letter = swapped["chosen_letter"]
        assert swapped["chosen"] == f" ({letter}) {opts[letter]}" == f" ({letter}) {record['answer']}"
        assert swap_options(swapped) == record
