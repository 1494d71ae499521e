"""Downsampled ImageNet 16x16 / 32x32 / 64x64 (Chrabaszcz, Loshchilov, Hutter 2017).

The files need a (free) image-net.org login, so there is no automatic download: get the "downsampled
ImageNet" archives from https://image-net.org/download-images.php and extract them in ``root``:

* train: ``root/Imagenet32_train/train_data_batch_1`` ... ``train_data_batch_10``
* test (= the official validation set): ``root/Imagenet32_val/val_data``

(``Imagenet16_*`` / ``Imagenet64_*`` likewise). The ``.npz`` variants (``train_data_batch_1.npz``, ...,
``val_data.npz``, in the same folders or in ``Imagenet32_train_npz/`` / ``Imagenet32_val_npz/``) work too.
Each file holds ``data`` uint8 [n, 3*S*S] (1 plane of S*S red values, then green, then blue), ``labels``
1..1000 (returned as 0..999) and ``mean``. Class names are read from ``root/map_clsloc.txt`` (the ILSVRC
devkit's "wnid id name" lines) when present, else they are "label <official id>".

The 1.28M training images are 3.9 GB as uint8 (S=32), so they are never held twice: the first load streams
the files one at a time into ``<folder>/<split>_uint8_cache.npy`` (images [N, 3, S, S]) plus
``<split>_labels_cache.npy``, and every load memory-maps that cache (copy-on-write, nothing read until
used). Peak memory while building is about two source files (~1/5 of the data), not the whole set. A small
``<split>_cache.json`` records the source files' sizes and times; it is written last, so an interrupted
build is never trusted, and a changed source file triggers a rebuild.
"""

from __future__ import annotations

import json
import os
import struct
import uuid
from pathlib import Path

import numpy as np
import torch

from clusterloss.data.dataset import ImageDataset
from clusterloss.data.safe_pickle import safe_load

__all__ = ["load_imagenet", "load_imagenet16", "load_imagenet32", "load_imagenet64", "LOGIN_URL"]

LOGIN_URL = "https://image-net.org/download-images.php"
NUM_CLASSES = 1000
_HEADER_BYTES = 256  # fixed .npy header size, so data can be streamed before the final shape is known


def _source_files(root: Path, size: int, split: str) -> tuple[Path, list[Path]]:
    """The folder and the ordered list of source files (pickle or .npz variant) for ``split``."""
    kind = "train" if split == "train" else "val"
    stems = [f"train_data_batch_{i}" for i in range(1, 11)] if kind == "train" else ["val_data"]
    for folder in (root / f"Imagenet{size}_{kind}", root / f"Imagenet{size}_{kind}_npz"):
        for suffix in ("", ".npz"):
            files = [folder / f"{stem}{suffix}" for stem in stems]
            if all(f.is_file() for f in files):
                return folder, files
    raise FileNotFoundError(
        f"downsampled ImageNet {size}x{size} ({split}) not found: expected {root}/Imagenet{size}_{kind}/"
        f"{stems[0]}{' ... ' + stems[-1] if len(stems) > 1 else ''} (or the .npz variant). "
        f"These files need an image-net.org login: download 'Imagenet{size}_{kind}' from {LOGIN_URL} "
        f"and extract it in {root}."
    )


def _read_batch(path: Path, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One source file -> (uint8 [n, 3, S, S], int64 labels 0..999 [n])."""
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            content = {key: archive[key] for key in ("data", "labels") if key in archive}
    else:
        content = safe_load(path, encoding="latin1")
        if not isinstance(content, dict):
            raise ValueError(f"{path} is not a downsampled-ImageNet file: expected a pickled dict")
    data, labels = content.get("data"), content.get("labels")
    if (
        not isinstance(data, np.ndarray)
        or data.dtype != np.uint8
        or data.ndim != 2
        or data.shape[1] != 3 * size**2
    ):
        raise ValueError(f"{path}: 'data' must be uint8 [n, {3 * size**2}] for {size}x{size} images")
    labels = np.asarray(labels, dtype=np.int64).reshape(-1) - 1
    if labels.shape != (len(data),) or (len(labels) and (labels.min() < 0 or labels.max() >= NUM_CLASSES)):
        raise ValueError(f"{path}: 'labels' must hold {len(data)} ids in 1..{NUM_CLASSES}")
    return data.reshape(-1, 3, size, size), labels


def _npy_header(shape: tuple[int, ...]) -> bytes:
    """A version-1.0 .npy header for uint8 C-order ``shape``, space-padded to exactly _HEADER_BYTES."""
    text = f"{{'descr': '|u1', 'fortran_order': False, 'shape': {shape}, }}"
    prefix = b"\x93NUMPY\x01\x00"
    body_length = _HEADER_BYTES - len(prefix) - 2
    body = text.ljust(body_length - 1).encode("latin1") + b"\n"
    if len(body) != body_length:
        raise ValueError(f"shape {shape} does not fit a {_HEADER_BYTES}-byte .npy header")
    return prefix + struct.pack("<H", body_length) + body


def _signature(files: list[Path]) -> list[list]:
    return [[f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in files]


def _cache_paths(folder: Path, split: str) -> tuple[Path, Path, Path]:
    return (
        folder / f"{split}_uint8_cache.npy",
        folder / f"{split}_labels_cache.npy",
        folder / f"{split}_cache.json",
    )


def build_cache(files: list[Path], folder: Path, split: str, size: int) -> None:
    """Stream ``files`` (one at a time) into the uint8 .npy image cache and the labels cache."""
    images_path, labels_path, meta_path = _cache_paths(folder, split)
    token = uuid.uuid4().hex
    images_tmp = images_path.with_name(f".{images_path.name}.{token}")
    labels_tmp = labels_path.with_name(f".{labels_path.name}.{token}.npy")
    count, labels = 0, []
    try:
        with open(images_tmp, "wb") as out:
            out.write(b"\0" * _HEADER_BYTES)
            for path in files:
                data, batch_labels = _read_batch(path, size)
                out.write(memoryview(np.ascontiguousarray(data)).cast("B"))
                count += len(data)
                labels.append(batch_labels)
                del data  # only one source file is in memory at a time
            out.seek(0)
            out.write(_npy_header((count, 3, size, size)))
        np.save(labels_tmp, np.concatenate(labels))
        os.replace(images_tmp, images_path)
        os.replace(labels_tmp, labels_path)
    except BaseException:
        images_tmp.unlink(missing_ok=True)
        labels_tmp.unlink(missing_ok=True)
        raise
    meta_tmp = meta_path.with_name(f".{meta_path.name}.{token}")
    meta_tmp.write_text(json.dumps({"count": count, "size": size, "sources": _signature(files)}))
    os.replace(meta_tmp, meta_path)  # written last: the cache counts as complete only from here on


def _cache_is_current(folder: Path, split: str, files: list[Path], size: int) -> bool:
    images_path, labels_path, meta_path = _cache_paths(folder, split)
    if not (meta_path.is_file() and images_path.is_file() and labels_path.is_file()):
        return False
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return False
    expected_bytes = _HEADER_BYTES + meta.get("count", -1) * 3 * size * size
    return (
        meta.get("sources") == _signature(files)
        and meta.get("size") == size
        and images_path.stat().st_size == expected_bytes
    )


def _class_names(root: Path) -> list[str]:
    mapping = root / "map_clsloc.txt"
    names = [f"label {i + 1}" for i in range(NUM_CLASSES)]
    if mapping.is_file():
        for line in mapping.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[1].isdigit() and 1 <= int(parts[1]) <= NUM_CLASSES:
                names[int(parts[1]) - 1] = parts[2]
    return names


def load_imagenet(size: int, split: str, root: Path, download: bool = False) -> ImageDataset:
    """Downsampled ImageNet at ``size`` x ``size``; ``split`` "train" or "test" (official validation set)."""
    if size not in (16, 32, 64):
        raise ValueError(f"downsampled ImageNet comes in sizes 16, 32, 64, not {size}")
    root = Path(root)
    try:
        folder, files = _source_files(root, size, split)
    except FileNotFoundError as error:
        if download:
            raise FileNotFoundError(
                f"{error} (download=True cannot fetch it: the site requires a login)"
            ) from None
        raise
    cache_split = "train" if split == "train" else "val"
    if not _cache_is_current(folder, cache_split, files, size):
        build_cache(files, folder, cache_split, size)
    images_path, labels_path, _ = _cache_paths(folder, cache_split)
    images = np.load(images_path, mmap_mode="c")  # copy-on-write map: writable view, file never modified
    labels = np.load(labels_path)
    return ImageDataset(
        images=torch.from_numpy(images),
        labels=torch.from_numpy(labels),
        class_names=_class_names(root),
        name=f"imagenet{size}",
        split=split,
    )


def load_imagenet16(split: str, root: Path, download: bool = False) -> ImageDataset:
    return load_imagenet(16, split, root, download)


def load_imagenet32(split: str, root: Path, download: bool = False) -> ImageDataset:
    return load_imagenet(32, split, root, download)


def load_imagenet64(split: str, root: Path, download: bool = False) -> ImageDataset:
    return load_imagenet(64, split, root, download)
