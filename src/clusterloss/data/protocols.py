"""build_splits(): which images train the embedding and which evaluate it.

Protocols (class ids are always the dataset's ORIGINAL ids, so ``class_names`` stay valid):

* ``closed``: train = the train split, eval = the test split, all classes (the original CIFAR recipe).
* ``zero_shot``: the classes, sorted by id, are halved; train = train-split images of the first
  ``ceil(C / 2)`` classes, eval = TEST-split images of the other classes (the unseen-class protocol of
  deep metric learning, evaluated on images never used in training of any class). A dataset that names
  its benchmark's training classes (``zero_shot_train_classes``, e.g. CUB-200-2011's official ids 1-100)
  is split there instead of at the half.
* Photo datasets (``registry.PHOTO_DATASETS``: imagefolder, cub200, ...) under ``zero_shot`` or with
  ``train_classes`` use EVERY image of a class on its class's side (split "all"), as the deep-metric-
  learning benchmarks do (CUB: 5,994 + 5,794 official train/test images -> 5,864 train / 5,924 eval);
  their train/test files only matter for ``closed``.
* ``train_classes=[...]`` (overrides the protocol's class choice): train = train-split images of those
  classes, eval = test-split images of all remaining classes.

``validation=True`` (hyper-parameter selection; never touches the test split): the training classes, in
ascending id order, are cut; the last ``max(1, round(len / 3))`` of them become the validation classes.
eval = their train-split images, and they are removed from train. Validation is thus always a class-disjoint
retrieval/clustering problem (as the final zero-shot evaluation), also under ``closed``.

``mean`` / ``std`` are the per-channel statistics of the final training images, in [0, 1] units.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from clusterloss.data.augment import channel_stats
from clusterloss.data.dataset import ImageDataset
from clusterloss.data.omniglot_protocol import OMNIGLOT_DATASETS, omniglot_splits
from clusterloss.data.registry import PHOTO_DATASETS, load_dataset

__all__ = ["Splits", "build_splits", "PROTOCOLS"]

PROTOCOLS = ("closed", "zero_shot")
_PHOTO_STATS_IMAGES = 2000  # mean/std of photo datasets from this many evenly spaced training images


@dataclass
class Splits:
    """train / eval ImageDatasets and the training images' per-channel mean/std (float32 [C], 0..1 units)."""

    train: ImageDataset
    eval: ImageDataset
    mean: torch.Tensor
    std: torch.Tensor


def _check_classes(train_classes: Sequence[int], num_classes: int) -> list[int]:
    classes = sorted({int(c) for c in train_classes})
    if len(classes) != len(list(train_classes)):
        raise ValueError("train_classes contains duplicates")
    bad = [c for c in classes if not 0 <= c < num_classes]
    if bad:
        raise ValueError(f"train_classes {bad} are not class ids of this dataset (0..{num_classes - 1})")
    if not classes:
        raise ValueError("train_classes is empty")
    return classes


def _no_queries(dataset: ImageDataset) -> ImageDataset:
    """Training and validation sides are all-against-all: only the final test side keeps a query_mask."""
    if dataset.query_mask is None:
        return dataset
    return dataclasses.replace(dataset, query_mask=None)


def split_datasets(
    train_split: ImageDataset,
    test_split: ImageDataset,
    protocol: str = "closed",
    train_classes: Sequence[int] | None = None,
    validation: bool = False,
) -> tuple[ImageDataset, ImageDataset]:
    """The (train, eval) pair of ``build_splits`` from already loaded train and test splits."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; choose one of {PROTOCOLS} (or pass train_classes)")
    num_classes = train_split.num_classes
    all_classes = list(range(num_classes))
    if train_classes is not None:
        chosen = _check_classes(train_classes, num_classes)
        held_out = [c for c in all_classes if c not in set(chosen)]
        if not held_out and not validation:
            raise ValueError(
                "train_classes lists every class, leaving none to evaluate; use protocol='closed'"
            )
    elif protocol == "zero_shot":
        preset = train_split.zero_shot_train_classes
        chosen = sorted(preset) if preset is not None else all_classes[: math.ceil(num_classes / 2)]
        held_out = [c for c in all_classes if c not in set(chosen)]
    else:
        chosen, held_out = all_classes, all_classes

    if validation:
        num_val = max(1, round(len(chosen) / 3))
        if len(chosen) - num_val < 1:
            raise ValueError(f"validation needs at least 2 training classes, got {len(chosen)}")
        fit, val = chosen[:-num_val], chosen[-num_val:]
        return (
            _no_queries(train_split.of_classes(fit, split="train")),
            _no_queries(train_split.of_classes(val, split="train-validation")),
        )
    if protocol == "closed" and train_classes is None:
        return _no_queries(train_split), test_split
    return (_no_queries(train_split.of_classes(chosen, split="train")),
            test_split.of_classes(held_out, split="test"))


def build_splits(
    name: str,
    root: str | Path | None = None,
    protocol: str = "closed",
    train_classes: Sequence[int] | None = None,
    validation: bool = False,
    download: bool = False,
    options=None,
    image_size: int | None = None,
) -> Splits:
    """Load dataset ``name`` and split it by ``protocol`` (see the module docstring for the exact rules).

    ``options``: ``PhotoOptions`` for photo datasets (image size, cache, bad images, imagefolder split).
    ``image_size`` (array datasets such as CIFAR): the network input side; batches are resized to it on the
    device (training: after the augmentation; evaluation: the whole image); the stored images stay as is.
    """
    if name in PHOTO_DATASETS and (protocol == "zero_shot" or train_classes is not None):
        everything = load_dataset(name, "all", root, download, options)
        train, evaluation = split_datasets(everything, everything, protocol, train_classes, validation)
    else:
        train_split = load_dataset(name, "train", root, download, options)
        test_split = None if validation else load_dataset(name, "test", root, download, options)
        if test_split is None:  # validation never reads the test split; an empty stand-in keeps one code path
            test_split = train_split.subset(torch.empty(0, dtype=torch.int64), split="test")
        train, evaluation = split_datasets(train_split, test_split, protocol, train_classes, validation)
    if image_size is not None and name not in PHOTO_DATASETS:
        if image_size < 1:
            raise ValueError(f"data.image_size must be >= 1, got {image_size}")
        train = dataclasses.replace(train, view_size=int(image_size))
        evaluation = dataclasses.replace(evaluation, view_size=int(image_size))
    if name in PHOTO_DATASETS:  # large memory-mapped images: statistics of an even sample
        mean, std = channel_stats(train.images, max_images=_PHOTO_STATS_IMAGES)
    else:
        mean, std = channel_stats(train.images)
    return Splits(train=train, eval=evaluation, mean=mean, std=std)


def splits_from_config(data, root: str | Path | None = None, download: bool | None = None) -> Splits:
    """:func:`build_splits` with the settings of a ``DataConfig`` (``config.data``).

    ``root`` / ``download`` override the config's (e.g. a dataset folder that moved since training).
    """
    if data.name in OMNIGLOT_DATASETS:  # split by alphabet (omniglot_protocol.py)
        return omniglot_splits(data, root, download)
    options = None
    if data.name in PHOTO_DATASETS:
        from clusterloss.data.image_cache import PhotoOptions  # PIL and the cache only for photo datasets

        options = PhotoOptions.from_config(data)
    return build_splits(data.name, root or data.root, protocol=data.protocol,
                        train_classes=data.train_classes, validation=data.validation,
                        download=data.download if download is None else download, options=options,
                        image_size=getattr(data, "image_size", None))
