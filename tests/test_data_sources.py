"""load_pairs beyond single local files (issue 14): Parquet files, folders of data files with splits as
`datasets` finds them, saved DatasetDicts, and Hub dataset ids ``org/name[:split]``, every record validated as
a file's are; without network a Hub id fails at once, and no connection is attempted."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from decpo.data import DataError, load_pairs
from decpo.data import readers as readers_module
from decpo.data.readers import is_hub_dataset_id

datasets = pytest.importorskip("datasets")

CONVERSATIONAL = {
    "prompt": [{"role": "user", "content": "2 + 2?"}],
    "chosen": [{"role": "assistant", "content": "4"}],
    "rejected": [{"role": "assistant", "content": "5"}],
}


def good(i: int) -> dict:
    return {"prompt": f"question {i}?", "chosen": f"right {i}", "rejected": f"wrong {i}"}


def write_parquet(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    datasets.Dataset.from_list(records).to_parquet(str(path))
    return path


@pytest.fixture
def no_network(monkeypatch):
    """Every attempt to open a connection is recorded and fails the call."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise AssertionError(f"a network connection was attempted: {args}")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return attempts


# --- Parquet files and folders


def test_a_parquet_file_loads_and_validates(tmp_path):
    records = [good(i) for i in range(3)] + [CONVERSATIONAL]
    path = write_parquet(tmp_path / "pairs.parquet", records[:3])
    assert load_pairs(path) == records[:3]
    path = write_parquet(tmp_path / "chat.parquet", [CONVERSATIONAL])
    assert load_pairs(path) == [CONVERSATIONAL]  # message lists survive Parquet's list<struct>


def test_a_bad_row_in_a_parquet_file_names_the_file_and_the_row(tmp_path):
    records = [good(0), good(1), {"prompt": "p", "chosen": "same", "rejected": "same"}, good(3)]
    path = write_parquet(tmp_path / "bad.parquet", records)
    with pytest.raises(DataError) as e:
        load_pairs(path)
    assert str(e.value) == f"{path} item 2: field 'chosen': chosen and rejected are identical"
    assert load_pairs(path, on_error="skip") == [good(0), good(1), good(3)]
    # a row with a null field
    path = write_parquet(tmp_path / "null.parquet", [good(0), {**good(1), "rejected": None}])
    with pytest.raises(DataError, match=rf"^{path} item 1: field 'rejected': expected a string"):
        load_pairs(path)


def test_a_file_that_is_not_parquet_is_a_data_error(tmp_path):
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match=rf"^{path}: cannot read Parquet file"):
        load_pairs(path)
    empty = write_parquet(tmp_path / "empty.parquet", [])
    with pytest.raises(DataError, match=r"empty file \(no records\)"):
        load_pairs(empty)


def test_a_folder_of_parquet_shards_loads_its_splits(tmp_path):
    train = [good(i) for i in range(5)]
    test = [good(i) for i in range(10, 12)]
    folder = tmp_path / "hub-layout"
    write_parquet(folder / "data" / "train-00000-of-00002.parquet", train[:3])
    write_parquet(folder / "data" / "train-00001-of-00002.parquet", train[3:])
    write_parquet(folder / "data" / "test-00000-of-00001.parquet", test)
    (folder / "README.md").write_text("---\nlicense: mit\n---\n")
    assert load_pairs(folder) == train  # several splits, none named: train
    assert load_pairs(f"{folder}:test") == test
    assert load_pairs(folder, split="test") == test
    with pytest.raises(DataError, match=r"no split 'validation'; the splits are \['test', 'train'\]"):
        load_pairs(folder, split="validation")
    with pytest.raises(DataError, match="two splits asked for"):
        load_pairs(f"{folder}:test", split="train")


def test_a_bad_row_in_a_folder_names_its_file_and_row(tmp_path):
    folder = tmp_path / "shards"
    write_parquet(folder / "train-00000-of-00002.parquet", [good(0), good(1)])
    # a row without `rejected` holds a null there (Arrow fills the column)
    bad = write_parquet(folder / "train-00001-of-00002.parquet", [good(2), {"prompt": "p", "chosen": "c"}])
    with pytest.raises(DataError) as e:
        load_pairs(folder)
    assert (
        str(e.value)
        == f"{bad} item 1: field 'rejected': expected a string or a list of messages, got NoneType"
    )
    assert load_pairs(folder, on_error="skip") == [good(0), good(1), good(2)]
    # a shard without the column at all
    write_parquet(bad, [{"prompt": "p", "chosen": "c"}])
    with pytest.raises(DataError, match=rf"^{bad} item 0: field 'rejected': missing field$"):
        load_pairs(folder)


def test_a_folder_without_split_names_is_one_split_of_any_supported_files(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "a.jsonl").write_text("".join(json.dumps(good(i)) + "\n" for i in range(2)))
    (folder / "b.json").write_text(json.dumps([good(2)]))
    write_parquet(folder / "c.parquet", [good(3)])
    assert load_pairs(folder) == [good(i) for i in range(4)]
    (folder / "a.jsonl").write_text(json.dumps(good(0)) + "\n{oops\n")
    with pytest.raises(DataError, match=rf"^{folder / 'a.jsonl'} line 2: invalid JSON"):
        load_pairs(folder)


def test_a_folder_with_an_unsupported_data_file_names_it(tmp_path):
    folder = tmp_path / "odd"
    write_parquet(folder / "a.parquet", [good(0)])
    (folder / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match=rf"^{folder / 'notes.txt'}: unsupported file type"):
        load_pairs(folder)


def test_splits_without_train_must_be_named(tmp_path):
    folder = tmp_path / "eval-only"
    write_parquet(folder / "test.parquet", [good(0)])
    write_parquet(folder / "validation.parquet", [good(1)])
    with pytest.raises(DataError, match=r"holds the splits \['test', 'validation'\]; name one as .*:<split>"):
        load_pairs(folder)
    assert load_pairs(folder, split="validation") == [good(1)]


def test_a_folder_without_data_files_is_a_data_error(tmp_path):
    (tmp_path / "README.md").write_text("no data here")
    with pytest.raises(DataError, match=r"no data files .*not a directory written by datasets save_to_disk"):
        load_pairs(tmp_path)


def test_a_saved_dataset_dict_loads_a_named_split(tmp_path):
    dd = datasets.DatasetDict(
        train=datasets.Dataset.from_list([good(0), good(1)]), test=datasets.Dataset.from_list([good(2)])
    )
    dd.save_to_disk(str(tmp_path / "dd"))
    assert load_pairs(f"{tmp_path / 'dd'}:test") == [good(2)]
    with pytest.raises(DataError, match=r"DatasetDict with splits \['test', 'train'\].*:<split>"):
        load_pairs(tmp_path / "dd")


def test_a_split_of_a_file_is_refused(tmp_path):
    path = write_parquet(tmp_path / "p.parquet", [good(0)])
    with pytest.raises(DataError, match="names part of a folder or a Hub dataset, not of a file"):
        load_pairs(path, split="train")


# --- Hub ids


@pytest.mark.parametrize(
    "spec, hub",
    [
        ("org/name", True),
        ("org/name:test", True),
        ("Anthropic/hh-rlhf", True),
        ("data/pairs.jsonl", False),  # a missing file, not a repo named pairs.jsonl
        ("data/pairs.parquet:train", False),
        ("./org/name", False),
        ("/abs/name", False),
        ("a/b/c", False),
        ("name", False),
        ("org/na me", False),
    ],
)
def test_what_counts_as_a_hub_dataset_id(spec, hub):
    assert is_hub_dataset_id(spec) is hub


def test_a_missing_local_file_is_not_looked_up_on_the_hub(no_network):
    with pytest.raises(DataError, match=r"^data/pairs\.jsonl: file not found$"):
        load_pairs("data/pairs.jsonl")
    assert no_network == []


def test_a_local_folder_wins_over_the_hub_id_it_spells(tmp_path, monkeypatch, no_network):
    monkeypatch.chdir(tmp_path)
    write_parquet(tmp_path / "org" / "name" / "train.parquet", [good(0)])
    assert load_pairs("org/name") == [good(0)]
    assert no_network == []


def test_a_hub_id_offline_is_a_data_error_at_once_without_a_connection(no_network):
    from huggingface_hub import constants

    if not (constants.HF_HUB_OFFLINE and datasets.config.HF_HUB_OFFLINE):
        pytest.skip("HF_HUB_OFFLINE was not set before the imports (conftest sets it)")
    with pytest.raises(DataError) as e:
        load_pairs("decpo-tests/no-such-dataset:test")
    message = str(e.value)
    assert message.startswith(
        "decpo-tests/no-such-dataset:test: not a local path, and the Hugging Face Hub is "
    )
    assert "unreachable (offline: HF_HUB_OFFLINE is set" in message and "not in the datasets cache" in message
    assert no_network == []


def test_a_hub_id_with_the_hub_unreachable_fails_before_datasets_is_asked(monkeypatch, no_network):
    def load_dataset(*args, **kwargs):
        raise AssertionError("datasets.load_dataset was called")

    monkeypatch.setattr(readers_module, "hub_offline_mode", lambda: False)
    monkeypatch.setattr(readers_module, "hub_endpoint", lambda: "https://hub.example")
    monkeypatch.setattr(readers_module, "hub_unreachable", lambda endpoint: f"cannot connect to {endpoint}")
    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    with pytest.raises(DataError) as e:
        load_pairs("decpo-tests/no-such-dataset")
    assert str(e.value).startswith(
        "decpo-tests/no-such-dataset:train: not a local path, and the Hugging Face Hub (https://hub.example) is "
        "unreachable (offline): cannot connect to https://hub.example; pass a local file or folder"
    )
    assert no_network == []


def test_a_hub_dataset_is_validated_as_a_file_is(monkeypatch, no_network):
    asked = []
    rows = {"train": [good(0), {"prompt": "p", "chosen": "x", "rejected": "x"}, good(2)], "test": [good(9)]}

    def load_dataset(repo_id, split):
        asked.append((repo_id, split))
        return datasets.Dataset.from_list(rows[split])

    monkeypatch.setattr(readers_module, "hub_offline_mode", lambda: False)
    monkeypatch.setattr(readers_module, "hub_unreachable", lambda endpoint: None)
    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    with pytest.raises(DataError) as e:
        load_pairs("org/prefs")
    assert str(e.value) == "org/prefs:train item 1: field 'chosen': chosen and rejected are identical"
    assert load_pairs("org/prefs", on_error="skip") == [good(0), good(2)]
    assert load_pairs("org/prefs:test") == [good(9)] and load_pairs("org/prefs", split="test") == [good(9)]
    assert asked == [
        ("org/prefs", "train"),
        ("org/prefs", "train"),
        ("org/prefs", "test"),
        ("org/prefs", "test"),
    ]
