"""Brute-force NumPy + scikit-learn facility-location loss, written from the issue's description.

One candidate at a time, every candidate clustering scored by scikit-learn: slow and obviously right.
It is the test oracle for ``clusterloss.losses.facility_location`` and the baseline of
``benchmarks/loss_speed.py`` (one copy, imported by both; the benchmark adds tests/losses to sys.path).

Ties: a candidate wins if its objective is within ``TIE_RTOL * (1 + |best|)`` of the best and no earlier
candidate is; this only makes round-off-level differences (different summation orders) count as ties.
"""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm

TIE_RTOL = 1e-10


def pairwise_distances(x: np.ndarray) -> np.ndarray:
    """Euclidean distances via |a|^2 + |b|^2 - 2ab, clamped at 0, zero diagonal."""
    x = np.asarray(x, dtype=np.float64)
    sq = (x * x).sum(1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * x @ x.T, 0.0)
    d = np.where(d2 <= 0, 0.0, np.sqrt(np.where(d2 <= 0, 1.0, d2)))
    np.fill_diagonal(d, 0.0)
    return d


def _canonical(labels: np.ndarray) -> np.ndarray:
    seen: dict[int, int] = {}
    return np.array([seen.setdefault(int(v), len(seen)) for v in labels])


def margin_score(labels: np.ndarray, pred: np.ndarray, kind: str) -> float:
    if kind == "nmi":
        return skm.normalized_mutual_info_score(labels, pred)
    if kind == "ami":
        return max(0.0, skm.adjusted_mutual_info_score(labels, pred))
    if kind == "ari":
        return max(0.0, skm.adjusted_rand_score(labels, pred))
    if kind == "vmeasure":
        return max(0.0, skm.v_measure_score(labels, pred))
    if kind == "const":
        return float(np.array_equal(_canonical(labels), _canonical(pred)))
    raise ValueError(kind)


def assign(d: np.ndarray, medoids: list[int]) -> np.ndarray:
    """Each point to the first nearest medoid; each medoid to its own slot."""
    pred = np.argmin(d[medoids], axis=0)
    for slot, m in enumerate(medoids):
        pred[m] = slot
    return pred


def _first_max(values: list[float]) -> int:
    v = np.asarray(values)
    best = v.max()
    return int(np.nonzero(v >= best - TIE_RTOL * (1.0 + abs(best)))[0][0])


def greedy(d, labels, k, gamma, kind) -> list[int]:
    chosen: list[int] = []
    for _ in range(k):
        cands = [c for c in range(d.shape[0]) if c not in chosen]
        totals = []
        for c in cands:
            trial = chosen + [c]
            energy = -d[trial].min(axis=0).sum()
            totals.append(energy + gamma * (1.0 - margin_score(labels, assign(d, trial), kind)))
        chosen.append(cands[_first_max(totals)])
    return chosen


def pam(d, labels, chosen, gamma, kind, iterations) -> list[int]:
    chosen = list(chosen)
    for _ in range(iterations):
        pred = assign(d, chosen)
        for slot in range(len(chosen)):
            members = np.nonzero(pred == slot)[0]
            totals = []
            for j in members:
                trial = list(chosen)
                trial[slot] = int(j)
                energy = -d[members][:, j].sum()
                totals.append(energy + gamma * (1.0 - margin_score(labels, assign(d, trial), kind)))
            chosen[slot] = int(members[_first_max(totals)])
    return chosen


def _tie_split_min_weights(rows: np.ndarray) -> np.ndarray:
    """d(min over axis 0)/d(rows): ties share the gradient equally (as tf.reduce_min)."""
    hit = rows == rows.min(axis=0, keepdims=True)
    return hit / hit.sum(axis=0, keepdims=True)


def facility_location_loss(x, labels, gamma=1.0, kind="nmi", pam_iterations=5) -> dict:
    """Loss, its gradient wrt ``x`` and the choices, for embeddings ``x`` [B, D] and labels [B]."""
    x = np.asarray(x, dtype=np.float64)
    labels = np.asarray(labels).reshape(-1)
    d = pairwise_distances(x)
    classes = np.unique(labels)
    greedy_medoids = greedy(d, labels, len(classes), gamma, kind)
    medoids = pam(d, labels, greedy_medoids, gamma, kind, pam_iterations)
    pred = assign(d, medoids)
    score = margin_score(labels, pred, kind)
    score_pred = -d[medoids].min(axis=0).sum()
    grad_d = np.zeros_like(d)
    grad_d[medoids] -= _tie_split_min_weights(d[medoids])
    score_gt = 0.0
    for c in classes:
        members = np.nonzero(labels == c)[0]
        sums = d[np.ix_(members, members)].sum(axis=0)
        score_gt -= sums.min()
        w = _tie_split_min_weights(sums[:, None])[:, 0]
        grad_d[np.ix_(members, members)] += w[None, :]  # d(-F_gt) = +d(min of column sums)
    loss = score_pred + gamma * (1.0 - score) - score_gt
    if loss < 0:
        grad_d[:] = 0.0
    # D_ij = sqrt(|x_i|^2 + |x_j|^2 - 2 x_i.x_j): dD_ij/dx_i = (x_i - x_j) / D_ij where D_ij > 0 off-diagonal.
    live = d > 0
    w = np.where(live, grad_d / np.where(live, d, 1.0), 0.0)
    w = w + w.T
    grad_x = w.sum(axis=1)[:, None] * x - w @ x
    return {
        "loss": max(loss, 0.0),
        "grad": grad_x,
        "medoids": medoids,
        "greedy_medoids": greedy_medoids,
        "assignment": pred,
        "score_pred": score_pred,
        "score_gt": score_gt,
        "clustering_score": score,
    }
