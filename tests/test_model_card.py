"""The run folder's model card names the base model as given and links only a Hub repository."""

from __future__ import annotations

from decpo.training.model_card import card_text, hub_repository


def test_only_a_hub_id_is_a_hub_repository(tmp_path):
    assert hub_repository("meta-llama/Llama-2-7b-hf") == "meta-llama/Llama-2-7b-hf"
    for name in (None, "", "tiny-random-llama", str(tmp_path), "./models/x", "gpt2", "a/b/c", "/abs/path"):
        assert hub_repository(name) is None, name


def test_the_card_links_a_hub_base_and_names_a_local_one(tmp_path):
    objective = {"loss_type": ["sigmoid"], "reg_type": "decorrelation", "peft": True}
    hub = card_text("run", "meta-llama/Llama-2-7b-hf", objective, {"trl": "1.16.0"})
    assert "base_model: meta-llama/Llama-2-7b-hf" in hub
    assert "[meta-llama/Llama-2-7b-hf](https://huggingface.co/meta-llama/Llama-2-7b-hf)" in hub
    local = card_text("run", str(tmp_path), {**objective, "peft": False}, {})
    assert "base_model:" not in local and f"`{tmp_path}`" in local and "the whole model" in local
    assert "None" not in local and "reg_type=decorrelation" in local and "peft=" not in local
