"""Partition scores against scikit-learn on random and degenerate labelings, plus hand-worked values."""

import math

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from clusterloss.contingency import emi_table
from clusterloss.metrics.partition_scores import (
    adjusted_mutual_info,
    adjusted_rand_index,
    contingency_statistics,
    normalized_mutual_info,
    partition_score,
    partitions_equal,
    scores_from_statistics,
    v_measure,
)

SKLEARN = {
    "nmi": skm.normalized_mutual_info_score,
    "ami": skm.adjusted_mutual_info_score,
    "ari": skm.adjusted_rand_score,
    "vmeasure": skm.v_measure_score,
}


def _random_pairs(seed: int, count: int):
    rng = np.random.default_rng(seed)
    for trial in range(count):
        n = int(rng.integers(1, 50))
        t = rng.integers(0, int(rng.integers(1, n + 1)), n) * 7 - 3  # negative, non-contiguous ids
        p = rng.integers(0, int(rng.integers(1, n + 1)), n) * 5 + 11
        mode = trial % 7
        if mode == 1:
            p = t.copy()
        elif mode == 2:
            t = np.arange(n)
        elif mode == 3:
            p = np.zeros(n, dtype=np.int64)
        elif mode == 4:
            t, p = np.arange(n), np.arange(n)[::-1].copy()
        elif mode == 5:
            p = np.where(rng.random(n) < 0.2, rng.integers(0, 3, n), t)  # near-identical
        yield t, p


@pytest.mark.parametrize("kind", sorted(SKLEARN))
def test_matches_sklearn_on_random_and_degenerate_labelings(kind):
    for t, p in _random_pairs(seed=hash(kind) % 1000, count=400):
        ours = partition_score(t, p, kind)
        assert ours == pytest.approx(SKLEARN[kind](t, p), abs=1e-6), (kind, t, p)


def test_degenerate_cases_match_sklearn():
    cases = [
        ([0], [0]),
        ([5, 5, 5], [1, 1, 1]),
        ([0, 1, 2, 3], [0, 1, 2, 3]),
        ([0, 1, 2, 3], [9, 9, 9, 9]),
        ([9, 9, 9, 9], [0, 1, 2, 3]),
        ([0, 0, 1, 1], [0, 1, 2, 3]),
        (list(range(100)), list(range(100))[::-1]),
    ]
    for t, p in cases:
        for kind, fn in SKLEARN.items():
            assert partition_score(t, p, kind) == pytest.approx(fn(t, p), abs=1e-6), (kind, t, p)


def test_hand_worked_values():
    # true {0,1},{2,3}; predicted {0},{1,2,3}: cells 1,1,2 -> MI = (2 log 2 - 4 log 2 - 3 log 3)/4 + log 4.
    t, p = [0, 0, 1, 1], [0, 1, 1, 1]
    mi = (2 * math.log(2) - 4 * math.log(2) - 3 * math.log(3)) / 4 + math.log(4)
    h_true = math.log(2)
    h_pred = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    assert normalized_mutual_info(t, p) == pytest.approx(2 * mi / (h_true + h_pred), abs=1e-12)
    # pairs: tp = 1 ({2,3}), fp = 2 ({1,2},{1,3}), fn = 1 ({0,1}), tn = 2 -> ARI = 2(2-2)/(...) = 0.
    assert adjusted_rand_index(t, p) == pytest.approx(0.0, abs=1e-12)
    assert partitions_equal([3, 3, -1], [0, 0, 7]) and not partitions_equal([3, 3, -1], [0, 1, 1])


def test_accepts_tensors_column_labels_numpy_and_lists():
    t = torch.tensor([[4], [4], [-2], [8]])
    p = np.array([1, 1, 0, 0])
    want = skm.v_measure_score([4, 4, -2, 8], p)
    assert v_measure(t, p) == pytest.approx(want, abs=1e-9)
    assert v_measure([4, 4, -2, 8], p.tolist()) == v_measure(t, torch.from_numpy(p).int())
    assert normalized_mutual_info([], []) == 1.0  # scikit-learn: empty labelings agree


def test_emi_table_sums_to_sklearn_emi():
    from sklearn.metrics.cluster._expected_mutual_info_fast import expected_mutual_information

    rng = np.random.default_rng(3)
    for _ in range(20):
        n = int(rng.integers(2, 80))
        t, p = rng.integers(0, 5, n), rng.integers(0, 7, n)
        cont = skm.cluster.contingency_matrix(t, p)
        rows, cols = cont.sum(1).astype(np.int64), cont.sum(0).astype(np.int64)
        ours = emi_table(rows, n, cols).sum()
        assert ours == pytest.approx(expected_mutual_information(cont, n), abs=1e-10)
    assert emi_table(np.array([2, 2]), 4, np.array([0]))[0] == 0.0


def test_statistics_without_emi_score_everything_but_ami():
    t, p = torch.tensor([0, 0, 1, 1, 2, 2]), torch.tensor([0, 1, 1, 1, 2, 0])
    full = contingency_statistics(t, p)
    lean = contingency_statistics(t, p, with_emi=False)
    assert lean["emi"] is None and float(full["emi"]) > 0
    assert {k: v for k, v in lean.items() if k != "emi"} == {k: v for k, v in full.items() if k != "emi"}
    for kind in ("nmi", "ari", "vmeasure", "const"):
        assert float(scores_from_statistics(kind, **lean)) == float(scores_from_statistics(kind, **full))
    with pytest.raises(ValueError, match="emi"):
        scores_from_statistics("ami", **lean)


@pytest.mark.slow
def test_large_scale_stays_cheap_and_exact():
    rng = np.random.default_rng(0)
    t = np.repeat(np.arange(1000), 100)
    p = rng.integers(0, 1000, t.size)
    assert adjusted_mutual_info(t, p) == pytest.approx(skm.adjusted_mutual_info_score(t, p), abs=1e-6)
    assert normalized_mutual_info(t, p) == pytest.approx(skm.normalized_mutual_info_score(t, p), abs=1e-9)
    singletons = np.arange(100_000)
    assert normalized_mutual_info(singletons, singletons) == pytest.approx(1.0)


def test_errors():
    with pytest.raises(ValueError, match="integer"):
        normalized_mutual_info(np.array([0.5, 1.0]), np.array([0, 1]))
    with pytest.raises(ValueError, match="length"):
        adjusted_mutual_info([0, 1], [0, 1, 2])
    with pytest.raises(ValueError, match="kind"):
        partition_score([0], [0], "f1")
    with pytest.raises(ValueError, match="integer"):
        v_measure(torch.tensor([0.0, 0.5]), [0, 1])  # integral floats are accepted with a warning
    with pytest.raises(ValueError, match="1-D"):
        v_measure(np.zeros((2, 2), dtype=int), [0, 1])
