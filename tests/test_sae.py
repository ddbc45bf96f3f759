"""The SAE measures (`decpo.probes.sae`, `sae_measures`, `sae_runner`): training on a tiny random Llama in
seconds with FVU falling, a saved SAE loading back with equal outputs, a width mismatch named, the shift
test against scipy on fixed data, and the measures on fixed codes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

pytest.importorskip("sparsify")

from decpo.models.tiny import build_tiny_llama, build_tiny_tokenizer  # noqa: E402
from decpo.probes.sae import SaeError, SaeSettings, TokenBuffer, new_sae, train_sae  # noqa: E402
from decpo.probes.sae_measures import (  # noqa: E402
    Codes,
    SaeStats,
    ks_pvalue,
    ks_statistic,
    latent_shift,
)
from decpo.probes.sae_runner import SaeRun, load_sae, save_sae, token_rows  # noqa: E402

TEXTS = [f"text number {i}: the cat sat on the red mat today." for i in range(40)]
TEXTS += [f"question {i}? answer {i * 7 % 13} and more words here" for i in range(40)]


@pytest.fixture(scope="module")
def tiny():
    tok = build_tiny_tokenizer()
    model = build_tiny_llama(len(tok), num_layers=2, hidden_size=16, intermediate_size=32)
    return model, tok


def _heldout_fvu(sae, model, tok, texts):
    stats_ = SaeStats(sae)
    for rows in token_rows(model, tok, texts, "mlp.up_proj", 1, batch_size=8):
        stats_.update(rows)
    return stats_.result()


def test_sae_trains_on_a_tiny_model_and_its_fvu_falls(tiny):
    model, tok = tiny
    train, heldout = TEXTS[::2], TEXTS[1::2]
    settings = SaeSettings(expansion_factor=2, k=4, train_tokens=6000, batch_tokens=64, buffer_tokens=512)

    def batches():
        while True:
            yield from token_rows(model, tok, train, "mlp.up_proj", 1, batch_size=8)

    short = train_sae(batches(), 32, SaeSettings(**{**settings.__dict__, "train_tokens": 64}), progress=False)
    long = train_sae(batches(), 32, settings, progress=False)
    assert long.tokens >= 6000 and long.seconds < 30
    before, after = _heldout_fvu(short.sae, model, tok, heldout), _heldout_fvu(long.sae, model, tok, heldout)
    assert after["fvu"] < 0.7 * before["fvu"]  # held-out texts, not the training ones
    assert np.mean([f for _, f in long.curve[-10:]]) < np.mean([f for _, f in long.curve[:10]])
    assert 0 < after["l0"] <= 4


def test_token_rows_drop_each_texts_first_token_and_padding(tiny):
    model, tok = tiny
    texts = ["a b c d e f g", "hi"]
    n = [len(tok(t)["input_ids"]) for t in texts]
    rows = list(token_rows(model, tok, texts, "mlp.up_proj", 0, batch_size=2))
    assert rows[0].shape == (sum(n) - 2, 32)


def test_a_saved_sae_loads_back_with_equal_outputs(tmp_path):
    sae = new_sae(24, SaeSettings(expansion_factor=2, k=3, seed=1))
    with torch.no_grad():
        sae.b_dec.normal_()
    save_sae(sae, tmp_path / "sae")
    loaded = load_sae(tmp_path / "sae")
    x = torch.randn(50, 24)
    a, b = sae(x), loaded(x)
    assert torch.equal(a.sae_out, b.sae_out) and torch.equal(a.latent_indices, b.latent_indices)
    with pytest.raises(SaeError, match="not an SAE folder"):
        load_sae(tmp_path)


def test_a_width_mismatch_names_both_widths(tiny, tmp_path):
    model, tok = tiny
    save_sae(new_sae(24, SaeSettings(expansion_factor=2, k=3)), tmp_path / "sae")
    run = SaeRun([], TEXTS[:4], site="mlp.up_proj", layer=1, sae_path=str(tmp_path / "sae"), progress=False)
    with pytest.raises(
        SaeError, match=r"reads 24-wide activations but mlp.up_proj of block 1 of base is 32 wide"
    ):
        run.measure("base", model, tok)


def test_the_ks_statistic_and_p_value_equal_scipys_on_fixed_data():
    a = np.array([0, 0, 0.5, 1.5, 0, 2.0, 0, 0.1, 0, 0])
    b = np.array([0, 1.0, 1.2, 0, 3.0, 0.4, 2.2, 0])
    d = ks_statistic(np.sort(a[a > 0]), a.size, np.sort(b[b > 0]), b.size)
    expected = stats.ks_2samp(a, b, method="asymp")
    assert d == pytest.approx(expected.statistic, abs=1e-12)
    assert ks_pvalue(d, a.size, b.size) == pytest.approx(expected.pvalue, rel=1e-12)


def test_latent_shift_on_fixed_codes():
    rng = np.random.default_rng(0)
    n = 400
    # latent 0 fires on every token with the same law in both; latent 1 fires twice as strongly in other;
    # latent 2 fires in base only; latent 3 never
    acts_a = np.stack([rng.exponential(1.0, n), rng.exponential(1.0, n)], 1).astype(np.float32)
    acts_b = np.stack([rng.exponential(1.0, n), rng.exponential(2.0, n)], 1).astype(np.float32)
    idx_a = np.tile([0, 1], (n, 1)).astype(np.int32)
    idx_a[: n // 2, 1] = 2  # half of base's second slot is latent 2
    idx_b = np.tile([0, 1], (n, 1)).astype(np.int32)
    shift = latent_shift(Codes(acts_a, idx_a, 4), Codes(acts_b, idx_b, 4))
    assert shift.latents.tolist() == [0, 1, 2]  # latent 3, silent in both, left out
    dense = [np.zeros(n), np.zeros(n)]
    for j in range(3):
        for arr, (acts, idx) in zip(dense, [(acts_a, idx_a), (acts_b, idx_b)], strict=True):
            arr[:] = (acts * (idx == j)).sum(1)
        assert shift.d[j] == pytest.approx(stats.ks_2samp(*dense, method="asymp").statistic)
    p = [stats.ks_2samp(*_dense(acts_a, idx_a, acts_b, idx_b, j), method="asymp").pvalue for j in range(3)]
    assert shift.q == pytest.approx(stats.false_discovery_control(p))
    assert shift.q[0] > 0.05 and shift.q[1] < 0.05 and shift.q[2] < 0.05
    assert shift.values() == {"shifted_frac": pytest.approx(2 / 3), "ks_mean": pytest.approx(shift.d.mean())}


def _dense(acts_a, idx_a, acts_b, idx_b, j):
    return (acts_a * (idx_a == j)).sum(1), (acts_b * (idx_b == j)).sum(1)


def test_sae_stats_on_fixed_rows():
    sae = new_sae(4, SaeSettings(expansion_factor=2, k=1))
    with torch.no_grad():  # latent j reads x_j (j < 4); latents 4..7 never win
        sae.encoder.weight.zero_()
        sae.encoder.weight[:4] = torch.eye(4)
        sae.encoder.bias.zero_()
        sae.W_dec.zero_()
        sae.W_dec[:4] = torch.eye(4)
        sae.b_dec.zero_()
    x = torch.zeros(10, 4)
    x[:8, 0] = 1.0  # latent 0 on 8 of 10 tokens (dense), latent 1 on 2, latents 2..7 dead
    x[8:, 1] = 2.0
    s = SaeStats(sae)
    s.update(x[:5])
    s.update(x[5:])
    r = s.result()
    assert r["l0"] == 1.0 and r["fvu"] == pytest.approx(0.0, abs=1e-12)
    assert r["dead_frac"] == 6 / 8 and r["dense_frac"] == 2 / 8  # latent 1 fires on 20% > 10%
    x[:, 2] = 0.5  # one dimension the top-1 code drops: its variance unexplained
    s = SaeStats(sae)
    s.update(x)
    total = ((x - x.mean(0)) ** 2).sum()
    assert s.result()["fvu"] == pytest.approx(float(((x[:, 2]) ** 2).sum() / total), rel=1e-6)


def test_token_buffer_holds_at_most_its_capacity():
    buf = TokenBuffer(10)
    buf.add(torch.arange(8.0)[:, None])
    with pytest.raises(SaeError, match="overflow"):
        buf.add(torch.zeros(3, 1))
    got = buf.take(5)
    assert len(buf) == 3 and sorted(got[:, 0].tolist() + buf.rows[:, 0].tolist()) == list(range(8))
