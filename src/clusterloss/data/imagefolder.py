"""``imagefolder``: any folder of class sub-folders, ``root/<class>/**/<image>`` (torchvision's layout).

Classes are the sub-folder names in sorted order (ids 0..C-1); every file below a class folder whose suffix
is one of ``image_decode.IMAGE_SUFFIXES`` (case-insensitive) is an image of that class; hidden files and
folders (names starting with ".", such as the cache folder ``.clusterloss_cache``) are ignored. A class
folder without images is an error.

Splits: "all" = every image. Under ``closed`` (train / test):

* with ``split_file`` (``data.split_file``): a UTF-8 text file, one image per line,
  ``<path relative to root> <train|test>`` (the path may contain spaces; the status is the last word);
  blank lines and lines starting with ``#`` are ignored. Every listed path must be an image found under
  root; images the file does not list are left out of both splits (a warning gives their count).
* otherwise each class is cut by ``train_fraction`` (``data.train_fraction``, default 0.8): its images,
  ordered by the SHA-1 of their relative path (a fixed order that adding or removing other files does not
  change), the first ``round(fraction * n)`` train (at least one, and one left for test when n >= 2).

``zero_shot`` (build_splits) uses "all": the first half of the classes train, the rest are evaluated.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from clusterloss.data.dataset import ImageDataset
from clusterloss.data.image_cache import PhotoOptions, photo_dataset
from clusterloss.data.image_decode import IMAGE_SUFFIXES
from clusterloss.data.photo_files import safe_relative

__all__ = ["load_imagefolder", "scan_image_folder", "read_split_file"]


def scan_image_folder(root: Path) -> tuple[list[str], list[str], list[int]]:
    """(class names, relative image paths, labels) of ``root``, classes sorted, files sorted per class."""
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} not found: data.root must be a folder holding one "
                                "sub-folder of images per class")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise FileNotFoundError(f"{root} has no class sub-folders: expected {root}/<class>/<image files>")
    relative, labels = [], []
    for label, name in enumerate(classes):
        found = []
        for folder, dirs, files in os.walk(root / name, followlinks=False):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            base = Path(folder).relative_to(root)
            found += [(base / f).as_posix() for f in sorted(files)
                      if not f.startswith(".") and f.lower().endswith(IMAGE_SUFFIXES)]
        if not found:
            raise ValueError(f"class folder {root / name} holds no image files "
                             f"({', '.join(IMAGE_SUFFIXES)}); remove it or add images")
        relative += found
        labels += [label] * len(found)
    return classes, relative, labels


def read_split_file(path: Path, root: Path, known: set[str]) -> dict[str, str]:
    """{relative path: "train" | "test"} from a split file (format in the module docstring)."""
    if not path.is_file():
        raise FileNotFoundError(f"data.split_file {path} not found")
    statuses: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = line.rsplit(maxsplit=1)
        where = f"{path}:{number}"
        if len(fields) != 2 or fields[1] not in ("train", "test"):
            raise ValueError(f"{where}: expected '<relative path> <train|test>', found {line.strip()!r}")
        relative = safe_relative(fields[0], root, where)
        if relative not in known:
            raise ValueError(f"{where}: {relative!r} is not an image found under {root}")
        if relative in statuses:
            raise ValueError(f"{where}: {relative!r} is listed twice")
        statuses[relative] = fields[1]
    if not statuses:
        raise ValueError(f"{path} lists no images")
    return statuses


def _fraction_split(relative: list[str], labels: np.ndarray, fraction: float) -> np.ndarray:
    """bool [N]: True = train (per class, by SHA-1 of the path; see the module docstring)."""
    is_train = np.zeros(len(relative), dtype=bool)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        members = sorted(members, key=lambda i: hashlib.sha1(relative[i].encode()).hexdigest())
        n = len(members)
        n_train = n if n == 1 else min(n - 1, max(1, int(round(fraction * n))))
        is_train[members[:n_train]] = True
    return is_train


def load_imagefolder(split: str, root: Path, download: bool, options: PhotoOptions) -> ImageDataset:
    if download:
        raise ValueError("data.download does not apply to imagefolder (your own files); set it to false")
    root = Path(root)
    classes, relative, labels = scan_image_folder(root)
    dataset, kept = photo_dataset(root, relative, labels, classes, options, "imagefolder")
    if split == "all":
        return dataset
    kept_paths = [relative[i] for i in kept]
    if options.split_file is not None:
        statuses = read_split_file(Path(options.split_file), root, set(relative))
        unlisted = sum(p not in statuses for p in kept_paths)
        if unlisted:
            warnings.warn(f"imagefolder: {unlisted} image(s) under {root} are not in {options.split_file} "
                          "and are left out of both splits", stacklevel=2)
        wanted = np.array([statuses.get(p) == split for p in kept_paths], dtype=bool)
    else:
        is_train = _fraction_split(kept_paths, dataset.labels.numpy(), options.train_fraction)
        wanted = is_train if split == "train" else ~is_train
    return dataset.subset(torch.from_numpy(np.flatnonzero(wanted)), split=split)
