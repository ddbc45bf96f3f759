"""Activation hooks: what they capture (full FT, LoRA, checkpointing), gradients, removal, clear errors."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model

from decpo.models import TINY_NAME, ModelError, capture_activations, load_model, site_module
from decpo.models.hooks import SITES

from conftest import make_trainer


def tiny(num_layers=None):
    return load_model(TINY_NAME, seed=0)


def hook_count(model) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def inputs():
    return {
        "input_ids": torch.tensor([[5, 6, 7, 8], [9, 10, 11, 12]]),
        "attention_mask": torch.ones(2, 4, dtype=torch.long),
    }


@pytest.mark.parametrize("site", SITES)
def test_captures_each_requested_layer_and_site(site):
    model = tiny()
    with capture_activations(model, [0, 1], site) as acts:
        model(**inputs())
    assert sorted(acts) == [0, 1]
    width = {"mlp.up_proj": 32, "mlp.hidden": 32, "mlp.out": 16, "resid_post": 16}[site]
    assert acts[0].shape == (2, 4, width)


def test_up_proj_capture_equals_module_output():
    model = tiny()
    with capture_activations(model, [1], "mlp.up_proj") as acts:
        out = model(**inputs(), output_hidden_states=True)
    block = model.model.layers[1]
    h = out.hidden_states[1]
    attn_out = block.self_attn(
        block.input_layernorm(h),
        attention_mask=None,
        position_embeddings=model.model.rotary_emb(h, torch.arange(4).unsqueeze(0)),
    )[0]
    expected = block.mlp.up_proj(block.post_attention_layernorm(h + attn_out))
    assert torch.allclose(acts[1], expected, atol=1e-5)


def test_lora_model_is_hooked_through_the_adapter_wrapper():
    model = get_peft_model(tiny(), LoraConfig(r=2, target_modules=["up_proj"]))
    with capture_activations(model, [-1], "mlp.up_proj") as acts:
        model(**inputs())
    assert list(acts) == [1] and acts[1].requires_grad


def test_gradient_checkpointing_keeps_one_capture_and_equal_gradients(tmp_path):
    grads = []
    for checkpointing in (False, True):
        trainer = make_trainer(tmp_path / str(checkpointing))
        if checkpointing:  # what Trainer.train does at its start
            trainer.model.gradient_checkpointing_enable({"use_reentrant": False})
        assert trainer.model.is_gradient_checkpointing == checkpointing
        trainer.model.train()
        batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
        loss = trainer.compute_loss(trainer.model, batch)
        loss.backward()
        # TRL re-enables checkpointing after each reference forward, which adds an input hook to the
        # embeddings every step (its own leak); ours sit on the blocks and must all be gone
        assert hook_count(trainer.model.model.layers) == 0
        grads.append({n: p.grad.clone() for n, p in trainer.model.named_parameters()})
    for name in grads[0]:
        assert torch.allclose(grads[0][name], grads[1][name], atol=1e-6), name


def test_reentrant_checkpointing_is_refused_not_silently_ignored(tmp_path):
    trainer = make_trainer(tmp_path)
    trainer.model.gradient_checkpointing_enable({"use_reentrant": True})
    trainer.model.train()
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    with pytest.raises(RuntimeError, match="no gradient"):
        trainer.compute_loss(trainer.model, batch)


def test_penalty_changes_only_gradients_up_to_the_hooked_layer(tmp_path):
    grads = {}
    for weight in (0.0, 1.0):
        trainer = make_trainer(tmp_path / str(weight), reg_weight=weight, reg_layers=[0])
        trainer.model.train()
        batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
        trainer.compute_loss(trainer.model, batch).backward()
        grads[weight] = {n: p.grad.clone() for n, p in trainer.model.named_parameters()}
    up0 = "model.layers.0.mlp.up_proj.weight"
    assert not torch.allclose(grads[0.0][up0], grads[1.0][up0])
    for name in grads[0.0]:
        if name.startswith("model.layers.1.") or name.startswith("lm_head") or name == "model.norm.weight":
            assert torch.equal(grads[0.0][name], grads[1.0][name]), name


def test_hooks_removed_after_exception():
    model = tiny()
    with pytest.raises(RuntimeError, match="boom"):
        with capture_activations(model, [0, 1], "mlp.up_proj"):
            assert hook_count(model) == 2
            raise RuntimeError("boom")
    assert hook_count(model) == 0


def test_missing_layer_and_site_errors_list_what_exists():
    model = tiny()
    with pytest.raises(ModelError, match=r"has 2 blocks \(0\.\.1\); layer 5 does not exist"):
        with capture_activations(model, [5]):
            pass
    with pytest.raises(ModelError, match="unknown activation site"):
        site_module(model, 0, "mlp.nope")
    model.model.layers[0].mlp = torch.nn.Identity()
    with pytest.raises(ModelError, match="its modules are"):
        site_module(model, 0, "mlp.up_proj")


def test_trainer_rejects_missing_layer_before_training(tmp_path):
    with pytest.raises(ModelError, match="layer 7 does not exist"):
        make_trainer(tmp_path, reg_layers=[7])


def test_one_unwrap_for_every_wrapper():
    from decpo.models.hooks import unwrap_model
    from decpo.probes.activation import backbone
    from decpo.training.prefix_sharing import backbone_of

    model = tiny()
    peft_model = get_peft_model(tiny(), LoraConfig(r=2, target_modules=["q_proj"]))
    assert unwrap_model(model) is model
    assert unwrap_model(torch.nn.DataParallel(model)) is model
    assert unwrap_model(torch.compile(model)) is model  # compiling is lazy: nothing is compiled here
    inner = unwrap_model(torch.nn.DataParallel(peft_model))
    assert inner is peft_model.get_base_model()
    # the probes and prefix sharing reach the same decoder stack through it
    assert backbone(torch.nn.DataParallel(peft_model)) is inner.model is backbone_of(peft_model)


def test_one_layer_parser_for_sweeps_and_probes():
    from decpo.models.hooks import parse_layers
    from decpo.models.hooks import parse_layers as sweep_layers  # what `decpo sweep --layers` parses with
    from decpo.probes.runner import parse_layers as probe_layers

    assert sweep_layers is parse_layers is probe_layers
    assert parse_layers("0-29:10") == [0, 10, 20] and parse_layers("3, -1") == [3, -1]
    model = tiny()  # 2 blocks
    assert parse_layers("0-1", model) == [0, 1]  # a range, as `decpo sweep --layers` takes
    assert parse_layers("-1,1", model) == [1] and parse_layers(None, model) == [0, 1]
    with pytest.raises(ValueError, match="comma-separated integers or ranges"):
        parse_layers("first")
    with pytest.raises(ModelError, match="layer 5 does not exist"):
        parse_layers("5", model)
