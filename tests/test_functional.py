"""Pure math: DPO loss against hand-computed numbers, regularizers against naive loops and gradcheck."""

from __future__ import annotations

import math

import pytest
import torch

from decpo.functional import (
    TOKEN_SELECTIONS,
    decorrelation_penalty,
    dpo_loss,
    feature_decorrelation,
    l1_penalty,
    select_spans,
    select_tokens,
    sequence_logps,
    token_spans,
)


def test_dpo_loss_hand_computed():
    # logratios: chosen 1.0 - 0.0 = 1.0, rejected 0.5 - 1.5 = -1.0; beta 0.1 -> logit 0.2
    losses, chosen_r, rejected_r = dpo_loss(
        torch.tensor([1.0]), torch.tensor([0.5]), torch.tensor([0.0]), torch.tensor([1.5]), beta=0.1
    )
    assert losses.item() == pytest.approx(math.log(1 + math.exp(-0.2)), abs=1e-7)
    assert chosen_r.item() == pytest.approx(0.1)
    assert rejected_r.item() == pytest.approx(-0.1)


def test_dpo_loss_at_reference_is_log2():
    x = torch.randn(5)
    losses, _, _ = dpo_loss(x, x + 1, x, x + 1, beta=0.3)
    assert torch.allclose(losses, torch.full((5,), math.log(2.0)))


def test_sequence_logps_sum_and_average():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 7)
    labels = torch.randint(0, 7, (2, 4))
    mask = torch.tensor([[0, 0, 1, 1], [0, 1, 1, 0]])
    logp = logits.log_softmax(-1)
    expect = []
    for i in range(2):
        expect.append(sum(logp[i, t - 1, labels[i, t]] for t in range(1, 4) if mask[i, t]))
    got = sequence_logps(logits, labels, mask)
    assert torch.allclose(got, torch.stack(expect))
    got_avg = sequence_logps(logits, labels, mask, average=True)
    assert torch.allclose(got_avg, torch.stack(expect) / torch.tensor([2.0, 2.0]))


def naive_penalty(z: torch.Tensor, form: str) -> torch.Tensor:
    n = z.shape[0]
    total = torch.zeros((), dtype=z.dtype)
    for i in range(n):
        for j in range(n):
            if form == "paper":
                g = sum(z[i, k] * z[j, k] for k in range(z.shape[1]))
                total = total + (g - (1.0 if i == j else 0.0)) ** 2
            elif form == "cosine":
                g = sum(z[i, k] * z[j, k] for k in range(z.shape[1])) / (z[i].norm() * z[j].norm())
                total = total + (g - (1.0 if i == j else 0.0)) ** 2
            else:  # code_literal: mean of |Z||Z|^T - I
                g = sum(abs(z[i, k]) * abs(z[j, k]) for k in range(z.shape[1]))
                total = total + (g - (1.0 if i == j else 0.0)) / n**2
    return total


@pytest.mark.parametrize("form", ["paper", "cosine", "code_literal"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_decorrelation_matches_naive_loop(form, dtype):
    torch.manual_seed(1)
    z = torch.randn(5, 6, dtype=dtype)
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    assert torch.allclose(decorrelation_penalty(z, form), naive_penalty(z, form), rtol=tol, atol=tol)


@pytest.mark.parametrize("form", ["paper", "cosine", "code_literal"])
def test_decorrelation_gradcheck(form):
    torch.manual_seed(2)
    z = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: decorrelation_penalty(x, form), (z,))


def test_l1_gradcheck_and_value():
    z = torch.tensor([[1.0, -2.0], [0.5, 0.0]], dtype=torch.float64)
    assert l1_penalty(z).item() == pytest.approx(3.5 / 4)
    torch.manual_seed(3)
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(l1_penalty, (x,))


def test_cosine_form_known_values():
    identical = torch.ones(3, 4)
    assert decorrelation_penalty(identical, "cosine").item() == pytest.approx(6.0)  # N(N-1) cosines of 1
    orthogonal = torch.eye(3, 5) * 7.0
    assert decorrelation_penalty(orthogonal, "cosine").item() == pytest.approx(0.0, abs=1e-7)
    # scale-free, unlike the paper form
    z = torch.randn(4, 8)
    assert torch.allclose(
        decorrelation_penalty(10 * z, "cosine"), decorrelation_penalty(z, "cosine"), rtol=1e-5
    )
    assert decorrelation_penalty(10 * z, "paper") > 50 * decorrelation_penalty(z, "paper")


def test_zero_row_gives_finite_penalty_and_gradient():
    z = torch.zeros(3, 4, requires_grad=True)
    value = decorrelation_penalty(z, "cosine")
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(z.grad).all()


def test_feature_decorrelation_identical_and_orthogonal():
    assert feature_decorrelation(torch.ones(4, 3)).item() == pytest.approx(0.0, abs=1e-6)
    assert feature_decorrelation(torch.eye(4)).item() == pytest.approx(1.0)
    with pytest.raises(ValueError):
        feature_decorrelation(torch.ones(1, 3))


def test_select_tokens_last_real_token_left_and_right_padding():
    hidden = torch.arange(2 * 4 * 1, dtype=torch.float32).view(2, 4, 1)
    right = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    left = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    assert select_tokens(hidden, right).squeeze(1).tolist() == [1.0, 7.0]
    assert select_tokens(hidden, left).squeeze(1).tolist() == [3.0, 7.0]


def test_select_tokens_completion_mean():
    hidden = torch.arange(8, dtype=torch.float32).view(1, 4, 2)
    completion = torch.tensor([[0, 1, 1, 0]])
    out = select_tokens(hidden, torch.ones(1, 4), "completion_mean", completion)
    assert out.tolist() == [[3.0, 4.0]]
    with pytest.raises(ValueError, match="completion_mask"):
        select_tokens(hidden, torch.ones(1, 4), "completion_mean")


def test_token_spans_select_the_same_rows_as_select_tokens():
    torch.manual_seed(0)
    hidden = torch.randn(3, 5, 4)
    attention = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 1, 0, 0, 0]])
    completion = torch.tensor([[0, 1, 1, 0, 0], [0, 0, 1, 1, 1], [0, 1, 0, 0, 0]])
    for how in TOKEN_SELECTIONS:
        spans = token_spans(attention, how, completion)
        torch.testing.assert_close(
            select_spans(hidden, spans), select_tokens(hidden, attention, how, completion)
        )
    assert token_spans(attention, "last") == [(0, 2, 3), (1, 4, 5), (2, 1, 2)]
    # packed rows: sequence 0 lives at flat positions 5..7 of a (2, 5) tensor, i.e. row 1, positions 0..2
    index = torch.tensor([[5, 6, 7, 0, 0]])
    assert token_spans(attention[:1], "completion_mean", completion[:1], index=index, row_length=5) == [
        (1, 1, 3)
    ]
    with pytest.raises(ValueError, match="not contiguous"):
        token_spans(torch.ones(1, 3), "completion_mean", torch.tensor([[1, 0, 1]]))
    with pytest.raises(ValueError, match="no token"):
        token_spans(torch.zeros(1, 3), "last")


def test_prompt_last_is_the_token_before_the_first_completion_token_left_and_right_padding():
    torch.manual_seed(0)
    hidden = torch.randn(3, 6, 4)
    # right padding (TRL's layout): prompt, completion, pads
    attention = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]])
    completion = torch.tensor([[0, 0, 1, 1, 0, 0], [0, 0, 0, 0, 1, 1], [0, 1, 1, 0, 0, 0]])
    expected = torch.stack([hidden[0, 1], hidden[1, 3], hidden[2, 0]])  # written by hand
    torch.testing.assert_close(select_tokens(hidden, attention, "prompt_last", completion), expected)
    torch.testing.assert_close(
        select_spans(hidden, token_spans(attention, "prompt_last", completion)), expected
    )
    # left padding: pads, prompt, completion
    left_attention = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1], [0, 0, 0, 1, 1, 1]])
    left_completion = torch.tensor([[0, 0, 0, 0, 1, 1], [0, 0, 0, 0, 1, 1], [0, 0, 0, 0, 1, 1]])
    expected = torch.stack([hidden[0, 3], hidden[1, 3], hidden[2, 3]])
    torch.testing.assert_close(
        select_tokens(hidden, left_attention, "prompt_last", left_completion), expected
    )
    # packed rows (prefix sharing): sequence 0's tokens are at flat positions 7, 8, 9 of a (2, 6) tensor
    index = torch.tensor([[7, 8, 9, 0, 0, 0]])
    spans = token_spans(
        attention[:1, :3].clone() | 1,
        "prompt_last",
        torch.tensor([[0, 1, 1]]),
        index=index[:, :3],
        row_length=6,
    )
    assert spans == [(1, 1, 2)]
    with pytest.raises(ValueError, match="no completion token"):
        select_tokens(hidden[:1], attention[:1], "prompt_last", torch.zeros(1, 6, dtype=torch.long))
    with pytest.raises(ValueError, match="no real prompt token"):
        select_tokens(hidden[:1], attention[:1], "prompt_last", torch.tensor([[1, 1, 0, 0, 0, 0]]))
    with pytest.raises(ValueError, match="completion_mask"):
        token_spans(attention, "prompt_last")
