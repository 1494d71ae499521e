"""ImageDataset: the one in-memory (or memory-mapped) form every dataset loader returns."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

__all__ = ["ImageDataset"]


def _contiguous_range(indices: torch.Tensor) -> tuple[int, int] | None:
    """(start, stop) when ``indices`` is exactly start, start+1, ..., stop-1 (so a slice can replace it)."""
    if indices.numel() == 0:
        return None
    start = int(indices[0])
    stop = start + indices.numel()
    if int(indices[-1]) != stop - 1:
        return None
    return (start, stop) if torch.equal(indices, torch.arange(start, stop)) else None


@dataclass
class ImageDataset:
    """Images with integer class labels.

    Order: the source files' order (CIFAR, ImageNet, digits); photo datasets (imagefolder, cub200, ...) are
    sorted by class id, stable in file order, so that subsets of consecutive classes are slices.

    Attributes:
        images: torch.uint8 [N, C, H, W] (may be backed by a memory-mapped file).
        labels: torch.int64 [N], 0-based ids indexing ``class_names``.
        class_names: one name per class id (all classes of the dataset, also those absent from a subset).
        name: registry name, e.g. "cifar100".
        split: "train" / "test", or a derived name such as "train-validation".
        coarse_labels, coarse_class_names: CIFAR-100's 20 superclasses, SOP's 12 (None elsewhere).
        view_size: side of the network input; None = the stored size. Photo datasets store a larger square
            and crop it (training: augmentation, evaluation: ``eval_crop``).
        eval_crop: evaluation view = centre crop of ``round(H * eval_crop)`` pixels, resized to
            ``view_size`` when that differs (1.0 = the whole image; photos 0.875, i.e.
            Resize(256)+CenterCrop(224)).
        default_augmentation: what ``data.augmentation: auto`` picks (see ``augment.AUGMENTATIONS``).
        query_mask: bool [N], True = query, False = gallery (In-Shop's test split); None = all vs all.
        zero_shot_train_classes: class ids the benchmark's zero-shot protocol trains on (None = first half).
        paths: the source file of each image, relative to the dataset folder (photo datasets).
    """

    images: torch.Tensor
    labels: torch.Tensor
    class_names: list[str]
    name: str = ""
    split: str = ""
    coarse_labels: torch.Tensor | None = None
    coarse_class_names: list[str] | None = None
    view_size: int | None = None
    eval_crop: float = 1.0
    default_augmentation: str = "crop_flip"
    query_mask: torch.Tensor | None = None
    zero_shot_train_classes: list[int] | None = None
    paths: list[str] | None = None

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
        if self.query_mask is not None and (
            self.query_mask.dtype != torch.bool or self.query_mask.shape != self.labels.shape
        ):
            raise ValueError(f"query_mask must be bool [{len(self.labels)}], got {self.query_mask.dtype} "
                             f"{tuple(self.query_mask.shape)}")
        if self.paths is not None and len(self.paths) != len(self.labels):
            raise ValueError("paths must have one entry per image")
        if self.view_size is not None and self.view_size < 1:
            raise ValueError(f"view_size must be >= 1, got {self.view_size}")
        if not 0 < self.eval_crop <= 1:
            raise ValueError(f"eval_crop must be in (0, 1], got {self.eval_crop}")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def subset(self, indices: torch.Tensor, split: str | None = None) -> ImageDataset:
        """Only ``indices`` (int64 [M], kept in the given order); class ids are unchanged.

        A run of consecutive indices becomes a slice, i.e. a view that shares memory (a memory-mapped
        dataset stays on disk); any other selection copies the selected images.
        """
        indices = torch.as_tensor(indices, dtype=torch.int64)
        span = _contiguous_range(indices)
        if span is not None:
            images = self.images[span[0] : span[1]]
        else:
            images = self.images[indices]

        def pick(tensor):
            return None if tensor is None else tensor[indices]

        return dataclasses.replace(
            self,
            images=images,
            labels=self.labels[indices],
            split=self.split if split is None else split,
            coarse_labels=pick(self.coarse_labels),
            query_mask=pick(self.query_mask),
            paths=None if self.paths is None else [self.paths[i] for i in indices.tolist()],
        )

    def of_classes(self, classes, split: str | None = None) -> ImageDataset:
        """The images whose label is in ``classes``, in dataset order."""
        wanted = torch.as_tensor(list(classes), dtype=torch.int64)
        mask = torch.isin(self.labels, wanted)
        return self.subset(torch.nonzero(mask).flatten(), split)
