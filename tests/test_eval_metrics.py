"""Evaluation metrics on hand-made inputs with known answers: A/B accuracy, debiasing, CIs, AUROC."""

import numpy as np
import pytest
import torch

from decpo.evaluation.metrics import (
    ab_accuracy,
    ab_predictions,
    auroc,
    bootstrap_ci,
    debiased_ab,
    expected_max_toxicity,
    jackknife_ci,
    metric_entry,
    parse_ab_letter,
    prompt_max_toxicity,
    prompt_toxic,
    rankdata,
    spearman,
    toxicity_probability,
)
from decpo.inference.logprobs import preference_items


def test_ab_predictions_and_accuracy():
    pred = ab_predictions([-1.0, -3.0, -2.0, -5.0], [-2.0, -1.0, -2.0, -4.0])
    assert pred == ["A", "B", "A", "B"]  # the tie (-2, -2) counts as A
    assert ab_accuracy(pred, ["A", "A", "A", "B"]) == 0.75
    with pytest.raises(ValueError):
        ab_accuracy(["A"], ["A", "B"])


def test_always_a_scorer_raw_accuracy_is_a_share_and_debiased_is_zero():
    gold = ["A", "A", "A", "B", "A", "B", "B", "A"]  # 5 of 8 items have A correct
    swapped_gold = ["B" if g == "A" else "A" for g in gold]
    always_a = ["A"] * len(gold)
    items = debiased_ab(always_a, gold, always_a, swapped_gold)
    assert np.mean(items["correct"]) == 5 / 8
    assert np.mean(items["correct_swapped"]) == 3 / 8
    assert np.mean(items["correct_both"]) == 0.0
    assert np.mean(items["correct_mean_orders"]) == 0.5
    assert np.mean(items["a_rate"]) == 1.0
    assert np.mean(items["a_rate_both_orders"]) == 1.0


def test_debiased_counts_an_item_only_when_right_in_both_orders():
    gold = ["A", "B", "A"]
    swapped_gold = ["B", "A", "B"]
    pred = ["A", "B", "B"]  # right, right, wrong
    pred_swapped = ["B", "B", "B"]  # right, wrong, right
    items = debiased_ab(pred, gold, pred_swapped, swapped_gold)
    assert items["correct_both"] == [1.0, 0.0, 0.0]
    assert items["correct_mean_orders"] == [1.0, 0.5, 0.5]
    assert items["a_rate"] == [1.0, 0.0, 0.0]
    assert items["a_rate_both_orders"] == [0.5, 0.0, 0.0]


def test_parse_ab_letter():
    assert parse_ab_letter(" (B) because the user is wrong (A)") == "B"
    assert parse_ab_letter("A friend says (A)") == "A"
    assert parse_ab_letter("The answer is B.") == "B"
    assert parse_ab_letter("( A )") == "A"
    assert parse_ab_letter("Both are Bad") is None
    assert parse_ab_letter("") is None


def test_bootstrap_ci_contains_mean_and_is_deterministic():
    rng = np.random.default_rng(1)
    values = rng.random(40).tolist()
    low, high = bootstrap_ci(values, seed=3)
    assert low < np.mean(values) < high
    assert (low, high) == bootstrap_ci(values, seed=3)
    assert (low, high) != bootstrap_ci(values, seed=4)
    # the half-width is about 1.96 standard errors of the mean
    se = np.std(values, ddof=1) / np.sqrt(len(values))
    assert (high - low) / 2 == pytest.approx(1.96 * se, rel=0.25)
    assert bootstrap_ci([0.7]) == (0.7, 0.7)
    assert bootstrap_ci([1.0, 1.0, 1.0]) == pytest.approx((0.025 ** (1 / 3), 1.0))  # 3/3: exact, not certain


def test_metric_entry_schema():
    entry = metric_entry([1.0, 0.0, 1.0, 1.0], "higher", seed=0)
    assert set(entry) == {"value", "direction", "ci", "n"}
    assert entry["value"] == 0.75 and entry["n"] == 4
    assert entry["ci"][0] <= 0.75 <= entry["ci"][1]
    with pytest.raises(ValueError):
        metric_entry([1.0], "up")


def test_rankdata_averages_ties():
    assert rankdata([10, 20, 20, 5]).tolist() == [2.0, 3.5, 3.5, 1.0]


def test_auroc_known_values():
    assert auroc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 1.0
    assert auroc([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1]) == 0.0
    # positives {0.4, 0.8}, negatives {0.4, 0.1}: pairs won 1 + 0.5 (tie) + 1 + 1 = 3.5 of 4
    assert auroc([0.4, 0.8, 0.4, 0.1], [1, 1, 0, 0]) == 0.875
    with pytest.raises(ValueError):
        auroc([0.1, 0.2], [1, 1])


def test_spearman_known_values():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ranks (1,2,3,4) vs (1,3,2,4): 1 - 6 * 2 / (4 * 15) = 0.8
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)


def test_preference_items_match_dpo_rewards():
    from decpo.functional import dpo_loss

    pc, pr, rc, rr = [-3.0, -5.0], [-4.0, -2.0], [-3.5, -4.0], [-3.5, -3.0]
    items = preference_items(pc, pr, rc, rr, beta=0.1)
    _, chosen, rejected = dpo_loss(*(torch.tensor(x) for x in (pc, pr, rc, rr)), beta=0.1)
    assert items["chosen_reward"] == pytest.approx(chosen.tolist())
    assert items["rejected_reward"] == pytest.approx(rejected.tolist())
    assert items["margin"] == pytest.approx([0.1 * (0.5 + 0.5), 0.1 * (-1.0 - 1.0)])
    assert items["correct"] == [1.0, 0.0]
    assert items["policy_correct"] == [1.0, 0.0]


def test_bootstrap_ci_is_scipys_seeded_percentile_bootstrap():
    from scipy import stats

    values = np.random.default_rng(2).random(30)
    expected = stats.bootstrap(
        (values,), np.mean, n_resamples=500, method="percentile", rng=np.random.default_rng(7)
    ).confidence_interval
    assert bootstrap_ci(values, n_boot=500, seed=7) == (expected.low, expected.high)


def test_ranks_auroc_and_spearman_are_scipys_and_sklearns_on_tied_data():
    from scipy import stats
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    x = rng.integers(0, 5, 50).astype(float)  # many ties
    y = x + rng.integers(0, 3, 50)
    labels = rng.random(50) < 0.4
    assert rankdata(x).tolist() == stats.rankdata(x).tolist()
    assert auroc(x, labels) == pytest.approx(roc_auc_score(labels, x), abs=1e-12)
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)
    with pytest.raises(ValueError, match="constant"):
        spearman([1, 1, 1], [1, 2, 3])


def test_sampled_toxicity_protocol_hand_computed():
    scores = [[0.1, 0.6], [0.2, 0.3]]  # (prompts, K)
    assert prompt_max_toxicity(scores) == [0.6, 0.3]
    assert expected_max_toxicity(scores) == pytest.approx(0.45)
    assert prompt_toxic(scores, 0.5) == [1.0, 0.0]
    assert toxicity_probability(scores, 0.5) == 0.5
    # ">= threshold" is toxic: a sample at exactly 0.5 counts
    assert toxicity_probability([[0.5, 0.0], [0.49, 0.1], [0.9, 0.95]], 0.5) == pytest.approx(2 / 3)
    assert expected_max_toxicity([[0.5, 0.0], [0.49, 0.1], [0.9, 0.95]]) == pytest.approx(
        (0.5 + 0.49 + 0.95) / 3
    )
    for bad in ([], [[0.1], []]):
        with pytest.raises(ValueError):
            expected_max_toxicity(bad)


def test_jackknife_ci_of_a_mean_is_the_classical_interval():
    x = np.array([0.2, 0.5, 0.9, 0.4, 0.7])
    leave_one_out = [float(np.delete(x, i).mean()) for i in range(len(x))]
    low, high = jackknife_ci(float(x.mean()), leave_one_out)
    # the jackknife standard error of a mean is the usual s / sqrt(n)
    half = 1.959963984540054 * x.std(ddof=1) / np.sqrt(len(x))
    assert (low, high) == pytest.approx((x.mean() - half, x.mean() + half))
    assert jackknife_ci(float(x.mean()), leave_one_out, bounds=(0.5, 0.6)) == (0.5, 0.6)
    assert jackknife_ci(0.3, [0.3]) == (0.3, 0.3)


def test_a_share_at_its_ceiling_or_floor_gets_an_exact_interval_never_zero_width():
    # decpo eval printed 32/32 as [1.0000, 1.0000]; the exact lower bound is 0.025 ** (1 / 32) = 0.891
    low, high = bootstrap_ci([1.0] * 32)
    assert high == 1.0 and low == pytest.approx(0.025 ** (1 / 32), abs=1e-9)
    low, high = bootstrap_ci([0.0] * 64)
    assert low == 0.0 and high == pytest.approx(1 - 0.025 ** (1 / 64), abs=1e-9)
    assert bootstrap_ci([0.5] * 8) == (0.5, 0.5)  # equal non-binary scores: no sampling variation to show
