"""The converted GGUF folder in the cache is trusted only while it matches its manifest: a damaged file (a
flipped bit, a truncated file) or a folder without a manifest is converted again, with a warning."""

from __future__ import annotations

import logging

import pytest

import decpo.models.gguf as gguf
from decpo.integrity import MANIFEST
from decpo.models.loading import load_model, load_tokenizer
from decpo.models.tiny import TINY_NAME


@pytest.fixture
def fake_gguf(tmp_path, monkeypatch):
    """A ``.gguf`` spec whose conversion loads the tiny model (counted), into a cache under tmp_path."""
    source = tmp_path / "model.gguf"
    source.write_bytes(b"GGUF")
    monkeypatch.setenv("DECPO_CACHE", str(tmp_path / "cache"))
    calls = []

    class Model:
        @staticmethod
        def from_pretrained(*args, **kwargs):
            calls.append(args)
            return load_model(TINY_NAME, seed=0)

    class Tokenizer:
        @staticmethod
        def from_pretrained(*args, **kwargs):
            return load_tokenizer(TINY_NAME)

    monkeypatch.setattr(gguf, "AutoModelForCausalLM", Model)
    monkeypatch.setattr(gguf, "AutoTokenizer", Tokenizer)
    return str(source), calls


def test_a_converted_folder_is_reused_while_its_manifest_holds(fake_gguf):
    spec, calls = fake_gguf
    folder = gguf.gguf_folder(spec)
    assert (gguf.Path(folder) / MANIFEST).is_file() and len(calls) == 1
    assert gguf.gguf_folder(spec) == folder and len(calls) == 1  # reused, not converted again


@pytest.mark.parametrize("damage", ["flip", "truncate", "no manifest"])
def test_a_damaged_converted_folder_is_converted_again_with_a_warning(fake_gguf, caplog, damage):
    spec, calls = fake_gguf
    folder = gguf.Path(gguf.gguf_folder(spec))
    weights = folder / "model.safetensors"
    original = weights.read_bytes()
    data = bytearray(original)
    if damage == "flip":
        data[-10] ^= 0x40
        weights.write_bytes(bytes(data))
    elif damage == "truncate":
        weights.write_bytes(bytes(data[: len(data) // 2]))
    else:
        (folder / MANIFEST).unlink()
    with caplog.at_level(logging.WARNING, logger="decpo.models.gguf"):
        assert gguf.gguf_folder(spec) == str(folder)
    assert len(calls) == 2 and "cannot be trusted" in caplog.text and str(folder) in caplog.text
    assert weights.read_bytes() == original  # converted again: the same weights as the first time
    assert gguf.manifest_problem(folder) is None
