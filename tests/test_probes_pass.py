"""Checks the probe pass on tiny models (vs naive, padding, hooks), the vocab view, the CLI, the callback."""

from __future__ import annotations

import argparse
import csv
import json
import math

import pytest
import torch

from decpo.cli.probe import add_parser
from decpo.functional import select_tokens
from decpo.models import TINY_NAME, capture_activations, load_model, load_tokenizer, site_module
from decpo.probes.activation import CSV_COLUMNS, probe_pass
from decpo.probes.callback import ProbeCallback
from decpo.probes.stats import ACTIVATION_PROBES, activation_probes
from decpo.probes.vocab import vocab_view

from conftest import make_trainer

TEXTS = [
    "I think 23 + 45 = 68. Is that right?",
    "The quick brown fox jumps over the lazy dog. Situation:",
    "yes",
    "Question: What is 23 + 45? (A) 68 (B) 70 Answer:",
    "no no no",
    "Human: Agree or Disagree? Assistant:",
    "0 1 2 3 4 5 6 7 8 9",
]
SITES = ["mlp.up_proj", "mlp.hidden", "mlp.out", "resid_post"]


@pytest.fixture(scope="module")
def tiny():
    return load_model(TINY_NAME, seed=0), load_tokenizer(TINY_NAME)


def assert_same(a: dict, b: dict, rel: float = 1e-5):
    assert a.keys() == b.keys()
    for key in a:
        # the monosemantic scale divides by small running variances: float32 noise is amplified
        tol = 1e-3 if key[-1] == "mono_scale" else rel
        assert a[key] == pytest.approx(b[key], rel=tol, abs=1e-6), key


def test_pass_equals_naive_on_captured_activations(tiny):
    model, tokenizer = tiny
    result = probe_pass(model, tokenizer, TEXTS, sites=SITES, batch_size=3, progress=False)
    enc = tokenizer(TEXTS, return_tensors="pt", padding=True)  # one batch, no streaming
    positions = (enc["attention_mask"].cumsum(-1) - 1).clamp(min=0)
    for site in SITES:
        with torch.no_grad(), capture_activations(model, [0, 1], site, detach=True) as acts:
            model(**enc, position_ids=positions)
        for layer in (0, 1):
            z = select_tokens(acts[layer], enc["attention_mask"]).double()
            expected = activation_probes(z)
            got = result.stats[(site, layer)].result()
            for probe in ACTIVATION_PROBES:
                assert got[probe] == pytest.approx(expected[probe], rel=1e-4, abs=1e-6), (site, layer, probe)


def test_kept_activations_are_the_last_token_rows_in_text_order(tiny):
    model, tokenizer = tiny
    result = probe_pass(
        model, tokenizer, TEXTS, layers=[1], batch_size=3, keep_activations=True, progress=False
    )
    enc = tokenizer(TEXTS, return_tensors="pt", padding=True)  # one batch
    positions = (enc["attention_mask"].cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad(), capture_activations(model, [1], "mlp.up_proj", detach=True) as acts:
        model(**enc, position_ids=positions)
    expected = select_tokens(acts[1], enc["attention_mask"])  # (n_texts, D)
    assert set(result.activations) == {("mlp.up_proj", 1)}
    torch.testing.assert_close(result.activations[("mlp.up_proj", 1)], expected, rtol=1e-4, atol=1e-5)
    assert not probe_pass(model, tokenizer, TEXTS, layers=[1], progress=False).activations  # off by default


def test_padding_side_and_batch_size_do_not_change_the_result(tiny):
    model, tokenizer = tiny
    left = probe_pass(model, tokenizer, TEXTS, sites=SITES, batch_size=4, padding_side="left", progress=False)
    right = probe_pass(
        model, tokenizer, TEXTS, sites=SITES, batch_size=4, padding_side="right", progress=False
    )
    single = probe_pass(model, tokenizer, TEXTS, sites=SITES, batch_size=1, progress=False)
    assert_same(left.values(), right.values())
    assert_same(left.values(), single.values())
    assert tokenizer.padding_side == "left"  # restored


def test_padding_side_on_gpt2_with_absolute_positions():
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = load_tokenizer(TINY_NAME)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=8, n_inner=16, n_head=2, vocab_size=len(tokenizer)))
    left = probe_pass(model, tokenizer, TEXTS, sites=SITES, batch_size=4, padding_side="left", progress=False)
    right = probe_pass(
        model, tokenizer, TEXTS, sites=SITES, batch_size=4, padding_side="right", progress=False
    )
    assert_same(left.values(), right.values())


def _hook_count(model) -> int:
    modules = {site_module(model, layer, site)[0] for site in SITES for layer in (0, 1)}
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in modules)


def test_hooks_removed_and_mode_restored_after_the_pass_and_after_an_error(tiny):
    model, tokenizer = tiny
    model.train()
    probe_pass(model, tokenizer, TEXTS, sites=SITES, progress=False)
    assert _hook_count(model) == 0
    assert model.training

    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    handle = model.model.norm.register_forward_pre_hook(boom)  # raises after every block's hooks have run
    try:
        with pytest.raises(RuntimeError, match="boom"):
            probe_pass(model, tokenizer, TEXTS, sites=SITES, progress=False)
    finally:
        handle.remove()
    assert _hook_count(model) == 0
    assert model.training
    model.eval()


def test_bad_inputs_fail_clearly(tiny):
    model, tokenizer = tiny
    with pytest.raises(ValueError, match="empty"):
        probe_pass(model, tokenizer, ["a text", "  "], progress=False)
    with pytest.raises(ValueError, match="unknown activation site"):
        probe_pass(model, tokenizer, TEXTS, sites=["mlp.nope"], progress=False)


def test_vocab_view_projects_the_most_active_dimension(tiny):
    model, tokenizer = tiny
    result = probe_pass(model, tokenizer, TEXTS, sites=["mlp.hidden"], layers=[1], progress=False)
    mean = result.stats[("mlp.hidden", 1)].mean_activation()
    view = vocab_view(model, tokenizer, 1, mean, top_dims=2, top_tokens=3)
    top_dim = int(mean.argmax())
    assert view[0]["dim"] == top_dim and len(view) == 2
    direction = model.model.layers[1].mlp.down_proj.weight[:, top_dim]  # (d_model,) column of down_proj
    logits = model.lm_head(direction)
    expected = [tokenizer.decode([i]) for i in logits.topk(3).indices.tolist()]
    assert view[0]["tokens"] == expected


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_writes_csv_plots_and_vocab(tmp_path, capsys):
    other = load_model(TINY_NAME, seed=0)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.05 * torch.randn_like(p))
    other.save_pretrained(tmp_path / "perturbed")
    load_tokenizer(TINY_NAME).save_pretrained(tmp_path / "perturbed")
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(TEXTS) + "\n\n")
    out = tmp_path / "probes"
    code = run_cli(
        [
            "probe",
            "--model",
            f"base={TINY_NAME}",
            "--model",
            f"dpo={tmp_path / 'perturbed'}",
            "--texts",
            str(texts),
            "--num-texts",
            "6",
            "--output-dir",
            str(out),
            "--batch-size",
            "4",
            "--vocab-layer",
            "-1",
        ]
    )
    assert code == 0
    assert "no bias" in capsys.readouterr().out  # the weight proxy is a note, not a crash
    with open(out / "probes.csv") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert tuple(reader.fieldnames) == CSV_COLUMNS
    assert len(rows) == 2 * 2 * len(ACTIVATION_PROBES)  # models x layers x probes, one site
    assert {r["model"] for r in rows} == {"base", "dpo"}
    assert {r["n_texts"] for r in rows} == {"6"}
    assert all(math.isfinite(float(r["value"])) for r in rows)
    dec = {(r["model"], r["layer"]): float(r["value"]) for r in rows if r["probe"] == "decorrelation"}
    assert dec[("base", "0")] != dec[("dpo", "0")]  # the perturbed model is really another model
    for probe in ACTIVATION_PROBES:
        assert (out / f"{probe}__mlp_up_proj.png").stat().st_size > 1000
    vocab = json.loads((out / "vocab.json").read_text())
    assert vocab["base"]["layer"] == 1 and len(vocab["dpo"]["dims"]) == 10


def test_callback_logs_probe_keys_during_a_tiny_decpo_run(tmp_path):
    from decpo.training.callbacks import MetricsJsonlCallback

    trainer = make_trainer(tmp_path, lora=True, max_steps=2)  # logging_steps=1, no eval_on_start
    tokenizer = load_tokenizer(TINY_NAME)
    probes = ["decorrelation", "hoyer"]
    probe = ProbeCallback(TEXTS, tokenizer, every_n_steps=1, probes=probes, trainer=trainer)
    trainer.add_callback(probe)  # before the metrics writer: on_log runs in list order
    trainer.add_callback(MetricsJsonlCallback(tmp_path / "metrics.jsonl"))
    trainer.train()

    assert [h["probe/step"] for h in probe.history] == [0.0, 1.0, 2.0]
    logged = [log for log in trainer.state.log_history if "probe/decorrelation/L00" in log]
    # every measurement in a log at its own step; the step-0 one in a log of its own, before any training
    assert [(log["step"], log["probe/step"]) for log in logged] == [(0, 0.0), (1, 1.0), (2, 2.0)]
    assert "loss" not in logged[0] and all("loss" in log for log in logged[1:])
    for log, measured in zip(logged, probe.history, strict=True):
        assert {k: log[k] for k in measured} == measured
        assert {"probe/decorrelation/L01", "probe/hoyer/L00", "probe/seconds"} <= log.keys()
    # the step-0 values are the untrained model's (LoRA B = 0: the base model), measured independently
    base = probe_pass(load_model(TINY_NAME, seed=0), tokenizer, TEXTS, progress=False).values(probes)
    for (_site, layer, name), value in base.items():
        assert logged[0][f"probe/{name}/L{layer:02d}"] == pytest.approx(value, rel=1e-5, abs=1e-7)
    assert logged[1]["probe/decorrelation/L01"] != logged[0]["probe/decorrelation/L01"]  # training moved it
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["probe/step"]) for r in lines if "probe/decorrelation/L00" in r] == [
        (0, 0.0),
        (1, 1.0),
        (2, 2.0),
    ]
    assert trainer.model.training  # train mode restored after each pass


def test_callback_forces_a_log_at_each_measurement_and_needs_its_trainer(tmp_path):
    # measurements every 2 steps, logs every 3: the steps measured are logged too, each with its own values
    trainer = make_trainer(tmp_path, lora=True, max_steps=4, logging_steps=3)
    probe = ProbeCallback(TEXTS, load_tokenizer(TINY_NAME), every_n_steps=2)
    trainer.add_callback(probe.bind(trainer))
    trainer.train()
    logs = trainer.state.log_history
    assert [(h["step"], h["probe/step"]) for h in logs if "probe/step" in h] == [(0, 0.0), (2, 2.0), (4, 4.0)]
    assert [h["step"] for h in logs if "loss" in h] == [2, 3, 4]
    unbound = make_trainer(tmp_path / "unbound", lora=True, max_steps=1)
    unbound.add_callback(ProbeCallback(TEXTS, load_tokenizer(TINY_NAME), every_n_steps=1))
    with pytest.raises(RuntimeError, match="bind"):
        unbound.train()
