"""Checks the streaming probe statistics: known values on known structures, and streaming == naive."""

from __future__ import annotations

import math

import pytest
import torch

from decpo.functional import decorrelation_penalty, feature_decorrelation, pairwise_cosine
from decpo.probes.activation import stats_memory_bound
from decpo.probes.stats import ACTIVATION_PROBES, ActivationStats, activation_probes, hoyer


def naive_probes(z: torch.Tensor, eps_zero: float = 1e-2) -> dict[str, float]:
    """All probes from the whole (N, D) matrix in memory, written the obvious way (float64)."""
    z = z.double()
    n, d = z.shape
    cos = pairwise_cosine(z)
    off = ~torch.eye(n, dtype=torch.bool)
    scores = []  # Wang et al.: each input against the inputs before it, one at a time
    for k in range(2, n):
        earlier = z[:k]
        scores.append((z[k] - earlier.mean(0)).pow(2) / earlier.var(0, correction=1).clamp(min=1e-12))
    l1, l2 = z.abs().sum(1), z.norm(dim=1)
    ratio = torch.where(l2 > 0, l1 / l2, torch.ones_like(l1))  # an all-zero row counts as fully sparse
    return {
        "decorrelation": feature_decorrelation(z).item(),
        "reg_cosine": decorrelation_penalty(z, "cosine").item() / n**2,
        "mean_sq_cosine": cos[off].pow(2).mean().item(),
        "variance": torch.stack([((r - r.mean()) ** 2).mean() for r in z]).mean().item(),
        "near_zero": (z.abs() < eps_zero).double().mean().item(),
        "hoyer": ((math.sqrt(d) - ratio) / (math.sqrt(d) - 1)).mean().item(),
        "mono_scale": torch.stack(scores).mean(0).mean().item() if scores else float("nan"),
    }


def streamed(z: torch.Tensor, batch_size: int, **kwargs) -> ActivationStats:
    stats = ActivationStats(z.size(1), **kwargs)
    for chunk in z.split(batch_size):
        stats.update(chunk)
    return stats


def test_identical_rows_have_zero_decorrelation():
    z = torch.tensor([[1.0, 2.0, -3.0]]).repeat(6, 1)
    out = activation_probes(z)
    assert out["decorrelation"] == pytest.approx(0.0, abs=1e-12)
    assert out["mean_sq_cosine"] == pytest.approx(1.0)
    assert out["reg_cosine"] == pytest.approx(6 * 5 / 36)  # every off-diagonal entry is 1


def test_orthogonal_rows_have_decorrelation_one():
    z = torch.eye(5) * torch.tensor([[2.0], [0.5], [3.0], [1.0], [7.0]])
    out = activation_probes(z)
    assert out["decorrelation"] == pytest.approx(1.0)
    assert out["mean_sq_cosine"] == pytest.approx(0.0)
    assert out["reg_cosine"] == pytest.approx(0.0)
    assert out["hoyer"] == pytest.approx(1.0)  # one-hot rows


def test_hand_computed_sparsity():
    z = torch.tensor([[3.0, 4.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    out = activation_probes(z)
    # row 1: L1/L2 = 7/5, Hoyer (2 - 1.4)/(2 - 1) = 0.6; row 2: equal magnitudes, 0
    assert out["hoyer"] == pytest.approx(0.3)
    # row 1: mean 1.75, squared deviations 1.5625 + 5.0625 + 3.0625 + 3.0625 = 12.75, /4 = 3.1875; row 2: 0
    assert out["variance"] == pytest.approx(3.1875 / 2)
    assert out["near_zero"] == pytest.approx(0.25)  # two zeros of eight entries
    assert hoyer(torch.zeros(1, 4)).item() == pytest.approx(1.0)


@pytest.mark.parametrize("batch_size", [1, 3, 4])
def test_hand_computed_monosemantic_scale(batch_size):
    # neuron 0 sees 0, 2, 4, 1. Input 3: earlier mean 1, sample variance 2 -> (4-1)^2/2 = 4.5.
    # Input 4: earlier 0, 2, 4, mean 2, variance 4 -> (1-2)^2/4 = 0.25. Mean over inputs 2.375.
    # neuron 1 = 3 x neuron 0: the scale is scale-free, same value.
    z = torch.tensor([[0.0, 0.0], [2.0, 6.0], [4.0, 12.0], [1.0, 3.0]])
    assert streamed(z, batch_size).result()["mono_scale"] == pytest.approx(2.375)


@pytest.mark.parametrize("batch_size", [1, 5, 16, 37])
@pytest.mark.parametrize("gram", [True, False])
def test_streaming_equals_naive(batch_size, gram):
    g = torch.Generator().manual_seed(batch_size)
    z = torch.randn(37, 24, generator=g, dtype=torch.float64) + 0.3
    z[::7, ::3] = 0.0  # some exact zeros for the near-zero fraction
    z[5] = 0.0  # an all-zero row: cosine 0 with every other row, as in decpo.functional
    kwargs = (
        {"gram_dim_limit": 24}
        if gram
        else {"gram_dim_limit": 0, "max_gram_rows": 100, "row_dtype": torch.float64}
    )
    stats = streamed(z, batch_size, **kwargs)
    expected = naive_probes(z)
    got = stats.result()
    for name in ACTIVATION_PROBES:
        assert got[name] == pytest.approx(expected[name], rel=1e-9, abs=1e-12), name
    assert stats.counts() == dict.fromkeys(ACTIVATION_PROBES, 37)
    assert torch.allclose(stats.mean_activation(), z.mean(0))


def test_row_cap_limits_squared_cosines_to_the_first_rows():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(50, 30, generator=g, dtype=torch.float64)
    stats = streamed(z, 8, gram_dim_limit=0, max_gram_rows=20, row_dtype=torch.float64)
    got, first, full = stats.result(), naive_probes(z[:20]), naive_probes(z)
    assert got["mean_sq_cosine"] == pytest.approx(first["mean_sq_cosine"], rel=1e-9)
    assert got["reg_cosine"] == pytest.approx(first["reg_cosine"], rel=1e-9)
    assert got["decorrelation"] == pytest.approx(full["decorrelation"], rel=1e-9)  # over all 50
    assert stats.counts()["mean_sq_cosine"] == 20 and stats.counts()["decorrelation"] == 50


def test_float16_rows_are_close_to_exact():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(64, 300, generator=g) + 0.5
    got, expected = streamed(z, 16).result(), naive_probes(z)
    assert got["mean_sq_cosine"] == pytest.approx(expected["mean_sq_cosine"], rel=1e-2)
    assert got["reg_cosine"] == pytest.approx(expected["reg_cosine"], rel=1e-2)


def test_memory_is_bounded_by_the_stated_bound():
    d = 1536
    stats = ActivationStats(d)
    g = torch.Generator().manual_seed(0)
    for _ in range(40):
        stats.update(torch.randn(16, d, generator=g))
    after_640 = stats.memory_bytes()
    for _ in range(25):
        stats.update(torch.randn(16, d, generator=g))
    assert stats.n == 1040
    assert stats.memory_bytes() == after_640  # no growth past the row cap
    assert stats.memory_bytes() <= stats_memory_bound(d, 1)
    assert stats_memory_bound(d, 30) < 50 * 2**20  # SmolLM2-135M, 30 layers: under 50 MiB


def test_fewer_than_two_inputs_give_nan_not_an_error():
    stats = ActivationStats(4)
    stats.update(torch.ones(1, 4))
    out = stats.result()
    assert math.isnan(out["decorrelation"]) and math.isnan(out["mono_scale"])
    assert out["variance"] == 0.0
