"""k-sparse probing (probes/sparse_probing.py) on fixed synthetic activations: one-neuron and spread concepts,
the refusals, and that the neurons are ranked on the training fold only."""

from __future__ import annotations

import numpy as np
import pytest

from decpo.probes.sparse_probing import (
    DENSE,
    SparseProbeError,
    fold_indices,
    interval,
    rank_neurons,
    sparse_probe,
)


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
