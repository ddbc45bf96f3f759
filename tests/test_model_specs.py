"""The block count the command line reads before torch (`decpo.models.specs.known_block_count`): the tiny model's,
a local folder's config.json, the converted default's while its config.json matches the manifest; None (the check
waits for transformers) where it is not known that cheaply."""

from __future__ import annotations

import json

import pytest

from decpo.integrity import MANIFEST, write_manifest
from decpo.models.specs import DEFAULT_FOLDER, DEFAULT_NAME, TINY_NAME, TINY_NUM_LAYERS, known_block_count


def _folder(path, config):
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps(config))
    return path


@pytest.fixture
def converted_default(tmp_path, monkeypatch):
    """A converted default model (its config.json and manifest alone) in a cache under tmp_path."""
    monkeypatch.setenv("DECPO_CACHE", str(tmp_path / "cache"))
    folder = _folder(tmp_path / "cache" / DEFAULT_FOLDER, {"num_hidden_layers": 30})
    write_manifest(folder)
    return folder


def test_the_tiny_model_and_a_local_folder_are_counted(tmp_path):
    assert known_block_count(TINY_NAME) == TINY_NUM_LAYERS
    folder = _folder(tmp_path / "m", {"num_hidden_layers": 7, "model_type": "llama"})
    assert known_block_count(str(folder)) == 7


def test_the_converted_default_is_counted_while_its_config_matches_the_manifest(converted_default):
    assert known_block_count(DEFAULT_NAME) == 30
    # an edited config.json no longer matches the manifest: not trusted
    (converted_default / "config.json").write_text(json.dumps({"num_hidden_layers": 31}))
    assert known_block_count(DEFAULT_NAME) is None
    write_manifest(converted_default)
    (converted_default / MANIFEST).unlink()  # no manifest: an interrupted or old conversion
    assert known_block_count(DEFAULT_NAME) is None


@pytest.mark.parametrize(
    "config",
    [{"n_layer": 12}, {"num_hidden_layers": "12"}, {"num_hidden_layers": True}, [12], None],
    ids=["other_name", "string", "bool", "list", "no_config"],
)
def test_a_count_not_read_plainly_is_left_to_transformers(tmp_path, config):
    folder = tmp_path / "m"
    if config is None:
        folder.mkdir()
    else:
        _folder(folder, config)
    assert known_block_count(str(folder)) is None


def test_a_hub_id_an_unconverted_default_and_a_missing_gguf_are_left_to_transformers(tmp_path, monkeypatch):
    monkeypatch.setenv("DECPO_CACHE", str(tmp_path / "empty-cache"))
    assert known_block_count("HuggingFaceTB/SmolLM2-135M-Instruct") is None
    assert known_block_count(DEFAULT_NAME) is None
    assert known_block_count(str(tmp_path / "nope.gguf")) is None
