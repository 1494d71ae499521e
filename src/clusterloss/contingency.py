"""Agreement of two labelings from their contingency table: NMI, AMI, ARI, V-measure, partition equality.

The one implementation of these formulas, compiled with numba: the facility-location search scores its
candidate clusterings with :func:`score_from_statistics` (``clusterloss.losses.facility_search``) and
evaluation calls it through the array wrappers of ``clusterloss.metrics.partition_scores``. Every score is a
function of a handful of *sufficient statistics* of the contingency table ``n[r, s]`` (points of true
class ``r`` in predicted cluster ``s``), its row sums ``a[r]`` and column sums ``b[s]``::

    f(x) = x log x (f(0) = 0)
    sum_f_cells = sum_rs f(n_rs)     sum_f_rows = sum_r f(a_r)     sum_f_cols = sum_s f(b_s)
    sum_sq_cells = sum_rs n_rs^2     sum_sq_rows = sum_r a_r^2     sum_sq_cols = sum_s b_s^2
    emi = sum_s h(b_s)  (expected mutual information; h depends on the row sums, see emi_table)

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
A clustering that differs from another in a few points changes only a few cells and columns, so the search
updates these sums instead of rebuilding the table.

Degenerate cases follow scikit-learn 1.9: both labelings a single cluster -> NMI = AMI = 1; a single
cluster on one side -> MI = EMI = 0; identical partitions -> AMI = 1 (scikit-learn reaches 1 up to
round-off; we return it exactly, which also fixes the 0/0 of all-singleton labelings); empty labelings -> 1.

Part of the bottom layer (with ``clusterloss.utils``): imports nothing else from ``clusterloss``.
"""

from __future__ import annotations

import math

import numpy as np

from clusterloss.utils.compiled import jit

# The five scores, by name (the loss's ``margin_type`` and evaluation's ``kind``) and by code (numba).
SCORE_KINDS = ("nmi", "ami", "ari", "vmeasure", "const")
KIND_CODES = {name: code for code, name in enumerate(SCORE_KINDS)}
NMI, AMI, ARI, VMEASURE, CONST = range(5)
_EPS64 = float(np.finfo(np.float64).eps)  # AMI's denominator floor, as scikit-learn's
_DENSE_CELLS = 1 << 22  # contingency tables up to this many cells are counted densely (16 MB of int32)


@jit
def xlogx_table(n):
    """``f[x] = x log x`` for x = 0..n ([n + 1] float64, f[0] = 0)."""
    f = np.zeros(n + 1)
    for x in range(1, n + 1):
        f[x] = x * math.log(x)
    return f


@jit
def emi_table(row_sizes, n, column_sizes):
    """Per-column contribution ``h(b)`` to the expected mutual information, for fixed row sizes.

    EMI (Vinh, Epps, Bailey 2010, eq. 24a) under the hypergeometric model is a sum over columns::

        EMI = sum_s h(b_s),
        h(b) = sum_r sum_{k=max(1, a_r+b-N)}^{min(a_r, b)} (k/N) log(N k / (a_r b))
               * a_r! b! (N-a_r)! (N-b)! / (N! k! (a_r-k)! (b-k)! (N-a_r-b+k)!)

    ``row_sizes`` [R] int (the class sizes a_r, sum N), ``column_sizes`` [S] int (0 allowed: h(0) = 0);
    returns [S] float64. Each distinct row size is summed once and weighted by how many rows have it, and
    each distinct column size is computed once.
    """
    out = np.zeros(column_sizes.shape[0])
    if n <= 0 or row_sizes.shape[0] == 0:
        return out
    a_sorted = np.sort(row_sizes)
    a_vals = np.empty(a_sorted.shape[0], np.int64)
    a_mult = np.zeros(a_sorted.shape[0], np.int64)
    n_a = 0
    for i in range(a_sorted.shape[0]):
        if n_a == 0 or a_vals[n_a - 1] != a_sorted[i]:
            a_vals[n_a] = a_sorted[i]
            n_a += 1
        a_mult[n_a - 1] += 1
    nf = float(n)
    lg_n1 = math.lgamma(nf + 1)
    log_n = math.log(nf)
    done = np.zeros(n + 1, np.bool_)  # each distinct column size is computed once
    memo = np.zeros(n + 1)
    for s in range(column_sizes.shape[0]):
        size = column_sizes[s]
        if size <= 0:
            continue
        if done[size]:
            out[s] = memo[size]
            continue
        b = float(size)
        total = 0.0
        for t in range(n_a):
            a = float(a_vals[t])
            lo = max(1.0, a + b - nf)
            hi = min(a, b)
            fixed = (
                math.lgamma(a + 1) + math.lgamma(b + 1) + math.lgamma(nf - a + 1) + math.lgamma(nf - b + 1)
            )
            part = 0.0
            k = lo
            while k <= hi:
                gln = (
                    fixed
                    - lg_n1
                    - math.lgamma(k + 1)
                    - math.lgamma(a - k + 1)
                    - math.lgamma(b - k + 1)
                    - math.lgamma(nf - a - b + k + 1)
                )
                part += (k / nf) * (log_n + math.log(k) - math.log(a) - math.log(b)) * math.exp(gln)
                k += 1.0
            total += part * a_mult[t]
        done[size] = True
        memo[size] = total
        out[s] = total
    return out


@jit
def score_from_statistics(
    kind, n, n_rows, n_cols, sum_f_cells, sum_f_rows, sum_f_cols, sum_sq_cells, sum_sq_rows, sum_sq_cols, emi
):
    """The score of ``kind`` (a code: NMI, AMI, ARI, VMEASURE, CONST) from the statistics, as scikit-learn
    defines it (not clamped: ARI and AMI can be negative). ``emi`` is used by AMI only."""
    if n == 0:
        return 1.0  # scikit-learn: empty labelings agree perfectly
    identical = sum_sq_cells == sum_sq_rows and sum_sq_cells == sum_sq_cols
    if kind == CONST:
        return 1.0 if identical else 0.0
    if kind == ARI:
        nn = float(n)
        tp = sum_sq_cells - nn
        fp = sum_sq_cols - sum_sq_cells
        fn = sum_sq_rows - sum_sq_cells
        tn = nn * nn - fp - fn - sum_sq_cells
        den = (tp + fn) * (fn + tn) + (tp + fp) * (fp + tn)
        if fn == 0 and fp == 0:
            return 1.0
        return 2.0 * (tp * tn - fn * fp) / (1.0 if den == 0 else den)
    log_n = math.log(n)
    rows_single = n_rows == 1
    cols_single = n_cols == 1
    h_true = 0.0 if rows_single else log_n - sum_f_rows / n
    h_pred = 0.0 if cols_single else log_n - sum_f_cols / n
    mi = 0.0
    if not (rows_single or cols_single):
        mi = max((sum_f_cells - sum_f_rows - sum_f_cols) / n + log_n, 0.0)
    if kind == VMEASURE:
        homogeneity = 1.0 if rows_single else mi / (1.0 if h_true == 0 else h_true)
        completeness = 1.0 if h_pred == 0 else mi / h_pred
        hc = homogeneity + completeness
        return 0.0 if hc == 0 else 2.0 * homogeneity * completeness / hc
    normalizer = (h_true + h_pred) / 2.0
    if rows_single and cols_single:
        return 1.0
    if kind == NMI:
        return 0.0 if mi == 0 else mi / (1.0 if normalizer == 0 else normalizer)
    # AMI
    if identical:
        return 1.0
    e = 0.0 if (rows_single or cols_single) else emi
    den = normalizer - e
    den = min(den, -_EPS64) if den < 0 else max(den, _EPS64)
    return (mi - e) / den


@jit
def contingency_statistics(true_codes, pred_codes, n_rows, n_cols, with_emi):
    """Statistics of two labelings given as codes (``true_codes`` [N] in 0..n_rows-1, ``pred_codes`` [N]
    in 0..n_cols-1, every code used): [7] float64 ``sum_f_cells, sum_f_rows, sum_f_cols, sum_sq_cells,
    sum_sq_rows, sum_sq_cols, emi`` (emi = 0 unless ``with_emi``). The cells are counted in a dense table
    when it has at most ``_DENSE_CELLS`` entries, else from one sort of the N cell keys (so N = 1e5
    singletons are cheap); both visit the cells in the same order."""
    n = true_codes.shape[0]
    f = xlogx_table(n)
    rows = np.zeros(n_rows, np.int64)
    cols = np.zeros(n_cols, np.int64)
    for i in range(n):
        rows[true_codes[i]] += 1
        cols[pred_codes[i]] += 1
    out = np.zeros(7)
    if n_rows * n_cols <= _DENSE_CELLS:
        cells = np.zeros(n_rows * n_cols, np.int32)
        for i in range(n):
            cells[true_codes[i] * n_cols + pred_codes[i]] += 1
        for key in range(cells.shape[0]):
            if cells[key]:
                out[0] += f[cells[key]]
                out[3] += float(cells[key]) * cells[key]
    else:
        keys = np.empty(n, np.int64)
        for i in range(n):
            keys[i] = true_codes[i] * n_cols + pred_codes[i]
        keys.sort()
        run = 0
        for i in range(n):
            run += 1
            if i == n - 1 or keys[i + 1] != keys[i]:
                out[0] += f[run]
                out[3] += float(run * run)
                run = 0
    for r in range(n_rows):
        out[1] += f[rows[r]]
        out[4] += float(rows[r] * rows[r])
    for s in range(n_cols):
        out[2] += f[cols[s]]
        out[5] += float(cols[s] * cols[s])
    if with_emi and n_rows > 1 and n_cols > 1:
        out[6] = emi_table(rows, n, cols).sum()
    return out
