"""Intervals of the report: t-intervals over seeds and paired differences equal scipy.stats, pairing is by
seed / by item (never by position), and a broken pairing does not go unnoticed."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from scipy import stats

from decpo.reports.items import ITEM_SCORES, item_values
from decpo.reports.stats import paired_bootstrap, paired_seed_difference, t_interval
from decpo.reports.tables import HEADLINE, over_seeds, paired_difference


def test_t_interval_equals_scipy_and_a_hand_computed_example():
    # hand-checked: values 1, 2, 3 -> mean 2, sd 1, sem 1/sqrt(3); t(0.975, df=2) = 4.302653
    est = t_interval([1.0, 2.0, 3.0])
    half = 4.302653 / math.sqrt(3)
    assert est.mean == 2.0 and est.how == "seeds" and est.n_seeds == 3
    assert est.low == pytest.approx(2 - half, abs=1e-6) and est.high == pytest.approx(2 + half, abs=1e-6)
    # and directly against scipy on a less round example
    x = [0.61, 0.55, 0.72, 0.58]
    low, high = stats.t.interval(0.95, len(x) - 1, loc=np.mean(x), scale=stats.sem(x))
    est = t_interval(x)
    assert (est.low, est.high) == pytest.approx((low, high), rel=1e-12)
    # over_seeds: several seeds -> the t-interval; one seed keeps the evaluation's item CI
    assert over_seeds([{"value": v} for v in x]) == est
    one = over_seeds([{"value": 0.5, "ci": [0.4, 0.6]}])
    assert (one.mean, one.low, one.high, one.how) == (0.5, 0.4, 0.6, "items")
    assert not t_interval([0.3]).has_interval


def test_paired_seed_difference_equals_scipy_and_is_paired_by_seed():
    decpo = {0: 0.70, 1: 0.64, 2: 0.81}
    dpo = {0: 0.60, 1: 0.59, 2: 0.70}
    d = [decpo[s] - dpo[s] for s in (0, 1, 2)]  # 0.10, 0.05, 0.11
    low, high = stats.t.interval(0.95, 2, loc=np.mean(d), scale=stats.sem(d))
    est = paired_seed_difference(decpo, dpo)
    assert est.mean == pytest.approx(np.mean(d)) and (est.low, est.high) == pytest.approx((low, high))
    # hand-checked: differences 0.10, 0.05, 0.11: mean 0.08667, sd 0.03215, sem 0.01856, half 0.07986
    assert est.mean == pytest.approx(0.086667, abs=1e-5) and est.high - est.mean == pytest.approx(
        0.07986, abs=1e-4
    )
    # the seeds in another order: the same pairs, the same interval (pairing by seed, not by position)
    shuffled = {2: 0.70, 0: 0.60, 1: 0.59}
    assert paired_seed_difference(decpo, shuffled) == est
    # a broken pairing (seed 0 of DPO against seed 1 of DecPO) is not the paired difference
    broken = {0: 0.59, 1: 0.60, 2: 0.70}
    assert paired_seed_difference(decpo, broken) != est
    # paired is tighter than treating the two sides as unrelated: seed-level noise cancels
    unpaired_half = stats.t.ppf(0.975, 4) * math.sqrt(
        np.var(list(decpo.values()), ddof=1) / 3 + np.var(list(dpo.values()), ddof=1) / 3
    )
    assert est.high - est.mean < unpaired_half
    with pytest.raises(ValueError):
        paired_seed_difference(decpo, {0: 0.6, 1: 0.5})


def _correlated_items(n=60, seed=0):
    rng = np.random.default_rng(seed)
    difficulty = rng.normal(0, 1, n)
    a = difficulty + 0.3 + rng.normal(0, 0.2, n)
    b = difficulty + rng.normal(0, 0.2, n)
    return a, b


def test_paired_bootstrap_equals_scipy_and_breaks_when_shuffled():
    a, b = _correlated_items()
    est = paired_bootstrap(a, b, n_resamples=2000, seed=3)
    ref = stats.bootstrap(
        (a, b),
        lambda x, y, axis=-1: np.mean(x, axis=axis) - np.mean(y, axis=axis),
        paired=True,
        vectorized=True,
        n_resamples=2000,
        method="percentile",
        rng=np.random.default_rng(3),
    ).confidence_interval
    assert est.mean == pytest.approx(np.mean(a - b))
    assert (est.low, est.high) == pytest.approx((ref.low, ref.high), rel=1e-12)
    assert est.how == "paired items" and est.n_items == 60
    # item difficulty cancels: much tighter than the unpaired bootstrap, and it excludes 0
    unpaired = stats.bootstrap(
        (a, b),
        lambda x, y, axis=-1: np.mean(x, axis=axis) - np.mean(y, axis=axis),
        n_resamples=2000,
        method="percentile",
        rng=np.random.default_rng(3),
    ).confidence_interval
    assert est.high - est.low < 0.5 * (unpaired.high - unpaired.low) and est.low > 0
    # shuffling one side breaks the pairing: the interval widens and includes 0 here
    shuffled = paired_bootstrap(a, np.random.default_rng(1).permutation(b), n_resamples=2000, seed=3)
    assert shuffled.high - shuffled.low > 2 * (est.high - est.low)
    # hand-checked: the same difference on every item -> exactly that difference, zero width
    same = paired_bootstrap([1.0, 0.0, 1.0], [0.0, -1.0, 0.0])
    assert (same.mean, same.low, same.high) == (1.0, 1.0, 1.0)


def _samples(correct, split="eval"):
    return [
        {
            "kind": "ab",
            "split": split,
            "prompt": f"question {i}",
            "chosen_letter": "A",
            "user_correct": i % 2 == 0,
            "scores": {
                "correct": c,
                "correct_swapped": 1.0 - c if i % 3 == 0 else c,
                "correct_both": c if i % 3 else 0.0,
                "logp_a": -1.5 if i == 4 else -1.0 if i % 2 else -2.0,  # item 4: a tie, answered "A"
                "logp_b": -1.5,
                "preference_correct": c,
                "reward_margin": 0.1 * c - 0.02 * i,
            },
        }
        for i, c in enumerate(correct)
    ]


def _results(samples):
    out = {}
    for metric in (
        "ab_accuracy_debiased",
        "ab_accuracy_mean_orders",
        "a_rate",
        "reward_margin",
        "ab_accuracy_user_wrong",
    ):
        _, values = item_values("synthetic", metric, samples)
        out[metric] = {"value": float(np.mean(values)), "n": len(values), "direction": "higher", "ci": [0, 1]}
    return {"metrics": out}


def test_paired_difference_one_seed_is_an_item_bootstrap_matched_by_item():
    rng = random.Random(0)
    base = [float(rng.random() < 0.5) for _ in range(40)]
    better = [1.0 if (c == 1.0 or rng.random() < 0.4) else 0.0 for c in base]
    sa, sb = _samples(better), _samples(base)
    ra, rb = {0: _results(sa)}, {0: _results(sb)}
    samples = {"a": sa, "b": sb}
    est, how = paired_difference("synthetic", "reward_margin", ra, rb, lambda side, seed: samples[side])
    va = [s["scores"]["reward_margin"] for s in sa]
    vb = [s["scores"]["reward_margin"] for s in sb]
    assert how == "paired bootstrap over 40 items"
    assert est == paired_bootstrap(va, vb)
    # the other side's samples in another order: matched by item, the same estimate
    shuffled = list(sb)
    random.Random(1).shuffle(shuffled)
    samples_shuffled = {"a": sa, "b": shuffled}
    est2, _ = paired_difference(
        "synthetic", "reward_margin", ra, rb, lambda side, seed: samples_shuffled[side]
    )
    assert est2 == est
    # different items on the two sides: refused, not computed unpaired
    other = [{**s, "prompt": s["prompt"] + "?"} for s in sb]
    est3, how3 = paired_difference(
        "synthetic", "reward_margin", ra, rb, lambda side, seed: {"a": sa, "b": other}[side]
    )
    assert est3 is None and how3.startswith("n/a (unpaired")
    # a measure without a per-item score says so
    ra[0]["metrics"]["mystery"] = rb[0]["metrics"]["mystery"] = {"value": 0.5, "n": 40}
    est4, how4 = paired_difference("synthetic", "mystery", ra, rb, lambda side, seed: samples[side])
    assert est4 is None and how4 == "n/a (unpaired: no per-item score)"
    # several seeds: per-seed differences, whatever the samples say
    ra2 = {0: {"metrics": {"m": {"value": 0.7}}}, 1: {"metrics": {"m": {"value": 0.6}}}}
    rb2 = {1: {"metrics": {"m": {"value": 0.5}}}, 0: {"metrics": {"m": {"value": 0.65}}}}
    est5, how5 = paired_difference("synthetic", "m", ra2, rb2)
    assert how5 == "paired over 2 seeds (t)" and est5 == paired_seed_difference(
        {0: 0.7, 1: 0.6}, {0: 0.65, 1: 0.5}
    )


def test_item_scores_reproduce_the_measure_or_are_refused():
    samples = _samples([1.0, 0.0, 1.0, 1.0, 0.0, 1.0])
    keys, values = item_values("synthetic", "ab_accuracy_user_wrong", samples)
    assert values == [0.0, 1.0, 1.0]  # items 1, 3, 5: user wrong
    _, a_rate = item_values("synthetic", "a_rate", samples)
    assert a_rate == [0.0, 1.0, 0.0, 1.0, 1.0, 1.0]  # logp_a >= logp_b (a tie counts as "A")
    # the per-item mean must reproduce results.json: a wrong value is refused
    wrong = {"value": 0.9, "n": 3}
    assert item_values("synthetic", "ab_accuracy_user_wrong", samples, wrong) == (
        None,
        "per-item scores do not reproduce the measure",
    )
    # the transfer split is not the eval split
    assert item_values("synthetic", "transfer/ab_accuracy_mean_orders", samples)[0] is None
    # every headline measure of the A/B tasks has an explicit per-item score
    for task, metric, _ in HEADLINE:
        if task in ("synthetic", "sycophancy"):
            assert (task, metric) in ITEM_SCORES, metric
