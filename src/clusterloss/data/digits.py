"""scikit-learn's bundled 8x8 handwritten digits: the embedded dataset that needs no download.

1,797 grey images, 10 classes (digits 0-9), values 0..16 scaled to 0..255 (``round(v * 255 / 16)``),
returned as uint8 [N, 1, 8, 8].

Fixed train/test split (no randomness, independent of library versions): within each class, in file
order, the first ``ceil(0.7 * n_class)`` images are train and the rest test. That gives 1,262 train and
535 test images, every class in both splits; each split keeps the file order.
"""

from __future__ import annotations

import numpy as np
import torch

from clusterloss.data.dataset import ImageDataset

__all__ = ["load_digits", "TRAIN_FRACTION"]

TRAIN_FRACTION = 0.7


def _train_mask(targets: np.ndarray) -> np.ndarray:
    mask = np.zeros(len(targets), dtype=bool)
    for digit in np.unique(targets):
        members = np.flatnonzero(targets == digit)
        mask[members[: int(np.ceil(TRAIN_FRACTION * len(members)))]] = True
    return mask


def load_digits(split: str, root=None, download: bool = False) -> ImageDataset:
    """The ``split`` ("train" or "test") of the bundled digits; ``root``/``download`` are unused."""
    from sklearn.datasets import load_digits as sklearn_digits

    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    bunch = sklearn_digits()
    targets = np.asarray(bunch.target, dtype=np.int64)
    pixels = np.rint(np.asarray(bunch.images, dtype=np.float64) * (255.0 / 16.0)).astype(np.uint8)
    mask = _train_mask(targets)
    if split == "test":
        mask = ~mask
    return ImageDataset(
        images=torch.from_numpy(pixels[mask][:, None].copy()),
        labels=torch.from_numpy(targets[mask].copy()),
        class_names=[str(d) for d in range(10)],
        name="digits",
        split=split,
    )
