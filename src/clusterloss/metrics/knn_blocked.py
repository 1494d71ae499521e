"""Exact k nearest neighbours on the CPU: blocked matrix products (torch / MKL) + a numba selection.

faiss's flat search keeps a heap (k < 100) or a reservoir per query and visits every distance in scalar
code; at k ~ 100-1000 that costs several times the matrix product itself. Here the product is tiled (a tile
fits the caches), and each tile is reduced at once by a numba kernel that keeps, per query, a *reservoir*:
a buffer of candidate neighbours and a threshold, the k-th smallest (distance, index) seen so far. A tile
row's distances are compared to its query's threshold (and, in the symmetric pass, each to its column's
query's threshold) in one vector pass that writes a byte flag each, and only 8-column words holding a flag
are looked at one by one; a full reservoir is cut back to its k smallest by a radix select (:func:`_compact`).
Most of the time goes where thresholds are still loose (a query's first tiles): there nearly every
distance is a candidate.

All against all (no gallery, every row a query) the product is symmetric: tile (I, J) with I < J serves
queries I against rows J *and* queries J against rows I, so only half of the products are computed
(pytorch-metric-learning and faiss compute all of them). A pair's distance is then one float32 value used
in both directions.

Threads: whole tiles (product and selection) go to Python threads, one per idle core, each running torch's
product on one thread and the numba kernel without the GIL; a queue never hands out two tiles sharing a
block of rows at once, so no reservoir is written by two threads (:class:`_TileQueue`).

Order and ties: candidates are compared by the 64-bit key (float32 bits of the distance << 32 | index);
for non-negative floats the bit pattern orders like the value, so the key orders by (distance, index)
exactly as the rest of :mod:`clusterloss.metrics.retrieval` does. Distances are ``(|q|^2 + |g|^2) - 2 q.g``
in float32 (faiss's formula), clamped at 0; the self-match is excluded by index, never by distance.

Memory: one reservoir of ``2k`` keys (8 bytes) per query in flight, plus one tile. All against all keeps
every query in flight (N * 2k * 8 bytes: 100,000 queries at k = 141: 226 MB); above ``_RESERVOIR_BYTES``
the queries are streamed in blocks without the symmetry. Each thread holds one tile buffer.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from numba import prange

from clusterloss.utils.compiled import jit, start_compiler
from clusterloss.utils.threads import idle_cores, torch_threads

__all__ = ["iter_knn_blocked", "symmetric_pass_applies"]

_TILE = 512  # rows and columns of a distance tile (1 MB of float32; 20 % faster than 1024 at 10k)
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
def _threshold_value(key):
    return np.int32(key >> 32).view(np.float32)


@jit(inline="always")
def _distance(base, sq_col, dot):
    """``(base + sq_col) - 2 dot`` in float32, the one distance formula of both scans (no fused
    multiply-add: the value that is compared is the value that is stored)."""
    return (base + sq_col) - np.float32(2.0) * dot


@jit(inline="always")
def _first_byte(word):
    """Index (0-7) of the lowest non-zero byte of a word of 0/1 byte flags (little-endian: byte b is column
    8w + b). ``word & -word`` keeps its lowest set bit, 2^(8b); times 0x0001020304050607 puts byte 7 - b
    of that constant, which is b, in the top byte."""
    low = word & (~word + np.uint64(1))
    return np.int64((low * np.uint64(0x0001020304050607)) >> np.uint64(56))


@jit(nogil=True)
def _scan_tile(dot, sq_rows, sq_cols, row_ids, col_ids, res_rows, res_cols, self_ids, keys, count, thr, k,
               scratch):
    """Reduce one tile: tile row i is query ``res_rows[i]`` (its reservoir) against gallery rows
    ``col_ids``, skipping gallery row ``self_ids[i]`` (the query itself, or -1); with ``res_cols`` (an
    off-diagonal tile of the symmetric pass; else an empty array) tile column j is also query
    ``res_cols[j]`` against gallery rows ``row_ids`` (no self-match off the diagonal).

    Each distance is computed once and compared to both thresholds, its row's and its column's, in one
    vector pass that writes two byte flags per column; then only the set flags of each 8-column word are
    visited (lowest set byte first, :func:`_first_byte`), each compared again since thresholds fall as
    candidates come in. Visiting flags bit by bit instead of every column of a flagged word halved the
    selection time at 100k x 64, k = 138 (the column-by-column branches were unpredictable). An offer is
    written out twice, not called: a helper taking the reservoir arrays cost numba's reference counting
    on every call (measured: 26 against 11 ns an offer).
    Runs on one thread without the GIL: :func:`_run_tiles` gives each thread tiles whose reservoirs no
    other thread touches. ``scratch``: :func:`_scratch` of at least the tile's width."""
    n_rows, n_cols = dot.shape
    padded = (n_cols + 7) & ~7
    dist, col_limits, work, row_flags, col_flags = scratch
    row_words, col_words = row_flags.view(np.uint64), col_flags.view(np.uint64)
    row_flags[n_cols:padded] = 0
    col_flags[n_cols:padded] = 0
    both = res_cols.shape[0] > 0
    cap = keys.shape[1]
    for j in range(n_cols):  # -inf: this column is no query (never flags)
        col_limits[j] = _threshold_value(thr[res_cols[j]]) if both else -np.inf
    for i in range(n_rows):
        q = res_rows[i]
        skip = self_ids[i]
        base = sq_rows[i]
        limit = _threshold_value(thr[q])
        for j in range(n_cols):  # a straight loop of independent operations: vector instructions
            d = _distance(base, sq_cols[j], dot[i, j])
            dist[j] = d
            row_flags[j] = d <= limit
            col_flags[j] = d <= col_limits[j]
        for w in range(padded >> 3):
            row_word, col_word = row_words[w], col_words[w]
            if (row_word | col_word) == 0:
                continue
            while row_word:
                j = (w << 3) + _first_byte(row_word)
                row_word &= row_word - np.uint64(1)
                d = dist[j]
                if d <= limit and col_ids[j] != skip:  # offer (d, col_ids[j]) to reservoir q
                    key = _key(max(d, np.float32(0.0)), col_ids[j])
                    if key < thr[q]:
                        c = count[q]
                        keys[q, c] = key
                        c += 1
                        if c == cap:
                            thr[q] = _compact(keys, q, k, work)
                            limit = _threshold_value(thr[q])
                            c = k
                        count[q] = c
            while col_word:
                j = (w << 3) + _first_byte(col_word)
                col_word &= col_word - np.uint64(1)
                d = dist[j]
                if d <= col_limits[j]:  # offer (d, row_ids[i]) to reservoir p = res_cols[j], as above
                    p = res_cols[j]
                    key = _key(max(d, np.float32(0.0)), row_ids[i])
                    if key < thr[p]:
                        c = count[p]
                        keys[p, c] = key
                        c += 1
                        if c == cap:
                            thr[p] = _compact(keys, p, k, work)
                            col_limits[j] = _threshold_value(thr[p])
                            c = k
                        count[p] = c


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


def _scratch(tile: int, k: int):
    """One thread's scratch for :func:`_scan_tile`: distances and column thresholds of a tile row, the
    compaction work space (:func:`_compact`), row and column byte flags padded to whole 8-byte words."""
    padded = (tile + 7) & ~7
    return (np.empty(tile, np.float32), np.empty(tile, np.float32),
            np.empty(2 * 2 * k + (1 << _BUCKET_BITS), np.int64), np.zeros(padded, np.uint8),
            np.zeros(padded, np.uint8))


class _TileQueue:
    """Hands out tiles (row block, column block) in order, never two at once that share a block: a tile
    writes the reservoirs of its blocks, so tiles handed out together touch disjoint reservoirs."""

    def __init__(self, tiles):
        self._pending = list(tiles)
        self._busy: set[int] = set()
        self._lock = threading.Condition()

    def take(self, done=None):
        """Release tile ``done`` (if any) and return the first pending tile whose blocks are free, waiting
        while every pending tile conflicts; None when all are handed out."""
        with self._lock:
            if done is not None:
                self._busy.difference_update(done)
                self._lock.notify_all()
            while self._pending:
                for pos, tile in enumerate(self._pending):
                    if tile[0] not in self._busy and tile[1] not in self._busy:
                        self._busy.update(tile)
                        return self._pending.pop(pos)
                self._lock.wait()
            return None

    def abort(self) -> None:
        """Hand out nothing more (a thread failed)."""
        with self._lock:
            self._pending.clear()
            self._lock.notify_all()


def _run_tiles(tiles, work, threads: int, tile: int, k: int) -> None:
    """``work(tile, buf, scratch)`` for every tile, on ``threads`` Python threads, torch's products on one
    thread each. One pool of threads working on whole tiles: two OpenMP pools (torch's and numba's) each
    running every tile on both cores spun against each other, and every parallel region ended in a
    barrier (measured here at 100k x 64, k = 138: products 8 s in that loop, 4.3 s alone)."""
    queue = _TileQueue(tiles)

    def loop():
        buf, scratch = torch.empty(tile * tile), _scratch(tile, k)  # flat: see _product
        done = None
        try:
            while (current := queue.take(done)) is not None:
                done = None
                work(current, buf, scratch)
                done = current
        except BaseException:
            queue.abort()  # the other threads stop instead of waiting for this thread's blocks
            raise

    with torch_threads(1):
        if threads <= 1:
            loop()
            return
        with ThreadPoolExecutor(threads) as pool:
            for future in [pool.submit(loop) for _ in range(threads)]:
                future.result()


def _product(a: torch.Tensor, b: torch.Tensor, buf: torch.Tensor) -> np.ndarray:
    """``a @ b.T`` written into the front of the flat buffer ``buf``: a C-contiguous array for a partial tile
    too (a slice of a square buffer would not be), so :func:`_scan_tile` is compiled and loaded for one
    array layout only (one cached load fewer in a fresh process)."""
    rows, cols = a.shape[0], b.shape[0]
    return torch.mm(a, b.T, out=buf[: rows * cols].view(rows, cols)).numpy()


def _symmetric(x: torch.Tensor, sq: np.ndarray, ids: np.ndarray, k: int, tile: int, threads: int):
    """All against all, half the products; row p of ``x`` is sample ``ids[p]``, and reservoir p is its.

    Diagonal tiles go first: with the rows sorted by label a query's own class is mostly in its diagonal
    tile, its nearest neighbours are usually there, and its threshold starts low (fewer candidates)."""
    n = x.shape[0]
    keys, count, thr = _reservoirs(n, k)
    rows = np.arange(n, dtype=np.int64)
    none = np.full(tile, _NO_SELF, dtype=np.int64)
    no_cols = np.empty(0, dtype=np.int64)
    blocks = (n + tile - 1) // tile
    tiles = [(b, b) for b in range(blocks)] + [(r, c) for r in range(blocks) for c in range(r + 1, blocks)]

    def work(pair, buf, scratch):
        r0, c0 = pair[0] * tile, pair[1] * tile
        r1, c1 = min(r0 + tile, n), min(c0 + tile, n)
        dot = _product(x[r0:r1], x[c0:c1], buf)
        diagonal = r0 == c0
        _scan_tile(dot, sq[r0:r1], sq[c0:c1], ids[r0:r1], ids[c0:c1], rows[r0:r1],
                   no_cols if diagonal else rows[c0:c1], ids[r0:r1] if diagonal else none[: r1 - r0],
                   keys, count, thr, k, scratch)

    _run_tiles(tiles, work, threads, tile, k)
    return keys, count


def _streamed(xq: torch.Tensor, sqq: np.ndarray, g: torch.Tensor, sqg: np.ndarray, self_ids: np.ndarray,
              k: int, tile: int, threads: int):
    """A block of queries against every gallery tile: (distances, indices) of the block. A thread takes a
    query tile against every gallery tile (the queue hands out one row block at a time)."""
    b, m = xq.shape[0], g.shape[0]
    keys, count, thr = _reservoirs(b, k)
    res = np.arange(b, dtype=np.int64)
    gallery_ids = np.arange(m, dtype=np.int64)
    no_cols = np.empty(0, dtype=np.int64)

    def work(pair, buf, scratch):
        r0 = pair[0] * tile
        r1 = min(r0 + tile, b)
        for c0 in range(0, m, tile):
            c1 = min(c0 + tile, m)
            dot = _product(xq[r0:r1], g[c0:c1], buf)
            _scan_tile(dot, sqq[r0:r1], sqg[c0:c1], no_cols, gallery_ids[c0:c1], res[r0:r1], no_cols,
                       self_ids[r0:r1], keys, count, thr, k, scratch)

    _run_tiles([(r, r) for r in range((b + tile - 1) // tile)], work, threads, tile, k)
    return _finish(keys, count, res, k)


def symmetric_pass_applies(n: int, queries: int, k: int, gallery: bool) -> bool:
    """Whether :func:`iter_knn_blocked` takes its all-against-all pass (half the products) for ``queries`` of
    ``n`` rows at ``k`` neighbours: no gallery, at least half the rows as queries (singletons are not), and
    every reservoir in memory at once (``_RESERVOIR_BYTES``)."""
    return not gallery and 2 * queries >= n and n * 2 * k * 8 <= _RESERVOIR_BYTES


def iter_knn_blocked(x: torch.Tensor, k: int, queries: torch.Tensor, gallery: torch.Tensor | None,
                     order: torch.Tensor | None = None, tile: int = _TILE,
                     threads: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Exact kNN of rows ``queries`` of ``x`` (checked float32 CPU tensors) among the other rows of ``x``
    (self excluded by index) or among ``gallery``; yields (queries, distances, indices) blocks in
    (distance, index) order, like :func:`clusterloss.metrics.retrieval.iter_knn`.

    ``order``: optional permutation of the rows of ``x`` to visit them in (all against all: rows sorted by
    label run faster); it changes nothing in the result. ``threads``: tiles worked on at once (default
    :func:`clusterloss.utils.threads.idle_cores`)."""
    start_compiler()
    threads = idle_cores() if threads is None else max(1, int(threads))
    g = x if gallery is None else gallery
    n = x.shape[0]
    # All against all with most rows as queries (singletons are not): every row in flight, half the products.
    if symmetric_pass_applies(n, len(queries), k, gallery is not None):
        perm = torch.arange(n) if order is None else torch.as_tensor(order).long()
        xp = x[perm].contiguous()
        ids = perm.numpy().astype(np.int64)
        keys, count = _symmetric(xp, (xp * xp).sum(dim=1).numpy(), ids, k, tile, threads)
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
        dist, idx = _streamed(x[q].contiguous(), sqx[q.numpy()], g, sqg, self_ids, k, tile, threads)
        yield q, torch.from_numpy(dist), torch.from_numpy(idx)
