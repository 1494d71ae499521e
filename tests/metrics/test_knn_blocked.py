"""The blocked kNN (metrics.knn_blocked) against a brute-force oracle: small tiles so that every path runs
(diagonal and off-diagonal tiles of the symmetric pass, the streamed pass, reservoir compactions), exact
ties and duplicates, self-exclusion by index, query / gallery, k = every other row, singleton classes."""

import threading

import numpy as np
import pytest
import torch
from test_retrieval import brute_force, make_data

from clusterloss.metrics import knn_blocked
from clusterloss.metrics.retrieval import nearest_neighbors, retrieval_metrics


def oracle_knn(x, k, queries=None, gallery=None):
    """float64 distances, neighbours ordered by (distance, index), self excluded by index."""
    x = np.asarray(x, dtype=np.float64)
    g = x if gallery is None else np.asarray(gallery, dtype=np.float64)
    out = []
    for q in range(len(x)) if queries is None else queries:
        cand = np.array([j for j in range(len(g)) if gallery is not None or j != q])
        d = ((g[cand] - x[q]) ** 2).sum(axis=1)
        out.append(cand[np.lexsort((cand, d))][:k])
    return np.array(out)


def blocked(x, k, queries=None, gallery=None, order=None, tile=7):
    x = torch.as_tensor(x)
    q = torch.arange(len(x)) if queries is None else torch.as_tensor(queries)
    g = None if gallery is None else torch.as_tensor(gallery)
    parts = list(knn_blocked.iter_knn_blocked(x, k, q, g, order=order, tile=tile))
    assert torch.equal(torch.cat([p[0] for p in parts]), q)
    return torch.cat([p[1] for p in parts]).numpy(), torch.cat([p[2] for p in parts]).numpy()


@pytest.mark.parametrize("k", [1, 3, 8, 49])  # 49 = every other row: no compaction ever drops one
def test_symmetric_pass_matches_the_oracle_with_ties_and_duplicates(k):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 3, size=(50, 2)).astype(np.float32)  # 3x3 grid: exact duplicates and equal distances
    order = torch.from_numpy(rng.permutation(50))
    for o in (None, order):
        dist, idx = blocked(x, k, order=o)
        want = oracle_knn(x, k)
        np.testing.assert_array_equal(idx, want)
        np.testing.assert_array_equal(dist, ((x[want] - x[:, None]) ** 2).sum(axis=2))
        assert not (idx == np.arange(50)[:, None]).any()  # never the query itself, though at distance 0


def test_streamed_pass_query_subset_and_gallery_match_the_oracle():
    rng = np.random.default_rng(1)
    x = rng.integers(-2, 3, size=(40, 3)).astype(np.float32)
    queries = np.array([39, 0, 5, 5, 17])  # fewer than half the rows: the streamed pass; a repeated query
    _, idx = blocked(x, 6, queries=queries)
    np.testing.assert_array_equal(idx, oracle_knn(x, 6, queries))
    gallery = np.concatenate([x[:10], rng.integers(-2, 3, size=(13, 3)).astype(np.float32)])
    _, idx = blocked(x, 23, gallery=gallery)  # k = the gallery size; copies of queries are neighbours
    np.testing.assert_array_equal(idx, oracle_knn(x, 23, gallery=gallery))


def test_partial_tiles_reach_the_kernel_as_c_contiguous_arrays():
    # 50 rows in tiles of 7 (the last one 1 wide), symmetric and streamed: the products of partial tiles are
    # written contiguously, so the kernel has one array layout (one cached load in a fresh process).
    x = np.random.default_rng(2).normal(size=(50, 3)).astype(np.float32)
    blocked(x, 4)
    blocked(x, 4, queries=np.arange(5))
    assert {sig[0].layout for sig in knn_blocked._scan_tile.signatures} == {"C"}


def test_reservoir_compactions_on_random_data_equal_a_full_sort():
    x, _ = make_data(n=300, d=5, seed=4)
    for k in (2, 20):
        dist, idx = blocked(x, k, tile=32)
        np.testing.assert_array_equal(idx, oracle_knn(x, k))


def test_backend_through_retrieval_metrics_equals_the_oracle_and_torch():
    x, y = make_data(n=260, classes=9, singletons=5, seed=5)
    ks = (1, 2, 4, 8, 100, 1000)  # K above every class and above N - 1; singletons excluded
    got = retrieval_metrics(x, y, ks, backend="blocked")
    want, scored = brute_force(x, y, ks)
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=1e-12), key
    assert (got["queries"], got["excluded_queries"]) == (scored, 5)
    _, by_blocked = nearest_neighbors(x, 30, backend="blocked")
    assert torch.equal(by_blocked, nearest_neighbors(x, 30, backend="torch")[1])


def test_two_rows_and_a_one_row_gallery():
    x = np.array([[0.0, 1.0], [3.0, 1.0]], dtype=np.float32)
    dist, idx = blocked(x, 1)
    assert idx.tolist() == [[1], [0]] and dist.tolist() == [[9.0], [9.0]]
    dist, idx = blocked(x, 1, gallery=x[1:])
    assert idx.tolist() == [[0], [0]] and dist.tolist() == [[9.0], [0.0]]


@pytest.mark.parametrize("k", [1, 2, 7, 24, 25, 123])
@pytest.mark.parametrize("kind", ["uniform", "narrow", "distance_ties", "huge_range"])
def test_compaction_keeps_exactly_the_k_smallest_keys(k, kind):
    # _compact (radix select, then a quickselect) against a full sort, on key sets that stress its buckets:
    # all keys in one bucket (narrow), equal distances told apart by the index only, keys 2^60 apart
    rng = np.random.default_rng(k)
    cap = 2 * k + 3
    if kind == "uniform":
        d = rng.random((40, cap)).astype(np.float32)
    elif kind == "narrow":
        d = (1 + 1e-6 * rng.random((40, cap))).astype(np.float32)
    elif kind == "distance_ties":
        d = rng.integers(0, 3, (40, cap)).astype(np.float32)
    else:
        d = (10.0 ** rng.integers(-30, 30, (40, cap))).astype(np.float32)
    keys = (d.view(np.int32).astype(np.int64) << 32) | rng.permuted(np.tile(np.arange(cap), (40, 1)), axis=1)
    work = np.empty(2 * cap + 256, dtype=np.int64)
    for q in range(40):
        want = np.sort(keys[q])[:k]
        threshold = knn_blocked._compact(keys, q, k, work)
        assert threshold == want[-1]
        np.testing.assert_array_equal(np.sort(keys[q, :k]), want)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_any_number_of_threads_gives_the_oracle_answer(threads):
    # Tiles of 5 rows: 12 blocks, so the queue often holds back a tile whose blocks another thread holds.
    x, _ = make_data(n=60, d=4, seed=7)
    for queries, gallery in ((None, None), ([3, 1, 59, 20], None), (None, x[:17] + 0.5)):
        q = torch.arange(len(x)) if queries is None else torch.as_tensor(queries)
        g = None if gallery is None else torch.as_tensor(gallery)
        parts = list(knn_blocked.iter_knn_blocked(torch.as_tensor(x), 9, q, g, tile=5, threads=threads))
        idx = torch.cat([p[2] for p in parts]).numpy()
        np.testing.assert_array_equal(idx, oracle_knn(x, 9, queries, gallery))


def test_tile_queue_never_hands_out_two_tiles_sharing_a_block():
    queue = knn_blocked._TileQueue([(0, 0), (0, 1), (1, 2), (2, 3), (0, 3)])
    first, second = queue.take(), queue.take()
    assert (first, second) == ((0, 0), (1, 2))  # (0, 1) waits: block 0 is held
    third = queue.take(first)  # releasing (0, 0): (0, 1) and (2, 3) still clash with (1, 2), (0, 3) not
    assert third == (0, 3)
    queue.abort()  # (0, 1) and (2, 3) are never handed out; a thread waiting for them would be woken
    assert queue.take(second) is None and queue.take(third) is None


def test_a_failing_tile_stops_every_thread_and_raises():
    done = []

    def work(tile, buf, scratch):
        if tile == (1, 1):
            raise RuntimeError("tile failed")
        done.append(tile)

    tiles = [(b, b) for b in range(6)] + [(0, b) for b in range(1, 6)]
    with pytest.raises(RuntimeError, match="tile failed"):
        knn_blocked._run_tiles(tiles, work, threads=2, tile=4, k=2)  # returns (no thread left waiting)
    assert len(done) < len(tiles) - 1


def test_first_byte_finds_the_lowest_flagged_column_of_a_word():
    for flags in ([1, 0, 0, 0, 0, 0, 0, 0], [0, 0, 0, 1, 1, 0, 0, 1], [0] * 7 + [1]):
        word = np.array(flags, dtype=np.uint8).view(np.uint64)[0]
        assert knn_blocked._first_byte(word) == flags.index(1)


def test_abort_wakes_a_thread_waiting_for_a_held_block():
    queue = knn_blocked._TileQueue([(0, 1), (1, 2)])
    assert queue.take() == (0, 1)
    got = []
    waiter = threading.Thread(target=lambda: got.append(queue.take()))  # (1, 2) needs block 1: waits
    waiter.start()
    waiter.join(timeout=0.2)
    assert waiter.is_alive()
    queue.abort()
    waiter.join(timeout=5)
    assert not waiter.is_alive() and got == [None]
