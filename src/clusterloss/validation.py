"""The one place where class labels and embeddings from a user are checked (a bottom utility module).

Every entry point that scores or trains on labels (the losses, the partition scores, retrieval, clustering,
``evaluate_embeddings`` and the ``evaluate`` command) calls :func:`check_labels`, so the same input is
accepted or refused the same way everywhere:

* integer dtypes are class ids as they are;
* floating-point labels are accepted only when every value is finite and exactly integral (``3.0``), with a
  warning; ``0.1`` is refused rather than cast (casting would silently merge classes);
* bool, complex, string and object labels are refused;
* ``[N, 1]`` is flattened; anything else must be 1-D, of length ``n`` when given, with at least
  ``min_classes`` distinct values.

:func:`check_embeddings` asks for a 2-D floating [N, D] array with D >= 1, finite values, and squared norms
that stay finite in the dtype distances are computed in (a 1e30-scaled embedding overflows to inf there and
would give a loss of 0 with NaN gradients, or meaningless neighbours).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import torch

__all__ = ["check_labels", "check_embeddings"]


def _as_tensor(value: Any, name: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    arr = np.asarray(value)
    if arr.dtype == object or arr.dtype.kind in "USVMm":
        raise ValueError(f"{name} must hold integer class ids, got dtype {arr.dtype}")
    return torch.from_numpy(np.ascontiguousarray(arr))


def check_labels(labels: Any, n: int | None = None, *, name: str = "labels",
                 min_classes: int = 1) -> torch.Tensor:
    """Validate class labels; return them as a 1-D int64 tensor (same device as a tensor input).

    Args:
        labels: tensor, numpy array or sequence of class ids, [N] or [N, 1].
        n: the required length (e.g. the number of embeddings), or None.
        name: how error messages call the argument.
        min_classes: fewest distinct labels accepted (2 for evaluation: one class cannot be scored).
    """
    t = _as_tensor(labels, name)
    if t.dtype == torch.bool or t.is_complex():
        raise ValueError(f"{name} must hold integer class ids, got dtype {t.dtype}; cast with .long()")
    shape = tuple(t.shape)
    if t.dim() == 2 and t.shape[1] == 1:
        t = t[:, 0]
    if t.dim() != 1:
        raise ValueError(f"{name} must be 1-D [N] (or [N, 1]), got shape {shape}")
    if n is not None and t.shape[0] != n:
        raise ValueError(f"{name} must have shape [N] or [N, 1] with one entry per embedding (N = {n}), "
                         f"got shape {shape}")
    if t.is_floating_point() and t.numel() == 0:
        t = t.long()  # an empty labeling has no values to check (np.asarray([]) is float64)
    if t.is_floating_point():
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name} contain NaN or Inf; they must be integer class ids")
        if not torch.equal(t, t.round()):
            bad = t[t != t.round()][:3].tolist()
            raise ValueError(f"{name} must be integer class ids, got non-integer values such as {bad}; "
                             "map each class to an integer (casting would merge classes)")
        if t.numel() and float(t.abs().max()) > 2**53:
            raise ValueError(f"{name} hold floats beyond 2**53, which cannot be exact integer ids")
        warnings.warn(f"{name} are floats with integral values; using them as integer class ids",
                      UserWarning, stacklevel=2)
    t = t.long()
    if min_classes > 1:
        classes = int(torch.unique(t).numel())
        if classes < min_classes:
            raise ValueError(f"{name} hold {classes} distinct class(es); at least {min_classes} are needed "
                             "(with one class every embedding scores perfectly, which measures nothing)")
    return t


def check_embeddings(embeddings: Any, *, name: str = "embeddings", min_rows: int = 1,
                     compute_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Validate an [N, D] embedding; return it as a tensor (a tensor input is returned as is, graph kept).

    ``compute_dtype``: the dtype distances will be computed in (default: the input's; float32 for half).
    """
    x = embeddings if isinstance(embeddings, torch.Tensor) else torch.as_tensor(np.asarray(embeddings))
    if x.dim() != 2:
        raise ValueError(f"{name} must be 2-D [N, D], got shape {tuple(x.shape)}")
    if x.shape[1] < 1:
        raise ValueError(f"{name} have D = 0 dimensions (shape {tuple(x.shape)}); need D >= 1")
    if x.shape[0] < min_rows:
        raise ValueError(f"{name} have {x.shape[0]} row(s); need at least {min_rows}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be floating point, got {x.dtype}; cast with .float()")
    data = x.detach()
    if not bool(torch.isfinite(data).all()):
        raise ValueError(f"{name} contain NaN or Inf; check the model output (e.g. a diverged run, lr, AMP)")
    # Distances |a|^2 + |b|^2 - 2ab are computed in this dtype (half precision in float32): they must not
    # overflow, or every distance becomes inf/NaN.
    if compute_dtype is None:
        compute_dtype = data.dtype if data.dtype in (torch.float32, torch.float64) else torch.float32
    if data.numel():
        largest = max(abs(float(data.max())), abs(float(data.min())))  # no copy of a large embedding
        bound = 4.0 * data.shape[1] * largest**2 if largest < 1e150 else math.inf  # >= |a|^2 + |b|^2 - 2ab
        if bound > torch.finfo(compute_dtype).max:
            raise ValueError(f"{name} are too large for {compute_dtype} distances (largest |value| "
                             f"{largest:.3g}): squared distances overflow; L2-normalize or rescale them")
    return x
