"""The search's building blocks: distances, the ground-truth score, assignment ties, the margin score, and the
search's own contract (determinism, inputs untouched, result types). The search's choices themselves are
held to the brute-force oracle in test_facility_location_oracle.py."""

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from clusterloss.contingency import KIND_CODES, SCORE_KINDS
from clusterloss.losses import facility_search
from clusterloss.losses.facility_location import ground_truth_facility_score, pairwise_distances
from clusterloss.metrics.partition_scores import contingency_statistics, partition_score


def test_pairwise_distances_expanded_form_clamped_with_zero_gradient():
    x = torch.tensor([[1.0, 2.0], [1.0, 2.0], [4.0, 6.0]], dtype=torch.float64, requires_grad=True)
    d = pairwise_distances(x)
    assert torch.allclose(d, torch.cdist(x, x), atol=1e-12)
    assert d[0, 1].item() == 0.0 and torch.all(d.diagonal() == 0)
    d[0, 1].backward()  # a clamped (duplicate) entry: exactly zero gradient
    assert torch.all(x.grad == 0)


def test_assignment_prefers_first_nearest_and_forces_medoids():
    # points 0 and 1 coincide; medoids [2, 1, 0]: point 0 is forced to slot 2 although slot 1 ties at 0.
    d = pairwise_distances(torch.tensor([[0.0], [0.0], [2.0], [1.0]], dtype=torch.float64)).numpy()
    pred = facility_search._assign(d, np.array([2, 1, 0]))
    assert pred.tolist() == [2, 1, 0, 0]  # point 3 is at distance 1 from slots 0, 1, 2: first wins


def test_ground_truth_score_by_hand():
    d = pairwise_distances(torch.tensor([[0.0], [1.0], [3.0], [7.0]], dtype=torch.float64))
    # class {0, 1, 3}: column sums 8, 7, 10 -> -7; class {3}: 0.
    assert ground_truth_facility_score(d, torch.tensor([0, 0, 1, 0]), 2).item() == pytest.approx(-7.0)


def _margin_score(stats, kind, round32=False):
    names = ("sum_f_cells", "sum_f_rows", "sum_f_cols", "sum_sq_cells", "sum_sq_rows", "sum_sq_cols")
    return facility_search._margin_score(
        KIND_CODES[kind],
        stats["n"],
        stats["n_rows"],
        stats["n_cols"],
        *(stats[k] for k in names),
        stats["emi"],
        round32,
    )


def test_margin_score_is_the_clamped_partition_score_and_scikit_learns():
    rng = np.random.default_rng(3)
    for trial in range(300):
        n = int(rng.integers(1, 30))
        true = rng.integers(0, int(rng.integers(1, n + 1)), n)
        pred = rng.integers(0, int(rng.integers(1, n + 1)), n) if trial % 4 else true.copy()
        stats = contingency_statistics(true, pred)
        for kind in SCORE_KINDS:
            assert _margin_score(stats, kind) == max(0.0, partition_score(true, pred, kind)), (kind, trial)
        assert _margin_score(stats, "nmi") == pytest.approx(
            skm.normalized_mutual_info_score(true, pred), abs=1e-9
        )


def test_round32_rounds_the_score_to_float32():
    stats = contingency_statistics([0, 0, 1, 1, 2], [0, 1, 1, 1, 2])
    exact = _margin_score(stats, "nmi")
    rounded = _margin_score(stats, "nmi", round32=True)
    assert rounded == float(np.float32(exact)) and rounded != exact


def test_search_is_deterministic_leaves_its_inputs_alone_and_returns_fresh_arrays():
    torch.manual_seed(4)
    dist = pairwise_distances(torch.randn(40, 5, dtype=torch.float64)).numpy()
    y = np.arange(40) % 7
    before = dist.copy()
    runs = [facility_search.facility_location_search(dist, y, 7, "ami", 1.0, 5, False) for _ in range(3)]
    assert np.array_equal(dist, before)
    first = runs[0]
    assert all(np.array_equal(r.medoids, first.medoids) and r.score == first.score for r in runs)
    assert first.medoids.dtype == np.int64 and first.greedy_medoids.dtype == np.int64
    assert not np.shares_memory(first.medoids, first.greedy_medoids)
    assert first.assignment.tolist() == facility_search._assign(dist, first.medoids).tolist()
    assert first.score == max(0.0, partition_score(y, first.assignment, "ami"))
    off = facility_search.facility_location_search(dist, y, 7, "ami", 1.0, 0, False)
    assert np.array_equal(off.medoids, off.greedy_medoids) and not np.shares_memory(
        off.medoids, off.greedy_medoids
    )


def test_pam_stops_at_a_fixed_point():
    # A pass that changes nothing is repeated exactly by later passes: 1 and 50 passes give the same medoids
    # whenever the first pass changes nothing, and 50 passes equal 51 in any case.
    rng = np.random.default_rng(9)
    for _ in range(20):
        b = int(rng.integers(4, 30))
        y = np.unique(rng.integers(0, max(1, b // 3), b), return_inverse=True)[1].astype(np.int64)
        dist = pairwise_distances(torch.tensor(rng.normal(size=(b, 3)))).numpy()
        k = int(y.max()) + 1
        runs = {
            p: facility_search.facility_location_search(dist, y, k, "nmi", 1.0, p, False).medoids
            for p in (1, 2, 50, 51)
        }
        assert np.array_equal(runs[50], runs[51])
        if np.array_equal(runs[1], runs[2]):
            assert np.array_equal(runs[1], runs[50])
