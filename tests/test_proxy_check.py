"""Does decorrelation track another per-layer measure (probes/proxy_check.py): Spearman's rho on constructed
probe rows equals scipy's, its bootstrap interval, and the plain sentence either way."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from decpo.probes.proxy_check import paired_values, proxy_tracking

NEEDED = "sparse_probe/neurons_needed/user_correct"


def rows_of(decorrelation, needed, *, model="base", site="mlp.up_proj") -> list[dict]:
    rows = []
    for layer, (d, k) in enumerate(zip(decorrelation, needed, strict=True)):
        rows.append({"model": model, "layer": layer, "site": site, "probe": "decorrelation", "value": d})
        rows.append({"model": model, "layer": layer, "site": site, "probe": NEEDED, "value": k})
    return rows


DEC = [0.50, 0.55, 0.61, 0.58, 0.70, 0.72, 0.80, 0.79, 0.85, 0.90]
NEED = [32, 16, 16, 32, 8, 8, 4, 8, 2, 1]  # fewer neurons as decorrelation grows (ties included)


def test_rho_equals_scipy_and_the_sentence_says_it_tracks():
    result = proxy_tracking(rows_of(DEC, NEED), NEEDED)
    expected = stats.spearmanr(DEC, NEED).statistic
    assert result.rho == pytest.approx(expected)
    assert result.n_points == 10 and result.lo <= result.rho <= result.hi < 0
    assert result.tracks
    assert result.sentence("neurons needed") == (
        f"decorrelation tracks neurons needed: Spearman {expected:.2f} [{result.lo:.2f}, {result.hi:.2f}] "
        "over 10 (model, layer) points"
    )
    assert proxy_tracking(rows_of(DEC, NEED), NEEDED) == result  # seeded


def test_unrelated_measure_does_not_track():
    rng = np.random.default_rng(0)
    result = proxy_tracking(rows_of(DEC, rng.permutation(NEED).tolist()), NEEDED)
    assert not result.tracks and result.lo < 0 < result.hi
    assert result.sentence().startswith(f"decorrelation does not track {NEEDED}: Spearman")


def test_points_pair_by_model_layer_site_and_skip_the_rest():
    rows = rows_of(DEC[:5], NEED[:5]) + rows_of(DEC[5:], NEED[5:], model="dpo")
    rows += rows_of([0.1] * 5, [99] * 5, site="resid_post")  # another site: left out with site=
    rows.append({"model": "dpo", "layer": 9, "site": "mlp.up_proj", "probe": NEEDED, "value": 3})  # no proxy
    nan_point = {
        "model": "base",
        "layer": 7,
        "site": "mlp.up_proj",
        "probe": "decorrelation",
        "value": math.nan,
    }
    rows += [nan_point, {**nan_point, "probe": NEEDED, "value": 5}]  # a NaN side: left out
    as_csv = [{k: str(v) for k, v in r.items()} for r in rows]  # probes.csv gives strings
    x, y = paired_values(as_csv, NEEDED, site="mlp.up_proj")
    assert sorted(zip(x.tolist(), y.tolist(), strict=True)) == sorted(zip(DEC, map(float, NEED), strict=True))
    assert proxy_tracking(as_csv, NEEDED, site="mlp.up_proj").rho == pytest.approx(
        stats.spearmanr(DEC, NEED).statistic
    )
    assert len(paired_values(rows, NEEDED, models=["dpo"])[0]) == 5


def test_too_few_points_or_a_constant_side_give_no_correlation():
    result = proxy_tracking(rows_of(DEC[:2], NEED[:2]), NEEDED)
    assert math.isnan(result.rho) and not result.tracks
    assert "too few points (2)" in result.sentence()
    constant = proxy_tracking(rows_of(DEC, [4] * 10), NEEDED)
    assert math.isnan(constant.rho) and "one side is constant; no correlation" in constant.sentence()


def test_fewer_than_8_points_give_rho_but_no_verdict():
    # 4 points in perfect inverse order: every bootstrap resample gives -1, an interval that excludes 0
    result = proxy_tracking(rows_of(DEC[:4], [32, 16, 8, 12]), NEEDED)
    assert (result.rho, result.lo, result.hi) == pytest.approx((-1.0, -1.0, -1.0))
    assert not result.tracks
    assert result.sentence("neurons needed") == (
        "decorrelation vs neurons needed: Spearman -1.00 [-1.00, -1.00] over 4 (model, layer) points, "
        "too few to judge (fewer than 8)"
    )


def test_the_verb_reads_the_sign_the_proxy_predicts():
    """Fewer neurons as decorrelation grows is what the proxy predicts for neurons needed (side -1): tracks;
    the same rho for a measure that should rise with monosemanticity (side +1) runs against it."""
    falling = proxy_tracking(rows_of(DEC, NEED), NEEDED)
    assert falling.sentence("n", -1).startswith("decorrelation tracks n: Spearman -")
    assert falling.sentence("n", 1).startswith("decorrelation runs against n: Spearman -")
    assert falling.sentence("n", 0).startswith("decorrelation correlates with n: Spearman -")
    rising = proxy_tracking(rows_of(DEC, [-k for k in NEED]), NEEDED)
    assert rising.verb(-1) == "runs against" and rising.verb(1) == "tracks"
    rng = np.random.default_rng(0)
    unrelated = proxy_tracking(rows_of(DEC, rng.permutation(NEED).tolist()), NEEDED)
    assert unrelated.verb(-1) == unrelated.verb(1) == "does not track"
