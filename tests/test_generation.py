"""Sampling several continuations of a prompt from one pass over it (`decpo.inference.generation`): the same
logits, hence the same tokens for a seed, as transformers' own repeat-every-prompt path."""

from __future__ import annotations

import copy

import pytest
import torch

from decpo.inference.generation import _shared_prompt_pass, generate
from decpo.models import load_model, load_tokenizer

from conftest import TINY_NAME

# different lengths: left padding, whose positions the shared pass must give as generate does
PROMPTS = ["The cat sat on the mat and", "Hello", "One two three four five six seven eight nine ten"]


@pytest.fixture(scope="module")
def tiny():
    return load_model(TINY_NAME).eval(), load_tokenizer(TINY_NAME)


def _encoded(tokenizer):
    tokenizer.padding_side = "left"
    return tokenizer(PROMPTS, return_tensors="pt", padding=True)


def _sampled(model, tokenizer, inputs, seed):
    torch.manual_seed(seed)
    return model.generate(
        **inputs,
        max_new_tokens=6,
        do_sample=True,
        top_p=0.9,
        top_k=None,
        pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
        return_dict_in_generate=True,
        output_logits=True,
    )


@torch.no_grad()
def test_one_pass_over_the_prompt_gives_the_logits_and_tokens_of_repeating_it(tiny):
    model, tokenizer = tiny
    enc = _encoded(tokenizer)
    assert (enc["attention_mask"] == 0).any()  # some rows are padded
    k = 3
    repeated = _sampled(model, tokenizer, {**enc, "num_return_sequences": k}, seed=5)
    shared_inputs = _shared_prompt_pass(model, enc, k)
    assert shared_inputs["cache"].get_seq_length() == enc["input_ids"].shape[1] - 1
    shared = _sampled(model, tokenizer, shared_inputs, seed=5)
    for step, (a, b) in enumerate(zip(shared.logits, repeated.logits, strict=True)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=f"step {step}")
    assert torch.equal(shared.sequences, repeated.sequences)


@pytest.fixture(scope="module")
def peaked(tiny):
    """The tiny model with logits large enough that temperature and top-p change what is sampled."""
    model, tokenizer = tiny
    model = copy.deepcopy(model)
    with torch.no_grad():
        model.lm_head.weight.mul_(40.0)
    return model, tokenizer


def test_generate_samples_as_transformers_does_with_the_rows_of_a_prompt_together(peaked):
    model, tokenizer = peaked
    enc = _encoded(tokenizer)
    torch.manual_seed(7)
    with torch.no_grad():
        expected = model.generate(
            **enc,
            max_new_tokens=8,
            do_sample=True,
            temperature=0.5,
            top_p=0.7,
            top_k=None,
            num_return_sequences=2,
            pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
        )
    expected_texts = tokenizer.batch_decode(
        expected[:, enc["input_ids"].shape[1] :], skip_special_tokens=True
    )
    torch.manual_seed(7)
    got = generate(
        model,
        tokenizer,
        PROMPTS,
        max_new_tokens=8,
        batch_size=len(PROMPTS),
        do_sample=True,
        temperature=0.5,
        top_p=0.7,
        num_return_sequences=2,
        progress=False,
    )
    assert got == expected_texts and len(got) == 2 * len(PROMPTS)


def test_a_one_token_prompt_batch_is_sampled_without_a_shared_pass(tiny):
    model, tokenizer = tiny
    ids = torch.tensor([[5], [6]])
    inputs = _shared_prompt_pass(model, {"input_ids": ids, "attention_mask": torch.ones_like(ids)}, 4)
    assert "cache" not in inputs and inputs["num_return_sequences"] == 4


@pytest.mark.parametrize("scale", [0.3, 3.0, 30.0])  # flat rows (the whole-vocabulary path) to peaked ones
@pytest.mark.parametrize("top_p", [0.5, 0.9, 0.99])
def test_the_nucleus_from_the_largest_logits_keeps_what_transformers_keeps(scale, top_p):
    from transformers import TopPLogitsWarper

    from decpo.inference.nucleus import LargestFirstTopP

    generator = torch.Generator().manual_seed(0)
    scores = torch.randn(64, 5000, generator=generator) * scale
    ids = torch.zeros(64, 1, dtype=torch.long)
    expected = TopPLogitsWarper(top_p)(ids, scores.clone())
    got = LargestFirstTopP(top_p, candidates=256)(ids, scores.clone())
    assert torch.equal(got.isfinite(), expected.isfinite())
    assert torch.equal(got[got.isfinite()], scores[expected.isfinite()])
