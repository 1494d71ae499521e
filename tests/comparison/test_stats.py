"""Comparison statistics against hand-worked values and independent scipy routines."""

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from clusterloss.comparison.stats import describe, paired, t_interval


def test_describe_hand_worked():
    s = describe([1.0, 2.0, 3.0])
    assert s["n"] == 3 and s["mean"] == 2.0 and s["std"] == pytest.approx(1.0)
    half = 4.302652729911275 / math.sqrt(3)  # t(0.975, df=2) from a table
    assert s["ci95"] == pytest.approx([2.0 - half, 2.0 + half])


def test_describe_matches_numpy_and_scipy_interval():
    rng = np.random.default_rng(0)
    x = rng.normal(size=7)
    s = describe(x)
    assert s["std"] == pytest.approx(np.std(x, ddof=1))
    low, high = scipy_stats.t.interval(0.95, 6, loc=np.mean(x), scale=scipy_stats.sem(x))
    assert s["ci95"] == pytest.approx([low, high])


def test_one_value_has_no_interval_and_bad_input_is_refused():
    assert describe([0.5]) == {"n": 1, "mean": 0.5, "std": 0.0, "ci95": None}
    assert t_interval(0.5, 0.0, 1) is None
    with pytest.raises(ValueError, match="empty"):
        describe([])
    with pytest.raises(ValueError, match="non-finite"):
        describe([1.0, float("nan")])


def test_paired_matches_one_sample_test_of_differences():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=6), rng.normal(size=6)
    p = paired(a, b)
    d = a - b
    assert p["mean_diff"] == pytest.approx(d.mean())
    assert p["t_p"] == pytest.approx(scipy_stats.ttest_1samp(d, 0.0).pvalue)
    low, high = scipy_stats.t.interval(0.95, 5, loc=d.mean(), scale=scipy_stats.sem(d))
    assert p["ci95"] == pytest.approx([low, high])


def test_sign_test_hand_worked():
    # 5 wins of 5: p = 2 * (1/2)^5 = 0.0625; 4 wins 1 loss: p = 2 * (1 + 5) / 32 = 0.375
    assert paired([1, 2, 3, 4, 5], [0, 0, 0, 0, 0])["sign_p"] == pytest.approx(0.0625)
    p = paired([1, 2, 3, 4, -5], [0, 0, 0, 0, 0])
    assert p["sign_p"] == pytest.approx(0.375) and (p["wins"], p["losses"], p["ties"]) == (4, 1, 0)
    tied = paired([1, 2, 3], [1, 2, 3])  # all ties: nothing to test
    assert tied["sign_p"] == 1.0 and tied["t_p"] == 1.0 and tied["ties"] == 3


def test_constant_nonzero_difference_and_mismatched_seeds():
    assert paired([2.0, 3.0, 4.0], [1.0, 2.0, 3.0])["t_p"] == 0.0
    assert paired([1.0], [0.0])["t_p"] is None
    with pytest.raises(ValueError, match="same seeds"):
        paired([1.0, 2.0], [1.0])


def test_margin_share_hand_worked():
    from torch import nn

    from clusterloss.train import loss_margin_stats

    class WithStats(nn.Module):  # what the facility-location loss module exposes after a forward
        last_stats = {"margin": 0.5, "energy_gap": -1.5}

    assert loss_margin_stats(WithStats()) == {"margin": 0.5, "margin_share": 0.25}  # 0.5 / (0.5 + 1.5)
    wrapper = nn.Module()
    wrapper.loss = WithStats()  # the DDP wrapper holds the loss as .loss
    assert loss_margin_stats(wrapper)["margin_share"] == 0.25
    assert loss_margin_stats(nn.Linear(1, 1)) is None
    zero = WithStats()
    zero.last_stats = {"margin": 0.0, "energy_gap": 0.0}
    assert loss_margin_stats(zero)["margin_share"] == 0.0


def test_verdict_wording_follows_the_paired_t_test():
    from clusterloss.comparison.report import verdict

    worse = paired([0.50, 0.52, 0.49, 0.51, 0.50], [0.40, 0.41, 0.40, 0.42, 0.41])  # other - reference > 0
    assert verdict("fl", "nmi", worse).startswith("fl loses on NMI by 9.60 ±")
    better = paired([0.40, 0.41, 0.40, 0.42, 0.41], [0.50, 0.52, 0.49, 0.51, 0.50])
    assert verdict("fl", "recall@1", better).startswith("fl wins on R@1 by 9.60 ±")
    noisy = paired([0.5, 0.4, 0.6], [0.45, 0.5, 0.55])
    assert verdict("fl", "map@r", noisy).startswith("no significant difference on MAP@R")
    assert "no test" in verdict("fl", "nmi", paired([0.5], [0.4]))
