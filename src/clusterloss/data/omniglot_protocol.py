"""Omniglot's protocols: by alphabet (the coarse label), never cutting an alphabet in two.

* ``data.eval_groups: [Latin, ...]``: train on the other alphabets of the background set, evaluate on the
  images of these (unseen) alphabets — how the quickstart holds out one of the five background-small-1
  alphabets. Needs no evaluation set.
* ``protocol: zero_shot`` without ``eval_groups``: the background alphabets, sorted by name, are halved: the
  first ``ceil(G / 2)`` train, the others are evaluated.
* ``protocol: closed``: train on the whole background set, evaluate on the 20-alphabet evaluation set
  (``images_evaluation``; the setting of Lake et al.).
* ``train_classes`` (character ids): train on those characters, evaluate on the other characters of the
  background set.
* ``validation: true`` never reads the evaluated alphabets: the last ``max(1, round(G_train / 3))`` training
  alphabets (by name) become the evaluation set (``train-validation``) and are removed from training.
* ``rotation_classes: true``: the training characters also appear rotated by 90, 180 and 270 degrees, each
  rotation a class of its own (4x the classes; Santoro et al. 2016, Vinyals et al. 2016). Evaluation is
  never rotated. Off by default.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import torch

from clusterloss.data.augment import channel_stats
from clusterloss.data.augment_affine import rotate90_classes
from clusterloss.data.dataset import ImageDataset
from clusterloss.data.omniglot import load_omniglot, load_omniglot_full, load_omniglot_small2

__all__ = ["OMNIGLOT_DATASETS", "omniglot_splits", "split_by_groups", "with_rotation_classes"]

OMNIGLOT_DATASETS = {"omniglot": load_omniglot, "omniglot_small2": load_omniglot_small2,
                     "omniglot_full": load_omniglot_full}


def _group_ids(dataset: ImageDataset, names) -> list[int]:
    known = dataset.coarse_class_names or []
    ids = []
    for name in names:
        if isinstance(name, int) and not isinstance(name, bool) and 0 <= name < len(known):
            ids.append(name)
        elif name in known:
            ids.append(known.index(name))
        else:
            raise ValueError(f"data.eval_groups: {name!r} is not an alphabet of {dataset.name}/"
                             f"{dataset.split}; choose from {', '.join(known)}")
    return sorted(set(ids))


def split_by_groups(dataset: ImageDataset, eval_groups=None, validation: bool = False
                    ) -> tuple[ImageDataset, ImageDataset]:
    """(train, eval) of ``dataset`` by coarse group (see the module docstring); ``eval_groups`` are names
    or coarse ids, None = the second half of the groups."""
    if dataset.coarse_labels is None or not dataset.coarse_class_names:
        raise ValueError(f"{dataset.name} has no coarse labels (alphabets) to split by")
    groups = list(range(len(dataset.coarse_class_names)))
    if eval_groups is not None:
        held = _group_ids(dataset, eval_groups)
    else:
        held = groups[math.ceil(len(groups) / 2):]
    train_groups = [g for g in groups if g not in set(held)]
    if not train_groups or (not held and not validation):
        raise ValueError(f"data.eval_groups must leave at least one alphabet on each side; got {eval_groups}")
    if validation:
        count = max(1, round(len(train_groups) / 3))
        if len(train_groups) - count < 1:
            raise ValueError(f"validation needs at least 2 training alphabets, got {len(train_groups)}")
        train_groups, held = train_groups[:-count], train_groups[-count:]
    split = "train-validation" if validation else "test"

    def pick(group_ids, name):
        mask = torch.isin(dataset.coarse_labels, torch.tensor(group_ids, dtype=torch.int64))
        return dataset.subset(torch.nonzero(mask).flatten(), split=name)

    return pick(train_groups, "train"), pick(held, split)


def with_rotation_classes(dataset: ImageDataset) -> ImageDataset:
    """``dataset`` plus its images rotated by 90/180/270 degrees as new classes (class ids ``k*C + y``)."""
    count = dataset.num_classes
    images, labels = rotate90_classes(dataset.images, dataset.labels, count)
    names = [name if k == 0 else f"{name} (rot{90 * k})" for k in range(4) for name in dataset.class_names]
    coarse = None if dataset.coarse_labels is None else dataset.coarse_labels.repeat(4)
    return ImageDataset(images=images, labels=labels, class_names=names, name=dataset.name,
                        split=dataset.split, coarse_labels=coarse,
                        coarse_class_names=dataset.coarse_class_names,
                        default_augmentation=dataset.default_augmentation)


def omniglot_splits(data, root: str | Path | None = None, download: bool | None = None):
    """``Splits`` for an Omniglot ``DataConfig`` (``data.name`` in ``OMNIGLOT_DATASETS``)."""
    from clusterloss.data.protocols import Splits, split_datasets  # protocols imports this module

    load = OMNIGLOT_DATASETS[data.name]
    root = root or data.root
    root = None if root in (None, "") else Path(root)
    download = data.download if download is None else download
    background = load("train", root, download, image_size=data.image_size)
    if data.train_classes is not None:
        train, evaluation = split_datasets(background, background, "zero_shot", data.train_classes,
                                           data.validation)
    elif data.eval_groups is not None or data.protocol == "zero_shot":
        train, evaluation = split_by_groups(background, data.eval_groups, data.validation)
    elif data.validation:  # closed + validation: carve alphabets out of the whole background set
        train, evaluation = split_by_groups(background, [], validation=True)
    else:
        train, evaluation = background, load("test", root, download, image_size=data.image_size)
    if data.rotation_classes:
        train = with_rotation_classes(train)
        evaluation = dataclasses.replace(evaluation, class_names=train.class_names)
    mean, std = channel_stats(train.images)
    return Splits(train=train, eval=evaluation, mean=mean, std=std)
