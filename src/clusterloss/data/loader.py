"""From index batches to normalized float batches on the training device.

``DeviceBatchLoader``: sampler indices -> gather from the in-memory (or memory-mapped) uint8 tensor ->
device -> the named augmentation (``augment.AUGMENTATIONS``) at the dataset's ``view_size`` -> normalize.
``iterate_in_order``: the evaluation view (``augment.eval_view``: centre crop ``dataset.eval_crop``,
resized to ``view_size``) in dataset order, for evaluation and embedding extraction.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence

import torch

from clusterloss.data.augment import (
    AUGMENTATIONS,
    apply_affine,
    cpu_thread_pool,
    eval_view,
    normalization_affine,
    random_resized_crop,
    resolve_augmentation,
)
from clusterloss.data.batch_buffers import BatchBuffers
from clusterloss.data.dataset import ImageDataset
from clusterloss.utils.threads import torch_threads

__all__ = ["DeviceBatchLoader", "iterate_in_order"]

# Datasets up to this size are copied to an accelerator once, so each batch is gathered there.
_DEVICE_CACHE_BYTES = 4 << 30
# Images at least this large (values per image; 224 px photos: 150k) are normalized by several threads.
_PARALLEL_NORMALIZE_VALUES = 64 * 64 * 3


def _parallel_affine(images: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, workers: int,
                     out: torch.Tensor | None = None) -> torch.Tensor:
    """``apply_affine`` with the batch split across ``workers`` threads (the same values), into ``out``."""
    out = torch.empty(images.shape, dtype=torch.float32) if out is None else out
    bounds = [len(images) * j // workers for j in range(workers + 1)]

    def part(lo: int, hi: int) -> None:
        torch.mul(images[lo:hi], scale, out=out[lo:hi])
        out[lo:hi].add_(shift)

    pool = cpu_thread_pool(workers)
    for future in [pool.submit(part, lo, hi) for lo, hi in zip(bounds, bounds[1:], strict=False)]:
        future.result()
    return out


def _to_device(batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    if device.type == "cuda":
        return batch.pin_memory().to(device, non_blocking=True)
    return batch.to(device)


class DeviceBatchLoader:
    """Yields ``(images float32 [P*K, C, H, W] normalized, labels int64 [P*K])`` on ``device``.

    Args:
        dataset: an ``ImageDataset`` (uint8 images [N, C, H, W], int64 labels [N]).
        sampler: iterable of index lists, e.g. ``ClassBalancedBatchSampler`` (``len()`` and ``set_epoch``
            are passed through).
        device: where batches are produced; on an accelerator the whole uint8 dataset is kept there when
            it is at most 4 GiB (``cache_on_device=None``), else each batch is gathered on the CPU and copied.
        mean, std: per-channel statistics of the training images in [0, 1] units.
        augment: apply the training augmentation (False: the deterministic evaluation view).
        padding: zero padding of ``crop_flip``.
        augmentation: a name of ``augment.AUGMENTATIONS`` or "auto" (the dataset's ``default_augmentation``:
            ``crop_flip`` for 32-px arrays, ``random_resized_crop`` for photos). Batches come out at the
            dataset's ``view_size`` (its stored size when None).
        generator: optional ``torch.Generator`` on ``device`` (or CPU) for the augmentation draws.
        cpu_threads: torch threads used while a batch is assembled on the CPU (restored before it is
            yielded). The ops are small (~0.4 M values), so 1 thread is fast (~100k images/s at 32x32) and
            avoids multi-millisecond stalls of parallel regions when other processes keep the cores busy;
            None keeps torch's setting.
        cpu_workers: Python threads that share a CPU batch's per-image resampling (random resized crop) and
            its normalization, each running torch with ``cpu_threads``; None = up to 2 (the CPUs there are).
            The batches do not depend on it (all random draws are made first, for the whole batch).

    Large CPU batches (photos) are written into reused memory (``batch_buffers.BatchBuffers``): a batch
    the caller has dropped lends its memory to a later one; one still referenced anywhere is never touched.
    Photo training batches on the CPU are stored channels last (see ``augment.resized_crop_batch``).
    """

    def __init__(
        self,
        dataset: ImageDataset,
        sampler: Iterable[Sequence[int]],
        device: str | torch.device,
        mean: Sequence[float] | torch.Tensor,
        std: Sequence[float] | torch.Tensor,
        augment: bool = True,
        padding: int = 4,
        generator: torch.Generator | None = None,
        cache_on_device: bool | None = None,
        cpu_threads: int | None = 1,
        augmentation: str = "auto",
        cpu_workers: int | None = None,
    ) -> None:
        self.dataset = dataset
        self.sampler = sampler
        self.device = torch.device(device)
        self.mean = torch.as_tensor(mean, dtype=torch.float32, device=self.device)
        self.std = torch.as_tensor(std, dtype=torch.float32, device=self.device)
        self._scale, self._shift = normalization_affine(
            self.mean, self.std, dataset.images.shape[1], self.device
        )
        self.augment = augment
        self.padding = padding
        self.augmentation = resolve_augmentation(augmentation, dataset)
        self._augment_fn = AUGMENTATIONS[self.augmentation]
        self.view_size = dataset.view_size or int(dataset.images.shape[-1])
        self.eval_crop = dataset.eval_crop
        self.generator = generator
        self.cpu_threads = cpu_threads
        self.cpu_workers = cpu_workers or max(1, min(2, os.cpu_count() or 1))
        images = dataset.images
        if cache_on_device is None:
            cache_on_device = self.device.type != "cpu" and images.numel() <= _DEVICE_CACHE_BYTES
        self._images = images.to(self.device) if cache_on_device else images
        self._labels = dataset.labels.to(self.device) if cache_on_device else dataset.labels
        self._buffers = BatchBuffers()

    def __len__(self) -> int:
        return len(self.sampler)  # type: ignore[arg-type]

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)  # type: ignore[attr-defined]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for batch_indices in self.sampler:
            with torch_threads(self.cpu_threads if self.device.type == "cpu" else None):
                batch = self._assemble(torch.as_tensor(batch_indices, dtype=torch.int64))
            yield batch

    def _assemble(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.augment and self._augment_fn is random_resized_crop and self._images.device == self.device:
            # Photos: crop straight from the (memory-mapped) dataset and normalize each crop while it is in
            # cache; the same values as gather -> crop -> normalize below, without two batch-sized passes.
            cpu = self.device.type == "cpu"
            out = None
            if cpu:
                # channels last, as resized_crop_batch writes its uint8 path's crops
                out = self._buffers.take((len(index), self.view_size, self.view_size,
                                          self._images.shape[1])).permute(0, 3, 1, 2)
            images = random_resized_crop(self._images, self.view_size, self.generator,
                                         workers=self.cpu_workers if cpu else 1,
                                         index=index.to(self._images.device),
                                         affine=(self._scale, self._shift), out=out)
            return images, self._labels.index_select(0, index.to(self._labels.device))
        if self._images.device == self.device:
            index = index.to(self.device)
            images, labels = self._images.index_select(0, index), self._labels.index_select(0, index)
        else:
            with torch_threads(self.cpu_threads):
                images = _to_device(self._images.index_select(0, index), self.device)
                labels = _to_device(self._labels.index_select(0, index), self.device)
        workers = self.cpu_workers if images.device.type == "cpu" else 1
        if self.augment:
            images = self._augment_fn(images, self.view_size, self.generator, padding=self.padding,
                                      crop_fraction=self.eval_crop, workers=workers)
        else:
            images = eval_view(images, self.view_size, self.eval_crop)
        if workers > 1 and images[0].numel() >= _PARALLEL_NORMALIZE_VALUES:
            out = self._buffers.take(tuple(images.shape))
            return _parallel_affine(images, self._scale, self._shift, workers, out), labels
        return apply_affine(images, self._scale, self._shift), labels


def iterate_in_order(
    dataset: ImageDataset,
    batch_size: int,
    device: str | torch.device,
    mean: Sequence[float] | torch.Tensor,
    std: Sequence[float] | torch.Tensor,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Consecutive batches ``(float images normalized, int64 labels)`` on ``device`` in dataset order, in the
    evaluation view (see ``augment.eval_view``); the last batch may be smaller."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = torch.device(device)
    scale, shift = normalization_affine(mean, std, dataset.images.shape[1], device)
    for start in range(0, len(dataset), batch_size):
        images = eval_view(dataset.images[start : start + batch_size], dataset.view_size, dataset.eval_crop)
        images = _to_device(images.contiguous(), device)
        labels = _to_device(dataset.labels[start : start + batch_size], device)
        yield apply_affine(images, scale, shift), labels
