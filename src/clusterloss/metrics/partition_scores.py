"""Agreement scores of two labelings of the same points, in pure torch, equal to scikit-learn's.

Every score here is a function of a handful of *sufficient statistics* of the contingency table
``n[r, s]`` (points with true class ``r`` and predicted cluster ``s``), its row sums ``a[r]`` and column
sums ``b[s]``::

    f(x) = x log x (f(0) = 0)
    sum_f_cells = sum_rs f(n_rs)     sum_f_rows = sum_r f(a_r)     sum_f_cols = sum_s f(b_s)
    sum_sq_cells = sum_rs n_rs^2     sum_sq_rows = sum_r a_r^2     sum_sq_cols = sum_s b_s^2
    emi = sum_s h(b_s)  (expected mutual information; h depends on the row sums, see below)

    MI        = (sum_f_cells - sum_f_rows - sum_f_cols) / N + log N
    H(true)   = log N - sum_f_rows / N,   H(pred) = log N - sum_f_cols / N
    NMI       = MI / ((H(true) + H(pred)) / 2)                      (arithmetic normalization)
    AMI       = (MI - EMI) / ((H(true) + H(pred)) / 2 - EMI)
    ARI       = 2 (tp tn - fn fp) / ((tp + fn)(fn + tn) + (tp + fp)(fp + tn)),
                tp = sum_sq_cells - N, fp = sum_sq_cols - sum_sq_cells, fn = sum_sq_rows - sum_sq_cells,
                tn = N^2 - tp - fp - fn - N
    V-measure = 2 h c / (h + c),  h = MI / H(true),  c = MI / H(pred)

The two labelings are the same partition (up to relabeling) exactly when
``sum_sq_cells == sum_sq_rows == sum_sq_cols`` (each row and each column has a single non-empty cell).

This decomposition is what makes the facility-location loss fast: a candidate clustering that differs from
the current one in a few points changes only a few cells and columns, so its statistics are the current
ones plus a sparse update (see ``clusterloss.losses.facility_search``). :func:`scores_from_statistics`
is shared by both paths, so the loss and these functions agree bit for bit on the formulas.

Degenerate cases follow scikit-learn 1.9: both labelings a single cluster -> NMI = AMI = 1; a single
cluster on one side -> MI = EMI = 0; identical partitions -> AMI = 1 (scikit-learn reaches 1 up to
round-off; we return it exactly, which also fixes the 0/0 of all-singleton labelings).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

PARTITION_SCORE_KINDS = ("nmi", "ami", "ari", "vmeasure", "const")
_EPS64 = float(np.finfo(np.float64).eps)
# Upper bound on the elements of one intermediate tensor of the EMI table (keeps memory ~100 MB).
_EMI_CHUNK_ELEMENTS = 1 << 22


def _as_label_tensor(labels: torch.Tensor | np.ndarray | Sequence[int], name: str) -> torch.Tensor:
    if isinstance(labels, torch.Tensor):
        t = labels
    else:
        arr = np.asarray(labels)
        if arr.dtype == object or not (np.issubdtype(arr.dtype, np.integer) or arr.size == 0):
            raise ValueError(f"{name} must hold integer ids, got dtype {arr.dtype}")
        t = torch.from_numpy(arr.astype(np.int64, copy=False))
    if t.is_floating_point() or t.is_complex():
        raise ValueError(f"{name} must hold integer ids, got dtype {t.dtype}; cast with .long()")
    if t.dim() == 2 and t.shape[1] == 1:
        t = t[:, 0]
    if t.dim() != 1:
        raise ValueError(f"{name} must be 1-D (or [N, 1]), got shape {tuple(t.shape)}")
    return t.long()


def _check_pair(labels_true, labels_pred) -> tuple[torch.Tensor, torch.Tensor]:
    t = _as_label_tensor(labels_true, "labels_true")
    p = _as_label_tensor(labels_pred, "labels_pred").to(t.device)
    if t.shape[0] != p.shape[0]:
        raise ValueError(f"labels_true and labels_pred differ in length: {t.shape[0]} vs {p.shape[0]}")
    return t, p


def xlogx(x: torch.Tensor) -> torch.Tensor:
    """Elementwise ``x log x`` with ``0 log 0 = 0`` (float64)."""
    x = x.to(torch.float64)
    return torch.special.xlogy(x, x)


def expected_mutual_info_table(
    row_sizes: torch.Tensor, n_samples: int, column_sizes: torch.Tensor
) -> torch.Tensor:
    """Per-column contribution ``h(b)`` to the expected mutual information, for fixed row sizes.

    EMI (Vinh, Epps, Bailey 2010, eq. 24a) under the hypergeometric model is a sum over columns::

        EMI = sum_s h(b_s),
        h(b) = sum_r sum_{k=max(1, a_r+b-N)}^{min(a_r, b)} (k/N) log(N k / (a_r b))
               * a_r! b! (N-a_r)! (N-b)! / (N! k! (a_r-k)! (b-k)! (N-a_r-b+k)!)

    Args:
        row_sizes: [R] int, the class sizes ``a_r`` (sum = ``n_samples``).
        n_samples: N.
        column_sizes: [S] int, the column sizes ``b`` to tabulate (0 allowed: h(0) = 0).

    Returns:
        [S] float64 ``h(b)`` on the device of ``column_sizes``. Distinct row and column sizes are
        computed once, in chunks, so memory stays bounded even for N = 1e5 and thousands of classes.
    """
    device = column_sizes.device
    b_all = column_sizes.to(torch.int64)
    out = torch.zeros(b_all.shape[0], dtype=torch.float64, device=device)
    a_vals, a_mult = torch.unique(row_sizes.to(device=device, dtype=torch.int64), return_counts=True)
    b_vals, b_inv = torch.unique(b_all, return_inverse=True)
    keep = b_vals > 0
    if n_samples <= 0 or a_vals.numel() == 0 or not bool(keep.any()):
        return out
    n = float(n_samples)
    a = a_vals.to(torch.float64)[:, None, None]  # [A, 1, 1]
    w = a_mult.to(torch.float64)[:, None]
    lg_n1 = math.lgamma(n + 1)
    h_vals = torch.zeros(b_vals.shape[0], dtype=torch.float64, device=device)
    a_max = int(a_vals.max())
    b_pos = torch.nonzero(keep).flatten()
    # The k-range of a (row, column) pair is at most min(a, b) long; chunk columns to bound the tensor.
    per_col = a_vals.numel() * max(1, a_max)
    chunk = max(1, _EMI_CHUNK_ELEMENTS // per_col)
    for start in range(0, b_pos.numel(), chunk):
        pos = b_pos[start : start + chunk]
        b = b_vals[pos].to(torch.float64)[None, :, None]  # [1, Bc, 1]
        lo = torch.clamp(a + b - n, min=1.0)
        hi = torch.minimum(a, b)
        span = int((hi - lo).max().item()) + 1
        k = lo + torch.arange(span, dtype=torch.float64, device=device)[None, None, :]
        valid = k <= hi
        k = torch.where(valid, k, lo)  # keep lgamma arguments positive on padded entries
        gln = (
            torch.lgamma(a + 1) + torch.lgamma(b + 1) + torch.lgamma(n - a + 1) + torch.lgamma(n - b + 1)
            - lg_n1 - torch.lgamma(k + 1) - torch.lgamma(a - k + 1) - torch.lgamma(b - k + 1)
            - torch.lgamma(n - a - b + k + 1)
        )
        term = (k / n) * (math.log(n) + torch.log(k) - torch.log(a) - torch.log(b)) * torch.exp(gln)
        term = torch.where(valid, term, torch.zeros((), dtype=torch.float64, device=device))
        h_vals[pos] = (term.sum(dim=2) * w).sum(dim=0)
    return h_vals[b_inv]


def contingency_statistics(labels_true, labels_pred, with_emi: bool = True) -> dict[str, torch.Tensor | int]:
    """Sufficient statistics of the contingency table of two labelings (see the module docstring).

    Only non-empty cells are formed (one sort of the N cell keys), so N = 1e5 singletons are cheap.
    ``with_emi=False`` skips the expected mutual information (only AMI needs it; ``emi`` is then None).
    """
    t, p = _check_pair(labels_true, labels_pred)
    n = t.shape[0]
    _, ti = torch.unique(t, return_inverse=True)
    _, pi = torch.unique(p, return_inverse=True)
    rows = torch.bincount(ti) if n else torch.zeros(0, dtype=torch.int64, device=t.device)
    cols = torch.bincount(pi) if n else torch.zeros(0, dtype=torch.int64, device=t.device)
    n_cols = cols.shape[0]
    _, cells = torch.unique(ti * max(n_cols, 1) + pi, return_counts=True)
    if not with_emi:
        emi = None
    elif rows.shape[0] > 1 and n_cols > 1:
        emi = expected_mutual_info_table(rows, n, cols).sum()
    else:
        emi = torch.zeros((), dtype=torch.float64, device=t.device)
    f64 = torch.float64
    return {
        "n": n,
        "n_rows": rows.shape[0],
        "n_cols": n_cols,
        "sum_f_cells": xlogx(cells).sum(),
        "sum_f_rows": xlogx(rows).sum(),
        "sum_f_cols": xlogx(cols).sum(),
        "sum_sq_cells": (cells.to(f64) ** 2).sum(),
        "sum_sq_rows": (rows.to(f64) ** 2).sum(),
        "sum_sq_cols": (cols.to(f64) ** 2).sum(),
        "emi": emi,
    }


def scores_from_statistics(
    kind: str,
    n: int,
    n_rows: int,
    n_cols: torch.Tensor | int,
    sum_f_cells: torch.Tensor,
    sum_f_rows: torch.Tensor | float,
    sum_f_cols: torch.Tensor,
    sum_sq_cells: torch.Tensor,
    sum_sq_rows: torch.Tensor | float,
    sum_sq_cols: torch.Tensor,
    emi: torch.Tensor | None = None,
) -> torch.Tensor:
    """Score(s) of ``kind`` from contingency statistics; every argument may be a batch (broadcast).

    Returns float64 scores exactly as scikit-learn defines them (not clamped). ``emi`` is needed for
    ``ami`` only. ``n_rows`` (classes) is a python int; ``n_cols`` may vary per candidate.
    """
    if kind not in PARTITION_SCORE_KINDS:
        raise ValueError(f"unknown partition score kind {kind!r}; choose one of {PARTITION_SCORE_KINDS}")
    f64 = torch.float64
    sum_f_cells = torch.as_tensor(sum_f_cells, dtype=f64)
    dev = sum_f_cells.device
    sum_f_cols = torch.as_tensor(sum_f_cols, dtype=f64, device=dev)
    sum_sq_cells = torch.as_tensor(sum_sq_cells, dtype=f64, device=dev)
    sum_sq_cols = torch.as_tensor(sum_sq_cols, dtype=f64, device=dev)
    sum_sq_rows = torch.as_tensor(sum_sq_rows, dtype=f64, device=dev)
    n_cols = torch.as_tensor(n_cols, device=dev)
    shape = torch.broadcast_shapes(sum_f_cells.shape, sum_f_cols.shape, sum_sq_cells.shape, n_cols.shape)
    one = torch.ones(shape, dtype=f64, device=dev)
    zero = torch.zeros(shape, dtype=f64, device=dev)
    if n == 0:
        return one  # scikit-learn: empty labelings agree perfectly
    identical = (sum_sq_cells == sum_sq_rows) & (sum_sq_cells == sum_sq_cols)
    if kind == "const":
        return torch.where(identical, one, zero)
    if kind == "ari":
        nn = float(n)
        tp = sum_sq_cells - nn
        fp = sum_sq_cols - sum_sq_cells
        fn = sum_sq_rows - sum_sq_cells
        tn = nn * nn - fp - fn - sum_sq_cells
        den = (tp + fn) * (fn + tn) + (tp + fp) * (fp + tn)
        ari = 2.0 * (tp * tn - fn * fp) / torch.where(den == 0, one, den)
        return torch.where((fn == 0) & (fp == 0), one, ari)
    log_n = math.log(n)
    rows_single = n_rows == 1
    cols_single = n_cols == 1
    h_true = zero if rows_single else log_n - torch.as_tensor(sum_f_rows, dtype=f64, device=dev) / n + zero
    h_pred = torch.where(cols_single, zero, log_n - sum_f_cols / n)
    mi = (sum_f_cells - torch.as_tensor(sum_f_rows, dtype=f64, device=dev) - sum_f_cols) / n + log_n
    mi = torch.where(cols_single | rows_single, zero, mi.clamp_min(0.0))
    both_single = cols_single & rows_single
    if kind == "vmeasure":
        homogeneity = one if rows_single else mi / torch.where(h_true == 0, one, h_true)
        completeness = torch.where(h_pred == 0, one, mi / torch.where(h_pred == 0, one, h_pred))
        hc = homogeneity + completeness
        return torch.where(hc == 0, zero, 2.0 * homogeneity * completeness / torch.where(hc == 0, one, hc))
    normalizer = (h_true + h_pred) / 2.0
    if kind == "nmi":
        nmi = mi / torch.where(normalizer == 0, one, normalizer)
        return torch.where(both_single, one, torch.where(mi == 0, zero, nmi))
    # ami
    if emi is None:
        raise ValueError("kind='ami' needs the expected mutual information (emi)")
    emi = torch.where(cols_single | rows_single, zero, torch.as_tensor(emi, dtype=f64, device=dev) + zero)
    den = normalizer - emi
    den = torch.where(den < 0, torch.clamp(den, max=-_EPS64), torch.clamp(den, min=_EPS64))
    ami = (mi - emi) / den
    return torch.where(both_single | identical, one, ami)


def _score(labels_true, labels_pred, kind: str) -> float:
    s = contingency_statistics(labels_true, labels_pred)
    return float(scores_from_statistics(kind, **s))


def normalized_mutual_info(labels_true, labels_pred) -> float:
    """NMI with arithmetic normalization (scikit-learn's default), in [0, 1]."""
    return _score(labels_true, labels_pred, "nmi")


def adjusted_mutual_info(labels_true, labels_pred) -> float:
    """AMI (arithmetic normalization, hypergeometric expected MI), as ``adjusted_mutual_info_score``."""
    return _score(labels_true, labels_pred, "ami")


def adjusted_rand_index(labels_true, labels_pred) -> float:
    """ARI (Hubert & Arabie 1985) from pair counts, as ``adjusted_rand_score``."""
    return _score(labels_true, labels_pred, "ari")


def v_measure(labels_true, labels_pred) -> float:
    """V-measure with beta = 1 (harmonic mean of homogeneity and completeness)."""
    return _score(labels_true, labels_pred, "vmeasure")


def partitions_equal(labels_true, labels_pred) -> bool:
    """True when both labelings define the same partition, whatever the ids."""
    return _score(labels_true, labels_pred, "const") == 1.0


def partition_score(labels_true, labels_pred, kind: str) -> float:
    """One of ``nmi``, ``ami``, ``ari``, ``vmeasure``, ``const`` (1.0 if the partitions are equal)."""
    if kind not in PARTITION_SCORE_KINDS:
        raise ValueError(f"unknown partition score kind {kind!r}; choose one of {PARTITION_SCORE_KINDS}")
    return _score(labels_true, labels_pred, kind)
