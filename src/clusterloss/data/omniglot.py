"""Omniglot (Lake, Salakhutdinov & Tenenbaum, Science 2015): handwritten characters of 50 alphabets.

A class is a character (``"Alphabet/characterNN"``); its alphabet is the coarse label. Images are the
official 105x105 1-bit PNGs, inverted so that ink is 255 (background 0), resized to ``image_size`` pixels
(28 by default, as in the few-shot literature; antialiased bilinear, then rounded to uint8), 1 channel.

Splits: ``"train"`` is a *background* set, ``"test"`` the 20-alphabet *evaluation* set. Registry names:

* ``omniglot``: background = the official minimal split *background small 1* (5 alphabets, 136 characters,
  2,720 images). A copy ships inside the package (``omniglot_data/``), used when ``root`` holds none.
* ``omniglot_small2``: *background small 2* (5 other alphabets).
* ``omniglot_full``: the full 30-alphabet background set ``images_background``.

Under ``root`` each set is read from its official zip (``images_background_small1.zip``, ...) or from the
folder it extracts to (``images_background_small1/<Alphabet>/characterNN/<id>_<drawer>.png``).
``download=True`` fetches ``images_background.zip`` / ``images_evaluation.zip`` from the Omniglot
repository (brendenlake/omniglot), checking the MD5s that torchvision's Omniglot reader publishes, and keeps
the zip (it is read directly, never extracted); the small sets are not downloadable here (use the bundled
one or place the zip yourself).

The 20 official 20-way one-shot runs (``all_runs.zip``: ``runNN/training/classNN.png``,
``runNN/test/itemNN.png``, ``runNN/class_labels.txt``) are loaded by :func:`load_oneshot_runs` from
``root`` (zip or extracted ``all_runs/`` / ``runNN/`` folders), else from the bundled copy.
"""

from __future__ import annotations

import io
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from clusterloss.data.dataset import ImageDataset
from clusterloss.data.download import download_file

__all__ = ["OneShotRuns", "load_omniglot", "load_omniglot_small2", "load_omniglot_full", "load_oneshot_runs",
           "BUNDLE", "DEFAULT_IMAGE_SIZE", "pack_bundle", "read_png_ink"]

NATIVE_SIZE = 105
DEFAULT_IMAGE_SIZE = 28
BUNDLE = Path(__file__).resolve().parent / "omniglot_data" / "omniglot_small1_runs.npz"
URL_PREFIX = "https://raw.githubusercontent.com/brendenlake/omniglot/master/python"
# MD5s of the official zips as published in torchvision.datasets.Omniglot (zips_md5).
DOWNLOADS = {"images_background": "68d2efa1b9178cc56df9314c21c6e718",
             "images_evaluation": "6b91aef0f799c5bb55b94e3f2daec811"}
_IMAGE_PATH = re.compile(r"(?:^|/)([^/]+)/(character\d+)/([^/]+\.png)$")


@dataclass
class OneShotRuns:
    """The 20 official 20-way one-shot runs: in run r, test item j is of the class of training image
    ``answers[r, j]``.

    ``train`` / ``test``: uint8 [R, 20, 1, H, W] (ink 255); ``answers``: int64 [R, 20] in 0..19.
    """

    train: torch.Tensor
    test: torch.Tensor
    answers: torch.Tensor

    @property
    def num_runs(self) -> int:
        return int(self.answers.shape[0])


# -- decoding ----------------------------------------------------------------------------------------------
def read_png_ink(data: bytes) -> np.ndarray:
    """One official PNG (white background, black strokes) -> bool [105, 105], True where there is ink."""
    from PIL import Image  # Pillow comes with torchvision; only needed when PNGs are read

    with Image.open(io.BytesIO(data)) as image:
        pixels = np.asarray(image.convert("L"))
    if pixels.shape != (NATIVE_SIZE, NATIVE_SIZE):
        raise ValueError(f"an Omniglot image is {NATIVE_SIZE}x{NATIVE_SIZE}, got {pixels.shape}")
    return pixels < 128


def _resize(ink: np.ndarray, image_size: int | None) -> torch.Tensor:
    """bool [N, 105, 105] -> uint8 [N, 1, S, S], ink 255 (antialiased bilinear below 105 px)."""
    size = DEFAULT_IMAGE_SIZE if image_size is None else int(image_size)
    if size < 1:
        raise ValueError(f"data.image_size must be >= 1, got {size}")
    images = torch.from_numpy(np.ascontiguousarray(ink)).to(torch.float32)[:, None]
    if size != NATIVE_SIZE and len(images):
        images = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True,
                               align_corners=False)
    return images.mul_(255).round_().clamp_(0, 255).to(torch.uint8)


class _Source:
    """A zip or a folder, listing ``*.png`` paths relative to it and reading their bytes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.zip = zipfile.ZipFile(path) if path.is_file() else None

    def names(self) -> list[str]:
        if self.zip is not None:
            return sorted(n for n in self.zip.namelist() if n.endswith(".png"))
        return sorted(p.relative_to(self.path).as_posix() for p in self.path.rglob("*.png"))

    def read(self, name: str) -> bytes:
        return self.zip.read(name) if self.zip is not None else (self.path / name).read_bytes()

    def read_text(self, name: str) -> str:
        return self.read(name).decode()

    def exists(self, name: str) -> bool:
        if self.zip is not None:
            return name in set(self.zip.namelist())
        return (self.path / name).is_file()


def _character_images(source: _Source) -> tuple[list[str], list[str], np.ndarray]:
    """(alphabet of each image, character of each image, ink bool [N, 105, 105]) in sorted path order."""
    alphabets, characters, ink = [], [], []
    for name in source.names():
        match = _IMAGE_PATH.search(name)
        if match is None:
            continue
        alphabets.append(match.group(1))
        characters.append(match.group(2))
        ink.append(read_png_ink(source.read(name)))
    if not ink:
        raise ValueError(f"{source.path} holds no Omniglot images (<Alphabet>/characterNN/*.png)")
    return alphabets, characters, np.stack(ink)


def _dataset(alphabets: list[str], characters: list[str], ink: np.ndarray, image_size: int | None,
             name: str, split: str) -> ImageDataset:
    class_keys = sorted({(a, c) for a, c in zip(alphabets, characters, strict=True)})
    class_id = {key: i for i, key in enumerate(class_keys)}
    alphabet_names = sorted(set(alphabets))
    alphabet_id = {a: i for i, a in enumerate(alphabet_names)}
    labels = [class_id[(a, c)] for a, c in zip(alphabets, characters, strict=True)]
    order = np.argsort(labels, kind="stable")  # class-major, drawers in file order within a class
    return ImageDataset(
        images=_resize(ink[order], image_size),
        labels=torch.tensor(labels, dtype=torch.int64)[order],
        class_names=[f"{a}/{c}" for a, c in class_keys],
        name=name, split=split,
        coarse_labels=torch.tensor([alphabet_id[a] for a in alphabets], dtype=torch.int64)[order],
        coarse_class_names=alphabet_names, default_augmentation="affine",
    )


# -- the bundled copy --------------------------------------------------------------------------------------
def _pack(ink: np.ndarray) -> np.ndarray:
    return np.packbits(ink.reshape(len(ink), -1), axis=1)


def _unpack(bits: np.ndarray) -> np.ndarray:
    count = NATIVE_SIZE * NATIVE_SIZE
    return np.unpackbits(bits, axis=1, count=count).astype(bool).reshape(-1, NATIVE_SIZE, NATIVE_SIZE)


def pack_bundle(background_zip: str | Path, runs_zip: str | Path, out: str | Path = BUNDLE) -> Path:
    """Write the bundled copy: the background-small-1 images and the 20 runs, bit-packed (lossless)."""
    source = _Source(Path(background_zip))
    alphabets, characters, ink = _character_images(source)
    train, test, answers = _read_runs(_Source(Path(runs_zip)), "")
    out = Path(out)
    np.savez_compressed(out, background_bits=_pack(ink), background_alphabet=np.array(alphabets),
                        background_character=np.array(characters),
                        runs_train_bits=_pack(train.reshape(-1, NATIVE_SIZE, NATIVE_SIZE)),
                        runs_test_bits=_pack(test.reshape(-1, NATIVE_SIZE, NATIVE_SIZE)),
                        runs_answers=answers)
    return out


def _bundle() -> dict[str, np.ndarray]:
    if not BUNDLE.is_file():
        raise FileNotFoundError(f"the bundled Omniglot copy {BUNDLE} is missing (a broken install?); "
                                "pass data.root with images_background_small1.zip and all_runs.zip")
    with np.load(BUNDLE, allow_pickle=False) as archive:
        return {key: archive[key] for key in archive.files}


# -- background / evaluation sets --------------------------------------------------------------------------
def _find(root: Path | None, folder: str) -> _Source | None:
    if root is None:
        return None
    for candidate in (root / folder, root / f"{folder}.zip", root / "omniglot" / folder,
                      root / "omniglot" / f"{folder}.zip"):
        if candidate.exists():
            return _Source(candidate)
    return None


def _load_set(folder: str, split: str, root: Path | None, download: bool, image_size: int | None,
              name: str, bundled: bool) -> ImageDataset:
    source = _find(root, folder)
    if source is None and download and folder in DOWNLOADS:
        if root is None:
            raise ValueError(f"downloading Omniglot's {folder} needs data.root (where to keep the zip)")
        url = f"{URL_PREFIX}/{folder}.zip"
        source = _Source(download_file(url, root / f"{folder}.zip", DOWNLOADS[folder]))
    if source is None and bundled:
        data = _bundle()
        alphabets = [str(a) for a in data["background_alphabet"]]
        characters = [str(c) for c in data["background_character"]]
        return _dataset(alphabets, characters, _unpack(data["background_bits"]), image_size, name, split)
    if source is None:
        fetch = (f" or pass data.download=true to fetch {URL_PREFIX}/{folder}.zip" if folder in DOWNLOADS
                 else " (get it from https://github.com/brendenlake/omniglot, folder python/)")
        raise FileNotFoundError(f"Omniglot {folder} not found under {root}: place {folder}.zip (or the "
                                f"folder it extracts to) there{fetch}")
    alphabets, characters, ink = _character_images(source)
    return _dataset(alphabets, characters, ink, image_size, name, split)


def _load(background: str, split: str, root: Path | None, download: bool, image_size: int | None,
          name: str) -> ImageDataset:
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' (background set) or 'test' (evaluation set), got {split!r}")
    root = None if root is None else Path(root)
    if split == "test":
        return _load_set("images_evaluation", split, root, download, image_size, name, bundled=False)
    return _load_set(background, split, root, download, image_size, name,
                     bundled=background == "images_background_small1")


def load_omniglot(split: str, root: Path | None = None, download: bool = False,
                  image_size: int | None = None) -> ImageDataset:
    """``train`` = background small 1 (from ``root``, else the bundled copy); ``test`` = evaluation set."""
    return _load("images_background_small1", split, root, download, image_size, "omniglot")


def load_omniglot_small2(split: str, root: Path | None = None, download: bool = False,
                         image_size: int | None = None) -> ImageDataset:
    """``train`` = background small 2 (``images_background_small2[.zip]`` under ``root``)."""
    return _load("images_background_small2", split, root, download, image_size, "omniglot_small2")


def load_omniglot_full(split: str, root: Path | None = None, download: bool = False,
                       image_size: int | None = None) -> ImageDataset:
    """``train`` = the full 30-alphabet background set ``images_background``; ``test`` = evaluation set."""
    return _load("images_background", split, root, download, image_size, "omniglot_full")


# -- the one-shot runs -------------------------------------------------------------------------------------
def _read_runs(source: _Source, prefix: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train ink [R, 20, 105, 105], test ink [R, 20, 105, 105], answers int64 [R, 20])."""
    train, test, answers = [], [], []
    run = 1
    while source.exists(f"{prefix}run{run:02d}/class_labels.txt"):
        base = f"{prefix}run{run:02d}"
        pairs = [line.split() for line in source.read_text(f"{base}/class_labels.txt").splitlines()
                 if line.strip()]
        items = {}
        for pair in pairs:
            if len(pair) != 2:
                raise ValueError(f"{source.path}: bad line {' '.join(pair)!r} in {base}/class_labels.txt")
            test_match = re.search(r"item(\d+)\.png$", pair[0])
            train_match = re.search(r"class(\d+)\.png$", pair[1])
            if test_match is None or train_match is None:
                raise ValueError(f"{source.path}: bad line {' '.join(pair)!r} in {base}/class_labels.txt")
            items[int(test_match.group(1))] = int(train_match.group(1)) - 1
        count = len(items)
        if sorted(items) != list(range(1, count + 1)) or count == 0:
            raise ValueError(f"{source.path}: {base}/class_labels.txt must list item01..itemNN once each")
        train.append(np.stack([read_png_ink(source.read(f"{base}/training/class{c:02d}.png"))
                               for c in range(1, count + 1)]))
        test.append(np.stack([read_png_ink(source.read(f"{base}/test/item{i:02d}.png"))
                              for i in range(1, count + 1)]))
        answers.append([items[i] for i in range(1, count + 1)])
        run += 1
    if not train:
        raise ValueError(f"{source.path} holds no one-shot runs (run01/class_labels.txt, ...)")
    return np.stack(train), np.stack(test), np.array(answers, dtype=np.int64)


def load_oneshot_runs(root: str | Path | None = None, image_size: int | None = None) -> OneShotRuns:
    """The official runs from ``root`` (``all_runs.zip``, ``all_runs/`` or ``run01/``... folders), else the
    bundled copy; images preprocessed exactly like :func:`load_omniglot`'s."""
    found = None
    if root is not None:
        root = Path(root)
        for base in (root, root / "omniglot"):
            for candidate, prefix in ((base / "all_runs.zip", ""), (base / "all_runs", ""), (base, "")):
                if candidate.exists() and _Source(candidate).exists(f"{prefix}run01/class_labels.txt"):
                    found = (_Source(candidate), prefix)
                    break
            if found:
                break
    if found is not None:
        train, test, answers = _read_runs(*found)
    else:
        data = _bundle()
        answers = data["runs_answers"]
        shape = (*answers.shape, NATIVE_SIZE, NATIVE_SIZE)
        train = _unpack(data["runs_train_bits"]).reshape(shape)
        test = _unpack(data["runs_test_bits"]).reshape(shape)
    runs, ways = answers.shape
    train_images = _resize(train.reshape(-1, NATIVE_SIZE, NATIVE_SIZE), image_size)
    test_images = _resize(test.reshape(-1, NATIVE_SIZE, NATIVE_SIZE), image_size)
    return OneShotRuns(train=train_images.reshape(runs, ways, *train_images.shape[1:]),
                       test=test_images.reshape(runs, ways, *test_images.shape[1:]),
                       answers=torch.as_tensor(answers, dtype=torch.int64))
