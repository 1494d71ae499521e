"""CIFAR-10 and CIFAR-100, official "python version" (Krizhevsky 2009).

Where the files go (``root`` is what you pass to ``load_dataset``):

* CIFAR-10:  ``root/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}``
* CIFAR-100: ``root/cifar-100-python/{train, test, meta}``

i.e. the official archives extracted in ``root``. ``download=True`` fetches the archive from its official
URL, checks its MD5 and extracts it atomically (see ``download.py``). The pickles are read with the
restricted unpickler (``safe_pickle.py``). Each row of ``data`` is 1024 red, 1024 green, 1024 blue values of
a row-major 32x32 image, so it reshapes to [3, 32, 32] directly. Order = file order, batches in order.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from clusterloss.data.dataset import ImageDataset
from clusterloss.data.download import download_and_extract
from clusterloss.data.safe_pickle import safe_load

__all__ = ["CifarSpec", "CIFAR10", "CIFAR100", "load_cifar10", "load_cifar100"]


@dataclass(frozen=True)
class CifarSpec:
    name: str
    title: str
    folder: str
    archive: str
    url: str
    md5: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    label_key: str
    names_key: str
    has_coarse: bool = False

    @property
    def required_files(self) -> tuple[str, ...]:
        return (*self.train_files, *self.test_files, self.meta_file)


CIFAR10 = CifarSpec(
    name="cifar10",
    title="CIFAR-10",
    folder="cifar-10-batches-py",
    archive="cifar-10-python.tar.gz",
    url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    md5="c58f30108f718f92721af3b95e74349a",
    train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
    test_files=("test_batch",),
    meta_file="batches.meta",
    label_key="labels",
    names_key="label_names",
)
CIFAR100 = CifarSpec(
    name="cifar100",
    title="CIFAR-100",
    folder="cifar-100-python",
    archive="cifar-100-python.tar.gz",
    url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
    md5="eb9058c3a382ffc7106e4002c42a8d85",
    train_files=("train",),
    test_files=("test",),
    meta_file="meta",
    label_key="fine_labels",
    names_key="fine_label_names",
    has_coarse=True,
)


def _read_pickle(path: Path) -> dict:
    """A CIFAR pickle as a dict with str keys (official files use Python-2 byte-string keys)."""
    content = safe_load(path, encoding="bytes")
    if not isinstance(content, dict):
        raise ValueError(f"{path} is not a CIFAR file: expected a pickled dict, got {type(content).__name__}")
    return {key.decode("latin1") if isinstance(key, bytes) else key: value for key, value in content.items()}


def _names(values, path: Path, key: str) -> list[str]:
    if not isinstance(values, list):
        raise ValueError(f"{path}: {key!r} must be a list of names")
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values]


def _labels(batch: dict, key: str, path: Path, count: int, num_classes: int) -> np.ndarray:
    if key not in batch:
        raise ValueError(f"{path} has no {key!r} entry; is it really a {path.parent.name} file?")
    labels = np.asarray(batch[key], dtype=np.int64)
    if labels.shape != (count,) or (count and (labels.min() < 0 or labels.max() >= num_classes)):
        raise ValueError(f"{path}: {key!r} must hold {count} ids in 0..{num_classes - 1}")
    return labels


def _locate(spec: CifarSpec, root: Path, download: bool) -> Path:
    folder = root / spec.folder
    missing = [name for name in spec.required_files if not (folder / name).is_file()]
    if not missing:
        return folder
    if download:
        return download_and_extract(spec.url, spec.md5, root, spec.archive, spec.folder, spec.required_files)
    raise FileNotFoundError(
        f"{spec.title} not found: {folder / missing[0]} is missing. Pass download=True (CLI: "
        f"--set data.download=true) to fetch {spec.url} (MD5 {spec.md5}), or download that archive "
        f"yourself and extract it in {root} so that "
        f"{folder}/ holds {', '.join(spec.required_files)}."
    )


def load_cifar(spec: CifarSpec, split: str, root: Path, download: bool = False) -> ImageDataset:
    """Read ``split`` ("train"/"test") of a CIFAR dataset from ``root/spec.folder``."""
    folder = _locate(spec, Path(root), download)
    meta = _read_pickle(folder / spec.meta_file)
    class_names = _names(meta.get(spec.names_key), folder / spec.meta_file, spec.names_key)
    coarse_names = (
        _names(meta["coarse_label_names"], folder, "coarse_label_names") if spec.has_coarse else None
    )
    images, labels, coarse = [], [], []
    for name in spec.train_files if split == "train" else spec.test_files:
        path = folder / name
        batch = _read_pickle(path)
        data = batch.get("data")
        if (
            not isinstance(data, np.ndarray)
            or data.dtype != np.uint8
            or data.ndim != 2
            or data.shape[1] != 3072
        ):
            raise ValueError(f"{path}: 'data' must be a uint8 array [n, 3072] (3 x 32 x 32 per row)")
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(_labels(batch, spec.label_key, path, len(data), len(class_names)))
        if coarse_names is not None:
            coarse.append(_labels(batch, "coarse_labels", path, len(data), len(coarse_names)))
    return ImageDataset(
        images=torch.from_numpy(np.concatenate(images)),
        labels=torch.from_numpy(np.concatenate(labels)),
        class_names=class_names,
        name=spec.name,
        split=split,
        coarse_labels=torch.from_numpy(np.concatenate(coarse)) if coarse_names is not None else None,
        coarse_class_names=coarse_names,
    )


def load_cifar10(split: str, root: Path, download: bool = False) -> ImageDataset:
    return load_cifar(CIFAR10, split, root, download)


def load_cifar100(split: str, root: Path, download: bool = False) -> ImageDataset:
    return load_cifar(CIFAR100, split, root, download)
