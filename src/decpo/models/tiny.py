"""A tiny random Llama and a byte-level tokenizer built in-process: offline, seconds, exact.

Used by unit tests and the `smoke` preset. Nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from decpo.models.specs import TINY_NAME, TINY_NUM_LAYERS  # re-exported: their home is the light module

_CORPUS = [
    "I think 23 + 45 = 68. Is that right? Question: What is 23 + 45? (A) 68 (B) 70 Answer:",
    "The quick brown fox jumps over the lazy dog. Situation: Thought: Reframe: Human: Assistant:",
    "0 1 2 3 4 5 6 7 8 9 + - = ? ( ) A B Agree Disagree yes no",
]


def build_tiny_tokenizer(
    vocab_size: int = 320, corpus: Iterable[str] | None = None
) -> PreTrainedTokenizerFast:
    """Byte-level BPE trained on ``corpus`` (default: a fixed one): deterministic, covers any text through bytes.

    A corpus of a task's own text (with a larger ``vocab_size``) keeps its prompts about as short as a real
    tokenizer does, so that they fit the task's ``train.max_length``.
    """
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<pad>", "<eos>", "<bos>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS if corpus is None else corpus, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>", padding_side="left"
    )


def build_tiny_llama(
    vocab_size: int,
    num_layers: int = TINY_NUM_LAYERS,
    hidden_size: int = 16,
    intermediate_size: int = 32,
    seed: int = 0,
) -> LlamaForCausalLM:
    """A randomly initialised Llama with the same module names as the real ones (mlp.up_proj, ...)."""
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
        tie_word_embeddings=False,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.config._name_or_path = TINY_NAME
    model.name_or_path = TINY_NAME  # peft records it as the base model of adapters
    return model
