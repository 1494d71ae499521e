"""Loss-augmented facility-location inference (greedy + PAM), every candidate of a step scored at once.

Song, Jegelka, Rathod, Murphy, "Deep Metric Learning via Facility Location", CVPR 2017, eqs. (4)-(7).
With D the pairwise distances, y the true classes (K of them) and S a set of medoids (cluster slots),

    F(S)        = -sum_i min_{s in S} D[s, i]                                   (facility energy, eq. 4)
    Delta(S)    = 1 - score(y, assignment(S))                                   (structured margin, eq. 5)
    greedy      S <- S + argmax_c F(S + c) + gamma * Delta(S + c),  K times      (eq. 6, Algorithm 1)
    PAM         for each slot k: m_k <- argmax_{j in cluster k} -sum_{i in cluster k} D[i, j]
                                                    + gamma * Delta(S with m_k := j)    (Algorithm 2)
    F~(y)       = sum_classes -min_{j in class} sum_{i in class} D[i, j]         (ground-truth score)

Semantics follow TensorFlow's ``tf.contrib.losses.metric_learning.cluster_loss`` step by step: candidates in
ascending index order, first maximum wins; a point goes to its first nearest medoid and every medoid to its
own slot; PAM takes the clusters once at the start of a pass and sees the slots already updated in that pass.

Speed: a candidate's clustering differs from a *base* clustering only in the points it captures (those it
is nearer to than their base medoid, plus itself). Every partition score is a function of a few sums over
cells and columns of the contingency table (``clusterloss.metrics.partition_scores``), so each candidate's
statistics are the base statistics plus a sparse update over the captured (candidate, point) pairs. There
is no Python loop over candidates or points: only over the K greedy steps and the PAM passes and slot
windows (PAM evaluates up to 32 slots at once speculatively, see :func:`pam_refine`). Greedy candidates
whose energy is more than gamma below the best cannot win (scores lie in [0, 1]) and are not scored.

Small batches take a dense path instead (one dispatch rule, ``candidate_scoring.DENSE_TABLE_LIMIT``):
every candidate's full labeling [C, B] goes through one scatter into a [C, slots x classes] count table,
with no sort, run-length grouping or host sync; at B <= 256 its few fixed-shape ops are cheaper than the
sparse update's many small ones. Both paths score the same clusterings with the same formulas (equal up
to round-off).

The search runs without gradients, in float64 on the distances' device. Its choices are constants for the
loss, exactly as in the original.

This batched tensor search is the path for CUDA (and ``search="tensor"``). On a CPU it is bound by dispatching
small ops, so :func:`facility_location_search` hands CPU tensors to the compiled kernel of
:mod:`clusterloss.losses.facility_search_kernel` (numba), which makes the same choices.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from clusterloss.losses.candidate_scoring import CandidateScorer

MARGIN_TYPES = ("nmi", "ami", "ari", "vmeasure", "const")
SEARCH_CHOICES = ("auto", "compiled", "tensor")
# Objectives within this relative distance of the best count as tied (round-off of different summation
# orders); the first of the tied candidates wins.
TIE_RTOL = 1e-10
# Pruning keeps candidates within gamma of the best energy, with this much extra slack (>> TIE_RTOL).
_PRUNE_RTOL = 1e-8


def pairwise_distances(embeddings: torch.Tensor) -> torch.Tensor:
    """Euclidean distances [B, B] of embeddings [B, D] in the expanded form |a|^2 + |b|^2 - 2ab.

    Squared distances <= 0 (round-off) become exactly 0 with zero gradient; the diagonal is exactly 0.
    """
    sq = (embeddings * embeddings).sum(dim=1)
    d2 = sq[:, None] + sq[None, :] - 2.0 * (embeddings @ embeddings.T)
    nonpositive = d2 <= 0
    root = torch.sqrt(torch.where(nonpositive, torch.ones_like(d2), d2))
    dist = torch.where(nonpositive, torch.zeros_like(d2), root)
    eye = torch.eye(dist.shape[0], dtype=torch.bool, device=dist.device)
    return dist.masked_fill(eye, 0.0)


def assign_to_medoids(dist: torch.Tensor, medoids: torch.Tensor) -> torch.Tensor:
    """Slot of each point [B]: its first nearest medoid, and each medoid its own slot."""
    pred = torch.argmin(dist[medoids], dim=0)
    pred[medoids] = torch.arange(medoids.shape[0], device=dist.device)
    return pred


def ground_truth_facility_score(dist: torch.Tensor, classes: torch.Tensor, num_classes: int) -> torch.Tensor:
    """F~(y) = sum over classes of -min_{j in class} sum_{i in class} D[i, j] (differentiable, ties share)."""
    same_class = classes[:, None] == classes[None, :]
    # O(B^2), where a one-hot [R, B] @ [B, B] product would cost R * B^2 (R ~ B for small classes)
    within = (dist * same_class).sum(dim=0)  # [B]: sum of D[i, j] over the class of j
    best = torch.full((num_classes,), float("inf"), dtype=dist.dtype, device=dist.device)
    return -best.scatter_reduce(0, classes, within, "amin", include_self=False).sum()


@dataclass
class SearchResult:
    greedy_medoids: torch.Tensor  # [K] in pick order
    medoids: torch.Tensor  # [K] after PAM, slot order


def _first_best(totals: torch.Tensor) -> torch.Tensor:
    best = totals.max()
    near = totals >= best - TIE_RTOL * (1.0 + best.abs())
    return torch.argmax(near.to(torch.int8))  # first True


def _greedy_dense(dist: torch.Tensor, scorer: CandidateScorer, k: int, first: torch.Tensor) -> torch.Tensor:
    """Greedy steps 2..K with every point scored as a candidate in fixed-shape dense tensors.

    Candidate c captures the points it is nearer to than their medoid (and itself); chosen medoids are
    masked out of the choice. No pruning, sort or host sync: a handful of ops on [B, B] per step.
    """
    b = dist.shape[0]
    dev = dist.device
    gamma = scorer.gamma
    picks = torch.empty(k, dtype=torch.long, device=dev)
    picks[0] = first
    dmin = dist[first].clone()
    slot = torch.zeros(b, dtype=torch.long, device=dev)
    chosen = torch.zeros(b, dtype=torch.bool, device=dev)
    chosen[first] = True
    eye = torch.eye(b, dtype=torch.bool, device=dev)
    for m in range(1, k):
        captured = (dist < dmin[None, :]) | eye  # a candidate on a medoid (dmin = 0) still takes itself
        labels = torch.where(captured, m, slot[None, :])
        margin = scorer.dense(labels, k, m + 1)
        totals = -torch.minimum(dist, dmin[None, :]).sum(dim=1) + gamma * (1.0 - margin)
        c = _first_best(totals.masked_fill_(chosen, float("-inf"))).view(1)
        # index_select / index_fill_ with the 1-element index tensor: no host sync on CUDA
        slot = labels.index_select(0, c)[0]
        dmin = torch.minimum(dmin, dist.index_select(0, c)[0])
        chosen.index_fill_(0, c, True)
        picks[m : m + 1] = c
    return picks


def greedy_facility_search(dist: torch.Tensor, scorer: CandidateScorer, k: int) -> torch.Tensor:
    """Greedy loss-augmented inference: K medoids [K] in pick order.

    Incremental state: ``cost[c] = sum_i min(dmin_i, D[c, i])`` (F(S + c) = -cost[c]) and the list of
    pairs (c, i) with D[c, i] < dmin_i (the points c would capture). Adding a medoid lowers ``dmin`` only on
    the points it captures, so both are updated on those columns only. Since every score lies in [0, 1], a
    candidate whose energy is more than gamma below the best energy cannot win: only the others are scored.
    """
    b = dist.shape[0]
    dev = dist.device
    gamma = scorer.gamma
    totals = -dist.sum(dim=1) + gamma * (1.0 - scorer.single_cluster())
    first = _first_best(totals)
    if k > 1 and scorer.use_dense(b, k):
        return _greedy_dense(dist, scorer, k, first)
    picks = [first]
    dmin = dist[first].clone()
    slot = torch.zeros(b, dtype=torch.long, device=dev)
    chosen = torch.zeros(b, dtype=torch.bool, device=dev)
    chosen[first] = True
    if k == 1:
        return torch.stack(picks)
    cost = torch.minimum(dist, dmin[None, :]).sum(dim=1)
    pair_c, pair_i = torch.nonzero(dist < dmin[None, :], as_tuple=True)
    local = torch.empty(b, dtype=torch.long, device=dev)
    for m in range(1, k):
        neg = (-cost).masked_fill(chosen, float("-inf"))
        top = neg.max()
        keep = neg >= top - gamma - _PRUNE_RTOL * (1.0 + top.abs())
        cands = torch.nonzero(keep).flatten()
        local[cands] = torch.arange(cands.shape[0], device=dev)
        sel = keep[pair_c]
        # A candidate is forced into its own slot even when it sits on a medoid (dmin = 0).
        forced = cands[dmin[cands] == 0]
        cand = torch.cat([local[pair_c[sel]], local[forced]])
        pt = torch.cat([pair_i[sel], forced])
        margin = scorer.candidates(slot, k, m + 1, cand, pt, cands.shape[0])
        c = cands[_first_best(neg[cands] + gamma * (1.0 - margin))]
        take = torch.zeros(b, dtype=torch.bool, device=dev)
        take[pair_i[pair_c == c]] = True
        take[c] = True
        moved = torch.nonzero(take).flatten()
        cols = dist.index_select(1, moved)  # faster than advanced indexing, same values
        cost -= (torch.minimum(cols, dmin[moved]) - torch.minimum(cols, dist[c, moved])).sum(dim=1)
        slot = torch.where(take, m, slot)
        dmin = torch.where(take, dist[c], dmin)
        chosen[c] = True
        picks.append(c)
        hit = torch.nonzero(take[pair_i]).flatten()  # pairs whose point just moved
        gone = dist[pair_c[hit], pair_i[hit]] >= dmin[pair_i[hit]]
        stay = pair_c != c
        stay[hit[gone]] = False
        pair_c, pair_i = pair_c[stay], pair_i[stay]
    return torch.stack(picks)


def _suffix_first_min(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For each k, min over rows k.. and the first row attaining it; row K is the +inf sentinel."""
    kk, b = rows.shape
    padded = torch.cat([rows, torch.full((1, b), float("inf"), dtype=rows.dtype, device=rows.device)])
    values = torch.cummin(padded.flip(0), dim=0).values.flip(0)
    # Row s starts a new suffix minimum iff it attains the suffix minimum from s; the first attaining row
    # of the suffix from k is the first such "record" row at or after k.
    idx = torch.arange(kk + 1, device=rows.device)[:, None].expand(kk + 1, b)
    record_idx = torch.where(padded == values, idx, torch.full_like(idx, kk))
    first = torch.cummin(record_idx.flip(0), dim=0).values.flip(0)
    return values, first


def _segment_first_best(totals: torch.Tensor, segment: torch.Tensor, num_segments: int) -> torch.Tensor:
    """Per segment (sorted, non-empty), the position of its first near-best total (as ``_first_best``)."""
    best = torch.full((num_segments,), float("-inf"), dtype=totals.dtype, device=totals.device)
    best = best.scatter_reduce(0, segment, totals, "amax")
    near = totals >= (best - TIE_RTOL * (1.0 + best.abs()))[segment]
    pos = torch.arange(totals.shape[0], device=totals.device)
    first = torch.full((num_segments,), totals.shape[0], dtype=torch.long, device=totals.device)
    return first.scatter_reduce(0, segment[near], pos[near], "amin")


def _running_first_min(start_val, start_arg, rows, first_slot):
    """Prefix minima [W + 1, B] of ``start`` then ``rows`` (slots first_slot, first_slot + 1, ...),
    with the first slot attaining each minimum (earlier slots win ties)."""
    stacked = torch.cat([start_val[None, :], rows])
    values = torch.cummin(stacked, dim=0).values
    steps = torch.arange(stacked.shape[0], device=rows.device)[:, None]
    # The first attaining position is the last position at which the running minimum strictly dropped.
    dropped = torch.ones_like(stacked, dtype=torch.bool)
    dropped[1:] = stacked[1:] < values[:-1]
    last_drop = torch.cummax(torch.where(dropped, steps, torch.zeros_like(steps)), dim=0).values
    args = torch.where(last_drop == 0, start_arg[None, :], first_slot + last_drop - 1)
    return values, args


def pam_refine(
    dist: torch.Tensor, scorer: CandidateScorer, medoids: torch.Tensor, iterations: int, window: int = 32
) -> torch.Tensor:
    """PAM swaps (Algorithm 2 of the paper): ``iterations`` passes over the slots.

    Slot s sees the slots before it already updated in this pass. The slots are evaluated speculatively
    ``window`` at a time as if no earlier slot of the window changes its medoid; the choices are exact up
    to and including the first slot that does change, and the next window starts after it.
    Like the original there is no convergence test on the objective; a pass that changes no medoid is a
    fixed point, so the remaining passes (which would repeat it exactly) are skipped.
    """
    k = medoids.shape[0]
    medoids = medoids.clone()
    if k == 1:  # one cluster: the margin is the same for every candidate
        for _ in range(iterations):
            medoids[0] = _first_best(-dist.sum(dim=0))
        return medoids
    b = dist.shape[0]
    dev = dist.device
    gamma = scorer.gamma
    slots = torch.arange(k, device=dev)
    for _ in range(iterations):
        start_medoids = medoids.clone()
        pred = assign_to_medoids(dist, medoids)
        order = torch.sort(pred, stable=True).indices
        bounds = [0] + torch.cumsum(torch.bincount(pred, minlength=k), 0).tolist()
        # slots after s are not updated yet
        suffix_val, suffix_arg = _suffix_first_min(dist.index_select(0, medoids))
        prefix_val = torch.full((b,), float("inf"), dtype=dist.dtype, device=dev)
        prefix_arg = torch.full((b,), k, dtype=torch.long, device=dev)
        s0 = 0
        while s0 < k:
            s1 = min(k, s0 + window)
            w = s1 - s0
            window_rows = dist.index_select(0, medoids[s0:s1])
            run_val, run_arg = _running_first_min(prefix_val, prefix_arg, window_rows, s0)
            use_prefix = run_val[:w] <= suffix_val[s0 + 1 : s1 + 1]
            other_val = torch.where(use_prefix, run_val[:w], suffix_val[s0 + 1 : s1 + 1])  # [W, B]
            other_slot = torch.where(use_prefix, run_arg[:w], suffix_arg[s0 + 1 : s1 + 1])
            # The other slots' medoids stay in their own slots.
            forced = torch.zeros(w, b, dtype=torch.bool, device=dev)
            forced[:, medoids] = True
            forced[torch.arange(w, device=dev), medoids[s0:s1]] = False
            medoid_slot = torch.zeros(b, dtype=torch.long, device=dev)
            medoid_slot[medoids] = slots
            other_slot = torch.where(forced, medoid_slot[None, :], other_slot)
            cands = order[bounds[s0] : bounds[s1]]  # members of the window's clusters, by slot
            cand_slot = pred[cands]
            cand_w = cand_slot - s0
            rows = dist.index_select(0, cands)
            val = other_val[cand_w]
            captured = (rows < val) | ((rows == val) & (other_slot[cand_w] > cand_slot[:, None]))
            captured &= ~forced[cand_w]
            captured[torch.arange(cands.shape[0], device=dev), cands] = True
            if scorer.use_dense(cands.shape[0], k):
                labels = torch.where(captured, cand_slot[:, None], other_slot[cand_w])
                margin = scorer.dense(labels, k, k)
            else:
                cand, pt = torch.nonzero(captured, as_tuple=True)
                margin = scorer.candidates(other_slot, k, k, cand, pt, cands.shape[0], cand_base=cand_w)
            # -sum_{i in cluster} D[i, j] for each member j of the cluster (clusters from the pass start)
            inside = pred[:, None] == cand_slot[None, :]
            energy = -(dist.index_select(1, cands) * inside).sum(dim=0)
            choice = cands[_segment_first_best(energy + gamma * (1.0 - margin), cand_w, w)]
            changed = torch.nonzero(choice != medoids[s0:s1]).flatten().tolist()
            last = s0 + changed[0] if changed else s1 - 1  # choices up to here are exact
            medoids[s0 : last + 1] = choice[: last + 1 - s0]
            if changed:
                step = last - s0 + 1
                accepted = dist.index_select(0, medoids[s0 : last + 1])
                run_val, run_arg = _running_first_min(prefix_val, prefix_arg, accepted, s0)
            else:
                step = w
            prefix_val, prefix_arg = run_val[step], run_arg[step]
            s0 = last + 1
        if torch.equal(medoids, start_medoids):
            break  # a pass is a deterministic function of its start: later passes would repeat this one
    return medoids


@functools.lru_cache(maxsize=1)
def compiled_search_available() -> bool:
    """Whether the compiled CPU search can be used here: numba and the kernel module import (checked once
    per process; numba refuses to import a kernel it has nowhere to cache — set ``NUMBA_CACHE_DIR``)."""
    try:
        importlib.import_module("clusterloss.losses.facility_search_kernel")
    except (ImportError, RuntimeError) as err:
        if importlib.util.find_spec("numba") is not None:
            warnings.warn(f"numba is installed but the compiled search does not load ({err}); the "
                          "facility-location loss uses the slower tensor search on CPU", RuntimeWarning,
                          stacklevel=2)
        return False
    return True


def _use_compiled(search: str, device: torch.device) -> bool:
    if search not in SEARCH_CHOICES:
        raise ValueError(f"unknown search {search!r}; choose one of {SEARCH_CHOICES}")
    if search == "tensor":
        return False
    if search == "compiled":
        if device.type != "cpu":
            raise ValueError(f"search='compiled' runs on CPU tensors only, got {device.type}; use 'auto'")
        if not compiled_search_available():
            raise ValueError("search='compiled' needs numba: pip install numba (or use search='tensor')")
        return True
    return device.type == "cpu" and compiled_search_available()


def _compiled_search(dist, scorer: CandidateScorer, num_classes: int, pam_iterations: int) -> SearchResult:
    from clusterloss.losses import facility_search_kernel as kernel

    d = dist.contiguous().numpy()
    d_t = np.ascontiguousarray(d.T)
    args = (
        scorer.y.numpy(), num_classes, kernel.KIND_CODES[scorer.kind], scorer.gamma, scorer.round32,
        scorer.f.numpy(), scorer.h.numpy(), float(scorer.sum_f_rows), float(scorer.sum_sq_rows),
    )
    greedy = kernel.greedy_search(d, d_t, *args, TIE_RTOL, _PRUNE_RTOL)
    if pam_iterations:
        final = kernel.pam_refine(d, d_t, *args, greedy, pam_iterations, TIE_RTOL)  # a new array
    else:
        final = greedy.copy()  # the two results must not share memory
    return SearchResult(greedy_medoids=torch.from_numpy(greedy), medoids=torch.from_numpy(final))


def facility_location_search(
    dist: torch.Tensor, classes: torch.Tensor, num_classes: int, margin_type: str, gamma: float,
    pam_iterations: int, round32: bool, search: str = "auto",
) -> SearchResult:
    """Greedy loss-augmented medoids, then PAM; ``dist`` [B, B] detached, ``classes`` [B] in 0..K-1.

    ``search``: ``"auto"`` (the compiled kernel for CPU tensors when numba is installed, else the batched
    tensor search), ``"compiled"`` or ``"tensor"``. Both make the same choices.
    """
    if margin_type not in MARGIN_TYPES:
        raise ValueError(f"unknown margin_type {margin_type!r}; choose one of {MARGIN_TYPES}")
    dist = dist.detach().to(torch.float64)
    scorer = CandidateScorer(classes, num_classes, margin_type, float(gamma), round32)
    if _use_compiled(search, dist.device):
        return _compiled_search(dist, scorer, num_classes, pam_iterations)
    greedy = greedy_facility_search(dist, scorer, num_classes)
    final = pam_refine(dist, scorer, greedy, pam_iterations) if pam_iterations > 0 else greedy.clone()
    return SearchResult(greedy_medoids=greedy, medoids=final)
