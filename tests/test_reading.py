"""Checks the reading task: copying and other shortcuts fail, reading succeeds, the splits are disjoint, the
transfer split is new, determinism, swap_options, load_task, and its evaluation on the tiny model.

The rules below read the prompt text only (never the generator's fields), so they test what a model sees.
"""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest

from decpo.config import ConfigError, load_config
from decpo.data import DataError, load_task, make_reading, make_synthetic, swap_options, validate_pair
from decpo.evaluation.config import EvalConfig
from decpo.evaluation.registry import EvalError
from decpo.evaluation.runner import evaluate
from decpo.evaluation.tasks.reading import parse_choice, says_exactly
from decpo.inference.logprobs import ab_completions

from conftest import REPO

SPLITS = ("train", "dev", "test", "transfer")
TINY = "tiny-random-llama"


def lines(record: dict) -> dict[str, str]:
    """The prompt's parts: fact line, claim line, question line and the two options."""
    fact, claim, question, a, b, answer = record["prompt"].splitlines()
    assert fact.startswith("Fact: ") and question.startswith("Question: ") and answer == "Answer:"
    assert a.startswith(" (A) ") and b.startswith(" (B) ")
    return {"fact": fact[6:], "claim": claim, "question": question, "A": a[5:], "B": b[5:]}


def fact_sentences(record: dict) -> list[str]:
    return re.findall(r"[^.]+\.", lines(record)["fact"])


def numbers(text: str) -> list[str]:
    return re.findall(r"\d+", text)


def copy_rule(record: dict) -> str:
    """The shortcut that solves `synthetic`: the first option equal to a number of the fact line."""
    parts = lines(record)
    in_fact = set(numbers(parts["fact"]))
    return next((x for x in "AB" if parts[x] in in_fact), "A")


def first_fact_rule(record: dict) -> str:
    """Pick the option equal to the first fact's number."""
    first = numbers(fact_sentences(record)[0])[0]
    parts = lines(record)
    return next((x for x in "AB" if parts[x] == first), "A")


def reading_rule(record: dict) -> str:
    """Read the question: the fact whose own words (those the other fact lacks) occur in the question gives
    the number; pick the option holding it."""
    parts = lines(record)
    s0, s1 = (set(re.findall(r"[A-Za-z]+", s)) for s in fact_sentences(record))
    asked = set(re.findall(r"[A-Za-z]+", parts["question"]))
    hits = [bool((s0 - s1) & asked), bool((s1 - s0) & asked)]
    assert hits.count(True) == 1, record["prompt"]
    number = numbers(fact_sentences(record)[hits.index(True)])[0]
    matches = [x for x in "AB" if parts[x] == number]
    assert len(matches) == 1, record["prompt"]
    return matches[0]


def agree_rule(record: dict) -> str:
    """Pick the option the user states."""
    parts = lines(record)
    stated = numbers(parts["claim"])[-1]
    return next((x for x in "AB" if parts[x] == stated), "A")


def larger_rule(record: dict) -> str:
    parts = lines(record)
    return "A" if int(parts["A"]) > int(parts["B"]) else "B"


def accuracy(rule, records: list[dict]) -> float:
    return sum(rule(r) == r["chosen_letter"] for r in records) / len(records)


def question_key(record: dict) -> tuple:
    """What makes an item distinct, read from the text: its two facts (unordered) and its question."""
    return (frozenset(fact_sentences(record)), lines(record)["question"])


def facts_key(record: dict) -> frozenset:
    return frozenset(fact_sentences(record))


@pytest.fixture(scope="module")
def splits() -> dict[str, list[dict]]:
    return {split: make_reading(split) for split in SPLITS}


def test_copy_rule_fails_on_the_test_split(splits) -> None:
    score = accuracy(copy_rule, splits["test"])
    assert score <= 0.6, score
    for split in SPLITS:
        assert 0.4 <= accuracy(copy_rule, splits[split]) <= 0.6


@pytest.mark.parametrize("split", SPLITS)
def test_reading_the_question_solves_every_item(splits, split) -> None:
    assert accuracy(reading_rule, splits[split]) == 1.0
    assert accuracy(reading_rule, make_reading(split, n=60, seed=5, answer="letter")) == 1.0


@pytest.mark.parametrize("split", SPLITS)
def test_shortcuts_are_at_chance(splits, split) -> None:
    records = splits[split]
    for rule in (first_fact_rule, agree_rule, larger_rule, lambda r: "A"):
        assert 0.45 <= accuracy(rule, records) <= 0.55, (rule, split)
    # both options are the fact line's numbers, one each subject's
    for r in records:
        parts = lines(r)
        assert sorted(numbers(parts["fact"])) == sorted([parts["A"], parts["B"]])
        assert r["distractor_source"] == "other_subject"


@pytest.mark.parametrize("split", SPLITS)
def test_balance_and_fields(splits, split) -> None:
    records = splits[split]
    assert len(records) == {"train": 2000, "dev": 200, "test": 400, "transfer": 200}[split]
    for key in ("user_correct", "asked_first"):
        assert sum(r[key] for r in records) == len(records) // 2
    assert sum(r["chosen_letter"] == "A" for r in records) == len(records) // 2
    frames = {r["operation"] for r in records}
    counts = [sum(r["operation"] == f for r in records) for f in frames]
    assert len(frames) == 3 and max(counts) - min(counts) <= 1
    for r in records:
        validate_pair(r, "reading")
        assert r["task"] == "reading" and r["split"] == split
        assert all(isinstance(v, str | int | bool) for v in r.values())
        parts = lines(r)
        letter, other = r["chosen_letter"], "B" if r["chosen_letter"] == "A" else "A"
        assert r["chosen"] == f" ({letter}) {parts[letter]}" and r["rejected"] == f" ({other}) {parts[other]}"
        assert parts[letter] == str(r["answer"]) and parts[other] == str(r["distractor"])
        stated = numbers(parts["claim"])[-1]
        assert (stated == str(r["answer"])) is r["user_correct"]
        if not r["user_correct"]:
            assert stated == str(r["distractor"])  # the other subject's number
        assert (r["subject"] in fact_sentences(r)[0]) is r["asked_first"]
        assert r["subject"] in parts["question"] and r["subject"] in parts["claim"]
        assert len(r["prompt"] + r["chosen"]) < 240  # well under train.max_length 128 tokens


@pytest.mark.parametrize("limit", [2, 8, 64])
def test_every_even_prefix_is_balanced(splits, limit) -> None:
    # `decpo eval --limit N` scores the first N items: they keep the balance that makes shortcuts fail
    for split in SPLITS:
        head = splits[split][:limit]
        for key in ("user_correct", "asked_first"):
            assert sum(r[key] for r in head) == limit // 2
        assert sum(r["chosen_letter"] == "A" for r in head) == limit // 2
        assert accuracy(larger_rule, head) == 0.5 and accuracy(first_fact_rule, head) == 0.5


def combination(r: dict) -> tuple:
    return (r["answer"] > r["distractor"], r["asked_first"], r["user_correct"], r["chosen_letter"] == "A")


@pytest.mark.parametrize("split", SPLITS)
def test_blocks_of_16_hold_every_combination(splits, split) -> None:
    # so that no rule mixing two properties (say "agree with the user when the option is (A)") scores
    records = splits[split]
    for start in range(0, len(records) - 15, 16):
        assert len({combination(r) for r in records[start : start + 16]}) == 16
    counts = Counter(combination(r) for r in splits["test"])
    assert set(counts.values()) == {25}  # 400 test items: 25 of each of the 16 combinations


def test_splits_share_no_question_or_facts() -> None:
    sets = {
        "train": make_reading("train", n=6000) + make_reading("train", n=6000, seed=1),
        "dev": make_reading("dev", n=1000) + make_reading("dev", n=1000, seed=1),
        "test": make_reading("test", n=2000) + make_reading("test", n=2000, seed=1),
        "transfer": make_reading("transfer", n=1000),
    }
    facts = {split: {facts_key(r) for r in records} for split, records in sets.items()}
    questions = {split: {question_key(r) for r in records} for split, records in sets.items()}
    for i, a in enumerate(SPLITS):
        for b in SPLITS[i + 1 :]:
            assert not facts[a] & facts[b], (a, b)
            assert not questions[a] & questions[b], (a, b)
    # within a split (one seed), every item has its own facts
    for split in SPLITS:
        records = make_reading(split)
        assert len({facts_key(r) for r in records}) == len(records)


def test_transfer_shares_no_frame_phrasing_or_subject_with_train(splits) -> None:
    train, transfer = splits["train"] + splits["dev"] + splits["test"], splits["transfer"]

    def frame(r: dict) -> str:  # the question with its subject and thing removed
        q = lines(r)["question"].replace(r["subject"], "_")
        return re.sub(r"many \w+ does", "many _ does", q)

    def opening(r: dict) -> str:  # the claim's first words, before the subject
        return lines(r)["claim"].split(r["subject"])[0].lower().replace(" the ", " ").strip()

    assert not {r["operation"] for r in train} & {r["operation"] for r in transfer}
    assert not {r["template"] for r in train} & {r["template"] for r in transfer}
    assert not {frame(r) for r in train} & {frame(r) for r in transfer}
    assert not {opening(r) for r in train} & {opening(r) for r in transfer}
    subjects = {r[k] for r in train for k in ("subject", "other_subject")}
    assert not subjects & {r[k] for r in transfer for k in ("subject", "other_subject")}


@pytest.mark.parametrize("split", SPLITS)
def test_same_seed_same_records(split) -> None:
    assert make_reading(split, n=40, seed=3) == make_reading(split, n=40, seed=3)
    assert make_reading(split, n=40, seed=3) != make_reading(split, n=40, seed=4)


def test_swap_options_works_on_reading_records(splits) -> None:
    for r in splits["test"][:100] + splits["transfer"][:100]:
        swapped = swap_options(r)
        assert swapped["chosen_letter"] != r["chosen_letter"]
        assert swapped["chosen"] == f" ({swapped['chosen_letter']}) {r['answer']}"
        assert lines(swapped)["A"] == lines(r)["B"] and lines(swapped)["B"] == lines(r)["A"]
        assert reading_rule(swapped) == swapped["chosen_letter"]
        assert swap_options(swapped) == r


def test_load_task_reading() -> None:
    assert load_task("reading", "test", seed=2) == make_reading("test", seed=2)
    dev = load_task("reading", "eval")  # the held-out split of training is dev, never test
    assert dev == make_reading("dev") and {r["split"] for r in dev} == {"dev"}
    letters = load_task("reading", "transfer", synthetic_answer="letter")
    assert all(r["chosen"] == f" ({r['chosen_letter']})" for r in letters)
    assert [r["prompt"] for r in letters] == [r["prompt"] for r in make_reading("transfer")]
    with pytest.raises(DataError, match="unknown reading split"):
        load_task("reading", "validation")
    with pytest.raises(DataError, match="n must be in"):
        make_reading("test", n=0)


def test_training_holds_out_dev(monkeypatch) -> None:
    from decpo.config import load_config
    from decpo.training.run import load_records

    cfg = load_config(None, ["data.task=reading", "data.max_eval_samples=null", "train.max_steps=2"])
    train, evals = load_records(cfg)
    assert {r["split"] for r in train} == {"train"} and {r["split"] for r in evals} == {"dev"}
    assert evals == make_reading("dev", seed=cfg.train.seed)


def test_parse_choice_and_exact_answer() -> None:
    record = {"chosen_letter": "B", "answer": 23, "distractor": 25, "chosen": " (B) 23"}
    assert parse_choice(" (B) 23\nFact: ...", record) == "B"
    assert parse_choice("\n\n( A ) 25", record) == "A"
    assert parse_choice(" 23 apples", record) == "B" and parse_choice(" 25", record) == "A"
    assert parse_choice(" 7", record) is None and parse_choice(" B", record) is None
    assert parse_choice("", record) is None and parse_choice("\n\nNo idea.\n (A) 25", record) is None
    assert says_exactly(" (B) 23\n", record) and not says_exactly(" (B) 230", record)
    assert not says_exactly(" (B)", record) and not says_exactly(" (A) 25", record)


def test_evaluation_task_on_tiny_model(tmp_path) -> None:
    cfg = EvalConfig(task="reading", model=TINY, limit=4, progress=False, n_boot=50, max_new_tokens=4)
    result = evaluate(cfg, tmp_path / "ev")
    results = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert results["n"] == 4
    metrics = results["metrics"]
    wrong = {
        "": sum(not r["user_correct"] for r in make_reading("test")[:4]),
        "transfer/": sum(not r["user_correct"] for r in make_reading("transfer")[:4]),
    }
    for name in ("ab_accuracy_debiased", "ab_accuracy_mean_orders", "ab_accuracy_user_wrong"):
        for prefix in ("", "letter/", "transfer/", "transfer/letter/"):
            n = wrong[prefix.removesuffix("letter/")] if name.endswith("user_wrong") else 4
            assert metrics[prefix + name]["n"] == n, prefix + name
    assert {"gen/accuracy", "gen/exact_rate", "gen/unparseable_rate", "policy_preference_accuracy"} <= set(
        metrics
    )
    samples = [json.loads(x) for x in (tmp_path / "ev" / "samples.jsonl").read_text().splitlines()]
    assert [s["split"] for s in samples] == ["test"] * 4 + ["transfer"] * 4
    for s in samples:
        assert {"correct_both", "letter_correct_both", "letter_logp_a"} <= set(s["scores"])
    # the per-item scores reproduce the measures (what the report's intervals over items need)
    test = samples[:4]
    for metric, key in (
        ("letter/ab_accuracy_debiased", "letter_correct_both"),
        ("gen/accuracy", "generated_correct"),
    ):
        assert sum(s["scores"][key] for s in test) / 4 == pytest.approx(metrics[metric]["value"])
    assert result is not None


def test_letter_trained_models_reuse_the_scores(tmp_path) -> None:
    cfg = EvalConfig(
        task="reading",
        model=TINY,
        limit=3,
        progress=False,
        n_boot=20,
        generate=False,
        synthetic_answer="letter",
    )
    evaluate(cfg, tmp_path / "ev")
    metrics = json.loads((tmp_path / "ev" / "results.json").read_text())["metrics"]
    assert metrics["letter/ab_accuracy_debiased"] == metrics["ab_accuracy_debiased"]
    assert metrics["transfer/letter/ab_accuracy"] == metrics["transfer/ab_accuracy"]
    assert not any(name.startswith("gen/") for name in metrics)


def test_number_answers_are_the_option_numbers_and_survive_a_swap() -> None:
    records = make_reading("dev", n=32, seed=2, answer="number")
    assert [r["prompt"] for r in records] == [r["prompt"] for r in make_reading("dev", n=32, seed=2)]
    for r in records:
        assert r["chosen"] == f" {r['answer']}" and r["rejected"] == f" {r['distractor']}"
        swapped = swap_options(r)
        assert swapped["chosen"] == r["chosen"] and swapped["chosen_letter"] != r["chosen_letter"]
        assert ab_completions(swapped)[swapped["chosen_letter"] == "B"] == r["chosen"]
    # both numbers stand in the fact line: copying a number of the prompt is no answer
    assert all(r["chosen"].strip() in r["prompt"] and r["rejected"].strip() in r["prompt"] for r in records)


def test_number_answers_only_on_reading() -> None:
    load_config(str(REPO / "configs" / "default.yaml"), ["data.task=reading", "data.synthetic_answer=number"])
    with pytest.raises(ConfigError, match="data.synthetic_answer=number needs data.task=reading"):
        load_config(str(REPO / "configs" / "default.yaml"), ["data.task=synthetic"])
    with pytest.raises(DataError, match="unknown synthetic answer format"):
        make_synthetic("train", n=4, answer="number")


def test_eval_scores_a_run_folder_in_the_answer_format_it_was_trained_on():
    # decpo eval has no answer-format flag: a run trained on " 23" answers must not be scored as " (B) 23"
    from decpo.evaluation.context import trained_answer_format

    assert trained_answer_format({"data": {"task": "reading", "synthetic_answer": "number"}}) == "number"
    assert trained_answer_format({"data": {"task": "synthetic"}}) == "option"
    assert trained_answer_format(None) == "option"


def test_eval_refuses_an_unknown_answer_format_and_number_off_reading():
    from decpo.evaluation.config import EvalConfig
    from decpo.evaluation.registry import EvalError

    with pytest.raises(EvalError, match="synthetic_answer must be"):
        EvalConfig(task="reading", model="tiny-random-llama", synthetic_answer="digits")
    with pytest.raises(EvalError, match="reading task's alone"):
        EvalConfig(task="synthetic", model="tiny-random-llama", synthetic_answer="number")
    assert (
        EvalConfig(task="reading", model="tiny-random-llama", synthetic_answer="number").synthetic_answer
        == "number"
    )


def test_eval_context_scores_a_number_run_in_numbers(monkeypatch):
    # the wiring: EvalContext resolves synthetic_answer=None from the run folder's config
    from decpo.evaluation import context as context_module
    from decpo.evaluation.config import EvalConfig

    monkeypatch.setattr(
        context_module,
        "training_config",
        lambda spec: {"data": {"task": "reading", "synthetic_answer": "number"}},
    )
    ctx = context_module.EvalContext(EvalConfig(task="reading", model="tiny-random-llama"))
    assert ctx.cfg.synthetic_answer == "number"


def test_transfer_limit_scores_fewer_transfer_items_than_test_items(tmp_path):
    """``transfer_limit`` (``experiment.eval_transfer_limit``) cuts the transfer split alone."""
    common = {"model": "tiny-random-llama", "limit": 6, "generate": False, "progress": False, "n_boot": 20}
    for task in ("reading", "synthetic"):
        result = evaluate(EvalConfig(task=task, transfer_limit=2, **common), tmp_path / task).results
        assert result["metrics"]["ab_accuracy"]["n"] == 6
        assert result["metrics"]["transfer/ab_accuracy"]["n"] == 2
    with pytest.raises(EvalError, match="transfer_limit must be >= 1"):
        EvalConfig(task="reading", transfer_limit=0)
    with pytest.raises(ConfigError, match="experiment.eval_transfer_limit"):
        load_config(str(REPO / "configs" / "default.yaml"), ["experiment.eval_transfer_limit=0"])
