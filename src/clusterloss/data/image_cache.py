"""Decode every photo once into a memory-mapped uint8 cache; build ``ImageDataset``s of photos from it.

The cache of a dataset is one ``.npy`` file, images uint8 [N, S, S, 3] (S = ``cache_size``, each image
resized so its shorter side is S, then its centre square; see ``image_decode.decode_square``), plus a
small ``.json`` beside it listing the files that failed to decode. Both names carry a key: a SHA-256 of
the cache format version, S, the evaluation crop, and every source file's relative path, size and mtime.
A changed, added or removed file therefore gives a new key and a rebuild (the old files are removed after the
new ones are in place). Both are written under temporary names and renamed into place, the ``.npy`` last,
so an interrupted build is never read. Loading memory-maps the file (copy-on-write): a 120k-image cache
(23 GB at S = 256) never has to fit in RAM; the page cache holds what is used. The pixels are stored
channels last (each pixel's R, G, B side by side, as decoded) because that is what torch's vectorized
uint8 resampling reads, so a training crop is copied out as whole rows; the dataset sees the file as the
usual uint8 [N, 3, S, S] tensor (a permuted view with channels-last strides).

Where: ``cache_dir`` if given, else ``<dataset folder>/.clusterloss_cache/``; when that folder cannot be
written (read-only data), ``$CLUSTERLOSS_CACHE`` or ``~/.cache/clusterloss`` (a one-line note says so).
Under ``torchrun`` the trainer loads the data inside ``distributed.node_leader_first()``, so each node
builds its cache once and the other processes then find it complete.

Decoding runs on a thread pool (PIL releases the GIL while decoding and resizing).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
import uuid
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from clusterloss.data.dataset import ImageDataset
from clusterloss.data.image_decode import BadImageError, decode_square

__all__ = ["PhotoOptions", "EVAL_CROP", "load_cache", "photo_dataset", "cache_folder"]

EVAL_CROP = 224 / 256  # evaluation keeps the centre 87.5 % of the shorter side (Resize(256)+CenterCrop(224))
_FORMAT_VERSION = 2  # 2: pixels stored channels last [N, S, S, 3]


@dataclass(frozen=True)
class PhotoOptions:
    """Settings of photo datasets (the ``data.*`` keys of the same names).

    image_size: network input side (training crops and the evaluation view). cache_size: side of the cached
    square (None = ``round(image_size / 0.875)``, 256 for 224). eval_crop_size: side of the centre window
    evaluated (None = ``round(0.875 * cache side)``, 224 for 256; e.g. 227 of 256 for the 227-crop recipe).
    cache_dir: where caches go (None = beside the data). skip_bad_images: leave undecodable files out
    (counted) instead of stopping with an error. train_fraction / split_file: imagefolder's ``closed`` split
    (see ``imagefolder.py``). workers: decoding threads (None = the number of CPUs).
    """

    image_size: int = 224
    cache_size: int | None = None
    eval_crop_size: int | None = None
    cache_dir: str | None = None
    skip_bad_images: bool = False
    train_fraction: float = 0.8
    split_file: str | None = None
    workers: int | None = None

    def __post_init__(self) -> None:
        if self.image_size < 8:
            raise ValueError(f"data.image_size must be >= 8 for photo datasets, got {self.image_size}")
        if self.cache_size is not None and self.cache_size < self.image_size:
            raise ValueError(f"data.cache_size ({self.cache_size}) must be >= data.image_size "
                             f"({self.image_size})")
        if self.eval_crop_size is not None and not 1 <= self.eval_crop_size <= self.stored_size:
            raise ValueError(f"data.eval_crop_size must be in [1, {self.stored_size}] (the cached square's "
                             f"side, data.cache_size), got {self.eval_crop_size}")
        if not 0 < self.train_fraction < 1:
            raise ValueError(f"data.train_fraction must be in (0, 1), got {self.train_fraction}")

    @property
    def stored_size(self) -> int:
        return self.cache_size if self.cache_size is not None else int(round(self.image_size / EVAL_CROP))

    @property
    def eval_crop(self) -> float:
        """The evaluated centre window as a fraction of the cached side (``ImageDataset.eval_crop``)."""
        return EVAL_CROP if self.eval_crop_size is None else self.eval_crop_size / self.stored_size

    @property
    def eval_inner(self) -> int:
        """Side of that window in pixels (the decoder aligns it with torchvision's ``CenterCrop``)."""
        return int(round(self.stored_size * self.eval_crop))

    @classmethod
    def from_config(cls, data) -> PhotoOptions:
        """From a ``DataConfig`` (``config.data``); keys it lacks keep their defaults."""
        image_size = getattr(data, "image_size", None)
        return cls(
            image_size=224 if image_size is None else int(image_size),
            cache_size=getattr(data, "cache_size", None),
            eval_crop_size=getattr(data, "eval_crop_size", None),
            cache_dir=getattr(data, "cache_dir", None),
            skip_bad_images=bool(getattr(data, "skip_bad_images", False)),
            train_fraction=float(getattr(data, "train_fraction", 0.8)),
            split_file=getattr(data, "split_file", None),
        )


def _default_cache_root() -> Path:
    return Path(os.environ.get("CLUSTERLOSS_CACHE") or Path.home() / ".cache" / "clusterloss")


def _has_write_bits(folder: Path) -> bool:
    try:
        return bool(folder.stat().st_mode & 0o222)
    except OSError:
        return False


def _writable(folder: Path) -> bool:
    try:
        folder.mkdir(exist_ok=True)
        probe = folder / f".probe-{uuid.uuid4().hex}"
        probe.touch()
        probe.unlink()
        return True
    except OSError:
        return False


def cache_folder(source: Path, options: PhotoOptions) -> Path:
    """Where the cache of the dataset in ``source`` lives (created if needed)."""
    if options.cache_dir is not None:
        folder = Path(options.cache_dir)
        folder.mkdir(parents=True, exist_ok=True)
        return folder
    beside = source / ".clusterloss_cache"
    # A folder whose owner removed every write bit is read-only on purpose (a shared copy of a dataset), even
    # for root, who could still write there: respect the bits rather than what a probe write would allow.
    if beside.is_dir() or (_has_write_bits(source) and _writable(beside)):
        return beside
    folder = _default_cache_root()
    folder.mkdir(parents=True, exist_ok=True)
    print(f"note: {source} is not writable; the decoded-image cache goes to {folder} "
          "(set data.cache_dir to choose)", file=sys.stderr)
    return folder


def _key(source: Path, relative: Sequence[str], size: int, inner: int) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps([_FORMAT_VERSION, size, inner, str(source.resolve())]).encode())
    for name in relative:
        stat = (source / name).stat()
        digest.update(f"\n{name}\t{stat.st_size}\t{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:20]


def _build(files: list[Path], images_path: Path, meta_path: Path, size: int, inner: int,
           workers: int | None, label: str) -> None:
    token = uuid.uuid4().hex
    images_tmp = images_path.with_name(f".{images_path.stem}.{token}.npy")
    meta_tmp = meta_path.with_name(f".{meta_path.name}.{token}")
    workers = workers or min(8, os.cpu_count() or 1)
    bad: list[list] = []
    start = time.perf_counter()
    try:
        out = np.lib.format.open_memmap(images_tmp, mode="w+", dtype=np.uint8,
                                        shape=(len(files), size, size, 3))

        def work(i: int, out=out) -> None:
            try:
                out[i] = decode_square(files[i], size, inner, channels_last=True)
            except BadImageError as error:
                out[i] = 0
                bad.append([i, error.reason])

        with ThreadPoolExecutor(max_workers=workers) as pool:
            for _ in pool.map(work, range(len(files))):
                pass
        out.flush()
        del out
        meta = {"count": len(files), "size": size, "bad": sorted(bad),
                "build_seconds": round(time.perf_counter() - start, 3)}
        meta_tmp.write_text(json.dumps(meta))
        os.replace(meta_tmp, meta_path)
        os.replace(images_tmp, images_path)  # last: from here on the cache counts as complete
    except BaseException:
        images_tmp.unlink(missing_ok=True)
        meta_tmp.unlink(missing_ok=True)
        raise
    rate = len(files) / max(meta["build_seconds"], 1e-9)
    print(f"{label}: decoded {len(files)} images into {images_path} ({size}x{size}, "
          f"{meta['build_seconds']:.1f} s, {rate:.0f} images/s)", file=sys.stderr)


def load_cache(source: Path, relative: Sequence[str], options: PhotoOptions, label: str
               ) -> tuple[torch.Tensor, np.ndarray]:
    """(uint8 [M, 3, S, S] memory-mapped images (a channels-last view of the [M, S, S, 3] file), int64 [M]
    indices into ``relative`` that they hold).

    Builds the cache when missing or stale. Undecodable files end in ``BadImageError`` for the first of
    them, unless ``options.skip_bad_images`` (then they are left out and a warning gives their count).
    """
    size = options.stored_size
    inner = options.eval_inner
    folder = cache_folder(source, options)
    key = _key(source, relative, size, inner)
    prefix = f"{label}-{hashlib.sha256(str(source.resolve()).encode()).hexdigest()[:8]}-{size}px-"
    images_path = folder / f"{prefix}{key}.npy"
    meta_path = folder / f"{prefix}{key}.json"
    if not (images_path.is_file() and meta_path.is_file()):
        _build([source / name for name in relative], images_path, meta_path, size, inner, options.workers,
               label)
        for stale in folder.glob(f"{prefix}*"):
            if key not in stale.name:
                stale.unlink(missing_ok=True)
    meta = json.loads(meta_path.read_text())
    bad = meta["bad"]
    if bad and not options.skip_bad_images:
        index, reason = bad[0]
        more = f" ({len(bad) - 1} more bad files)" if len(bad) > 1 else ""
        raise BadImageError(source / relative[index],
                            f"{reason}{more}; fix or remove it, or set data.skip_bad_images=true to leave "
                            "such files out")
    if bad:
        warnings.warn(f"{label}: skipped {len(bad)} image(s) that could not be decoded "
                      f"(data.skip_bad_images=true), e.g. {source / relative[bad[0][0]]}: {bad[0][1]}",
                      stacklevel=2)
    images = np.load(images_path, mmap_mode="c")
    if images.shape != (len(relative), size, size, 3):
        expected = (len(relative), size, size, 3)
        raise ValueError(f"{images_path} has shape {images.shape}, expected {expected}; "
                         "delete it to rebuild")
    keep = np.setdiff1d(np.arange(len(relative)), np.array([i for i, _ in bad], dtype=np.int64))
    if len(keep) < len(relative):  # skipped files: a second, compacted map of the good images (on disk)
        good_path = images_path.with_name(f"{images_path.stem}-good.npy")
        if not good_path.is_file():
            _compact(images, keep, good_path)
        images = np.load(good_path, mmap_mode="c")
    return torch.from_numpy(images).permute(0, 3, 1, 2), keep


def _compact(images: np.ndarray, keep: np.ndarray, target: Path, chunk: int = 256) -> None:
    """Copy rows ``keep`` of the memory map ``images`` into a new .npy at ``target``, chunk by chunk."""
    tmp = target.with_name(f".{target.stem}.{uuid.uuid4().hex}.npy")
    try:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(keep), *images.shape[1:]))
        for start in range(0, len(keep), chunk):
            out[start : start + chunk] = images[keep[start : start + chunk]]
        out.flush()
        del out
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def photo_dataset(
    source: Path,
    relative: Sequence[str],
    labels: Sequence[int],
    class_names: list[str],
    options: PhotoOptions,
    name: str,
    split: str = "all",
    **fields,
) -> tuple[ImageDataset, np.ndarray]:
    """An ``ImageDataset`` of the files ``relative`` (paths under ``source``) with ``labels``.

    The images are put in class order (stable) before caching, so consecutive classes are slices of the
    memory map. ``fields``: per-image arrays (``coarse_labels``, ``query_mask``, or any extra numpy array
    the caller wants reordered the same way, returned in the second value as ``order``-aligned indices) and
    dataset-level attributes. Returns (dataset, kept) where ``kept`` are the indices into ``relative`` of
    the dataset's images, in dataset order. Warns about classes with a single image.
    """
    labels_np = np.asarray(labels, dtype=np.int64)
    if len(labels_np) != len(relative):
        raise ValueError(f"{name}: {len(relative)} files but {len(labels_np)} labels")
    if len(relative) == 0:
        raise ValueError(f"{name}: no images found in {source}")
    order = np.argsort(labels_np, kind="stable")
    ordered = [relative[i] for i in order]
    images, keep = load_cache(source, ordered, options, name)
    kept = order[keep]
    per_image = {}
    for key in ("coarse_labels", "query_mask"):
        if fields.get(key) is not None:
            per_image[key] = torch.from_numpy(np.asarray(fields.pop(key))[kept])
    dataset = ImageDataset(
        images=images,
        labels=torch.from_numpy(labels_np[kept]),
        class_names=class_names,
        name=name,
        split=split,
        view_size=options.image_size,
        eval_crop=options.eval_crop,
        default_augmentation="random_resized_crop",
        paths=[relative[i] for i in kept],
        **per_image,
        **fields,
    )
    counts = np.bincount(dataset.labels.numpy(), minlength=len(class_names))
    single = [class_names[c] for c in np.flatnonzero(counts == 1)]
    if single:
        warnings.warn(f"{name}: {len(single)} class(es) have a single image (no positive pair to retrieve), "
                      f"e.g. {single[0]!r}", stacklevel=2)
    return dataset, kept
