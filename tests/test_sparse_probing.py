"""k-sparse probing (probes/sparse_probing.py) on fixed synthetic activations: one-neuron and spread concepts,
the refusals, that the neurons are ranked on the training fold only; and ``decpo probe --measure
sparse_probing`` end to end on a tiny random Llama."""

from __future__ import annotations

import argparse
import csv

import numpy as np
import pytest

from decpo.cli.probe import add_parser
from decpo.data import DataError
from decpo.models import TINY_NAME, load_model, load_tokenizer
from decpo.probes.activation import probe_pass
from decpo.probes.concepts import labelled_texts
from decpo.probes.runner import ProbeOptionError, probe_models
from decpo.probes.sparse_probing import (
    DENSE,
    SparseProbeError,
    fold_indices,
    interval,
    rank_neurons,
    sparse_probe,
)
from decpo.probes.stats import ACTIVATION_PROBES


def test_one_neuron_concept_is_decoded_by_k1():
    rng = np.random.default_rng(0)
    y = np.arange(400) % 2
    x = rng.normal(size=(400, 64))
    x[:, 37] = 3.0 * (2 * y - 1) + 0.3 * rng.normal(size=400)  # neuron 37 carries the concept
    result = sparse_probe(x, y, concept="one")
    assert result.acc_k1 > 0.99
    assert result.neurons_needed == 1
    assert result.n_neurons == 64 and result.n_texts == 400 and result.chance == 0.5
    assert set(result.accuracy) == {1, 2, 4, 8, 16, 32, DENSE}
    acc = result.accuracy[1]
    assert acc.lo <= acc.mean <= acc.hi and len(acc.folds) == 5


def test_concept_spread_over_16_neurons_needs_16():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1000, 64))
    y = (x[:, 10:26].sum(axis=1) > 0).astype(int)  # each of 16 neurons carries a sixteenth
    result = sparse_probe(x, y, concept="spread")
    assert result.neurons_needed == 16
    assert result.acc_k1 < 0.7  # one neuron alone: 0.5 + arcsin(1/4) / pi ~ 0.58
    assert result.accuracy[8].mean < 0.85  # half of them: ~ 0.75
    assert result.accuracy[16].mean > 0.95 and result.acc_dense > 0.95


def test_a_concept_the_dense_probe_cannot_decode_has_no_neurons_needed():
    """Labels unrelated to the activations: the dense probe's interval reaches down to chance, so neurons
    needed (which any k would "reach") is NaN and decodable 0; a decodable concept keeps its count."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(200, 64))
    noise = sparse_probe(x, np.arange(200) % 2, concept="noise")
    assert noise.accuracy[DENSE].lo <= noise.chance and not noise.decodable
    values = noise.values()
    assert (
        np.isnan(values["sparse_probe/neurons_needed/noise"]) and values["sparse_probe/decodable/noise"] == 0
    )
    y = np.arange(200) % 2
    x[:, 5] = 3.0 * (2 * y - 1) + 0.3 * rng.normal(size=200)
    one = sparse_probe(x, y, concept="one").values()
    assert one["sparse_probe/neurons_needed/one"] == 1 and one["sparse_probe/decodable/one"] == 1


def test_ranking_uses_the_training_fold_only():
    """Neuron 0 equals the label on the first fold's test texts and is noise elsewhere: ranked on all the
    texts it would win that fold (accuracy 1 there); ranked on its training fold it is noise (about 0.5)."""
    rng = np.random.default_rng(2)
    y = np.arange(500) % 2
    x = rng.normal(size=(500, 40))
    _, test = fold_indices(y, 5, seed=0)[0]
    x[test, 0] = 2.0 * y[test] - 1.0
    result = sparse_probe(x, y, concept="leak", n_folds=5, seed=0, ks=(1,))
    assert result.accuracy[1].folds[0] < 0.65
    # the construction works: ranked on all the texts, neuron 0 comes first
    assert rank_neurons(x, y)[0] == 0


def test_rank_neurons_by_standardized_mean_difference():
    y = np.array([0, 0, 0, 1, 1, 1])
    x = np.array(
        [  # neuron 0: difference 1, sd 1 (d = 1); neuron 1: difference 10, sd 100; neuron 2: constant
            [0.0, 0.0, 5.0],
            [1.0, 100.0, 5.0],
            [-1.0, -100.0, 5.0],
            [1.0, 10.0, 5.0],
            [2.0, 110.0, 5.0],
            [0.0, -90.0, 5.0],
        ]
    )
    assert rank_neurons(x, y).tolist() == [0, 1, 2]


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (np.ones(40, dtype=int), "all 40 labels are 1"),
        (np.array([1] * 9 + [0] * 31), "smaller class has 9"),
        (np.array([0, 1, 2, 1] * 10), "must be 0/1"),
        (np.array([0, 1, 0.5, 1] * 10), "must be 0/1"),
    ],
)
def test_bad_labels_are_refused_naming_the_concept(labels, message):
    x = np.random.default_rng(0).normal(size=(len(labels), 8))
    with pytest.raises(SparseProbeError, match=message) as info:
        sparse_probe(x, labels, concept="user_correct")
    assert "'user_correct'" in str(info.value)


def test_interval_is_the_corrected_resampled_t():
    from scipy import stats

    values = [0.8, 0.9, 0.85, 0.95, 0.75]
    lo, hi = interval(values, 1 / 4)
    half = stats.t.ppf(0.975, 4) * np.std(values, ddof=1) * np.sqrt(1 / 5 + 1 / 4)
    assert (lo, hi) == pytest.approx((0.85 - half, 0.85 + half))


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_sparse_probing_on_a_tiny_model(tmp_path, capsys):
    """``decpo probe --measure sparse_probing`` on the tiny random Llama and the reading task: tidy rows per
    concept, equal to probing the pass's activations with the concepts' labels directly."""
    out = tmp_path / "probes"
    argv = ["probe", "--model", f"base={TINY_NAME}", "--texts", "reading", "--num-texts", "40"]
    argv += ["--layers", "-1", "--measure", "sparse_probing", "--output-dir", str(out), "--no-weights"]
    assert run_cli(argv) == 0
    printed = capsys.readouterr().out
    assert "base: asked_first (mlp.up_proj, layer 1) k=1 accuracy" in printed
    # one point at most (one model, one layer; none where the concept is not decodable): no correlation
    assert "decorrelation vs neurons needed (user_correct, mlp.up_proj): too few points (" in printed
    with open(out / "probes.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["probe"].startswith("sparse_probe/")]
    values = {r["probe"]: float(r["value"]) for r in rows}
    assert {(r["model"], r["layer"], r["site"], r["n_texts"]) for r in rows} == {
        ("base", "1", "mlp.up_proj", "40")
    }
    kinds = [f"acc_k{k}" for k in (1, 2, 4, 8, 16, 32)] + ["acc_dense", "acc_k1_lo", "acc_k1_hi"]
    reading = ("user_correct", "correct_letter_a", "asked_first", "asked_larger")  # what the task carries
    assert set(values) == {
        f"sparse_probe/{k}/{c}" for k in [*kinds, "decodable", "neurons_needed"] for c in reading
    }
    assert all(0 <= values[f"sparse_probe/{k}/{c}"] <= 1 for k in kinds[:7] for c in reading)
    assert (out / "sparse_probe_acc_k1_user_correct__mlp_up_proj.png").exists()
    headline_only = not (out / "sparse_probe_acc_k2_user_correct__mlp_up_proj.png").exists()
    assert headline_only  # the figures: k = 1 accuracy and neurons needed, not every k

    texts, labels = labelled_texts("reading", 40)
    model, tokenizer = load_model(TINY_NAME), load_tokenizer(TINY_NAME)
    x = probe_pass(model, tokenizer, texts, layers=[1], keep_activations=True, progress=False).activations
    for concept, y in labels.items():
        expected = sparse_probe(x[("mlp.up_proj", 1)], y, concept=concept).values()
        assert {k: values[k] for k in expected} == pytest.approx(expected, abs=1e-5, nan_ok=True), concept


def test_sparse_layers_need_not_be_probed(tmp_path):
    """--sparse-layers 1 beside --layers 0: streamed probes at block 0, sparse probing at block 1 (one pass)."""
    texts, labels = labelled_texts("reading", 40, names=["asked_first"])
    kw = {"layers": (0,), "measures": ("sparse_probing",), "weights": False, "progress": False}
    report = probe_models({"base": TINY_NAME}, texts, tmp_path, labels=labels, sparse_layers="-1", **kw)
    layers = {(r["probe"].split("/")[0], r["layer"]) for r in report.rows}
    assert layers == {(probe, 0) for probe in ACTIVATION_PROBES} | {("sparse_probe", 1)}


def test_cli_sparse_probing_needs_labelled_texts(tmp_path):
    texts = tmp_path / "texts.txt"
    texts.write_text("one text\nanother text\n")
    argv = ["probe", "--model", TINY_NAME, "--texts", str(texts), "--measure", "sparse_probing"]
    with pytest.raises(DataError, match="labelled concepts need a task or a pairs file"):
        run_cli([*argv, "--output-dir", str(tmp_path / "out")])
    with pytest.raises(DataError, match="sparse_probing needs labelled texts"):
        probe_models({"base": TINY_NAME}, ["a", "b"], tmp_path / "out", measures=("sparse_probing",))
    with pytest.raises(ProbeOptionError, match="unknown measure"):
        probe_models({"base": TINY_NAME}, ["a", "b"], tmp_path / "out", measures=("sparse",))
    # refused before any model loads: too few texts of a class, labels that do not match the texts
    argv = ["probe", "--model", "no/such-model", "--texts", "reading", "--num-texts", "12"]
    with pytest.raises(SparseProbeError, match="concept 'user_correct': its smaller class has 6"):
        run_cli([*argv, "--measure", "sparse_probing", "--output-dir", str(tmp_path / "out")])
    with pytest.raises(SparseProbeError, match="concept 'asked_first': its smaller class has 6"):
        run_cli(
            [*argv, "--measure", "sparse_probing", "--concepts", "asked_first", "--output-dir", str(tmp_path)]
        )
    with pytest.raises(ProbeOptionError, match="concept 'c': 3 labels for 2 texts"):
        probe_models(
            {"base": "no/such-model"},
            ["a", "b"],
            tmp_path / "out",
            labels={"c": [0, 1, 0]},
            measures=("sparse_probing",),
        )


def test_pairs_too_long_are_skipped_with_their_labels(tmp_path, caplog):
    """Prompt + answer texts whose prompt fills --max-length are skipped by the pass; their labels go with them,
    so each label stays with its own text (the pass keeps the rows of the others in order)."""
    from decpo.probes.tokens import AnsweredText

    texts, labels = labelled_texts("reading", 40, names=["asked_first"])
    items = [AnsweredText(t, " (A)") for t in texts]
    items[3] = AnsweredText("word " * 400, " (A)")  # its prompt alone fills max_length
    kw = {"layers": (1,), "measures": ("sparse_probing",), "weights": False, "progress": False}
    kw.update(token="completion_mean", max_length=200)
    report = probe_models({"base": TINY_NAME}, items, tmp_path, labels=labels, **kw)
    assert "1 of 40 pairs skipped" in caplog.text
    values = {r["probe"]: r["value"] for r in report.rows if r["probe"].startswith("sparse_probe/")}
    assert {r["n_texts"] for r in report.rows if r["probe"].startswith("sparse_probe/")} == {39}
    model, tokenizer = load_model(TINY_NAME), load_tokenizer(TINY_NAME)
    kept = [t for i, t in enumerate(items) if i != 3]
    x = probe_pass(
        model,
        tokenizer,
        kept,
        token="completion_mean",
        layers=[1],
        max_length=200,
        keep_activations=True,
        progress=False,
    ).activations[("mlp.up_proj", 1)]
    y = [v for i, v in enumerate(labels["asked_first"]) if i != 3]
    expected = sparse_probe(x, y, concept="asked_first").values()
    assert {k: values[k] for k in expected} == pytest.approx(expected, abs=1e-5, nan_ok=True)
