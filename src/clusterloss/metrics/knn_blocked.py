"""Exact k nearest neighbours on the CPU: blocked matrix products (torch / MKL) + a numba selection.

faiss's flat search keeps a heap (k < 100) or a reservoir per query and visits every distance in scalar
code; at k ~ 100-1000 that costs several times the matrix product itself. Here the product is tiled (a tile
fits the caches), and each tile is reduced at once by a numba kernel that keeps, per query, a *reservoir*:
a buffer of candidate neighbours and a threshold, the k-th smallest (distance, index) seen so far. A tile
row's distances are compared to its query's threshold in one vector pass that writes a byte flag each, and
only 8-column words holding a flag are looked at one by one (column orientation: groups of 64 queries, one
minimum per group); a full reservoir is cut back to its k smallest by a radix select (:func:`_compact`).
Most of the time goes where thresholds are still loose (a query's first tiles): there nearly every
distance is a candidate.

All against all (no gallery, every row a query) the product is symmetric: tile (I, J) with I < J serves
queries I against rows J *and* queries J against rows I, so only half of the products are computed
(pytorch-metric-learning and faiss compute all of them). A pair's distance is then one float32 value used
in both directions.

Order and ties: candidates are compared by the 64-bit key (float32 bits of the distance << 32 | index);
for non-negative floats the bit pattern orders like the value, so the key orders by (distance, index)
exactly as the rest of :mod:`clusterloss.metrics.retrieval` does. Distances are ``(|q|^2 + |g|^2) - 2 q.g``
in float32 (faiss's formula), clamped at 0; the self-match is excluded by index, never by distance.

Memory: one reservoir of ``2k`` keys (8 bytes) per query in flight, plus one tile. All against all keeps
every query in flight (N * 2k * 8 bytes: 100,000 queries at k = 141: 226 MB); above ``_RESERVOIR_BYTES``
the queries are streamed in blocks without the symmetry.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from numba import prange

from clusterloss.utils.compiled import jit

__all__ = ["iter_knn_blocked", "symmetric_pass_applies"]

_GROUP = 64  # rows of a thread's block (row scan) / queries of a column group (column scan)
_TILE = 1024  # rows and columns of one distance tile (4 MB of float32: the caches)
_RESERVOIR_BYTES = 1536 * 2**20  # all reservoirs together, all-against-all; beyond this queries stream
_STREAM_QUERIES = 8192  # queries per streamed block
_BUCKET_BITS = 8  # radix select of a compaction: 256 buckets a pass
_SELECT_BELOW = 24  # ... down to this many keys, then a quickselect
_NO_SELF = -1
_INF_KEY = np.int64(0x7F800000FFFFFFFF)  # distance +inf, largest index: above every candidate


@jit(inline="always")
def _key(d, index):
    return (np.int64(np.float32(d).view(np.int32)) << 32) | np.int64(index)


@jit
def _select(row, lo, hi, target):
    """Quickselect (median-of-three pivot, distinct keys): reorder ``row[lo:hi + 1]`` so that position
    ``target`` holds the key of that rank and the smaller ones come before it; return that key."""
    while hi > lo:
        mid = (lo + hi) >> 1
        a, b, c = row[lo], row[mid], row[hi]
        pivot = max(min(a, b), min(max(a, b), c))
        i, j = lo, hi
        while i <= j:
            while row[i] < pivot:
                i += 1
            while row[j] > pivot:
                j -= 1
            if i <= j:
                row[i], row[j] = row[j], row[i]
                i += 1
                j -= 1
        if target <= j:
            hi = j
        elif target >= i:
            lo = i
        else:
            break
    return row[target]


@jit
def _compact(keys, q, k, work):
    """Move the k smallest keys of reservoir ``q`` to its front (unordered; keys are distinct) and return
    the largest of them (the new threshold). ``work``: int64 scratch of 2 * capacity + 256.

    A radix select: the candidate keys are bucketed by their top bits above the smallest (256 buckets), the
    buckets below the one holding the k-th key are taken whole, and only that bucket goes on, until few
    keys are left for a quickselect. Each pass is a loop without data-dependent branches (a key is written
    to both outputs and the right counter advances), 3-4x faster than a quickselect of the whole
    reservoir here, whose comparisons the branch predictor cannot guess."""
    n = keys.shape[1]
    taken, cand, hist = work[:n], work[n : 2 * n], work[2 * n : 2 * n + (1 << _BUCKET_BITS)]
    for i in range(n):
        cand[i] = keys[q, i]
    m, need, c = n, k, 0
    while m > _SELECT_BELOW:
        lo, hi = cand[0], cand[0]
        for i in range(1, m):
            lo = min(lo, cand[i])
            hi = max(hi, cand[i])
        if hi == lo:  # (cannot happen with distinct keys; never loop on a degenerate input)
            break
        shift = 0
        while ((hi - lo) >> shift) >= (1 << _BUCKET_BITS):
            shift += 1
        hist[:] = 0
        for i in range(m):
            hist[(cand[i] - lo) >> shift] += 1
        below, bucket = 0, 0
        while below + hist[bucket] < need:
            below += hist[bucket]
            bucket += 1
        kept = 0
        for i in range(m):  # in place: kept <= i
            v = cand[i]
            b = (v - lo) >> shift
            taken[c] = v
            c += b < bucket
            cand[kept] = v
            kept += b == bucket
        need -= below
        m = kept
    threshold = _select(cand, 0, m - 1, need - 1)
    for i in range(need):
        taken[c + i] = cand[i]
    for i in range(k):
        keys[q, i] = taken[i]
    return threshold


@jit(inline="always")
def _workspace(keys):
    """The scratch :func:`_compact` needs (one per thread)."""
    return np.empty(2 * keys.shape[1] + (1 << _BUCKET_BITS), dtype=np.int64)


@jit(inline="always")
def _offer(keys, count, thr, q, key, k, work):
    """Add ``key`` to reservoir ``q`` if it is below the threshold; compact when the buffer is full."""
    if key < thr[q]:
        c = count[q]
        keys[q, c] = key
        c += 1
        if c == keys.shape[1]:
            thr[q] = _compact(keys, q, k, work)
            c = k
        count[q] = c


@jit(inline="always")
def _threshold_value(key):
    return np.int32(key >> 32).view(np.float32)


@jit(inline="always")
def _distance(base, sq_col, dot):
    """``(base + sq_col) - 2 dot`` in float32, the one distance formula of both scans (no fused
    multiply-add: the value that is compared is the value that is stored)."""
    return (base + sq_col) - np.float32(2.0) * dot


@jit(inline="always")
def _distances(out, base, sq_cols, dot_row):
    """``out[j] = _distance(base, sq_cols[j], dot_row[j])`` for every j."""
    for j in range(out.shape[0]):
        out[j] = _distance(base, sq_cols[j], dot_row[j])


@jit(fastmath={"nnan", "ninf", "nsz", "reassoc"}, inline="always")
def _group_margin(values, limits, n):
    """Smallest ``values[j] - limits[j]`` over ``j < n`` (<= 0: some value is within its limit)."""
    m = values[0] - limits[0]
    for j in range(1, n):
        m = min(m, values[j] - limits[j])
    return m


@jit(parallel=True)
def _scan_rows(dot, sq_rows, sq_cols, col_ids, res_rows, self_ids, keys, count, thr, k):
    """Row orientation: tile row i is query ``res_rows[i]`` (its reservoir), tile column j is gallery row
    ``col_ids[j]``; ``self_ids[i]`` is the gallery row to skip (the query itself) or -1.

    A row's distances are compared to the query's threshold in one vector pass that writes a byte flag
    per column; then only the 8-column words holding a flag are looked at one by one (the threshold falls
    as candidates come in, so a flagged distance is compared again). Measured here: 0.3 ns a distance
    against 0.7 for a scalar minimum per group of 64 (a chain of dependent instructions)."""
    n_rows, n_cols = dot.shape
    padded = (n_cols + 7) & ~7
    for block in prange((n_rows + _GROUP - 1) // _GROUP):
        dist = np.empty(n_cols, dtype=np.float32)
        flags = np.zeros(padded, dtype=np.uint8)
        words = flags.view(np.uint64)
        work = _workspace(keys)
        for i in range(block * _GROUP, min((block + 1) * _GROUP, n_rows)):
            q = res_rows[i]
            skip = self_ids[i]
            base = sq_rows[i]
            limit = _threshold_value(thr[q])
            for j in range(n_cols):  # a straight loop of independent operations: vector instructions
                d = _distance(base, sq_cols[j], dot[i, j])
                dist[j] = d
                flags[j] = d <= limit
            for w in range(padded >> 3):
                if words[w] == 0:
                    continue
                for j in range(w << 3, min((w << 3) + 8, n_cols)):
                    d = dist[j]
                    if d <= limit and col_ids[j] != skip:
                        _offer(keys, count, thr, q, _key(max(d, np.float32(0.0)), col_ids[j]), k, work)
                        limit = _threshold_value(thr[q])


@jit(parallel=True)
def _scan_cols(dot, sq_rows, sq_cols, row_ids, res_cols, keys, count, thr, k):
    """Column orientation of a symmetric tile: tile column j is query ``res_cols[j]``, tile row i is gallery
    row ``row_ids[i]`` (an off-diagonal tile: no self-match). Threads split the columns in groups."""
    n_rows, n_cols = dot.shape
    for jg in prange((n_cols + _GROUP - 1) // _GROUP):
        j0 = jg * _GROUP
        width = min(_GROUP, n_cols - j0)
        limits = np.empty(width, dtype=np.float32)
        dist = np.empty(width, dtype=np.float32)
        work = _workspace(keys)
        for j in range(width):
            limits[j] = _threshold_value(thr[res_cols[j0 + j]])
        for i in range(n_rows):
            _distances(dist, sq_rows[i], sq_cols[j0 : j0 + width], dot[i, j0 : j0 + width])
            if not _group_margin(dist, limits, width) <= 0:
                continue
            for j in range(width):
                if dist[j] <= limits[j]:
                    q = res_cols[j0 + j]
                    _offer(keys, count, thr, q, _key(max(dist[j], np.float32(0.0)), row_ids[i]), k,
                           work)
                    limits[j] = _threshold_value(thr[q])


@jit(parallel=True)
def _finish(keys, count, rows, k):
    """Reservoirs ``rows`` -> (distances [B, k] float32, indices [B, k] int64) in key order."""
    out_d = np.empty((len(rows), k), dtype=np.float32)
    out_i = np.empty((len(rows), k), dtype=np.int64)
    for r in prange(len(rows)):
        q = rows[r]
        part = np.sort(keys[q, : count[q]])[:k]
        for t in range(k):
            out_d[r, t] = _threshold_value(part[t])
            out_i[r, t] = part[t] & 0xFFFFFFFF
    return out_d, out_i


def _reservoirs(n: int, k: int):
    cap = 2 * k
    return (np.empty((n, cap), dtype=np.int64), np.zeros(n, dtype=np.int64),
            np.full(n, _INF_KEY, dtype=np.int64))


def _symmetric(x: torch.Tensor, sq: np.ndarray, ids: np.ndarray, k: int, tile: int):
    """All against all, half the products; row p of ``x`` is sample ``ids[p]``, and reservoir p is its.

    Diagonal tiles go first: with the rows sorted by label a query's own class is mostly in its diagonal
    tile, its nearest neighbours are usually there, and its threshold starts low (fewer candidates)."""
    n = x.shape[0]
    keys, count, thr = _reservoirs(n, k)
    rows = np.arange(n, dtype=np.int64)
    none = np.full(tile, _NO_SELF, dtype=np.int64)
    buf = torch.empty(tile, tile)
    starts = range(0, n, tile)
    for r0, c0 in [(r, r) for r in starts] + [(r, c) for r in starts for c in starts if c > r]:
        r1, c1 = min(r0 + tile, n), min(c0 + tile, n)
        dot = torch.mm(x[r0:r1], x[c0:c1].T, out=buf[: r1 - r0, : c1 - c0]).numpy()
        self_ids = ids[r0:r1] if c0 == r0 else none[: r1 - r0]
        _scan_rows(dot, sq[r0:r1], sq[c0:c1], ids[c0:c1], rows[r0:r1], self_ids, keys, count, thr, k)
        if c0 != r0:
            _scan_cols(dot, sq[r0:r1], sq[c0:c1], ids[r0:r1], rows[c0:c1], keys, count, thr, k)
    return keys, count


def _streamed(xq: torch.Tensor, sqq: np.ndarray, g: torch.Tensor, sqg: np.ndarray, self_ids: np.ndarray,
              k: int, tile: int):
    """A block of queries against every gallery tile: (distances, indices) of the block."""
    b, m = xq.shape[0], g.shape[0]
    keys, count, thr = _reservoirs(b, k)
    res = np.arange(b, dtype=np.int64)
    gallery_ids = np.arange(m, dtype=np.int64)
    buf = torch.empty(tile, tile)
    for r0 in range(0, b, tile):
        r1 = min(r0 + tile, b)
        for c0 in range(0, m, tile):
            c1 = min(c0 + tile, m)
            dot = torch.mm(xq[r0:r1], g[c0:c1].T, out=buf[: r1 - r0, : c1 - c0]).numpy()
            _scan_rows(dot, sqq[r0:r1], sqg[c0:c1], gallery_ids[c0:c1], res[r0:r1], self_ids[r0:r1],
                       keys, count, thr, k)
    return _finish(keys, count, res, k)


def symmetric_pass_applies(n: int, queries: int, k: int, gallery: bool) -> bool:
    """Whether :func:`iter_knn_blocked` takes its all-against-all pass (half the products) for ``queries`` of
    ``n`` rows at ``k`` neighbours: no gallery, at least half the rows as queries (singletons are not), and
    every reservoir in memory at once (``_RESERVOIR_BYTES``)."""
    return not gallery and 2 * queries >= n and n * 2 * k * 8 <= _RESERVOIR_BYTES


def iter_knn_blocked(x: torch.Tensor, k: int, queries: torch.Tensor, gallery: torch.Tensor | None,
                     order: torch.Tensor | None = None,
                     tile: int = _TILE) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Exact kNN of rows ``queries`` of ``x`` (checked float32 CPU tensors) among the other rows of ``x``
    (self excluded by index) or among ``gallery``; yields (queries, distances, indices) blocks in
    (distance, index) order, like :func:`clusterloss.metrics.retrieval.iter_knn`.

    ``order``: optional permutation of the rows of ``x`` to visit them in (all against all: rows sorted by
    label run faster); it changes nothing in the result."""
    g = x if gallery is None else gallery
    n = x.shape[0]
    # All against all with most rows as queries (singletons are not): every row in flight, half the products.
    if symmetric_pass_applies(n, len(queries), k, gallery is not None):
        perm = torch.arange(n) if order is None else torch.as_tensor(order).long()
        xp = x[perm].contiguous()
        ids = perm.numpy().astype(np.int64)
        keys, count = _symmetric(xp, (xp * xp).sum(dim=1).numpy(), ids, k, tile)
        position = np.empty(n, dtype=np.int64)
        position[ids] = np.arange(n)
        for first in range(0, len(queries), _STREAM_QUERIES):
            q = queries[first : first + _STREAM_QUERIES]
            dist, idx = _finish(keys, count, position[q.numpy()], k)
            yield q, torch.from_numpy(dist), torch.from_numpy(idx)
        return
    sqg = (g * g).sum(dim=1).numpy()
    sqx = sqg if gallery is None else (x * x).sum(dim=1).numpy()
    for first in range(0, len(queries), _STREAM_QUERIES):
        q = queries[first : first + _STREAM_QUERIES]
        self_ids = q.numpy().astype(np.int64) if gallery is None else np.full(len(q), _NO_SELF, np.int64)
        dist, idx = _streamed(x[q].contiguous(), sqx[q.numpy()], g, sqg, self_ids, k, tile)
        yield q, torch.from_numpy(dist), torch.from_numpy(idx)
