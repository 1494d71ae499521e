"""Stanford Online Products (Oh Song, Xiang, Jegelka, Savarese 2016), the official release.

Files (``data.root`` = the folder holding ``Stanford_Online_Products/``, or that folder itself):

* ``Ebay_train.txt`` / ``Ebay_test.txt``: a header line ``image_id class_id super_class_id path``, then one
  line per image, e.g. ``1 1 1 bicycle_final/111085122871_0.JPG``; ``path`` is relative to the folder.
* ``<super class>_final/<product>_<n>.JPG``: 120,053 images.

Protocol (the paper's, the only one in use): train on ``Ebay_train.txt`` (11,318 products, 59,551 images),
evaluate on ``Ebay_test.txt`` (11,316 products, 60,502 images); the two are class-disjoint, so ``closed`` and
``zero_shot`` give the same sets. Class ids are 0-based in the order of the official class ids;
``coarse_labels`` are the 12 super classes (bicycle, cabinet, ...; t-SNE ``--coarse``). Most products have
2-12 images, so the sampler fills K from few images (see sampler.py).
There is no automatic download (the official FTP address is gone and the authors published no checksum).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from clusterloss.data.dataset import ImageDataset
from clusterloss.data.image_cache import PhotoOptions, photo_dataset
from clusterloss.data.photo_files import read_table, safe_relative

__all__ = ["load_sop", "read_sop_lists", "HEADER"]

FOLDER = "Stanford_Online_Products"
HEADER = "image_id class_id super_class_id path"
WHERE_TO_GET = (
    "Get Stanford_Online_Products.zip from the project page "
    "https://cvgl.stanford.edu/projects/lifted_struct/ (2.9 GB; the MD5 other loaders check is "
    "7f73d41a2f44250d4779881525aea32e) and extract it in {root}"
)


def _find(root: Path) -> Path | None:
    for folder in (root / FOLDER, root):
        if (folder / "Ebay_train.txt").is_file() and (folder / "Ebay_test.txt").is_file():
            return folder
    return None


def read_sop_lists(folder: Path) -> tuple[list[str], list[int], list[int], list[str], np.ndarray]:
    """(relative paths, official class ids, super class ids, super class names, is_train) of both files."""
    relative, classes, supers, is_train = [], [], [], []
    super_names: dict[int, str] = {}
    seen_ids: set[int] = set()
    for name, train in (("Ebay_train.txt", True), ("Ebay_test.txt", False)):
        path = folder / name
        for image_id, class_id, super_id, image in read_table(path, 4, header=HEADER):
            where = f"{path} (image {image_id})"
            if not (image_id.isdigit() and class_id.isdigit() and super_id.isdigit()):
                raise ValueError(f"{where}: image_id, class_id and super_class_id must be positive integers")
            if int(image_id) in seen_ids:
                raise ValueError(f"{where}: image_id {image_id} appears twice")
            seen_ids.add(int(image_id))
            relative.append(safe_relative(image, folder, where))
            classes.append(int(class_id))
            supers.append(int(super_id))
            top = relative[-1].split("/")[0]
            super_names.setdefault(int(super_id), top.removesuffix("_final"))
            is_train.append(train)
    train_classes = {c for c, t in zip(classes, is_train, strict=True) if t}
    shared = train_classes & {c for c, t in zip(classes, is_train, strict=True) if not t}
    if shared:
        raise ValueError(f"{folder}: class {min(shared)} is in both Ebay_train.txt and Ebay_test.txt; "
                         "the official split is class-disjoint")
    missing = next((r for r in relative if not (folder / r).is_file()), None)
    if missing is not None:
        raise FileNotFoundError(f"{folder / missing} is listed but missing; "
                                + WHERE_TO_GET.format(root=folder))
    ordered_supers = sorted(super_names)
    return relative, classes, supers, [super_names[s] for s in ordered_supers], np.asarray(is_train)


def load_sop(split: str, root: Path, download: bool, options: PhotoOptions) -> ImageDataset:
    root = Path(root)
    folder = _find(root)
    if folder is None:
        why = " (data.download cannot fetch it: no official address with a checksum)" if download else ""
        raise FileNotFoundError(f"Stanford Online Products not found: expected "
                                f"{root}/{FOLDER}/Ebay_train.txt and Ebay_test.txt{why}. "
                                + WHERE_TO_GET.format(root=root))
    relative, classes, supers, super_names, is_train = read_sop_lists(folder)
    class_ids = sorted(set(classes))
    compact = {c: i for i, c in enumerate(class_ids)}
    super_ids = sorted(set(supers))
    super_compact = {s: i for i, s in enumerate(super_ids)}
    labels = [compact[c] for c in classes]
    coarse = np.array([super_compact[s] for s in supers], dtype=np.int64)
    dataset, kept = photo_dataset(folder, relative, labels, [str(c) for c in class_ids], options, "sop",
                                  coarse_labels=coarse, coarse_class_names=super_names)
    train_ids = {compact[c] for c, t in zip(classes, is_train, strict=True) if t}
    dataset.zero_shot_train_classes = sorted(train_ids)
    if split == "all":
        return dataset
    flags = is_train[kept]
    wanted = flags if split == "train" else ~flags
    return dataset.subset(torch.from_numpy(np.flatnonzero(wanted)), split=split)
