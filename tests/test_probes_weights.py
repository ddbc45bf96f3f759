"""Checks the weight proxy (Gurnee et al.) on tiny GPT-2 / GPT-NeoX with hand-set weights; Llama's error."""

from __future__ import annotations

import copy

import pytest
import torch

from decpo.models import TINY_NAME, ModelError, load_model
from decpo.probes.weights import NoMLPBiasError, weight_proxy, weight_proxy_change

# neuron i of every block: input weights (i + 1) * e_0, so ||w_i|| = i + 1
NORMS = torch.arange(1, 17, dtype=torch.float32)
BIASES = (1.0, -2.0)  # block 0: scores i + 1, median 8.5; block 1: -2 (i + 1), median -17


def gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=8, n_inner=16, n_head=2, vocab_size=50))
    with torch.no_grad():
        for block, bias in zip(model.transformer.h, BIASES, strict=True):
            w = torch.zeros(8, 16)  # Conv1D: (d_model, d_mlp), neuron i is column i
            w[0] = NORMS
            block.mlp.c_fc.weight.copy_(w)
            block.mlp.c_fc.bias.fill_(bias)
    return model


def neox():
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    config = GPTNeoXConfig(
        num_hidden_layers=2, hidden_size=8, intermediate_size=16, num_attention_heads=2, vocab_size=50
    )
    model = GPTNeoXForCausalLM(config)
    with torch.no_grad():
        for block, bias in zip(model.gpt_neox.layers, BIASES, strict=True):
            w = torch.zeros(16, 8)  # nn.Linear: (d_mlp, d_model), neuron i is row i
            w[:, 0] = NORMS
            block.mlp.dense_h_to_4h.weight.copy_(w)
            block.mlp.dense_h_to_4h.bias.fill_(bias)
    return model


def _in_weight(model, layer):
    """The neuron-i-on-axis-0 view of block ``layer``'s MLP input weights."""
    if hasattr(model, "transformer"):
        return model.transformer.h[layer].mlp.c_fc.weight.T  # a view: edits reach the Conv1D weight
    return model.gpt_neox.layers[layer].mlp.dense_h_to_4h.weight


@pytest.mark.parametrize("build", [gpt2, neox])
def test_weight_proxy_hand_computed(build):
    # medians 8.5 and -17, divided by the largest absolute median 17
    assert weight_proxy(build()) == pytest.approx([0.5, -1.0])


@pytest.mark.parametrize("build", [gpt2, neox])
def test_weight_change_on_the_most_changed_neurons(build):
    before = build()
    after = copy.deepcopy(before)
    with torch.no_grad():
        # block 0: neurons 13-15 change most; scores 14, 15, 16 -> 28, 30, 32
        _in_weight(after, 0)[13:16] *= 2
        # block 1: neurons 0-2; scores -2, -4, -6 -> -6, -12, -18
        _in_weight(after, 1)[0:3] *= 3
        _in_weight(after, 1)[3:16] *= 1.01  # smaller changes elsewhere: not in the top 3
    # (30 - 15) / 15 = 1; (-12 - (-4)) / 4 = -2
    assert weight_proxy_change(before, after, top_k=3) == pytest.approx([1.0, -2.0])


def test_llama_has_no_mlp_bias():
    with pytest.raises(NoMLPBiasError, match="no bias"):
        weight_proxy(load_model(TINY_NAME))
    assert issubclass(NoMLPBiasError, ModelError)  # the CLI's known errors cover it


def test_different_shapes_are_refused():
    from transformers import GPT2Config, GPT2LMHeadModel

    wider = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=8, n_inner=32, n_head=2, vocab_size=50))
    with pytest.raises(ModelError, match="shapes differ"):
        weight_proxy_change(gpt2(), wider)
