"""Loss-augmented facility-location inference, greedy (Algorithm 1) then PAM (Algorithm 2), in numba.

Song, Jegelka, Rathod, Murphy, "Deep Metric Learning via Facility Location", CVPR 2017, eqs. (4)-(7).
With D the pairwise distances, y the true classes (K of them) and S a set of medoids (cluster slots),

    F(S)        = -sum_i min_{s in S} D[s, i]                                   (facility energy, eq. 4)
    Delta(S)    = 1 - score(y, assignment(S))                                   (structured margin, eq. 5)
    greedy      S <- S + argmax_c F(S + c) + gamma * Delta(S + c),  K times      (eq. 6, Algorithm 1)
    PAM         for each slot k: m_k <- argmax_{j in cluster k} -sum_{i in cluster k} D[i, j]
                                                    + gamma * Delta(S with m_k := j)    (Algorithm 2)

Semantics follow TensorFlow's ``tf.contrib.losses.metric_learning.cluster_loss`` step by step: candidates in
ascending index order, first maximum wins (objectives within ``TIE_RTOL`` relative count as tied: round-off
of different summation orders); a point goes to its first nearest medoid and every medoid to its own slot;
PAM takes the clusters once at the start of a pass and sees the slots already updated in that pass. The
scores are those of :mod:`clusterloss.contingency`, clamped at 0 as in the original.

This is the only implementation of the search: the loss copies the distances of any device to the host in
float64 and runs it there (docs/design.md has the measurements behind that choice). Each step is plain loops:

* greedy step m: ``cost[c] = sum_i min(D[c, i], dmin_i)`` is kept up to date (adding a medoid changes
  ``dmin`` only on the points it captures); candidates more than gamma below the best energy cannot win
  (scores lie in [0, 1]) and are skipped; a surviving candidate is scored from the base contingency
  statistics plus the cells and columns its captured points leave and the column they form, O(captured).
* PAM slot s: every point's best and second-best medoid (in slot order) give its nearest medoid outside
  slot s, so member j's clustering (j takes every point nearer to it than to that medoid; the other medoids
  stay in their slots) is built in O(B) and scored from its contingency table.

Compiled code is cached on disk by numba (first use in a fresh install: a few seconds).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from clusterloss.contingency import (
    AMI,
    KIND_CODES,
    contingency_statistics,
    emi_table,
    score_from_statistics,
    xlogx_table,
)
from clusterloss.utils.compiled import jit, start_compiler

# Objectives within this relative distance of the best count as tied; the first of the tied candidates wins.
TIE_RTOL = 1e-10
# Pruning keeps candidates within gamma of the best energy, with this much extra slack (>> TIE_RTOL).
_PRUNE_RTOL = 1e-8
_INF = math.inf


@jit
def _margin_score(
    kind,
    n,
    n_rows,
    n_cols,
    sum_f_cells,
    sum_f_rows,
    sum_f_cols,
    sum_sq_cells,
    sum_sq_rows,
    sum_sq_cols,
    emi,
    round32,
):
    """The clustering score of the margin: clamped at 0, float32-rounded if ``round32`` (as the original)."""
    score = max(
        score_from_statistics(
            kind,
            n,
            n_rows,
            n_cols,
            sum_f_cells,
            sum_f_rows,
            sum_f_cols,
            sum_sq_cells,
            sum_sq_rows,
            sum_sq_cols,
            emi,
        ),
        0.0,
    )
    if round32:
        score = float(np.float32(score))
    return score


@jit
def _first_best(values, count):
    """The tie rule: first index < count whose value is within ``TIE_RTOL * (1 + |best|)`` of the maximum."""
    best = -_INF
    for i in range(count):
        if values[i] > best:
            best = values[i]
    threshold = best - TIE_RTOL * (1.0 + abs(best))
    for i in range(count):
        if values[i] >= threshold:
            return i
    return 0


@jit
def _capture(dist, dmin, c, pairs, pair_len, out):
    """Points candidate c takes (D[c, i] < dmin_i, and c itself) into ``out``; returns their number.

    ``pairs[c, :pair_len[c]]`` holds a superset of the other points c takes (``dmin`` only decreases); it
    is narrowed here to the current ones, so later steps scan fewer points.
    """
    row = pairs[c]
    kept = 0
    for t in range(pair_len[c]):
        i = row[t]
        if dist[c, i] < dmin[i]:
            row[kept] = i
            out[kept] = i
            kept += 1
    pair_len[c] = kept
    out[kept] = c
    return kept + 1


@jit
def greedy_search(dist, dist_t, y, r, kind, gamma, round32, f, h, sum_f_rows, sum_sq_rows):
    """Greedy loss-augmented inference (Algorithm 1): K = r medoids [K] in pick order.

    ``dist`` [B, B] float64 with ``dist_t`` its transpose (contiguous), ``y`` [B] classes in 0..r-1,
    ``f[x] = x log x`` and ``h[x]`` (EMI per column of size x) for x in 0..B.
    """
    b = dist.shape[0]
    k = r
    picks = np.empty(k, np.int64)
    single = _margin_score(
        kind, b, r, 1, sum_f_rows, sum_f_rows, f[b], sum_sq_rows, sum_sq_rows, float(b) * b, h[b], round32
    )
    totals = np.empty(b)
    for c in range(b):
        s = 0.0
        for i in range(b):
            s += dist[c, i]
        totals[c] = -s + gamma * (1.0 - single)
    first = _first_best(totals, b)
    picks[0] = first
    if k == 1:
        return picks
    dmin = dist[first].copy()
    slot = np.zeros(b, np.int64)
    chosen = np.zeros(b, np.bool_)
    chosen[first] = True
    cells = np.zeros(k * r, np.int32)  # (slot, class) counts of the current clustering
    cols = np.zeros(k, np.int64)
    for i in range(b):
        cells[y[i]] += 1
    cols[0] = b
    cost = np.empty(b)  # F(S + c) = -cost[c]
    pairs = np.empty((b, b), np.int32)
    pair_len = np.zeros(b, np.int64)
    for c in range(b):
        s = 0.0
        for i in range(b):
            s += min(dist[c, i], dmin[i])
            if dist[c, i] < dmin[i] and i != c:
                pairs[c, pair_len[c]] = i
                pair_len[c] += 1
        cost[c] = s
    # statistics of the current clustering: sum_f_cells, sum_sq_cells, sum_f_cols, sum_sq_cols, emi
    base = np.array([sum_f_rows, sum_sq_rows, f[b], float(b) * b, h[b]])
    delta = np.empty(5)
    taken = np.empty(b, np.int64)
    cell_loss = np.zeros(k * r, np.int32)
    col_loss = np.zeros(k, np.int64)
    new_cells = np.zeros(r, np.int64)
    for m in range(1, k):
        top = -_INF
        for c in range(b):
            if not chosen[c] and -cost[c] > top:
                top = -cost[c]
        floor = top - gamma - _PRUNE_RTOL * (1.0 + abs(top))
        for c in range(b):
            if chosen[c] or -cost[c] < floor:
                totals[c] = -_INF
                continue
            count = _capture(dist, dmin, c, pairs, pair_len, taken)
            _capture_delta(taken, count, slot, y, r, cells, cols, cell_loss, col_loss, new_cells, f, h, delta)
            score = _margin_score(
                kind,
                b,
                r,
                m + 1,
                base[0] + delta[0],
                sum_f_rows,
                base[2] + delta[2],
                base[1] + delta[1],
                sum_sq_rows,
                base[3] + delta[3],
                base[4] + delta[4],
                round32,
            )
            totals[c] = -cost[c] + gamma * (1.0 - score)
        w = _first_best(totals, b)
        count = _capture(dist, dmin, w, pairs, pair_len, taken)
        _capture_delta(taken, count, slot, y, r, cells, cols, cell_loss, col_loss, new_cells, f, h, delta)
        base += delta  # the winner's statistics, computed exactly as they were when it was scored
        for t in range(count):
            i = taken[t]
            d_old = dmin[i]
            d_new = dist[w, i]
            row = dist_t[i]  # D[c, i] for every c, contiguous
            for c in range(b):
                cost[c] -= min(row[c], d_old) - min(row[c], d_new)
            cells[slot[i] * r + y[i]] -= 1
            cols[slot[i]] -= 1
            cells[m * r + y[i]] += 1
            cols[m] += 1
            slot[i] = m
            dmin[i] = d_new
        chosen[w] = True
        picks[m] = w
    return picks


@jit
def _capture_delta(taken, count, slot, y, r, cells, cols, cell_loss, col_loss, new_cells, f, h, delta):
    """Change of (sum_f_cells, sum_sq_cells, sum_f_cols, sum_sq_cols, emi) when the points
    ``taken[:count]`` leave their cells and columns for a new column, into ``delta`` [5]. O(count)."""
    for t in range(count):
        i = taken[t]
        cell_loss[slot[i] * r + y[i]] += 1
        col_loss[slot[i]] += 1
        new_cells[y[i]] += 1
    delta[:] = 0.0
    for t in range(count):  # each touched cell / column once, then its counter is cleared
        i = taken[t]
        key = slot[i] * r + y[i]
        p = cell_loss[key]
        if p:
            n = cells[key]
            delta[0] += f[n - p] - f[n]
            delta[1] += float(p * p - 2 * p * n)
            cell_loss[key] = 0
        p = col_loss[slot[i]]
        if p:
            n = cols[slot[i]]
            delta[2] += f[n - p] - f[n]
            delta[3] += float(p * p - 2 * p * n)
            delta[4] += h[n - p] - h[n]
            col_loss[slot[i]] = 0
        q = new_cells[y[i]]
        if q:
            delta[0] += f[q]
            delta[1] += float(q * q)
            new_cells[y[i]] = 0
    delta[2] += f[count]
    delta[3] += float(count) * count
    delta[4] += h[count]


@jit
def _nearest_two(dist, medoids, best_val, best_slot, second_val, second_slot):
    """Per point, its nearest and second-nearest medoid slots (ties: earlier slot first)."""
    k = medoids.shape[0]
    for i in range(dist.shape[0]):
        bv, bs, sv, ss = _INF, k, _INF, k
        for t in range(k):
            v = dist[medoids[t], i]
            if v < bv:
                sv, ss = bv, bs
                bv, bs = v, t
            elif v < sv:
                sv, ss = v, t
        best_val[i], best_slot[i], second_val[i], second_slot[i] = bv, bs, sv, ss


@jit
def pam_refine(dist, dist_t, y, r, kind, gamma, round32, f, h, sum_f_rows, sum_sq_rows, medoids, iterations):
    """PAM swaps (Algorithm 2): ``iterations`` passes over the slots; returns the medoids [K] by slot.

    A pass takes the clusters once at its start; slot s then picks, among its members, the one maximizing
    -(sum of distances to the members) + gamma * (1 - score of the full reassignment with s swapped),
    seeing the slots before s already updated. A pass that changes nothing is a fixed point: the
    remaining passes would repeat it, so they are skipped.
    """
    b = dist.shape[0]
    k = medoids.shape[0]
    medoids = medoids.copy()
    medoid_slot = np.full(b, -1, np.int64)
    for t in range(k):
        medoid_slot[medoids[t]] = t
    pred = np.empty(b, np.int64)
    best_val = np.empty(b)
    second_val = np.empty(b)
    best_slot = np.empty(b, np.int64)
    second_slot = np.empty(b, np.int64)
    members = np.empty(b, np.int64)
    starts = np.zeros(k + 1, np.int64)
    totals = np.empty(b)
    cells = np.zeros(k * r, np.int64)
    cols = np.zeros(k, np.int64)
    touched = np.empty(b, np.int64)
    for _ in range(iterations):
        start_medoids = medoids.copy()
        _nearest_two(dist, medoids, best_val, best_slot, second_val, second_slot)
        for i in range(b):
            pred[i] = best_slot[i] if medoid_slot[i] < 0 else medoid_slot[i]
        # members of each cluster, ascending (counting sort by slot)
        starts[:] = 0
        for i in range(b):
            starts[pred[i] + 1] += 1
        for s in range(k):
            starts[s + 1] += starts[s]
        fill = starts[:k].copy()
        for i in range(b):
            members[fill[pred[i]]] = i
            fill[pred[i]] += 1
        for s in range(k):
            lo, hi = starts[s], starts[s + 1]
            for a in range(lo, hi):
                j = members[a]
                energy = 0.0
                row = dist_t[j]  # D[i, j] for every i
                for e in range(lo, hi):
                    energy += row[members[e]]
                n_touched = 0
                for i in range(b):
                    if i == j:
                        lab = s
                    elif medoid_slot[i] >= 0 and medoid_slot[i] != s:
                        lab = medoid_slot[i]  # the other medoids stay in their slots
                    else:
                        if best_slot[i] != s:
                            other_val, other_slot = best_val[i], best_slot[i]
                        else:
                            other_val, other_slot = second_val[i], second_slot[i]
                        d = dist[j, i]
                        lab = s if (d < other_val or (d == other_val and other_slot > s)) else other_slot
                    key = lab * r + y[i]
                    if cells[key] == 0:
                        touched[n_touched] = key
                        n_touched += 1
                    cells[key] += 1
                    cols[lab] += 1
                sum_f_cells = 0.0
                sum_sq_cells = 0.0
                for t in range(n_touched):
                    n = cells[touched[t]]
                    sum_f_cells += f[n]
                    sum_sq_cells += float(n * n)
                    cells[touched[t]] = 0
                sum_f_cols = 0.0
                sum_sq_cols = 0.0
                emi = 0.0
                for t in range(k):
                    n = cols[t]
                    sum_f_cols += f[n]
                    sum_sq_cols += float(n * n)
                    emi += h[n]
                    cols[t] = 0
                score = _margin_score(
                    kind,
                    b,
                    r,
                    k,
                    sum_f_cells,
                    sum_f_rows,
                    sum_f_cols,
                    sum_sq_cells,
                    sum_sq_rows,
                    sum_sq_cols,
                    emi,
                    round32,
                )
                totals[a - lo] = -energy + gamma * (1.0 - score)
            choice = members[lo + _first_best(totals, hi - lo)]
            if choice != medoids[s]:
                medoid_slot[medoids[s]] = -1
                medoid_slot[choice] = s
                medoids[s] = choice
                _nearest_two(dist, medoids, best_val, best_slot, second_val, second_slot)
        if np.array_equal(medoids, start_medoids):
            break
    return medoids


@jit
def _assign(dist, medoids):
    """Slot of each point [B]: its first nearest medoid (slot order), and each medoid its own slot."""
    b = dist.shape[0]
    pred = np.empty(b, np.int64)
    for i in range(b):
        best, slot = _INF, 0
        for t in range(medoids.shape[0]):
            if dist[medoids[t], i] < best:
                best, slot = dist[medoids[t], i], t
        pred[i] = slot
    for t in range(medoids.shape[0]):
        pred[medoids[t]] = t
    return pred


@jit
def _search(dist, y, r, kind, gamma, round32, pam_iterations):
    """Greedy medoids [K], final medoids [K] (after PAM), assignment [B] and its clamped score."""
    b = dist.shape[0]
    dist_t = np.ascontiguousarray(dist.T)
    f = xlogx_table(b)  # f[x] = x log x
    sizes = np.zeros(r, np.int64)
    for i in range(b):
        sizes[y[i]] += 1
    # h[x]: EMI contribution of a column of size x (AMI only)
    h = emi_table(sizes, b, np.arange(b + 1)) if kind == AMI and r > 1 else np.zeros(b + 1)
    sum_f_rows = 0.0
    sum_sq_rows = 0.0
    for c in range(r):
        sum_f_rows += f[sizes[c]]
        sum_sq_rows += float(sizes[c] * sizes[c])
    greedy = greedy_search(dist, dist_t, y, r, kind, gamma, round32, f, h, sum_f_rows, sum_sq_rows)
    medoids = greedy.copy()  # the two results must not share memory
    if pam_iterations > 0:
        medoids = pam_refine(
            dist, dist_t, y, r, kind, gamma, round32, f, h, sum_f_rows, sum_sq_rows, greedy, pam_iterations
        )
    assignment = _assign(dist, medoids)
    s = contingency_statistics(y, assignment, r, r, kind == AMI)
    score = _margin_score(kind, b, r, r, s[0], s[1], s[2], s[3], s[4], s[5], s[6], round32)
    return greedy, medoids, assignment, score


@dataclass(frozen=True)
class SearchResult:
    greedy_medoids: np.ndarray  # [K] int64, in pick order
    medoids: np.ndarray  # [K] int64, after PAM, slot order
    assignment: np.ndarray  # [B] int64, slot of each point
    score: float  # score(y, assignment) of the margin, clamped at 0 (float32-rounded if round32)


def facility_location_search(
    dist: np.ndarray,
    classes: np.ndarray,
    num_classes: int,
    margin_type: str,
    gamma: float,
    pam_iterations: int,
    round32: bool,
) -> SearchResult:
    """Loss-augmented medoids of ``dist`` [B, B] (float64, C-contiguous) for ``classes`` [B] (int64 in
    0..K-1, every class present), K = ``num_classes``: greedy, then ``pam_iterations`` PAM passes.

    The arguments are trusted (the loss checks its inputs once): ``margin_type`` one of
    :data:`clusterloss.contingency.SCORE_KINDS`, ``gamma >= 0``.
    """
    start_compiler()
    greedy, medoids, assignment, score = _search(
        dist, classes, num_classes, KIND_CODES[margin_type], float(gamma), bool(round32), int(pam_iterations)
    )
    return SearchResult(greedy, medoids, assignment, float(score))
