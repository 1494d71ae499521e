"""Cars196 (Stanford Cars; Krause, Stark, Deng, Fei-Fei 2013), the release read by deep-metric-learning work.

Files (``data.root`` = the folder holding them, or its parent when they are in ``cars196/``):

* ``car_ims/000001.jpg`` ... ``016185.jpg``
* ``cars_annos.mat``: ``annotations``, a 1 x 16,185 MATLAB struct array with fields ``relative_im_path``
  (e.g. ``car_ims/000001.jpg``), ``bbox_x1``, ``bbox_y1``, ``bbox_x2``, ``bbox_y2``, ``class`` (1..196) and
  ``test`` (0/1); ``class_names``, a 1 x 196 cell array of names.

Zero-shot protocol (Song et al. 2016/2017 and the field): classes 1-98 train (8,054 images), 99-196 are
evaluated (8,131), whole images (the boxes are not used). ``closed`` uses the ``test`` flags (8,144 / 8,041).
There is no automatic download: the authors' address no longer serves the files and no checksum was
published; the error message says where to get them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io
import torch

from clusterloss.data.dataset import ImageDataset
from clusterloss.data.image_cache import PhotoOptions, photo_dataset
from clusterloss.data.photo_files import safe_relative

__all__ = ["load_cars196", "read_cars_annotations", "FIELDS"]

FIELDS = ("relative_im_path", "bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "test")
ZERO_SHOT_LAST_TRAIN_ID = 98
WHERE_TO_GET = (
    "Get the Cars196 release used in deep metric learning (car_ims.tgz, 16,185 images, and cars_annos.mat; "
    "formerly http://ai.stanford.edu/~jkrause/car196/, mirrored e.g. on Kaggle as 'stanford-cars-dataset') "
    "and put car_ims/ and cars_annos.mat in {root}"
)


def _find(root: Path) -> Path | None:
    for folder in (root, root / "cars196"):
        if (folder / "cars_annos.mat").is_file():
            return folder
    return None


def _scalar(value, what: str, path: Path) -> int:
    array = np.asarray(value).reshape(-1)
    if array.size != 1 or not np.issubdtype(array.dtype, np.number):
        raise ValueError(f"{path}: {what} must be one number, got {array!r}")
    return int(array[0])


def read_cars_annotations(folder: Path) -> tuple[list[str], list[str], list[int], list[bool]]:
    """(class names, relative image paths, 0-based labels, is_test) in annotation order."""
    path = folder / "cars_annos.mat"
    try:
        mat = scipy.io.loadmat(path)
    except (ValueError, OSError, TypeError, NotImplementedError) as error:
        raise ValueError(f"{path} is not a readable MATLAB file: {error}") from None
    annotations, names = mat.get("annotations"), mat.get("class_names")
    if annotations is None or names is None:
        found = sorted(k for k in mat if not k.startswith("__"))
        raise ValueError(f"{path} must hold 'annotations' and 'class_names' (found {found})")
    fields = annotations.dtype.names or ()
    missing = [f for f in FIELDS if f not in fields]
    if missing:
        raise ValueError(f"{path}: 'annotations' lacks the field(s) {missing} (has {list(fields)})")
    class_names = [str(np.asarray(n).reshape(-1)[0]) for n in names.reshape(-1)]
    relative, labels, is_test = [], [], []
    for number, record in enumerate(annotations.reshape(-1), 1):
        where = f"{path} (annotation {number})"
        image = np.asarray(record["relative_im_path"]).reshape(-1)
        if image.size != 1:
            raise ValueError(f"{where}: relative_im_path must be one string")
        relative.append(safe_relative(str(image[0]), folder, where))
        label = _scalar(record["class"], "class", path)
        if not 1 <= label <= len(class_names):
            raise ValueError(f"{where}: class {label} is not in 1..{len(class_names)} (class_names)")
        labels.append(label - 1)
        flag = _scalar(record["test"], "test", path)
        if flag not in (0, 1):
            raise ValueError(f"{where}: test must be 0 or 1, got {flag}")
        is_test.append(bool(flag))
    missing_file = next((r for r in relative if not (folder / r).is_file()), None)
    if missing_file is not None:
        raise FileNotFoundError(f"{folder / missing_file} is listed in cars_annos.mat but missing; "
                                + WHERE_TO_GET.format(root=folder))
    return class_names, relative, labels, is_test


def load_cars196(split: str, root: Path, download: bool, options: PhotoOptions) -> ImageDataset:
    root = Path(root)
    folder = _find(root)
    if folder is None:
        why = " (data.download cannot fetch it: no official address with a checksum)" if download else ""
        raise FileNotFoundError(f"Cars196 not found: expected {root}/cars_annos.mat and {root}/car_ims/"
                                f"{why}. " + WHERE_TO_GET.format(root=root))
    names, relative, labels, is_test = read_cars_annotations(folder)
    dataset, kept = photo_dataset(folder, relative, labels, names, options, "cars196")
    dataset.zero_shot_train_classes = list(range(min(ZERO_SHOT_LAST_TRAIN_ID, len(names))))
    if split == "all":
        return dataset
    flags = np.asarray(is_test, dtype=bool)[kept]
    wanted = ~flags if split == "train" else flags
    return dataset.subset(torch.from_numpy(np.flatnonzero(wanted)), split=split)
