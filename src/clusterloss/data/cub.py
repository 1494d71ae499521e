"""CUB-200-2011 (Wah, Branson, Welinder, Perona, Belongie 2011), the official release.

Files (``data.root`` = the folder holding ``CUB_200_2011/``, or ``CUB_200_2011/`` itself):

* ``images.txt``: ``<image_id> <relative path under images/>``
* ``image_class_labels.txt``: ``<image_id> <class_id>`` (1..200)
* ``classes.txt``: ``<class_id> <NNN.Species_Name>``
* ``train_test_split.txt``: ``<image_id> <is_training_image 0|1>``
* ``images/<NNN.Species_Name>/<file>.jpg``

Every image listed in ``images.txt`` is read through it (file names are never guessed). Class ids are 0-based
in the order of the official ids of the classes ``classes.txt`` lists (all 200 in the release; a partial copy
may list fewer). Zero-shot protocol (Song et al. 2017, and the deep-metric-learning field): official class
ids 1-100 train, 101-200 are evaluated, every image of a class on its side (5,864 / 5,924 images); ``closed``
uses ``train_test_split.txt`` (5,994 / 5,794). ``download=True`` fetches the official archive from
CaltechDATA (1.1 GB, MD5 checked, resumable) and extracts it atomically.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from clusterloss.data.dataset import ImageDataset
from clusterloss.data.download import download_and_extract
from clusterloss.data.image_cache import PhotoOptions, photo_dataset
from clusterloss.data.photo_files import read_table, safe_relative

__all__ = ["load_cub200", "CUB_URL", "CUB_MD5", "find_cub_folder"]

CUB_URL = "https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz"
CUB_MD5 = "97eceeb196236b17998738112f37df78"
FOLDER = "CUB_200_2011"
TEXT_FILES = ("images.txt", "image_class_labels.txt", "classes.txt", "train_test_split.txt")
ZERO_SHOT_LAST_TRAIN_ID = 100


def find_cub_folder(root: Path) -> Path | None:
    for folder in (root / FOLDER, root):
        if all((folder / name).is_file() for name in TEXT_FILES):
            return folder
    return None


def _id_map(path: Path, rows: list[list[str]], what: str) -> dict[int, str]:
    mapping: dict[int, str] = {}
    for first, second in rows:
        if not first.isdigit():
            raise ValueError(f"{path}: {what} id {first!r} is not a positive integer")
        if int(first) in mapping:
            raise ValueError(f"{path}: {what} id {first} appears twice")
        mapping[int(first)] = second
    return mapping


def read_cub_metadata(folder: Path) -> tuple[list[str], list[int], list[str], list[int], list[bool]]:
    """(class names, official class ids, relative image paths, 0-based labels, is_training) in images.txt
    order; every inconsistency between the four text files is a ValueError naming the file."""
    images = _id_map(folder / "images.txt", read_table(folder / "images.txt", 2, last_column_rest=True),
                     "image")
    labels = _id_map(folder / "image_class_labels.txt",
                     read_table(folder / "image_class_labels.txt", 2), "image")
    classes = _id_map(folder / "classes.txt", read_table(folder / "classes.txt", 2, last_column_rest=True),
                      "class")
    split = _id_map(folder / "train_test_split.txt", read_table(folder / "train_test_split.txt", 2), "image")
    for name, table in (("image_class_labels.txt", labels), ("train_test_split.txt", split)):
        if set(table) != set(images):
            missing = sorted(set(images) - set(table))[:1] or sorted(set(table) - set(images))[:1]
            raise ValueError(f"{folder / name} and images.txt list different image ids (e.g. {missing[0]})")
    class_ids = sorted(classes)
    compact = {official: i for i, official in enumerate(class_ids)}
    relative, label_list, is_train = [], [], []
    for image_id in sorted(images):
        where = f"{folder / 'images.txt'} (image {image_id})"
        relative.append("images/" + safe_relative(images[image_id], folder / "images", where))
        official = labels[image_id]
        if not official.isdigit() or int(official) not in compact:
            raise ValueError(f"{folder / 'image_class_labels.txt'}: image {image_id} has class {official!r}, "
                             "which classes.txt does not list")
        label_list.append(compact[int(official)])
        if split[image_id] not in ("0", "1"):
            raise ValueError(f"{folder / 'train_test_split.txt'}: image {image_id} has is_training_image "
                             f"{split[image_id]!r}; expected 0 or 1")
        is_train.append(split[image_id] == "1")
    missing = next((r for r in relative if not (folder / r).is_file()), None)
    if missing is not None:
        raise FileNotFoundError(f"{folder / missing} is listed in images.txt but missing; the copy of "
                                f"CUB-200-2011 in {folder} is incomplete")
    return [classes[c] for c in class_ids], class_ids, relative, label_list, is_train


def load_cub200(split: str, root: Path, download: bool, options: PhotoOptions) -> ImageDataset:
    root = Path(root)
    folder = find_cub_folder(root)
    if folder is None and download:
        folder = download_and_extract(CUB_URL, CUB_MD5, root, f"{FOLDER}.tgz", FOLDER, TEXT_FILES,
                                      resume=True)
    if folder is None:
        raise FileNotFoundError(
            f"CUB-200-2011 not found: expected {root}/{FOLDER}/images.txt (with image_class_labels.txt, "
            f"classes.txt, train_test_split.txt, images/). Download {CUB_URL} (MD5 {CUB_MD5}) and extract it "
            f"in {root}, or set data.download=true."
        )
    names, class_ids, relative, labels, is_train = read_cub_metadata(folder)
    dataset, kept = photo_dataset(folder, relative, labels, names, options, "cub200")
    dataset.zero_shot_train_classes = [i for i, c in enumerate(class_ids) if c <= ZERO_SHOT_LAST_TRAIN_ID]
    if split == "all":
        return dataset
    flags = np.asarray(is_train, dtype=bool)[kept]
    wanted = flags if split == "train" else ~flags
    return dataset.subset(torch.from_numpy(np.flatnonzero(wanted)), split=split)
