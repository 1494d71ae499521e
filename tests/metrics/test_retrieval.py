"""Retrieval metrics against a hand-worked case, a brute-force oracle and pytorch-metric-learning."""

import math

import numpy as np
import pytest
import torch
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
from retrieval_oracle import add_query, empty_sums

from clusterloss.metrics import retrieval
from clusterloss.metrics.retrieval import (
    iter_knn,
    map_at_r,
    nearest_neighbors,
    precision_at_1,
    r_precision,
    recall_at_k,
    retrieval_metrics,
)

BACKENDS = ["torch", "blocked"] + (["faiss"] if retrieval.faiss is not None else [])


def brute_force(x, y, ks, queries=None):
    """Independent oracle: float64 distances, neighbours ordered by (distance, index), per-query loops."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y)
    n = len(x)
    sums = empty_sums(ks)
    scored = 0
    for q in range(n) if queries is None else queries:
        r = int((y == y[q]).sum()) - 1
        if r == 0:
            continue
        scored += 1
        others = np.array([j for j in range(n) if j != q])
        d = ((x[others] - x[q]) ** 2).sum(axis=1)
        order = others[np.lexsort((others, d))]
        rel = [bool(y[j] == y[q]) for j in order]
        add_query(sums, rel, ks, r)
    return {key: value / scored for key, value in sums.items()}, scored


def make_data(n=300, d=8, classes=12, singletons=4, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    y[:singletons] = 1000 + np.arange(singletons)  # labels of their own: no positives
    centers = rng.normal(size=(classes + singletons + 1000, d))
    x = centers[y % len(centers)] * 0.7 + rng.normal(size=(n, d))
    return x.astype(np.float32), y


def test_hand_worked_case_with_a_tie():
    # 1-D points; query 3 (x=11) has neighbours 10 and 12 at equal distance: index 2 (same class) ranks first.
    x = np.array([[0.0], [1.0], [10.0], [11.0], [12.0]], dtype=np.float32)
    y = np.array([0, 0, 1, 1, 0])
    for backend in BACKENDS:
        m = retrieval_metrics(x, y, ks=(1, 2, 4), backend=backend)
        assert m["recall@1"] == pytest.approx(4 / 5)
        assert m["recall@2"] == pytest.approx(4 / 5)
        assert m["recall@4"] == pytest.approx(1.0)
        assert m["precision@1"] == pytest.approx(4 / 5)
        assert m["r_precision"] == pytest.approx(3 / 5)
        assert m["map@r"] == pytest.approx(3 / 5)
        assert (m["queries"], m["excluded_queries"]) == (5, 0)
    # Swapping the labels of the tied neighbours makes the higher-index one the positive: query 3 now misses.
    y2 = np.array([0, 0, 0, 1, 1])
    m = retrieval_metrics(x, y2, ks=(1,), backend="torch")
    oracle, _ = brute_force(x, y2, (1,))
    assert m["recall@1"] == pytest.approx(oracle["recall@1"])


@pytest.mark.parametrize("backend", BACKENDS)
def test_matches_brute_force_with_singletons_and_small_classes(backend):
    x, y = make_data()
    ks = (1, 2, 4, 8, 50, 1000)  # K above every class size and above N - 1
    got = retrieval_metrics(x, y, ks, backend=backend)
    want, scored = brute_force(x, y, ks)
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=1e-12), key
    assert got["queries"] == scored and got["excluded_queries"] == 4
    assert got["recall@1"] == got["precision@1"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_matches_pytorch_metric_learning_accuracy_calculator(backend):
    x, y = make_data(n=400, classes=15, singletons=3, seed=1)
    calc = AccuracyCalculator(include=("precision_at_1", "r_precision", "mean_average_precision_at_r"),
                              k="max_bin_count", device=torch.device("cpu"))
    pml = calc.get_accuracy(x, y)
    got = retrieval_metrics(x, y, (1,), backend=backend)
    assert got["precision@1"] == pytest.approx(pml["precision_at_1"], abs=1e-12)
    assert got["r_precision"] == pytest.approx(pml["r_precision"], abs=1e-12)
    assert got["map@r"] == pytest.approx(pml["mean_average_precision_at_r"], abs=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_exact_ties_are_broken_by_index_and_deterministic(backend):
    # Points on a 3x3 integer grid: hundreds of exact duplicates and equal distances (exact in float32).
    rng = np.random.default_rng(2)
    x = rng.integers(0, 3, size=(150, 2)).astype(np.float32)
    y = rng.integers(0, 5, 150)
    got = retrieval_metrics(x, y, (1, 3, 10), backend=backend)
    want, _ = brute_force(x, y, (1, 3, 10))
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=1e-12), key
    assert retrieval_metrics(x, y, (1, 3, 10), backend=backend) == got
    dist, idx = nearest_neighbors(x, 20, backend=backend)
    for q in (0, 17, 149):
        others = np.array([j for j in range(150) if j != q])
        d = ((x[others] - x[q]) ** 2).sum(axis=1)
        np.testing.assert_array_equal(idx[q].numpy(), others[np.lexsort((others, d))][:20])
        np.testing.assert_allclose(dist[q].numpy(), np.sort(d)[:20])


def test_backends_agree_on_neighbours():
    if "faiss" not in BACKENDS:
        pytest.skip("faiss not installed: only the torch backend exists")
    x, y = make_data(n=500, d=16, seed=3)
    d_t, i_t = nearest_neighbors(x, 30, backend="torch")
    d_f, i_f = nearest_neighbors(x, 30, backend="faiss")
    assert torch.equal(i_t, i_f)
    torch.testing.assert_close(d_t, d_f, rtol=1e-4, atol=1e-4)


def test_all_singletons_give_nan_and_count_every_query_as_excluded():
    x = np.random.default_rng(0).normal(size=(6, 3)).astype(np.float32)
    m = retrieval_metrics(x, np.arange(6))
    assert all(math.isnan(m[k]) for k in ("recall@1", "precision@1", "r_precision", "map@r"))
    assert (m["queries"], m["excluded_queries"]) == (0, 6)


def test_well_separated_classes_score_one():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(5), 10)
    x = (np.eye(8)[y] * 100 + rng.normal(size=(50, 8))).astype(np.float32)
    m = retrieval_metrics(x, y)
    assert all(m[k] == 1.0 for k in ("recall@1", "recall@8", "precision@1", "r_precision", "map@r"))


@pytest.mark.parametrize("backend", BACKENDS)
def test_query_subset_and_chunking(backend):
    x, y = make_data(n=200, seed=4)
    queries = [5, 7, 50, 123, 199, 0]
    got = retrieval_metrics(x, y, (1, 4), query_indices=queries, backend=backend)
    want, _ = brute_force(x, y, (1, 4), queries=queries)
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=1e-12)
    full = torch.cat([c[2] for c in iter_knn(x, 9, backend=backend)])
    chunked = torch.cat([c[2] for c in iter_knn(x, 9, backend=backend, chunk_size=7)])
    assert torch.equal(full, chunked)


def test_input_types_and_label_ids_do_not_matter():
    x, y = make_data(n=120, seed=5)
    base = retrieval_metrics(x, y)
    weird = np.where(y >= 1000, -y, y * 7919 + 3)  # arbitrary, negative and large ids: same partition
    assert retrieval_metrics(torch.from_numpy(x).double(), torch.from_numpy(weird)[:, None]) == base
    half = retrieval_metrics(torch.from_numpy(x).half(), y)
    assert half["recall@1"] == pytest.approx(base["recall@1"], abs=0.05)


def test_permuting_samples_leaves_metrics_unchanged():
    x, y = make_data(n=150, seed=6)
    perm = np.random.default_rng(0).permutation(150)
    a, b = retrieval_metrics(x, y), retrieval_metrics(x[perm], y[perm])
    for key in a:
        assert a[key] == pytest.approx(b[key], abs=1e-12)


def test_single_metric_wrappers_agree_with_the_combined_pass():
    x, y = make_data(n=150, seed=7)
    m = retrieval_metrics(x, y, (1, 2))
    assert recall_at_k(x, y, (1, 2)) == {1: m["recall@1"], 2: m["recall@2"]}
    assert precision_at_1(x, y) == m["precision@1"]
    assert r_precision(x, y) == pytest.approx(m["r_precision"])
    assert map_at_r(x, y) == pytest.approx(m["map@r"])


def test_bad_input_raises_value_error_naming_the_problem():
    x, y = make_data(n=20)
    with pytest.raises(ValueError, match="2-D"):
        retrieval_metrics(x[0], y)
    with pytest.raises(ValueError, match="one entry per embedding"):
        retrieval_metrics(x, y[:-1])
    with pytest.raises(ValueError, match="NaN"):
        retrieval_metrics(np.full((4, 2), np.nan, dtype=np.float32), [0, 0, 1, 1])
    with pytest.raises(ValueError, match="at least 2"):
        retrieval_metrics(x[:1], y[:1])
    with pytest.raises(ValueError, match="backend"):
        retrieval_metrics(x, y, backend="annoy")
    with pytest.raises(ValueError, match="K in ks"):
        retrieval_metrics(x, y, ks=(0,))
    with pytest.raises(ValueError, match="k must be"):
        next(iter_knn(x, 20))
    with pytest.raises(ValueError, match="floating"):
        retrieval_metrics(np.ones((4, 2), dtype=np.int64), [0, 0, 1, 1])


@pytest.mark.parametrize("backend", BACKENDS)
def test_collapsed_embedding_ranks_neighbours_by_index(backend):
    # A diverged model mapping everything to one point: every distance ties, so order = index order.
    x = np.ones((40, 4), dtype=np.float32)
    y = np.arange(40) % 3
    _, idx = nearest_neighbors(x, 5, backend=backend)
    assert idx[0].tolist() == [1, 2, 3, 4, 5] and idx[7].tolist() == [0, 1, 2, 3, 4]
    got = retrieval_metrics(x, y, (1, 2), backend=backend)
    want, _ = brute_force(x, y, (1, 2))
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=1e-12), key


def test_faiss_threads_honours_the_override_and_restores(monkeypatch):
    if retrieval.faiss is None:
        pytest.skip("faiss not installed")
    before = retrieval.faiss.omp_get_max_threads()
    monkeypatch.setenv("CLUSTERLOSS_THREADS", "1")
    with retrieval.faiss_threads():
        assert retrieval.faiss.omp_get_max_threads() == 1
    assert retrieval.faiss.omp_get_max_threads() == before
