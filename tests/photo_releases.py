"""Photo writers shared by the data and benchmark tests: a PIL-generated photo, and a CUB-200-2011 release in
the official text formats (``tests/`` is on ``sys.path``: pytest puts the root conftest's folder there)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_photo(
    path: Path, seed: int, size=(40, 30), mode: str = "RGB", fmt: str | None = None
) -> np.ndarray:
    """A PIL-generated image file (smooth colour gradients + noise); returns its RGB pixels as PIL decodes
    them back (what a reader must produce before resizing)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    width, height = size
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([(xx * (3 + seed % 5)) % 256, (yy * (2 + seed % 7)) % 256,
                     ((xx + yy) * (1 + seed % 3)) % 256], axis=-1)
    pixels = np.clip(base + rng.integers(-20, 21, size=base.shape), 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels, "RGB")
    if mode == "P":
        image = image.quantize(colors=16)
    elif mode != "RGB":
        image = image.convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format=fmt)
    with Image.open(path) as reread:
        return np.asarray(reread.convert("RGB"))


def write_cub(root: Path, class_ids=(1, 2, 100, 101, 150, 200), per_class: int = 3, size=(40, 30)) -> dict:
    """root/CUB_200_2011/ in the official text formats (the listed official class ids only, like the shared
    subset), JPEG images under images/<NNN.Name>/; every class has one test image, the rest train."""
    folder = root / "CUB_200_2011"
    folder.mkdir(parents=True, exist_ok=True)
    classes, images, labels, split = [], [], [], []
    image_id = 0
    info = {"paths": [], "official": [], "is_train": []}
    for class_id in class_ids:
        name = f"{class_id:03d}.Species_{class_id}"
        classes.append(f"{class_id} {name}")
        for i in range(per_class):
            image_id += 1
            relative = f"{name}/{name.split('.')[1]}_{i:04d}_{image_id}.jpg"
            write_photo(folder / "images" / relative, image_id, size, fmt="JPEG")
            images.append(f"{image_id} {relative}")
            labels.append(f"{image_id} {class_id}")
            is_train = int(i < per_class - 1)
            split.append(f"{image_id} {is_train}")
            info["paths"].append(relative)
            info["official"].append(class_id)
            info["is_train"].append(bool(is_train))
    for filename, lines in (("classes.txt", classes), ("images.txt", images),
                            ("image_class_labels.txt", labels), ("train_test_split.txt", split)):
        (folder / filename).write_text("\n".join(lines) + "\n")
    return info
