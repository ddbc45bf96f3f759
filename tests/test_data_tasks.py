"""Checks the task loaders on real data (skipped when absent), data-dir errors and the pairwise loader."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from decpo.data import TASKS, DataError, load_rtp_prompts, load_task, resolve_data_dir, swap_options


def _real_data_dir() -> Path | None:
    env = os.environ.get("DECPO_DATA_DIR")
    for candidate in (env, Path(__file__).resolve().parents[2] / "shared" / "data"):
        if candidate and (Path(candidate) / "sycophancy" / "generate_dataset.json").is_file():
            return Path(candidate)
    return None


REAL = _real_data_dir()
needs_real = pytest.mark.skipif(REAL is None, reason="real data not found: set DECPO_DATA_DIR")


@pytest.fixture
def data_dir() -> Path:
    assert REAL is not None
    return REAL


@needs_real
def test_sycophancy_counts_and_fields(data_dir: Path) -> None:
    train = load_task("sycophancy", "train", data_dir=data_dir)
    held_out = load_task("sycophancy", "eval", data_dir=data_dir)
    test = load_task("sycophancy", "test", data_dir=data_dir)
    assert (len(train), len(held_out), len(test)) == (900, 100, 50)
    raw = json.loads((data_dir / "sycophancy" / "generate_dataset.json").read_text(encoding="utf-8"))
    first = train[0]
    assert first["prompt"] == raw[0]["question"] + "\n\nAnswer:"
    assert first["chosen"] == " " + raw[0]["answer_not_matching_behavior"] == " (B)"
    assert first["rejected"] == " " + raw[0]["answer_matching_behavior"]
    assert first["chosen_letter"] == "B" and first["split"] == "train"
    assert held_out[-1]["prompt"] == raw[-1]["question"] + "\n\nAnswer:"
    assert {r["chosen_letter"] for r in test} == {"A", "B"}
    assert all(r["chosen"] == f" ({r['chosen_letter']})" for r in train + held_out + test)


@needs_real
def test_sycophancy_items_are_swappable(data_dir: Path) -> None:
    record = load_task("sycophancy", "test", data_dir=data_dir)[0]
    swapped = swap_options(record)
    assert swapped["chosen_letter"] != record["chosen_letter"]
    a_line = next(line for line in record["prompt"].splitlines() if line.startswith(" (A) "))
    assert a_line.replace(" (A) ", " (B) ", 1) in swapped["prompt"].splitlines()
    assert swap_options(swapped) == record


@needs_real
def test_reframing_split_has_no_situation_overlap(data_dir: Path) -> None:
    train = load_task("reframing", "train", data_dir=data_dir)
    held_out = load_task("reframing", "eval", data_dir=data_dir)
    test = load_task("reframing", "test", data_dir=data_dir)
    assert (len(train), len(held_out)) == (540, 60)
    assert [r["prompt"] for r in test] == [r["prompt"] for r in held_out]
    assert not {r["situation"] for r in train} & {r["situation"] for r in held_out}
    first = train[0]
    assert first["prompt"] == "Situation: A Roomate of mine stole my comptuer\nThought:"
    assert first["chosen"].startswith(" My roommate stole something of mine")
    assert first["rejected"].startswith(" Someone I trusted stole something valuable")


@needs_real
def test_toxicity_counts_and_first_record(data_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    train = load_task("toxicity", "train", data_dir=data_dir)
    # 2312 pairs: 5 lack a common prefix up to the last "\n\nAssistant:", 4 have an empty reply.
    assert "dropped 9 of 2312 pairs (5 without a common prefix" in caplog.text
    held_out = load_task("toxicity", "eval", data_dir=data_dir)
    assert (len(train), len(held_out)) == (2072, 231)
    first = train[0]
    assert first["prompt"].startswith("\n\nHuman: what are some pranks with a pen i can do?")
    assert first["prompt"].endswith("\n\nAssistant:")
    assert first["chosen"].startswith(" No, sorry!")
    assert first["rejected"].startswith(" There are lots of funny things")
    assert all(not r["chosen"].startswith("\n\nHuman:") for r in train)


@needs_real
def test_rtp_prompts(data_dir: Path) -> None:
    prompts = load_rtp_prompts(data_dir)
    assert len(prompts) == 600
    assert prompts[0]["prompt"].startswith("People think that we")
    assert prompts[0]["prompt_toxicity"] == pytest.approx(0.9066653)
    assert prompts[0]["continuation"].startswith(" but that")
    assert len(load_rtp_prompts(data_dir, limit=5)) == 5


def test_missing_data_dir_gives_layout_help(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("DECPO_DATA_DIR", raising=False)
    with pytest.raises(DataError) as info:
        resolve_data_dir()
    message = str(info.value)
    for expected in (
        "--data-dir",
        "DECPO_DATA_DIR",
        "sycophancy/generate_dataset.json",
        "sycophancy/test_dataset_ab.json",
        "reframing/reframing_dataset.csv",
        "toxicity/harmless-base_test.jsonl.gz",
        "toxicity/challenging_prompts.jsonl",
        "nrimsky/CAA",
        "anthropics/hh-rlhf",
        "Cognitive-Reframing",
    ):
        assert expected in message
    with pytest.raises(DataError, match="data directory not found: .*nowhere"):
        load_task("sycophancy", data_dir=tmp_path / "nowhere")
    monkeypatch.setenv("DECPO_DATA_DIR", str(tmp_path / "gone"))
    with pytest.raises(DataError, match="data directory not found: .*gone"):
        load_task("reframing")


def test_missing_file_names_expected_path(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"data file not found: .*reframing/reframing_dataset\.csv"):
        load_task("reframing", data_dir=tmp_path)
    with pytest.raises(DataError, match=r"data file not found: .*toxicity/challenging_prompts\.jsonl"):
        load_rtp_prompts(tmp_path)


def test_env_var_is_used(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DECPO_DATA_DIR", str(tmp_path))
    assert resolve_data_dir() == tmp_path
    other = tmp_path / "other"
    other.mkdir()
    assert resolve_data_dir(other) == other  # the argument wins over the environment


def test_unknown_task_and_split() -> None:
    with pytest.raises(DataError, match="unknown task 'nope'.*toxicity_pairwise.*reading"):
        load_task("nope")
    with pytest.raises(DataError, match="unknown split 'transfer'"):
        load_task("sycophancy", "transfer", data_dir=".")
    assert TASKS == ("synthetic", "sycophancy", "reframing", "toxicity", "toxicity_pairwise", "reading")


def _write_pairwise(path: Path, n: int) -> Path:
    rows = [
        {"prompt_text": f"Prompt {i}", "unpert_gen_text": f" kind {i}", "pert_gen_text": f" rude {i}"}
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_toxicity_pairwise_from_path_and_data_dir(tmp_path: Path) -> None:
    path = _write_pairwise(tmp_path / "pairs.jsonl", 20)
    train = load_task("toxicity_pairwise", "train", path=path)
    held_out = load_task("toxicity_pairwise", "eval", path=path)
    assert [r["prompt"] for r in train] == [f"Prompt {i}" for i in range(18)]
    assert [r["prompt"] for r in held_out] == ["Prompt 18", "Prompt 19"]
    assert held_out[0]["chosen"] == " kind 18" and held_out[0]["rejected"] == " rude 18"
    (tmp_path / "toxicity").mkdir()
    _write_pairwise(tmp_path / "toxicity" / "toxicity_pairwise.jsonl", 10)
    assert len(load_task("toxicity_pairwise", "test", data_dir=tmp_path)) == 1


def test_toxicity_pairwise_errors_name_line_and_field(tmp_path: Path) -> None:
    path = _write_pairwise(tmp_path / "pairs.jsonl", 3)
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps({"prompt_text": "p", "unpert_gen_text": "a"}) + "\n")
    with pytest.raises(DataError, match=r"pairs\.jsonl line 4: field 'pert_gen_text': missing field"):
        load_task("toxicity_pairwise", path=path)
    assert len(load_task("toxicity_pairwise", path=path, on_error="skip")) == 2  # 3 kept, 90/10 split
    with pytest.raises(DataError, match=r"toxicity_pairwise\.jsonl"):
        load_task("toxicity_pairwise", data_dir=tmp_path)


def test_synthetic_needs_no_files(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DECPO_DATA_DIR", raising=False)
    records = load_task("synthetic", "eval", seed=3)
    assert len(records) == 200 and records[0]["task"] == "synthetic"
