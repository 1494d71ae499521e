"""ImageDataset: the one in-memory (or memory-mapped) form every dataset loader returns."""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["ImageDataset"]


@dataclass
class ImageDataset:
    """Images with integer class labels, in the source files' order.

    Attributes:
        images: torch.uint8 [N, C, H, W] (may be backed by a memory-mapped file).
        labels: torch.int64 [N], 0-based ids indexing ``class_names``.
        class_names: one name per class id (all classes of the dataset, also those absent from a subset).
        name: registry name, e.g. "cifar100".
        split: "train" / "test", or a derived name such as "train-validation".
        coarse_labels, coarse_class_names: CIFAR-100's 20 superclasses (None elsewhere).
    """

    images: torch.Tensor
    labels: torch.Tensor
    class_names: list[str]
    name: str = ""
    split: str = ""
    coarse_labels: torch.Tensor | None = None
    coarse_class_names: list[str] | None = None

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(
                f"images must be uint8 [N, C, H, W], got {self.images.dtype} {tuple(self.images.shape)}"
            )
        if self.labels.dtype != torch.int64 or self.labels.shape != (self.images.shape[0],):
            raise ValueError(
                f"labels must be int64 [{self.images.shape[0]}], "
                f"got {self.labels.dtype} {tuple(self.labels.shape)}"
            )
        if self.coarse_labels is not None and self.coarse_labels.shape != self.labels.shape:
            raise ValueError("coarse_labels must have one entry per image")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def subset(self, indices: torch.Tensor, split: str | None = None) -> ImageDataset:
        """A copy holding only ``indices`` (int64 [M], kept in the given order); class ids are unchanged."""
        indices = torch.as_tensor(indices, dtype=torch.int64)
        return ImageDataset(
            images=self.images[indices],
            labels=self.labels[indices],
            class_names=self.class_names,
            name=self.name,
            split=self.split if split is None else split,
            coarse_labels=None if self.coarse_labels is None else self.coarse_labels[indices],
            coarse_class_names=self.coarse_class_names,
        )

    def of_classes(self, classes, split: str | None = None) -> ImageDataset:
        """The images whose label is in ``classes``, in dataset order."""
        wanted = torch.as_tensor(list(classes), dtype=torch.int64)
        mask = torch.isin(self.labels, wanted)
        return self.subset(torch.nonzero(mask).flatten(), split)
