"""The built-in ``reading`` task: an offline, seeded A/B task that copying cannot solve, only reading.

The ``synthetic`` task (`decpo.data.synthetic`) states one fact, so "pick the option equal to the number in
the ``Fact:`` line" solves every item without reading the question. Here the fact line holds two facts of
two different frames about two different subjects, and the wrong option is always the OTHER fact's number::

    Fact: Tom has 23 apples. Anna is 25 years old.
    I think Tom has 25 apples. Is that right?
    Question: How many apples does Tom have?
     (A) 25
     (B) 23
    Answer:                                  chosen " (B) 23", rejected " (A) 25"

Both options are numbers of the fact line, so only finding the fact the question asks about (its subject
and its frame: the question's words) separates them. Why two frames (since commit 4fbb220): DPO did not
learn the one-frame version (``Tom has 23 apples. Anna has 25 apples.``) within the demo's budget, and two
frames give the model a second cue. With number answers and TRL's ``sft`` term beside the DPO loss (the
default preset) DPO learns this version in 20 steps (benchmarks/RESULTS.md, "Number answers and TRL's sft
term"); with option answers and the DPO loss alone it did not ("A task that needs reading"). The base model's number-only answers read 0.69-0.78 of 32 items in each
layout (`benchmarks/reading_base.py`), so neither layout is beyond it. The numbers of both
facts are drawn from the range their frames share, so a number's size says nothing about its frame.

Four properties are balanced so that every rule short of reading is at chance, each alone and any
two or more together, in a whole split and in its first N items alike (``--limit``): the items come in
blocks of 16 holding each of the 16 combinations once, as 8 pairs of opposite combinations; so every even
N is exactly balanced in each property, every N divisible by 16 in all their combinations (the frames
rotate in blocks of three):
    the asked subject's fact comes first        "pick the first (or second) fact's number"
    the right option is (A)                     "always answer (A)", "copy the first matching option"
    the user is right (else the user states     "agree (or disagree) with the user", "pick the number
    the other subject's number)                 said most often in the prompt"
    the asked subject's number is the larger    "pick the larger (or smaller) number"
Why always the other subject's number, not a near miss in some items: a near miss is absent from the fact
line, so those items would be solved by copying again; ``distractor_source`` ("other_subject") is kept in
each record so that measures and mixed item sets can tell this kind of distractor apart.

Answer formats: as in ``synthetic``, ``option`` (" (B) 23", letter and option text) or ``letter`` (" (B)");
and ``number`` (" 23", the option's number alone; synthetic has no such format, since there the number is
the fact line's only one and copying it solves the item).

Splits (default sizes: train 2000, dev 200, test 400, transfer 200; each item a distinct set of facts):
    train     frames count, age, score (two different ones per item); the four claim phrasings of ``synthetic``'s train split; the
              24 person names of ``synthetic``; numbers 2-99 (ages 5-99).
    dev       the held-out split for tuning and for evaluations during training (``load_task(..., "eval")``
              gives dev). Shares with train the frames, phrasings, names and number ranges, never a set of
              facts.
    test      the reported split: shares with train the frames, phrasings, names and number ranges, never a
              set of facts (nor with dev). 400 items, so that one model's accuracy has a standard error near
              0.025 and paired differences between models near 0.1 are detectable.
    transfer  frames price, distance, weight, whose subjects are things (goods, places, animals: no person
              name of train) and whose numbers run higher (up to 199); the claim phrasings of
              ``synthetic``'s transfer split; none of these occurs in train, dev or test. Shares with train
              the layout of the prompt (``Fact:``, ``Question:``, the options, ``Answer:``) only.
Train, dev and test are disjoint by a fixed partition of the facts: a hash of the frame, the thing counted
and the two (subject, number) pairs taken unordered, so that the same two facts never occur in two splits,
whichever subject is asked and whichever fact comes first (stricter than disjoint questions). The
partition does not depend on the seed: every seed draws other items of each split, never crossing it.
"""

from __future__ import annotations

import hashlib
import itertools
import random
from typing import Any

from decpo.data.errors import DataError
from decpo.data.synthetic import NAMES, THINGS, TRAIN_TEMPLATES, TRANSFER_TEMPLATES

READING_SPLITS = ("train", "dev", "test", "transfer")
HELD_OUT_SPLIT = "dev"  # what ``load_task("reading", "eval")`` (the held-out set of training) gives
DEFAULT_SIZES = {"train": 2000, "dev": 200, "test": 400, "transfer": 200}
MAX_ITEMS = 20_000  # per split: far below the number of distinct fact sets of every split
DISTRACTOR_SOURCE = "other_subject"
# "number": the answer is the option's number alone (" 23"); both numbers are in the fact line, so an echo
# of the prompt cannot carry it, and the decision is the number itself
ANSWER_FORMATS = ("option", "letter", "number")

GOODS = ("lamp", "bike", "coat", "clock", "chair", "kettle", "radio", "tent")
PLACES = ("town", "lake", "farm", "castle", "harbor", "forest")
ANIMALS = ("dog", "goat", "sheep", "pig", "deer", "seal", "horse", "camel")

# Fact frames: (fact sentence, claim, question); {s} is the subject, {n} the number, {t} the thing counted.
FRAMES = {
    # train, dev and test
    "count": ("{s} has {n} {t}.", "{s} has {n} {t}", "How many {t} does {s} have?"),
    "age": ("{s} is {n} years old.", "{s} is {n} years old", "How old is {s}?"),
    "score": ("{s} scored {n} points.", "{s} scored {n} points", "How many points did {s} score?"),
    # transfer only
    "price": ("The {s} costs {n} dollars.", "the {s} costs {n} dollars", "How much does the {s} cost?"),
    "distance": ("The {s} is {n} miles away.", "the {s} is {n} miles away", "How far away is the {s}?"),
    "weight": (
        "The {s} weighs {n} kilograms.",
        "the {s} weighs {n} kilograms",
        "How much does the {s} weigh?",
    ),
}
TRAIN_FRAMES = ("count", "age", "score")
TRANSFER_FRAMES = ("price", "distance", "weight")
SUBJECTS = {
    "count": NAMES,
    "age": NAMES,
    "score": NAMES,
    "price": GOODS,
    "distance": PLACES,
    "weight": ANIMALS,
}
NUMBERS = {
    "count": (2, 99),
    "age": (5, 99),
    "score": (2, 99),
    "price": (5, 199),
    "distance": (2, 149),
    "weight": (3, 199),
}

# A drawn question: (asked frame, thing, asked subject, its number, other frame, other subject, its number);
# the thing counted (``count`` frame) is "" when neither fact is a count
Question = tuple[str, str, str, int, str, str, int]


def facts_key(question: Question) -> tuple:
    """What the partition hashes: the two facts (frame, subject, number), unordered, and the thing counted
    (not which fact is asked)."""
    frame, thing, s0, n0, other_frame, s1, n1 = question
    return (thing, tuple(sorted([(frame, s0, n0), (other_frame, s1, n1)])))


def partition(question: Question) -> str:
    """The fixed split of a train-frame question's facts: 1 in 10 test, 1 in 10 dev, the rest train."""
    bucket = hashlib.sha256(repr(facts_key(question)).encode()).digest()[0] % 10
    return "test" if bucket == 0 else "dev" if bucket == 1 else "train"


def _blocks(values: tuple, n: int, rng: random.Random) -> list:
    """``n`` values: consecutive blocks each holding every value once, in a seeded order within the block."""
    out: list = []
    while len(out) < n:
        block = list(values)
        rng.shuffle(block)
        out += block
    return out[:n]


def _design(n: int, rng: random.Random) -> list[tuple[bool, ...]]:
    """``n`` combinations of the balanced properties (asked number the larger, asked fact first, user right,
    right option (A)): blocks of 16 holding each combination once, laid out as 8 consecutive pairs of
    opposite combinations, so that every even-length prefix is balanced in each property."""
    halves = [c for c in itertools.product((True, False), repeat=4) if c[0]]
    out: list[tuple[bool, ...]] = []
    while len(out) < n:
        for combo in _blocks(tuple(halves), len(halves), rng):
            out += _blocks((combo, tuple(not x for x in combo)), 2, rng)
    return out[:n]


def _draw(frame: str, frames: tuple[str, ...], asked_larger: bool, rng: random.Random) -> Question:
    """The asked fact of ``frame`` and the other fact of another of ``frames``, about two distinct subjects,
    with two distinct numbers from the range both frames share; the asked one's number the larger if asked."""
    other_frame = rng.choice([f for f in frames if f != frame])
    asked = rng.choice(SUBJECTS[frame])
    other = rng.choice([s for s in SUBJECTS[other_frame] if s != asked])
    lo = max(NUMBERS[frame][0], NUMBERS[other_frame][0])
    hi = min(NUMBERS[frame][1], NUMBERS[other_frame][1])
    small, large = sorted(rng.sample(range(lo, hi + 1), 2))
    thing = rng.choice(THINGS) if "count" in (frame, other_frame) else ""
    value, wrong = (large, small) if asked_larger else (small, large)
    return (frame, thing, asked, value, other_frame, other, wrong)


def _questions(split: str, larger: list[bool], rng: random.Random) -> list[Question]:
    """Questions of ``split`` with distinct fact sets, the asked number the larger where ``larger`` says, the
    frames in equal shares."""
    frames = TRANSFER_FRAMES if split == "transfer" else TRAIN_FRAMES
    wanted = _blocks(frames, len(larger), rng)
    seen: set[tuple] = set()
    out = []
    for frame, asked_larger in zip(wanted, larger, strict=True):
        while True:
            question = _draw(frame, frames, asked_larger, rng)
            key = facts_key(question)
            if key not in seen and (split == "transfer" or partition(question) == split):
                break
        seen.add(key)
        out.append(question)
    return out


def _record(question: Question, flags: tuple[bool, bool, bool], template: str, split: str, answer: str):
    """One pair record; ``flags``: (asked fact first, user right, right option is (A))."""
    frame, thing, subject, value, other_frame, other, wrong = question
    asked_first, right, first = flags
    fact, claim, asked = FRAMES[frame]
    other_fact = FRAMES[other_frame][0]
    facts = [fact.format(s=subject, n=value, t=thing), other_fact.format(s=other, n=wrong, t=thing)]
    if not asked_first:
        facts.reverse()
    templates = TRANSFER_TEMPLATES if split == "transfer" else TRAIN_TEMPLATES
    statement = templates[template].format(
        claim=claim.format(s=subject, n=value if right else wrong, t=thing)
    )
    option_a, option_b = (value, wrong) if first else (wrong, value)
    letter, other_letter = ("A", "B") if first else ("B", "A")
    chosen, rejected = f" ({letter})", f" ({other_letter})"
    if answer == "option":
        chosen, rejected = f"{chosen} {value}", f"{rejected} {wrong}"
    elif answer == "number":
        chosen, rejected = f" {value}", f" {wrong}"
    return {
        "prompt": (
            f"Fact: {' '.join(facts)}\n{statement}\nQuestion: {asked.format(s=subject, t=thing)}\n"
            f" (A) {option_a}\n (B) {option_b}\nAnswer:"
        ),
        "chosen": chosen,
        "rejected": rejected,
        "task": "reading",
        "split": split,
        "operation": frame,
        "other_operation": other_frame,
        "template": template,
        "user_correct": right,
        "chosen_letter": letter,
        "answer": value,
        "distractor": wrong,
        "distractor_source": DISTRACTOR_SOURCE,
        "asked_first": asked_first,
        "subject": subject,
        "other_subject": other,
    }


def make_reading(
    split: str = "train", n: int | None = None, seed: int = 0, answer: str = "option"
) -> list[dict[str, Any]]:
    """Build the pairs of one split of the reading task.

    Args:
        split: ``"train"``, ``"dev"``, ``"test"`` or ``"transfer"``.
        n: number of items (defaults: train 2000, dev 200, test 400, transfer 200); each a distinct set of
            facts, the frames in equal shares (some one more when ``n`` is not a multiple of 3).
        seed: the same (split, n, seed) gives the same records.
        answer: ``"option"`` (chosen " (B) 23": letter and option text), ``"letter"`` (" (B)") or
            ``"number"`` (" 23": the option's number alone).

    Returns:
        Records ``{prompt, chosen, rejected, task, split, operation, template, user_correct, chosen_letter,
        answer, distractor, distractor_source, asked_first, subject, other_subject, other_operation}``:
        ``operation`` is the asked fact's frame, ``other_operation`` the other fact's, ``answer`` the asked subject's number, ``distractor`` the other subject's number (the
        wrong option), ``asked_first`` whether the asked subject's fact comes first in the fact line.
    """
    if split not in READING_SPLITS:
        raise DataError(f"unknown reading split {split!r}; expected one of {READING_SPLITS}")
    if answer not in ANSWER_FORMATS:
        raise DataError(f"unknown reading answer format {answer!r}; expected one of {ANSWER_FORMATS}")
    n = DEFAULT_SIZES[split] if n is None else n
    if not 1 <= n <= MAX_ITEMS:
        raise DataError(f"reading {split}: n must be in [1, {MAX_ITEMS}], got {n}")
    rng = random.Random(f"decpo-reading:{split}:{seed}")
    design = _design(n, rng)
    questions = _questions(split, [d[0] for d in design], rng)
    flags = [d[1:] for d in design]
    names = sorted(TRANSFER_TEMPLATES if split == "transfer" else TRAIN_TEMPLATES)
    return [_record(q, f, rng.choice(names), split, answer) for q, f in zip(questions, flags, strict=True)]
