"""Scoring every candidate clustering of a facility-location search step at once.

A candidate's clustering differs from a *base* clustering only in the points it captures (those it is nearer
to than their base medoid, plus itself). Every partition score is a function of a few sums over cells and
columns of the contingency table (``clusterloss.metrics.partition_scores``), so each candidate's statistics
are the base statistics plus a sparse update over the captured (candidate, point) pairs. Small batches use
a dense count table instead (:data:`DENSE_TABLE_LIMIT`); both give the same scores up to round-off.
Used by :mod:`clusterloss.losses.facility_search`.
"""

from __future__ import annotations

import math

import torch

from clusterloss.metrics.partition_scores import expected_mutual_info_table, scores_from_statistics, xlogx

_EPS64 = float(torch.finfo(torch.float64).eps)  # AMI's denominator floor, as in partition_scores
# Dense scoring (a full [candidates, slots x classes] count table per step) while that table has at most
# this many entries: a few fixed-shape ops instead of the sorts and run-length grouping of the sparse
# update, which win only at large B (the table grows as B^3 for K ~ B).
DENSE_TABLE_LIMIT = 1 << 20


class CandidateScorer:
    """Scores all candidates of a step: base contingency statistics plus sparse captured-point updates."""

    def __init__(self, classes: torch.Tensor, num_classes: int, kind: str, gamma: float, round32: bool):
        self.y = classes
        self.r = num_classes
        self.n = classes.shape[0]
        self.kind = kind
        self.gamma = gamma
        self.round32 = round32
        dev = classes.device
        sizes = torch.bincount(classes, minlength=num_classes)
        grid = torch.arange(self.n + 1, device=dev)
        self.f = xlogx(grid)  # f[x] = x log x
        self.log = torch.log(grid.double())
        self.h = (
            expected_mutual_info_table(sizes, self.n, grid)
            if kind == "ami" and num_classes > 1
            else torch.zeros(self.n + 1, dtype=torch.float64, device=dev)
        )
        self.sum_f_rows = self.f[sizes].sum()
        self.sum_sq_rows = (sizes.double() ** 2).sum()
        self.log_n = math.log(self.n)
        self.h_true = float(self.log_n - self.sum_f_rows / self.n)  # as scores_from_statistics computes it
        self.ones = torch.ones(0, 0, dtype=torch.float32, device=dev)  # buffers of :meth:`dense`
        self.cells = torch.zeros(0, 0, dtype=torch.float32, device=dev)

    def margin(self, n_cols, sum_f_cells, sum_f_cols, sum_sq_cells, sum_sq_cols, emi) -> torch.Tensor:
        """gamma-free margin score (clamped at 0 like the original; float32-rounded for float32 inputs)."""
        score = scores_from_statistics(
            self.kind, self.n, self.r, n_cols, sum_f_cells, self.sum_f_rows, sum_f_cols,
            sum_sq_cells, self.sum_sq_rows, sum_sq_cols, emi,
        )
        score = score.clamp_min(0.0)
        if self.round32:
            score = score.float().double()
        return score

    def _margin_many_clusters(self, sum_f_cells, sum_f_cols, sum_sq_cells, sum_sq_cols, emi) -> torch.Tensor:
        """:meth:`margin` for >= 2 classes and >= 2 clusters, same formulas and operation order as
        ``scores_from_statistics`` without its branches for single clusters (fewer small ops per step)."""
        kind, n, log_n = self.kind, self.n, self.log_n
        if kind in ("ari", "const"):
            return self.margin(2, sum_f_cells, sum_f_cols, sum_sq_cells, sum_sq_cols, emi)
        mi = ((sum_f_cells - self.sum_f_rows - sum_f_cols) / n + log_n).clamp_min(0.0)
        h_pred = log_n - sum_f_cols / n
        if kind == "vmeasure":
            homogeneity = mi / (1.0 if self.h_true == 0 else self.h_true)
            completeness = torch.where(h_pred == 0, 1.0, mi / torch.where(h_pred == 0, 1.0, h_pred))
            hc = homogeneity + completeness
            harmonic = 2.0 * homogeneity * completeness / torch.where(hc == 0, 1.0, hc)
            score = torch.where(hc == 0, 0.0, harmonic)
        else:
            normalizer = (self.h_true + h_pred) / 2.0
            if kind == "nmi":
                score = torch.where(mi == 0, 0.0, mi / torch.where(normalizer == 0, 1.0, normalizer))
            else:  # ami
                den = normalizer - emi
                den = torch.where(den < 0, torch.clamp(den, max=-_EPS64), torch.clamp(den, min=_EPS64))
                identical = (sum_sq_cells == self.sum_sq_rows) & (sum_sq_cells == sum_sq_cols)
                score = torch.where(identical, 1.0, (mi - emi) / den)
        score = score.clamp_min(0.0)
        if self.round32:
            score = score.float().double()
        return score

    def use_dense(self, num_cand: int, num_slots: int) -> bool:
        """Whether :meth:`dense` is the cheaper way to score ``num_cand`` candidates."""
        return num_cand * num_slots * self.r <= DENSE_TABLE_LIMIT

    def dense(self, labels: torch.Tensor, num_slots: int, n_cols: int) -> torch.Tensor:
        """Margin scores [C] of the clusterings ``labels`` [C, B] (slot ids < num_slots, each clustering
        with ``n_cols`` non-empty clusters), all at once.

        One scatter builds each candidate's contingency table [C, num_slots * R]; its cell statistics are
        read back per point (sum_cells f(n) = sum_points log n_cell(point), sum_cells n^2 = sum_points
        n_cell(point)), so the table itself is never scanned.
        """
        c, b = labels.shape
        dev = labels.device
        width = num_slots * self.r
        if self.ones.shape[0] < c or self.cells.shape[1] != width:
            rows = max(c, min(b, DENSE_TABLE_LIMIT // width))  # reused by later calls, within the limit
            self.ones = torch.ones(rows, b, dtype=torch.int32, device=dev)
            self.neg_ones = -self.ones
            self.cells = torch.zeros(rows, width, dtype=torch.int32, device=dev)
        ones, cells = self.ones[:c], self.cells[:c]
        key = labels * self.r + self.y
        # The table is kept all-zero between calls: counts are added, read, and subtracted again, which
        # is cheaper than clearing the whole table.
        cells.scatter_add_(1, key, ones)
        per_point = cells.gather(1, key)
        cells.scatter_add_(1, key, self.neg_ones[:c])
        cols = torch.zeros(c, num_slots, dtype=torch.int32, device=dev).scatter_add_(1, labels, ones).long()
        # take: plain table lookups, cheaper than advanced indexing
        stats = (
            self.log.take(per_point.long()).sum(1),
            self.f.take(cols).sum(1),
            per_point.sum(1, dtype=torch.float64),
            (cols * cols).sum(1).double(),
            self.h.take(cols).sum(1) if self.kind == "ami" else None,
        )
        if n_cols >= 2 and self.r >= 2:
            return self._margin_many_clusters(*stats)
        return self.margin(n_cols, *stats)

    def single_cluster(self) -> torch.Tensor:
        n = torch.tensor(float(self.n), dtype=torch.float64, device=self.y.device)
        return self.margin(1, self.sum_f_rows, self.f[self.n], self.sum_sq_rows, n * n, self.h[self.n])

    def candidates(self, slot_of: torch.Tensor, num_slots: int, n_cols: int, cand: torch.Tensor,
                   pt: torch.Tensor, num_cand: int, cand_base: torch.Tensor | None = None) -> torch.Tensor:
        """Margin scores [num_cand] of "base clustering, then cand[e] takes point pt[e] into a new slot".

        ``slot_of`` [B] (or [W, B]: W base clusterings, candidate c using base ``cand_base[c]``) holds slot
        ids < num_slots; each (cand, pt) pair appears once. No base slot may be emptied by a candidate;
        every candidate clustering has ``n_cols`` clusters.
        """
        y, f, h, r = self.y, self.f, self.h, self.r
        b_pts = y.shape[0]
        dev = y.device
        if slot_of.dim() == 1:
            slot_of = slot_of[None, :]
            cand_base = torch.zeros(num_cand, dtype=torch.long, device=dev)
        w = slot_of.shape[0]
        # Each base is a separate copy of the points ("virtual points" base * B + i) with its own slot ids
        # base * num_slots + slot, so one pass handles all bases.
        vslot = (slot_of + torch.arange(w, device=dev)[:, None] * num_slots).flatten()
        vy = y.repeat(w)
        # Order virtual points by (slot, class) and the captured pairs by (candidate, that order): a
        # candidate's captured points of one base cell, or of one base column, are then contiguous runs.
        sorted_cells, perm = torch.sort(vslot * r + vy, stable=True)
        cell_keys, cell_rank, cell_sizes = torch.unique_consecutive(
            sorted_cells, return_inverse=True, return_counts=True
        )
        cell_base = cell_keys // (r * num_slots)
        slot_sorted, y_sorted = vslot[perm], vy[perm]
        cols = torch.bincount(vslot, minlength=w * num_slots)
        zeros = torch.zeros(w, dtype=torch.float64, device=dev)
        base_f_cells = zeros.index_add(0, cell_base, f[cell_sizes])
        base_sq_cells = zeros.index_add(0, cell_base, cell_sizes.double() ** 2)
        base_f_cols = f[cols].view(w, num_slots).sum(1)
        base_sq_cols = (cols.double() ** 2).view(w, num_slots).sum(1)
        base_h = h[cols].view(w, num_slots).sum(1)

        n_virtual = w * b_pts
        order_of = torch.empty_like(perm)
        order_of[perm] = torch.arange(n_virtual, device=dev)
        pair = torch.sort(cand * n_virtual + order_of[cand_base[cand] * b_pts + pt]).values
        cand, pos = pair // n_virtual, pair % n_virtual
        delta = torch.zeros(num_cand, 5, dtype=torch.float64, device=dev)
        # Cells (slot, class) losing p of their n points: f(n - p) - f(n) and (n - p)^2 - n^2.
        rank = cell_rank[pos]
        start, p = _runs(cand * cell_sizes.shape[0] + rank)
        n = cell_sizes[rank[start]]
        delta[:, 0].index_add_(0, cand[start], f[n - p] - f[n])
        delta[:, 1].index_add_(0, cand[start], (p * p - 2 * p * n).double())
        # Columns losing p of their b points.
        col = slot_sorted[pos]
        start, p = _runs(cand * (w * num_slots) + col)
        b = cols[col[start]]
        delta[:, 2].index_add_(0, cand[start], f[b - p] - f[b])
        delta[:, 3].index_add_(0, cand[start], (p * p - 2 * p * b).double())
        delta[:, 4].index_add_(0, cand[start], h[b - p] - h[b])
        # The new column's cells, q points of a class: sum_groups f(q) = sum_points log q, sum q^2 = sum q.
        q_key = cand * r + y_sorted[pos]
        q = torch.bincount(q_key, minlength=num_cand * r)[q_key].double()
        delta[:, 0].index_add_(0, cand, torch.log(q))
        delta[:, 1].index_add_(0, cand, q)
        taken = torch.bincount(cand, minlength=num_cand)
        taken_d = taken.double()
        return self.margin(
            n_cols,
            base_f_cells[cand_base] + delta[:, 0],
            base_f_cols[cand_base] + delta[:, 2] + f[taken],
            base_sq_cells[cand_base] + delta[:, 1],
            base_sq_cols[cand_base] + delta[:, 3] + taken_d * taken_d,
            base_h[cand_base] + delta[:, 4] + h[taken],
        )


def _runs(keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Start index and length of each run of equal consecutive keys."""
    change = torch.ones(keys.shape[0], dtype=torch.bool, device=keys.device)
    change[1:] = keys[1:] != keys[:-1]
    start = torch.nonzero(change).flatten()
    ends = torch.cat([start[1:], torch.tensor([keys.shape[0]], device=keys.device)])
    return start, ends - start
