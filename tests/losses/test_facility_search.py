"""Building blocks of the search: distances, assignment ties, suffix minima, sparse candidate scoring."""

import numpy as np
import pytest
import torch

from clusterloss.losses.candidate_scoring import CandidateScorer
from clusterloss.losses.facility_search import (
    _suffix_first_min,
    assign_to_medoids,
    ground_truth_facility_score,
    pairwise_distances,
)
from clusterloss.metrics.partition_scores import partition_score


def test_pairwise_distances_expanded_form_clamped_with_zero_gradient():
    x = torch.tensor([[1.0, 2.0], [1.0, 2.0], [4.0, 6.0]], dtype=torch.float64, requires_grad=True)
    d = pairwise_distances(x)
    assert torch.allclose(d, torch.cdist(x, x), atol=1e-12)
    assert d[0, 1].item() == 0.0 and torch.all(d.diagonal() == 0)
    d[0, 1].backward()  # a clamped (duplicate) entry: exactly zero gradient
    assert torch.all(x.grad == 0)


def test_assignment_prefers_first_nearest_and_forces_medoids():
    # points 0 and 1 coincide; medoids [2, 1, 0]: point 0 is forced to slot 2 although slot 1 ties at 0.
    x = torch.tensor([[0.0], [0.0], [2.0], [1.0]], dtype=torch.float64)
    d = pairwise_distances(x)
    pred = assign_to_medoids(d, torch.tensor([2, 1, 0]))
    assert pred.tolist() == [2, 1, 0, 0]  # point 3 is at distance 1 from slots 0, 1, 2: first wins


def test_suffix_first_min_against_brute_force_with_ties():
    rng = np.random.default_rng(0)
    rows = torch.tensor(rng.integers(0, 3, size=(6, 40)), dtype=torch.float64)
    values, first = _suffix_first_min(rows)
    for k in range(7):
        for i in range(40):
            tail = rows[k:, i].tolist()
            if not tail:
                assert values[k, i] == float("inf") and first[k, i] == 6
                continue
            assert values[k, i] == min(tail) and first[k, i] == k + tail.index(min(tail))


def test_ground_truth_score_by_hand():
    x = torch.tensor([[0.0], [1.0], [3.0], [7.0]], dtype=torch.float64)
    d = pairwise_distances(x)
    # class {0, 1, 3}: column sums 8, 7, 10 -> -7; class {3}: 0.
    assert ground_truth_facility_score(d, torch.tensor([0, 0, 1, 0]), 2).item() == pytest.approx(-7.0)


@pytest.mark.parametrize("kind", ["nmi", "ami", "ari", "vmeasure", "const"])
def test_sparse_candidate_scores_equal_direct_scores(kind):
    rng = np.random.default_rng(1)
    for _ in range(30):
        b = int(rng.integers(6, 25))
        r = int(rng.integers(1, b + 1))
        y = torch.tensor(np.sort(rng.integers(0, r, b)))
        y = torch.unique(y, return_inverse=True)[1]
        r = int(y.max()) + 1
        slots = int(rng.integers(1, 5))
        base = torch.tensor(rng.integers(0, slots, b))
        base[:slots] = torch.arange(slots)  # points 0..slots-1 are the (never captured) medoids
        n_cols = int(torch.unique(base).numel()) + 1
        num_cand = int(rng.integers(1, 6))
        captured = torch.tensor(rng.random((num_cand, b)) < 0.4)
        captured[:, :slots] = False
        captured[:, -1] = True  # every candidate takes at least one point
        cand, pt = torch.nonzero(captured, as_tuple=True)
        scorer = CandidateScorer(y, r, kind, gamma=1.0, round32=False)
        fast = scorer.candidates(base, slots, n_cols, cand, pt, num_cand)
        for c in range(num_cand):
            pred = torch.where(captured[c], slots, base)
            expected = max(0.0, partition_score(y, pred, kind))
            assert fast[c].item() == pytest.approx(expected, abs=1e-9)


def test_several_base_clusterings_at_once_equal_one_at_a_time():
    rng = np.random.default_rng(2)
    y = torch.tensor(rng.integers(0, 4, 20))
    y = torch.unique(y, return_inverse=True)[1]
    scorer = CandidateScorer(y, int(y.max()) + 1, "ami", gamma=1.0, round32=False)
    bases = torch.tensor(rng.integers(0, 3, size=(3, 20)))
    bases[:, :3] = torch.arange(3)
    captured = torch.tensor(rng.random((7, 20)) < 0.3)
    captured[:, :3] = False
    captured[:, -1] = True
    cand_base = torch.tensor([0, 0, 1, 2, 2, 2, 1])
    cand, pt = torch.nonzero(captured, as_tuple=True)
    together = scorer.candidates(bases, 3, 4, cand, pt, 7, cand_base=cand_base)
    for c in range(7):
        one_c, one_pt = torch.nonzero(captured[c : c + 1], as_tuple=True)
        alone = scorer.candidates(bases[cand_base[c]], 3, 4, one_c, one_pt, 1)
        assert together[c].item() == pytest.approx(alone.item(), abs=1e-12)


def test_speculative_pam_windows_equal_slot_by_slot_pam():
    from clusterloss.losses.facility_search import greedy_facility_search, pam_refine

    rng = np.random.default_rng(5)
    for trial in range(12):
        b = int(rng.integers(8, 40))
        y = torch.unique(torch.tensor(rng.integers(0, max(2, b // 3), b)), return_inverse=True)[1]
        k = int(y.max()) + 1
        x = torch.tensor(rng.normal(size=(b, 3)))
        d = pairwise_distances(x)
        kind = ("nmi", "ami", "ari")[trial % 3]
        scorer = CandidateScorer(y, k, kind, gamma=float(trial % 4) / 2, round32=False)
        start = greedy_facility_search(d, scorer, k)
        sequential = pam_refine(d, scorer, start, 3, window=1)
        for window in (2, 5, 16):
            assert torch.equal(pam_refine(d, scorer, start, 3, window=window), sequential)


@pytest.mark.parametrize("kind", ["nmi", "ami", "ari", "vmeasure", "const"])
def test_dense_scores_equal_sparse_scores(kind):
    rng = np.random.default_rng(7)
    for _ in range(20):
        b = int(rng.integers(6, 25))
        y = torch.tensor(rng.integers(0, int(rng.integers(1, b + 1)), b))
        y = torch.unique(y, return_inverse=True)[1]
        r = int(y.max()) + 1
        slots = int(rng.integers(1, 5))
        base = torch.tensor(rng.integers(0, slots, b))
        base[:slots] = torch.arange(slots)
        n_cols = int(torch.unique(base).numel()) + 1
        captured = torch.tensor(rng.random((5, b)) < 0.4)
        captured[:, :slots] = False
        captured[:, -1] = True
        cand, pt = torch.nonzero(captured, as_tuple=True)
        scorer = CandidateScorer(y, r, kind, gamma=1.0, round32=False)
        sparse = scorer.candidates(base, slots, n_cols, cand, pt, 5)
        dense = scorer.dense(torch.where(captured, slots, base[None, :]), slots + 1, n_cols)
        assert torch.allclose(dense, sparse, rtol=0, atol=1e-12)


def test_dense_and_sparse_search_paths_choose_the_same_medoids(monkeypatch):
    from clusterloss.losses import candidate_scoring, facility_search

    rng = np.random.default_rng(11)
    for trial in range(15):
        b = int(rng.integers(2, 40))
        y = torch.tensor(rng.integers(0, max(1, b // (1 + trial % 3)), b))
        y = torch.unique(y, return_inverse=True)[1]
        k = int(y.max()) + 1
        # half-integer grids: exact duplicates and distance ties
        x = rng.integers(-3, 4, size=(b, 2)) / 2.0 if trial % 2 else rng.normal(size=(b, 3))
        x = torch.tensor(x)
        d = pairwise_distances(x)
        kind = ("nmi", "ami", "ari", "vmeasure", "const")[trial % 5]
        args = (d, y, k, kind, float(trial % 3), 3, False, "tensor")
        dense = facility_search.facility_location_search(*args)
        monkeypatch.setattr(candidate_scoring, "DENSE_TABLE_LIMIT", 0)
        sparse = facility_search.facility_location_search(*args)
        monkeypatch.undo()
        assert torch.equal(dense.greedy_medoids, sparse.greedy_medoids)
        assert torch.equal(dense.medoids, sparse.medoids)
