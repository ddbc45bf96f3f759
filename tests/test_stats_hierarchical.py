"""Seeds x items: the two-level bootstrap equals a brute-force enumeration of every resample, pairs by seed
and by item, refuses mismatched designs; exact binomial intervals are never zero-width; measures at the
ceiling are left out of the counts; the minimum detectable effect equals a hand computation and, on
simulated crossed data, the true standard error."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from decpo.reports.hierarchical import (
    VarianceComponents,
    hierarchical_bootstrap,
    hierarchical_paired_bootstrap,
    hierarchical_resamples,
    mde,
    mde_for,
    mde_paired,
    variance_components,
)
from decpo.reports.stats import (
    at_ceiling_or_floor,
    binary_difference_bound,
    count_verdicts,
    exact_binomial,
    paired_bootstrap,
    proportion_estimate,
    t_interval,
)
from decpo.reports.tables import over_seeds, paired_difference, verdict

Z = 1.959963984540054 + 0.8416212335729143  # z_0.975 + z_0.80
CP_64 = 0.025 ** (1 / 64)  # Clopper-Pearson lower bound of 64/64: the 2.5% tail of p^64


def _rows(m) -> dict[int, list[float]]:
    return {s: list(map(float, row)) for s, row in enumerate(np.asarray(m, dtype=float))}


def _every_resample(d: np.ndarray) -> np.ndarray:
    """The exact bootstrap distribution: every ordered seed draw x every ordered item draw, equally likely,
    each giving the mean of the drawn cells (the same item draw for every drawn seed)."""
    n_seeds, n_items = d.shape
    return np.array(
        [
            d[np.ix_(seeds, items)].mean()
            for seeds in itertools.product(range(n_seeds), repeat=n_seeds)
            for items in itertools.product(range(n_items), repeat=n_items)
        ]
    )


# --- the seeds x items bootstrap ---------------------------------------------------------------------------


def test_the_same_difference_everywhere_gives_that_difference():
    rng = np.random.default_rng(0)
    dpo = rng.normal(0, 1, (4, 30)) + rng.normal(0, 1, 30)  # item difficulty shared by the seeds
    est = hierarchical_paired_bootstrap(_rows(dpo + 0.25), _rows(dpo))
    assert est.mean == pytest.approx(0.25) and (est.low, est.high) == pytest.approx((0.25, 0.25))
    assert (est.how, est.n_seeds, est.n_items) == ("seeds x items", 4, 30)
    one = hierarchical_bootstrap(_rows(np.full((3, 5), 0.4)))
    assert (one.mean, one.low, one.high) == pytest.approx((0.4, 0.4, 0.4))


def test_2x2_design_equals_the_brute_force_enumeration_of_all_16_resamples():
    d = np.array([[0.5, -0.25], [0.25, 1.0]])
    exact = _every_resample(d)
    assert len(exact) == 16
    boot = hierarchical_resamples(d, n_resamples=40_000, seed=0)
    # the same values, each with probability k/16
    atoms, counts = np.unique(exact.round(12), return_counts=True)
    assert set(np.unique(boot.round(12))) == set(atoms)
    freq = np.array([(boot.round(12) == a).mean() for a in atoms])
    assert np.abs(freq - counts / 16).max() < 0.01
    # by hand: mean 0.375; each end is one resample of 16 (6.25% > 2.5%): seeds (0, 0) with items (1, 1)
    # gives -0.25, seeds (1, 1) with items (1, 1) gives 1.0, so the 95% percentile interval is [-0.25, 1]
    est = hierarchical_bootstrap(_rows(d), n_resamples=9999, seed=5)
    assert (est.mean, est.low, est.high) == pytest.approx((0.375, -0.25, 1.0), abs=1e-12)


def test_3x3_interval_ends_are_the_quantiles_of_the_exact_distribution():
    d = np.array([[-2.0, 5.0, 0.0], [-3.0, 4.0, 2.0], [3.0, 1.0, -1.0]])
    exact = np.sort(_every_resample(d))  # 27 x 27 = 729 equally likely resamples
    ends = []
    for q in (0.025, 0.975):
        x = exact[math.ceil(q * len(exact)) - 1]
        below, upto = (exact < x - 1e-9).mean(), (exact <= x + 1e-9).mean()
        assert below + 0.009 < q < upto - 0.009  # far from a step: 20,000 resamples land on x
        ends.append(x)
    assert ends == pytest.approx([-4 / 3, 10 / 3])
    est = hierarchical_bootstrap(_rows(d), n_resamples=20_000, seed=0)
    assert (est.low, est.high) == pytest.approx(ends, abs=1e-12) and est.mean == pytest.approx(d.mean())


def test_pairs_by_seed_and_item_so_item_difficulty_and_seed_offsets_cancel():
    rng = np.random.default_rng(1)
    diff = rng.normal(0.1, 0.05, (3, 40))
    dpo = rng.normal(0, 1, (3, 1)) + rng.normal(0, 3, (1, 40))  # seed offsets and very uneven items
    paired = hierarchical_paired_bootstrap(_rows(dpo + diff), _rows(dpo), seed=2)
    # the same seed and item draws on both sides: exactly the bootstrap of the differences themselves
    alone = hierarchical_bootstrap(_rows(diff), seed=2)
    assert (paired.mean, paired.low, paired.high) == pytest.approx((alone.mean, alone.low, alone.high))
    assert paired.low > 0 and paired.high - paired.low < 0.2
    # deterministic: the same seed, the same interval; another seed moves it a little
    assert hierarchical_paired_bootstrap(_rows(dpo + diff), _rows(dpo), seed=2) == paired
    assert hierarchical_paired_bootstrap(_rows(dpo + diff), _rows(dpo), seed=3) != paired


def test_the_item_draw_is_shared_by_all_seeds():
    # item 0 is better for DecPO in every seed: an item effect. Drawing items once per resample keeps it
    # (more seeds do not average it away); the interval is as wide as the one-seed item bootstrap's.
    d = np.tile([1.0, 0.0, 0.0, 0.0], (6, 1))
    wide = hierarchical_bootstrap(_rows(d), seed=0)
    one_seed = hierarchical_bootstrap(_rows(d[:1]), seed=0)
    assert (wide.low, wide.high) == pytest.approx((one_seed.low, one_seed.high))
    assert (wide.low, wide.high) == (0.0, 0.75)  # 0 of 4 draws hit item 0 w.p. 32%, all 4 w.p. 0.4%


def test_mismatched_seeds_or_items_are_refused():
    a = {0: [1.0, 0.0], 1: [1.0, 1.0]}
    with pytest.raises(ValueError, match="same seeds"):
        hierarchical_paired_bootstrap(a, {0: [1.0, 0.0], 2: [0.0, 0.0]})
    with pytest.raises(ValueError, match="same items"):
        hierarchical_paired_bootstrap(a, {0: [1.0, 0.0, 1.0], 1: [1.0, 1.0, 0.0]})
    with pytest.raises(ValueError, match="same items"):
        hierarchical_bootstrap({0: [1.0, 0.0], 1: [1.0]})
    with pytest.raises(ValueError, match="no items"):
        hierarchical_bootstrap({0: [], 1: []})
    with pytest.raises(ValueError, match="no seeds"):
        hierarchical_bootstrap({})


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 4).flatmap(
        lambda s: st.integers(1, 6).flatmap(
            lambda i: st.lists(
                st.lists(st.sampled_from([0.0, 1.0]) | st.floats(-1, 1), min_size=i, max_size=i),
                min_size=s,
                max_size=s,
            )
        )
    ),
    st.integers(0, 2**16),
)
def test_property_the_interval_contains_the_estimate(rows, seed):
    est = hierarchical_bootstrap(dict(enumerate(rows)), n_resamples=999, seed=seed)
    assert est.low <= est.mean + 1e-12 and est.mean <= est.high + 1e-12
    d = np.asarray(rows)
    paired = hierarchical_paired_bootstrap(dict(enumerate(rows)), dict(enumerate(d[::-1])), n_resamples=999)
    assert paired.low <= paired.mean + 1e-12 <= paired.high + 2e-12
    if set(np.unique(d)) <= {0.0, 1.0}:  # shares of items: never a zero-width interval
        assert est.high > est.low


def test_binary_scores_all_right_get_the_exact_interval_not_a_zero_width_one():
    ones = {s: [1.0] * 64 for s in range(5)}
    est = hierarchical_bootstrap(ones)
    assert (est.mean, est.high, est.how, est.n_items) == (1.0, 1.0, "exact binomial", 64)
    assert est.low == pytest.approx(CP_64)  # the items counted once, not 5 x 64 times
    both = hierarchical_paired_bootstrap(ones, ones)
    assert (both.mean, both.low, both.high) == pytest.approx((0.0, -(1 - CP_64), 1 - CP_64))


# --- exact binomial intervals -------------------------------------------------------------------------------


def test_exact_binomial_64_of_64_and_0_of_64():
    full = exact_binomial(64, 64)
    assert (
        full.low == pytest.approx(0.9439909, abs=1e-7) and full.high == 1.0 and full.how == "exact binomial"
    )
    none = exact_binomial(0, 64)
    assert none.low == 0.0 and none.high == pytest.approx(1 - CP_64) and none.high > 0.05
    assert proportion_estimate([1.0] * 64) == full and proportion_estimate([0.0] * 64) == none
    with pytest.raises(ValueError):
        proportion_estimate([1.0, 0.5])
    with pytest.raises(ValueError):
        exact_binomial(3, 2)


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 400).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
def test_property_exact_binomial_is_clopper_pearson_and_never_zero_width(kn):
    k, n = kn
    est = exact_binomial(k, n)
    # Clopper-Pearson from the beta quantiles
    low = 0.0 if k == 0 else stats.beta.ppf(0.025, k, n - k + 1)
    high = 1.0 if k == n else stats.beta.ppf(0.975, k + 1, n - k)
    assert (est.low, est.high) == pytest.approx((low, high), abs=1e-9)
    assert est.low <= k / n <= est.high and est.high - est.low > 0


def test_equal_seeds_are_not_certainty():
    # 64/64 in every seed: the exact interval over the 64 shared items
    est = t_interval([1.0, 1.0, 1.0], n_items=64)
    assert (est.low, est.high, est.how, est.n_seeds) == (pytest.approx(CP_64), 1.0, "exact binomial", 3)
    # 35/36 in each seed: the pooled items, 35 of 36
    est = t_interval([35 / 36] * 3, n_items=36)
    assert (est.low, est.high) == pytest.approx((exact_binomial(35, 36).low, exact_binomial(35, 36).high))
    # the "+0.028 [+0.028, +0.028]": a difference with no items to say more is no interval at all
    same = t_interval([1 / 36, 1 / 36, 1 / 36])
    assert not same.has_interval and same.how == "seeds, all equal" and same.side() == 0
    assert verdict(same, "higher") == "no interval (all seeds equal)"
    # equal up to float rounding counts as equal
    assert t_interval([0.3, 0.1 + 0.2]).how == "seeds, all equal"
    assert t_interval([0.3, 0.31]).how == "seeds"


def test_paired_bootstrap_of_identical_binary_scores_is_bounded_exactly():
    est = paired_bootstrap([1.0] * 64, [1.0] * 64)
    assert (est.mean, est.low, est.high) == pytest.approx((0.0, -(1 - CP_64), 1 - CP_64))
    up = binary_difference_bound(1.0, 64)
    assert (up.low, up.high) == pytest.approx((2 * CP_64 - 1, 1.0))
    down = binary_difference_bound(-1.0, 64)
    assert (down.low, down.high) == pytest.approx((-1.0, 1 - 2 * CP_64))
    with pytest.raises(ValueError):
        binary_difference_bound(0.5, 64)


def test_over_seeds_gives_a_share_at_1_the_exact_interval():
    one = over_seeds([{"value": 1.0, "n": 64, "ci": [1.0, 1.0]}], "ab_accuracy_debiased")
    assert (one.low, one.high, one.how) == (pytest.approx(CP_64), 1.0, "exact binomial")
    three = over_seeds([{"value": 1.0, "n": 64}] * 3, "transfer/ab_accuracy_mean_orders")
    assert three.how == "exact binomial" and three.n_seeds == 3
    # not a share of 0/1 items: as before
    margin = over_seeds([{"value": 1.0, "n": 64, "ci": [1.0, 1.0]}], "reward_margin")
    assert (margin.low, margin.high, margin.how) == (1.0, 1.0, "items")
    halves = over_seeds([{"value": 0.5, "n": 64}] * 2, "ab_accuracy_mean_orders")  # items of 0, 0.5 or 1
    assert halves.how == "seeds, all equal" and not halves.has_interval


def _records(correct: list[float]) -> list[dict]:
    return [
        {
            "kind": "ab",
            "split": "eval",
            "prompt": f"question {i}",
            "chosen_letter": "AB"[i % 2],
            "scores": {"correct_both": c},
        }
        for i, c in enumerate(correct)
    ]


def _entry(correct: list[float]) -> dict:
    return {"metrics": {"ab_accuracy_debiased": {"value": float(np.mean(correct)), "n": len(correct)}}}


def test_equal_seed_differences_fall_back_to_seeds_x_items():
    # the case: DecPO right on one more item of 36 than DPO, in every seed
    dpo = [0.0] + [1.0] * 35
    decpo = [1.0] * 36
    a, b = {s: _entry(decpo) for s in (0, 1, 2)}, {s: _entry(dpo) for s in (0, 1, 2)}
    samples = {"a": _records(decpo), "b": list(reversed(_records(dpo)))}  # matched by item, not position
    est, how = paired_difference("synthetic", "ab_accuracy_debiased", a, b, lambda side, seed: samples[side])
    assert est.how == "seeds x items" and how.startswith("paired over 3 seeds x 36 items")
    assert est.mean == pytest.approx(1 / 36) and est.low == 0.0 and est.high > 1 / 36
    assert verdict(est, "higher") == "no clear difference (interval includes 0)"
    assert est == hierarchical_paired_bootstrap({s: decpo for s in a}, {s: dpo for s in b})
    # without the per-item scores: no interval, never a zero-width one
    est, how = paired_difference("synthetic", "ab_accuracy_debiased", a, b)
    assert not est.has_interval and verdict(est, "higher") == "no interval (all seeds equal)"


# --- measures at the ceiling ---------------------------------------------------------------------------------


def test_ceiling_and_floor_flags():
    assert at_ceiling_or_floor(0.97, 1.0) == "ceiling" and at_ceiling_or_floor(1.0, 1.0) == "ceiling"
    assert at_ceiling_or_floor(0.969, 1.0) is None and at_ceiling_or_floor(0.5, 0.99) is None
    assert at_ceiling_or_floor(0.03, 0.0) == "floor" and at_ceiling_or_floor(0.031, 0.0) is None
    assert at_ceiling_or_floor(0.9, 0.95, high=0.9) == "ceiling"


def test_flagged_measures_are_left_out_of_the_counts():
    tally = count_verdicts(
        [
            ("debiased", "no clear difference (interval includes 0)", "ceiling"),
            ("user wrong", "DecPO better", None),
            ("transfer", "no clear difference (interval includes 0)", None),
            ("margin", "DecPO worse", None),
            ("a rate", "no clear difference (interval includes 0)", "floor"),
        ]
    )
    assert tally.n == 3 and tally.flagged == [("debiased", "ceiling"), ("a rate", "floor")]
    assert tally.counts == {
        "DecPO better": 1,
        "no clear difference (interval includes 0)": 1,
        "DecPO worse": 1,
    }


# --- minimum detectable effect --------------------------------------------------------------------------


def test_mde_paired_equals_a_hand_computation():
    # seeds x items = 2 x 3. Seed means 2, 5 (grand mean 3.5); item means 1, 3, 6.5.
    # MS_seed = 3 * (1.5^2 + 1.5^2) / 1 = 13.5; MS_item = 2 * (2.5^2 + 0.5^2 + 3^2) / 2 = 15.5;
    # residuals d - seed mean - item mean + 3.5 = [[.5, .5, -1], [-.5, -.5, 1]]: MS_res = 3 / 2 = 1.5.
    # between = (13.5 - 1.5) / 3 = 4, item = (15.5 - 1.5) / 2 = 7, within = 1.5;
    # SE^2 = 4 / 2 + 7 / 3 + 1.5 / 6 = 55 / 12.
    d = {0: [0.0, 2.0, 4.0], 1: [2.0, 4.0, 9.0]}
    assert variance_components(d) == VarianceComponents(4.0, 7.0, 1.5)
    assert mde_paired(d) == pytest.approx(Z * math.sqrt(55 / 12), rel=1e-12)
    # components below 0 are 0: residual MS 1.5 above both effects here, SE^2 = 1.5 / 6
    d = {0: [1.0, 0.0, 2.0], 1: [3.0, 2.0, 1.0]}
    assert variance_components(d) == VarianceComponents(0.0, 0.0, 1.5)
    assert mde_paired(d) == pytest.approx(Z * 0.5, rel=1e-12)
    assert mde(1.0) == pytest.approx(2.801585, abs=1e-6)


def test_mde_for_plans_seeds_and_items():
    # SE^2 = 0.001 / 5 + 0.4 / (5 * 200) = 0.0006 (the textbook two-level form, no shared item effect)
    assert mde_for(5, 200, between_var=0.001, within_var=0.4) == pytest.approx(Z * math.sqrt(0.0006))
    # a shared item effect adds item_var / n_items = 0.0001, and more seeds cannot remove it
    assert mde_for(5, 200, 0.001, 0.4, item_var=0.02) == pytest.approx(Z * math.sqrt(0.0007))
    assert mde_for(10**6, 200, 0.001, 0.4, item_var=0.02) == pytest.approx(Z * math.sqrt(0.0001), rel=1e-3)
    with pytest.raises(ValueError):
        mde_for(0, 200, 0.001, 0.4)


def test_mde_paired_matches_the_true_standard_error_of_crossed_data():
    # d[s, i] = 0.1 + seed + item + noise with items shared by the seeds: the grand mean's variance is
    # between / S + item / I + within / (S * I); the estimate matches it on average, while the nested form
    # var(seed means) / S + within-seed item variance / (S * I) is less than half of it here.
    sd_seed, sd_item, sd_noise, n_seeds, n_items = 0.03, 0.3, 0.2, 5, 100
    true_var = sd_seed**2 / n_seeds + sd_item**2 / n_items + sd_noise**2 / (n_seeds * n_items)
    rng = np.random.default_rng(0)
    means, se2, nested = [], [], []
    for _ in range(400):
        d = (
            0.1
            + rng.normal(0, sd_seed, (n_seeds, 1))
            + rng.normal(0, sd_item, (1, n_items))
            + rng.normal(0, sd_noise, (n_seeds, n_items))
        )
        means.append(d.mean())
        se2.append((mde_paired(_rows(d)) / Z) ** 2)
        nested.append(np.var(d.mean(axis=1), ddof=1) / n_seeds + np.var(d, axis=1, ddof=1).mean() / d.size)
    assert np.var(means, ddof=1) == pytest.approx(true_var, rel=0.2)
    assert np.mean(se2) == pytest.approx(true_var, rel=0.1)
    assert np.mean(nested) < 0.5 * true_var


def test_over_seeds_clips_a_shares_t_interval_to_0_1_but_not_other_measures():
    # the preset's DPO seeds on the reading test split: a t-interval over 3 spread seeds reaches past 1
    spread = [{"value": v, "n": 64} for v in (0.891, 0.516, 0.641)]
    share = over_seeds(spread, "ab_accuracy_debiased")
    raw = stats.t.interval(
        0.95, 2, loc=np.mean([0.891, 0.516, 0.641]), scale=stats.sem([0.891, 0.516, 0.641])
    )
    assert raw[1] > 1 and (share.low, share.high) == (pytest.approx(raw[0]), 1.0)
    margin = over_seeds(spread, "reward_margin")  # not a share: as computed
    assert margin.high == pytest.approx(raw[1])
