"""DATASETS registry and load_dataset(): one entry point for every supported dataset."""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from pathlib import Path

from clusterloss.data.dataset import ImageDataset

__all__ = ["DATASETS", "PHOTO_DATASETS", "load_dataset", "dataset_names"]

# name -> "module:function"; the function is called as fn(split, root, download) -> ImageDataset, photo
# datasets (PHOTO_DATASETS) as fn(split, root, download, options: PhotoOptions) and also take split "all".
# Resolved lazily so that importing the package doesn't import every format reader.
DATASETS: dict[str, str] = {
    "digits": "clusterloss.data.digits:load_digits",
    "cifar10": "clusterloss.data.cifar:load_cifar10",
    "cifar100": "clusterloss.data.cifar:load_cifar100",
    "imagenet16": "clusterloss.data.imagenet:load_imagenet16",
    "imagenet32": "clusterloss.data.imagenet:load_imagenet32",
    "imagenet64": "clusterloss.data.imagenet:load_imagenet64",
    "imagefolder": "clusterloss.data.imagefolder:load_imagefolder",
    "cub200": "clusterloss.data.cub:load_cub200",
    "cars196": "clusterloss.data.cars:load_cars196",
    "sop": "clusterloss.data.sop:load_sop",
    "inshop": "clusterloss.data.inshop:load_inshop",
    "omniglot": "clusterloss.data.omniglot:load_omniglot",  # bundled; see omniglot.py / omniglot_protocol.py
    "omniglot_small2": "clusterloss.data.omniglot:load_omniglot_small2",
    "omniglot_full": "clusterloss.data.omniglot:load_omniglot_full",
}

# Photo datasets: decoded once into a memory-mapped cache (image_cache.py), split "all" = every image;
# under zero_shot every image of a class goes to the side of its class (the deep-metric-learning protocol).
PHOTO_DATASETS = {"imagefolder", "cub200", "cars196", "sop", "inshop"}


def dataset_names() -> list[str]:
    return sorted(DATASETS)


def _resolve(name: str) -> Callable[..., ImageDataset]:
    if name not in DATASETS:
        close = difflib.get_close_matches(name, DATASETS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(dataset_names())}.{hint}")
    module_name, function_name = DATASETS[name].split(":")
    return getattr(importlib.import_module(module_name), function_name)


def load_dataset(
    name: str, split: str, root: str | Path | None = None, download: bool = False, options=None
) -> ImageDataset:
    """Load ``split`` ("train" or "test"; photo datasets also "all") of dataset ``name`` from ``root``.

    Returns an ``ImageDataset`` (uint8 images [N, C, H, W], int64 labels [N] 0-based, class_names, ...)
    in the order of the source files (photo datasets: sorted by class). ``digits`` needs no root; the others
    read their official files under ``root`` (see each module), fetching them first when ``download=True``
    and that is possible. ``options``: a ``PhotoOptions`` for photo datasets (None = defaults), ignored by
    the others.
    """
    photo = name in PHOTO_DATASETS
    if split not in ("train", "test") and not (photo and split == "all"):
        raise ValueError(
            f"split must be 'train' or 'test' (for ImageNet, test = official validation"
            f"{'; photo datasets also take all' if photo else ''}), got {split!r}"
        )
    loader = _resolve(name)
    if name not in ("digits", "omniglot") and root is None:
        raise ValueError(f"dataset {name!r} needs root= (the folder holding its files)")
    if photo:
        from clusterloss.data.image_cache import PhotoOptions

        return loader(split, Path(root), download, options or PhotoOptions())
    return loader(split, None if root is None else Path(root), download)
