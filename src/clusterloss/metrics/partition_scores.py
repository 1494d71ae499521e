"""Agreement scores of two labelings of the same points (NMI, AMI, ARI, V-measure, partition equality).

Thin wrappers for tensors, arrays and sequences of any integer ids around the one implementation of the
formulas, :mod:`clusterloss.contingency` (also what the facility-location loss scores its clusterings
with). Results equal scikit-learn's to 1e-6 (its degenerate cases included; see that module).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from clusterloss.contingency import KIND_CODES, SCORE_KINDS
from clusterloss.contingency import contingency_statistics as _statistics
from clusterloss.contingency import score_from_statistics as _score_from_statistics
from clusterloss.utils.compiled import start_compiler
from clusterloss.validation import check_labels

_STAT_NAMES = ("sum_f_cells", "sum_f_rows", "sum_f_cols", "sum_sq_cells", "sum_sq_rows", "sum_sq_cols", "emi")


def _as_codes(labels: torch.Tensor | np.ndarray | Sequence[int], name: str) -> tuple[np.ndarray, int]:
    """Codes [N] int64 in 0..R-1 of 1-D (or [N, 1]) integer ids, and R."""
    arr = check_labels(labels, name=name).detach().cpu().numpy()  # the one label rule (validation.py)
    if arr.size and arr.min() >= 0 and arr.max() < 4 * arr.size + 1024:  # small ids: O(N), no sort
        present = np.bincount(arr) > 0
        lookup = np.cumsum(present) - 1  # the rank of each present id, as np.unique numbers them
        return lookup[arr].astype(np.int64), int(present.sum())
    ids, codes = np.unique(arr, return_inverse=True)
    return codes.astype(np.int64).reshape(-1), int(ids.shape[0])


def contingency_statistics(labels_true, labels_pred, with_emi: bool = True) -> dict[str, float | int | None]:
    """Sufficient statistics of the contingency table of two labelings (see :mod:`clusterloss.contingency`):
    ``n, n_rows, n_cols`` and the sums; ``emi`` is None when ``with_emi=False`` (only AMI needs it)."""
    t, n_rows = _as_codes(labels_true, "labels_true")
    p, n_cols = _as_codes(labels_pred, "labels_pred")
    if t.shape[0] != p.shape[0]:
        raise ValueError(f"labels_true and labels_pred differ in length: {t.shape[0]} vs {p.shape[0]}")
    start_compiler()
    values = _statistics(t, p, n_rows, n_cols, with_emi)
    stats: dict[str, float | int | None] = {"n": int(t.shape[0]), "n_rows": n_rows, "n_cols": n_cols}
    stats.update(zip(_STAT_NAMES, (float(v) for v in values), strict=True))
    if not with_emi:
        stats["emi"] = None
    return stats


def scores_from_statistics(
    kind: str,
    n: int,
    n_rows: int,
    n_cols: int,
    sum_f_cells: float,
    sum_f_rows: float,
    sum_f_cols: float,
    sum_sq_cells: float,
    sum_sq_rows: float,
    sum_sq_cols: float,
    emi: float | None = None,
) -> float:
    """The score ``kind`` from :func:`contingency_statistics` (not clamped, as scikit-learn's)."""
    if kind not in KIND_CODES:
        raise ValueError(f"unknown partition score kind {kind!r}; choose one of {SCORE_KINDS}")
    if kind == "ami" and emi is None:
        raise ValueError("kind='ami' needs the expected mutual information (emi)")
    start_compiler()
    return float(
        _score_from_statistics(
            KIND_CODES[kind],
            n,
            n_rows,
            n_cols,
            sum_f_cells,
            sum_f_rows,
            sum_f_cols,
            sum_sq_cells,
            sum_sq_rows,
            sum_sq_cols,
            0.0 if emi is None else emi,
        )
    )


def partition_score(labels_true, labels_pred, kind: str) -> float:
    """One of ``nmi``, ``ami``, ``ari``, ``vmeasure``, ``const`` (1.0 if the partitions are equal)."""
    if kind not in KIND_CODES:
        raise ValueError(f"unknown partition score kind {kind!r}; choose one of {SCORE_KINDS}")
    stats = contingency_statistics(labels_true, labels_pred, with_emi=kind == "ami")
    return scores_from_statistics(kind, **stats)


def normalized_mutual_info(labels_true, labels_pred) -> float:
    """NMI with arithmetic normalization (scikit-learn's default), in [0, 1]."""
    return partition_score(labels_true, labels_pred, "nmi")


def adjusted_mutual_info(labels_true, labels_pred) -> float:
    """AMI (arithmetic normalization, hypergeometric expected MI), as ``adjusted_mutual_info_score``."""
    return partition_score(labels_true, labels_pred, "ami")


def adjusted_rand_index(labels_true, labels_pred) -> float:
    """ARI (Hubert & Arabie 1985) from pair counts, as ``adjusted_rand_score``."""
    return partition_score(labels_true, labels_pred, "ari")


def v_measure(labels_true, labels_pred) -> float:
    """V-measure with beta = 1 (harmonic mean of homogeneity and completeness)."""
    return partition_score(labels_true, labels_pred, "vmeasure")


def partitions_equal(labels_true, labels_pred) -> bool:
    """True when both labelings define the same partition, whatever the ids."""
    return partition_score(labels_true, labels_pred, "const") == 1.0
