"""Checks load_pairs on every input kind, its DataError for every malformed kind, skip mode, and the split."""

from __future__ import annotations

import csv
import gzip
import json
import logging
from pathlib import Path

import pytest

from decpo.data import DataError, load_pairs, split_train_eval, validate_pair

GOOD = {"prompt": "What is 2 + 2?", "chosen": " 4", "rejected": " 5"}
CONVERSATIONAL = {
    "prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2 + 2?"}],
    "chosen": [{"role": "assistant", "content": "4"}],
    "rejected": [{"role": "assistant", "content": "5"}],
}


def write_jsonl(path: Path, records: list[object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def good(i: int) -> dict[str, str]:
    return {"prompt": f"prompt {i}", "chosen": f"good {i}", "rejected": f"bad {i}"}


@pytest.mark.parametrize(
    ("bad", "field", "reason"),
    [
        ({"prompt": "p", "rejected": "r"}, "chosen", "missing field"),
        ({"prompt": 3, "chosen": "c", "rejected": "r"}, "prompt", "got int"),
        ({"prompt": "p", "chosen": "  ", "rejected": "r"}, "chosen", "empty string"),
        ({"prompt": "p", "chosen": "same", "rejected": "same "}, "chosen", "identical"),
        (
            {"prompt": "p", "chosen": [{"role": "user", "content": "c"}], "rejected": "r"},
            "chosen[0]",
            "assistant",
        ),
        ({**CONVERSATIONAL, "rejected": [{"role": "assistant"}]}, "rejected[0].content", "got NoneType"),
        ({**CONVERSATIONAL, "prompt": []}, "prompt", "empty message list"),
        ({**CONVERSATIONAL, "chosen": "4"}, "chosen", "mixes standard"),
    ],
)
def test_jsonl_bad_record_names_file_line_and_field(
    tmp_path: Path, bad: dict, field: str, reason: str
) -> None:
    path = write_jsonl(tmp_path / "data.jsonl", [good(0), good(1), bad, good(3)])
    with pytest.raises(DataError) as info:
        load_pairs(path)
    message = str(info.value)
    assert f"data.jsonl line 3: field {field!r}" in message
    assert reason in message
    assert info.value.field == field


def test_invalid_json_line_is_named(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps(good(0)) + "\n{not json\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"data\.jsonl line 2: invalid JSON"):
        load_pairs(path)


def test_non_utf8_bytes_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_bytes(
        json.dumps(good(0)).encode() + b"\n" + b'{"prompt": "caf\xe9", "chosen": "a", "rejected": "b"}\n'
    )
    with pytest.raises(DataError, match=r"data\.jsonl line 2: non-UTF-8"):
        load_pairs(path)


def test_non_utf8_in_json_and_csv_name_the_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "data.json"
    path.write_bytes(b'[\n{"prompt": "p", "chosen": "a", "rejected": "b"},\n{"prompt": "\xff"}\n]')
    with pytest.raises(DataError, match=r"data\.json line 3: non-UTF-8"):
        load_pairs(path)
    path = tmp_path / "data.csv"
    path.write_bytes(b"prompt,chosen,rejected\np,a,b\np,\xff,b\n")
    with pytest.raises(DataError, match=r"data\.csv row 2 \(line 3\): field 'chosen': non-UTF-8"):
        load_pairs(path)


@pytest.mark.parametrize("content", [b"", b"\n\n  \n"])
def test_empty_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "data.jsonl"
    path.write_bytes(content)
    with pytest.raises(DataError, match=r"data\.jsonl: empty file"):
        load_pairs(path)


def test_empty_json_list(tmp_path: Path) -> None:
    path = tmp_path / "data.json"
    path.write_text("[]", encoding="utf-8")
    with pytest.raises(DataError, match=r"data\.json: empty file"):
        load_pairs(path)


def test_unsupported_extension_lists_supported(tmp_path: Path) -> None:
    path = tmp_path / "data.tsv"  # (.parquet is supported since issue 14)
    path.write_bytes(b"x")
    with pytest.raises(
        DataError, match=r"data\.tsv: unsupported file type; supported: \.jsonl, \.json, \.csv.*\.parquet"
    ):
        load_pairs(path)


def test_json_list_item_is_named(tmp_path: Path) -> None:
    path = tmp_path / "data.json"
    path.write_text(json.dumps([good(0), {"prompt": "p", "chosen": "c"}]), encoding="utf-8")
    with pytest.raises(DataError, match=r"data\.json item 1: field 'rejected': missing field"):
        load_pairs(path)


def test_csv_row_and_line_are_named(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    # Row 1 spans lines 2-3 (a quoted newline), so row 2 starts on line 4.
    path.write_text('prompt,chosen,rejected\n"two\nlines",a,b\np,,b\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"data\.csv row 2 \(line 4\): field 'chosen': empty string"):
        load_pairs(path)


def test_skip_mode_counts_and_logs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "data.jsonl"
    lines = [json.dumps(good(0)), "{oops", json.dumps({"prompt": "p"}), json.dumps(good(3)), "[1, 2]"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="decpo.data"):
        records = load_pairs(path, on_error="skip")
    assert [r["chosen"] for r in records] == ["good 0", "good 3"]
    warnings = [r for r in caplog.records if r.name.startswith("decpo.data")]
    assert len(warnings) == 1
    assert "skipped 3 of 5 records" in warnings[0].getMessage()
    assert "line 2: invalid JSON" in warnings[0].getMessage()


def test_skip_mode_raises_when_nothing_is_left(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "data.jsonl", [{"prompt": "p"}, {"chosen": "c"}])
    with pytest.raises(DataError, match="no valid records left"):
        load_pairs(path, on_error="skip")


def test_bad_on_error_value(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "data.jsonl", [good(0)])
    with pytest.raises(DataError, match="on_error"):
        load_pairs(path, on_error="ignore")


def test_conversational_and_extra_fields_kept(tmp_path: Path) -> None:
    record = {**CONVERSATIONAL, "source": "unit"}
    path = write_jsonl(tmp_path / "data.jsonl", [record])
    assert load_pairs(path) == [record]


def test_json_csv_and_gz_accepted(tmp_path: Path) -> None:
    records = [good(i) for i in range(3)]
    (tmp_path / "a.json").write_text(json.dumps(records), encoding="utf-8")
    with open(tmp_path / "a.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["prompt", "chosen", "rejected"])
        writer.writeheader()
        writer.writerows(records)
    (tmp_path / "a.jsonl.gz").write_bytes(
        gzip.compress("".join(json.dumps(r) + "\n" for r in records).encode())
    )
    (tmp_path / "a.json.gz").write_bytes(gzip.compress(json.dumps(records).encode()))
    for name in ("a.json", "a.csv", "a.jsonl.gz", "a.json.gz"):
        assert load_pairs(tmp_path / name) == records, name


def test_save_to_disk_directory_accepted(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    records = [{**good(i), "id": i} for i in range(4)]
    datasets.Dataset.from_list(records).save_to_disk(str(tmp_path / "ds"))
    assert load_pairs(tmp_path / "ds") == records
    bad = [{**good(0)}, {"prompt": "p", "chosen": "x", "rejected": "x"}]
    datasets.Dataset.from_list(bad).save_to_disk(str(tmp_path / "bad"))
    with pytest.raises(DataError, match=r"bad item 1: field 'chosen': chosen and rejected are identical"):
        load_pairs(tmp_path / "bad")


def test_validate_pair_uses_where() -> None:
    validate_pair(GOOD, "x")
    validate_pair(CONVERSATIONAL, "x")
    with pytest.raises(DataError, match=r"^data\.jsonl line 3: field 'rejected': missing field$"):
        validate_pair({"prompt": "p", "chosen": "c"}, "data.jsonl line 3")


def test_split_is_the_last_tenth_and_deterministic() -> None:
    records = [good(i) for i in range(25)]
    train, held_out = split_train_eval(records)
    assert train == records[:22] and held_out == records[22:]  # ceil(2.5) = 3 eval records
    assert split_train_eval(records) == (train, held_out)
    train, held_out = split_train_eval([good(i) for i in range(600)])
    assert (len(train), len(held_out)) == (540, 60)  # no float round-up to 61


@pytest.mark.parametrize(("n", "fraction"), [(1, 0.1), (5, 0.99), (5, 0.0), (5, 1.0)])
def test_split_refuses_an_empty_side(n: int, fraction: float) -> None:
    with pytest.raises(DataError):
        split_train_eval([good(i) for i in range(n)], fraction)
