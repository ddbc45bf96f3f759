"""Checks that `decpo probe --token` reads the rows the penalty reads: each token selection of the trainer, on the
same pairs of the tiny model, and a clear refusal where plain texts cannot say where the answer starts."""

from __future__ import annotations

import argparse
import csv
import json

import pytest
import torch

from decpo.cli.probe import add_parser
from decpo.functional import TOKEN_SELECTIONS, feature_decorrelation
from decpo.models import TINY_NAME, load_tokenizer
from decpo.probes.activation import probe_pass
from decpo.probes.options import PROBE_TOKENS, ProbeOptionError
from decpo.probes.runner import load_texts
from decpo.probes.tokens import AnsweredText

from conftest import PAIRS, make_trainer

N = 4  # pairs in the trainer's batch and probed
LAYER = 0


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def penalty_rows(tmp_path, token: str) -> tuple[torch.Tensor, object]:
    """The chosen rows the penalty computes its term on in the trainer's first batch (``(N, D)``), and the
    trainer; recorded where `compute_loss` hands them to `activation_penalty`."""
    import decpo.training.trainer as trainer_module

    trainer = make_trainer(tmp_path, reg_tokens=token, reg_layers=[LAYER], per_device_train_batch_size=N)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(N)])
    seen = []
    original = trainer_module.activation_penalty

    def recording(z, **kwargs):
        seen.append(z.detach().clone())
        return original(z, **kwargs)

    trainer_module.activation_penalty = recording
    try:
        with torch.no_grad():
            trainer.compute_loss(trainer.model, batch)
    finally:
        trainer_module.activation_penalty = original
    (z,) = seen  # (2N, D), chosen rows first
    return z[:N], trainer


def test_the_probe_tokens_are_the_penalty_selections():
    assert PROBE_TOKENS == TOKEN_SELECTIONS


@pytest.mark.parametrize("token", TOKEN_SELECTIONS)
def test_probe_pass_reads_the_rows_the_penalty_reads(tmp_path, token):
    z, trainer = penalty_rows(tmp_path, token)
    items = [AnsweredText(p["prompt"], p["chosen"], p["rejected"]) for p in PAIRS[:N]]
    result = probe_pass(
        trainer.model,
        load_tokenizer(TINY_NAME),
        items,
        token=token,
        layers=[LAYER],
        batch_size=3,  # batches of another size than the trainer's: the rows do not depend on it
        progress=False,
        keep_activations=True,
    )
    probed = result.activations[("mlp.up_proj", LAYER)]
    assert probed.shape == z.shape
    torch.testing.assert_close(probed, z.float(), rtol=1e-5, atol=1e-6)


def test_cli_token_prompt_last_equals_the_penalty_on_a_pairs_file(tmp_path):
    z, _ = penalty_rows(tmp_path, "prompt_last")
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(p) + "\n" for p in PAIRS[:N]))
    out = tmp_path / "probes"
    code = run_cli(
        [
            "probe",
            "--model",
            f"base={TINY_NAME}",
            "--texts",
            str(pairs),
            "--token",
            "prompt_last",
            "--layers",
            str(LAYER),
            "--probes",
            "decorrelation",
            "--no-weights",
            "--output-dir",
            str(out),
        ]
    )
    assert code == 0
    with open(out / "probes.csv") as f:
        (row,) = list(csv.DictReader(f))
    assert row["n_texts"] == str(N)
    assert float(row["value"]) == pytest.approx(float(feature_decorrelation(z.double())), rel=1e-5)


def test_selections_that_need_answers_refuse_plain_texts(tmp_path):
    texts = tmp_path / "texts.txt"
    texts.write_text("a first text\na second text\n")
    for token in ("prompt_last", "completion_mean"):
        with pytest.raises(ProbeOptionError, match="pairs file or a task"):
            load_texts(str(texts), token=token)
    assert load_texts(str(texts), token="last") == ["a first text", "a second text"]
    with pytest.raises(ValueError, match="where each answer starts"):
        probe_pass(None, load_tokenizer(TINY_NAME), ["a text", "another"], token="prompt_last")
