"""In-shop Clothes Retrieval (DeepFashion; Liu, Luo, Qiu, Wang, Tang 2016), the official benchmark files.

Files (``data.root`` = the benchmark folder):

* ``Eval/list_eval_partition.txt``: line 1 the number of images, line 2 the header
  ``image_name item_id evaluation_status``, then one line per image, e.g.
  ``img/WOMEN/Dresses/id_00000002/02_1_front.jpg id_00000002 train``; status ``train``, ``query`` or
  ``gallery``.
* ``img/...`` (the paths above, relative to ``data.root``; ``Img/img/...`` is accepted too).

Protocol (the field's): train on the 25,882 ``train`` images of 3,997 items; evaluate the 14,218 ``query``
images against the 12,612 ``gallery`` images (3,985 items, disjoint from the training items). The test split
(and the evaluation side of ``zero_shot``, which gives the same sets) carries ``query_mask`` (True = query).
Classes are the items, training items first (each group in item-id order). No automatic download (the files
are behind a form / Google Drive, without a published checksum).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from clusterloss.data.dataset import ImageDataset
from clusterloss.data.image_cache import PhotoOptions, photo_dataset
from clusterloss.data.photo_files import read_table, safe_relative

__all__ = ["load_inshop", "read_partition", "HEADER", "STATUSES"]

PARTITION = "Eval/list_eval_partition.txt"
HEADER = "image_name item_id evaluation_status"
STATUSES = ("train", "query", "gallery")
WHERE_TO_GET = (
    "Get the In-shop Clothes Retrieval Benchmark of DeepFashion (Eval/list_eval_partition.txt and "
    "Img/img.zip; https://mmlab.ie.cuhk.edu.hk/projects/DeepFashion/InShopRetrieval.html) and put Eval/ "
    "and img/ in {root}"
)


def read_partition(root: Path) -> tuple[list[str], list[str], list[str]]:
    """(image paths, item ids, statuses) from ``Eval/list_eval_partition.txt``; malformed lines are errors."""
    path = root / PARTITION
    rows = read_table(path, 3, header=HEADER, skip_lines=1)
    first = path.read_text(encoding="utf-8-sig").splitlines()[0].strip()
    if not first.isdigit() or int(first) != len(rows):
        raise ValueError(f"{path}:1: the first line must be the number of images ({len(rows)}), "
                         f"found {first!r}")
    names, items, statuses = [], [], []
    item_side: dict[str, str] = {}
    for number, (image, item, status) in enumerate(rows, 3):
        where = f"{path}:{number}"
        if status not in STATUSES:
            raise ValueError(f"{where}: unknown evaluation_status {status!r}; expected one of {STATUSES}")
        side = "train" if status == "train" else "test"
        if item_side.setdefault(item, side) != side:
            raise ValueError(f"{where}: item {item} is both a training item and a query/gallery item")
        names.append(image)
        items.append(item)
        statuses.append(status)
    return names, items, statuses


def load_inshop(split: str, root: Path, download: bool, options: PhotoOptions) -> ImageDataset:
    root = Path(root)
    if not (root / PARTITION).is_file():
        why = " (data.download cannot fetch it: no official address with a checksum)" if download else ""
        raise FileNotFoundError(f"In-Shop not found: expected {root / PARTITION}{why}. "
                                + WHERE_TO_GET.format(root=root))
    names, items, statuses = read_partition(root)
    base = root
    if names and not (root / names[0]).is_file() and (root / "Img" / names[0]).is_file():
        base = root / "Img"
    relative = [safe_relative(n, base, f"{root / PARTITION} ({n})") for n in names]
    missing = next((r for r in relative if not (base / r).is_file()), None)
    if missing is not None:
        raise FileNotFoundError(f"{base / missing} is listed but missing; " + WHERE_TO_GET.format(root=root))
    status = np.asarray(statuses)
    train_items = sorted({i for i, s in zip(items, statuses, strict=True) if s == "train"})
    test_items = sorted({i for i, s in zip(items, statuses, strict=True) if s != "train"})
    class_names = train_items + test_items
    compact = {item: i for i, item in enumerate(class_names)}
    labels = [compact[i] for i in items]
    dataset, kept = photo_dataset(base, relative, labels, class_names, options, "inshop",
                                  query_mask=status == "query")
    dataset.zero_shot_train_classes = list(range(len(train_items)))
    kept_status = status[kept]
    if split == "all":
        return dataset
    wanted = kept_status == "train" if split == "train" else kept_status != "train"
    part = dataset.subset(torch.from_numpy(np.flatnonzero(wanted)), split=split)
    if split == "train":
        part.query_mask = None
    return part
