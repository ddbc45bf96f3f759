"""The labelled concepts of the built-in tasks (probes/concepts.py): each label agrees with the prompt's text,
the tasks carry the concepts they should (toxicity and sycophancy through the texts made for them,
probes/concept_texts.py), and unusable sources are refused."""

from __future__ import annotations

import json

import pytest

from decpo.data import DataError, load_task, make_reading, make_synthetic
from decpo.data.prompts import load_prompts
from decpo.probes.concept_texts import answered_sycophancy_records, rtp_continuation_records
from decpo.probes.concepts import concept_labels, labelled_texts
from decpo.probes.tokens import AnsweredText


def test_reading_labels_agree_with_the_prompt():
    records = make_reading("train", n=32)
    labels = concept_labels(records)
    assert set(labels) == {"user_correct", "correct_letter_a", "asked_first", "asked_larger"}
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


def _rtp_file(folder, n: int = 60):
    """A RealToxicityPrompts-schema file of ``n`` prompts: continuation toxicity i / n, every 7th score null and
    every 11th continuation absent."""
    (folder / "toxicity").mkdir(parents=True)
    lines = []
    for i in range(n):
        continuation = (
            {} if i % 11 == 3 else {"text": f" went on {i}", "toxicity": None if i % 7 == 2 else i / n}
        )
        lines.append(
            json.dumps({"prompt": {"text": f"Prompt {i}", "toxicity": 0.9}, "continuation": continuation})
        )
    (folder / "toxicity" / "challenging_prompts.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def test_toxicity_texts_are_prompts_with_their_continuation_eval_split_first_labelled_at_half(tmp_path):
    data_dir = _rtp_file(tmp_path)
    records = rtp_continuation_records(data_dir)
    expected = [
        (p["prompt"], p["continuation"], p["continuation_toxicity"])
        for split in ("eval", "train")
        for p in load_prompts("toxicity", split=split, data_dir=data_dir)
        if p["continuation"] and p["continuation_toxicity"] is not None
    ]
    every = load_prompts("toxicity", split="all", data_dir=data_dir)
    assert 0 < len(records) == len(expected) < len(every)  # those without a scored continuation left out
    assert [(r["prompt"], r["answer"], r["continuation_toxicity"]) for r in records] == expected
    eval_prompts = {p["prompt"] for p in load_prompts("toxicity", split="eval", data_dir=data_dir)}
    n_eval = sum(r["prompt"] in eval_prompts for r in records)
    assert 0 < n_eval < len(records) and all(r["prompt"] in eval_prompts for r in records[:n_eval])
    labels = concept_labels(records)
    assert labels == {"toxic_continuation": [int(t >= 0.5) for *_, t in expected]}
    texts, same = labelled_texts("toxicity", 5, str(data_dir))
    assert texts == [AnsweredText(r["prompt"], r["answer"]) for r in records[:5]]
    assert same == {"toxic_continuation": labels["toxic_continuation"][:5]}


def test_sycophancy_texts_alternate_the_two_answers_labelled_by_the_users_view():
    records = [
        {
            "prompt": f"I think X{i}. Agree?\n (A) Yes\n (B) No\n\nAnswer:",
            "chosen": f" ({c})",
            "rejected": f" ({'B' if c == 'A' else 'A'})",
            "task": "sycophancy",
            "chosen_letter": c,
        }
        for i, c in enumerate("ABBAAB")
    ]
    answered = answered_sycophancy_records(records)
    labels = concept_labels(answered)
    assert labels == {"correct_letter_a": [1, 0, 0, 1, 1, 0], "sycophantic_answer": [0, 1, 0, 1, 0, 1]}
    for r, a in zip(records, answered, strict=True):
        # the sycophantic answer is the pair's rejected one (CAA's answer_matching_behavior); the other is kept
        pair = (r["rejected"], r["chosen"]) if a["sycophantic_answer"] else (r["chosen"], r["rejected"])
        assert (a["prompt"], a["answer"], a["other"]) == (r["prompt"], *pair)
    with pytest.raises(DataError, match="record 0 is not a sycophancy pair"):
        answered_sycophancy_records([{**records[0], "task": "reading"}])


def test_the_real_sycophancy_and_toxicity_texts_carry_both_classes(data_dir):
    texts, labels = labelled_texts("sycophancy", 64, str(data_dir))
    held = load_task("sycophancy", "eval", data_dir=data_dir)[:64]  # the items no model trains on first
    assert labels["sycophantic_answer"] == [i % 2 for i in range(64)]
    assert all(
        t.prompt == r["prompt"] and t.answer in (r["chosen"], r["rejected"])
        for t, r in zip(texts, held, strict=True)
    )
    texts, labels = labelled_texts("sycophancy", None, str(data_dir))
    assert len(texts) == sum(
        len(load_task("sycophancy", s, data_dir=data_dir)) for s in ("eval", "test", "train")
    )
    texts, labels = labelled_texts("toxicity", None, str(data_dir))
    assert 10 <= sum(labels["toxic_continuation"]) <= len(texts) - 10  # both classes usable by 5 folds


@pytest.mark.parametrize(("flags", "token"), [([], "completion_mean"), (["--token", "last"], "last")])
def test_decpo_probe_reads_the_concept_texts_over_the_answer_unless_told(tmp_path, monkeypatch, flags, token):
    import argparse

    from decpo.cli.probe import add_parser
    from decpo.probes import runner

    seen = {}

    def fake_probe_models(models, texts, output_dir, options, **kw):
        seen.update(texts=texts, token=options.token)
        raise SystemExit(0)  # nothing to probe: the options are what this test reads

    monkeypatch.setattr(runner, "probe_models", fake_probe_models)
    data_dir = _rtp_file(tmp_path)
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command", required=True))
    argv = ["probe", "--texts", "toxicity", "--data-dir", str(data_dir), "--measure", "sparse_probing"]
    args = parser.parse_args([*argv, *flags, "--output-dir", str(tmp_path / "out")])
    with pytest.raises(SystemExit):
        args.func(args)
    assert seen["token"] == token and isinstance(seen["texts"][0], AnsweredText)
