"""Decode one photo to RGB uint8 at a fixed square size, exactly the way torchvision's eval pipeline resizes.

``decode_square(path, size, inner)`` = ``Resize(size)`` (shorter side -> ``size``, longer side
``int(size * long / short)``, PIL bilinear with its full antialiasing filter, as torchvision does on PIL
images), then the ``size x size`` square around the centre, placed so that its own centre ``inner x inner``
crop is pixel for pixel torchvision's ``CenterCrop(inner)`` of that resized image. With size 256 and inner
224 the evaluation view cropped from the cache equals ``Resize(256) + CenterCrop(224)`` exactly.

One deviation, for speed: a JPEG at least twice as large as needed is decoded at a reduced DCT scale
(PIL ``draft``: 1/2, 1/4 or 1/8, never below the target size) before the bilinear resize; this changes pixels
by a few grey levels on average, not the geometry.

Colour: every mode becomes RGB through PIL's ``convert("RGB")`` (grey replicated, palette expanded, alpha
dropped, CMYK converted), as torchvision's ``ImageFolder`` loader does; 16-bit / 32-bit grey is scaled to
8 bits first. EXIF orientation is not applied (neither does torchvision's loader).

Failures raise ``BadImageError`` naming the file: unreadable or unidentified files, truncated data, and
images with more pixels than ``PIL.Image.MAX_IMAGE_PIXELS`` (decompression bombs; PIL itself only refuses
twice that and warns below).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile

__all__ = ["BadImageError", "decode_square", "open_rgb", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff", ".ppm", ".pgm")


class BadImageError(ValueError):
    """An image file that cannot be used; ``str()`` is one line naming the file and the reason."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot decode image {path}: {reason}")


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        image = Image.fromarray(np.clip(array * (255.0 / peak) + 0.5, 0, 255).astype(np.uint8), "L")
    return image if image.mode == "RGB" else image.convert("RGB")


def open_rgb(path: str | Path, min_side: int | None = None) -> Image.Image:
    """The fully decoded RGB image; ``min_side``: allow JPEG draft decoding down to that shorter side."""
    if ImageFile.LOAD_TRUNCATED_IMAGES:  # someone else's global setting must not hide truncated files
        raise BadImageError(path, "PIL.ImageFile.LOAD_TRUNCATED_IMAGES is set; unset it to check files")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # we refuse those ourselves
            with Image.open(path) as image:
                width, height = image.size
                limit = Image.MAX_IMAGE_PIXELS
                if limit is not None and width * height > limit:
                    raise BadImageError(
                        path, f"{width}x{height} = {width * height} pixels is more than "
                        f"PIL.Image.MAX_IMAGE_PIXELS = {limit} (a decompression bomb?)")
                if min_side is not None and image.format == "JPEG" and min(width, height) >= 2 * min_side:
                    scale = min(width, height) / min_side
                    image.draft("RGB", (int(width / scale + 1), int(height / scale + 1)))
                image.load()
                return _to_rgb(image)
    except BadImageError:
        raise
    except Image.DecompressionBombError as error:
        raise BadImageError(path, f"{error} (a decompression bomb?)") from None
    except (OSError, ValueError, SyntaxError, EOFError) as error:
        # UnidentifiedImageError is an OSError; truncated data raises OSError("image file is truncated").
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise BadImageError(path, reason) from None


def center_square_offset(long: int, size: int, inner: int) -> int:
    """Offset of the ``size`` square along a resized side of ``long`` pixels (see the module docstring)."""
    inner_offset = int(round((long - inner) / 2.0))  # torchvision CenterCrop's formula
    return min(max(inner_offset - int(round((size - inner) / 2.0)), 0), long - size)


def decode_square(path: str | Path, size: int, inner: int | None = None, channels_last: bool = False
                  ) -> np.ndarray:
    """uint8 [3, size, size] (``channels_last``: [size, size, 3], as decoded): ``path`` resized (shorter
    side ``size``) and its centre square."""
    if inner is None:
        inner = size
    image = open_rgb(path, min_side=size)
    width, height = image.size
    if width <= height:
        new_w, new_h = size, int(size * height / width)
    else:
        new_w, new_h = int(size * width / height), size
    if (new_w, new_h) != (width, height):
        image = image.resize((new_w, new_h), Image.BILINEAR)
    left = center_square_offset(new_w, size, inner)
    top = center_square_offset(new_h, size, inner)
    array = np.asarray(image.crop((left, top, left + size, top + size)), dtype=np.uint8)
    return array if channels_last else np.ascontiguousarray(array.transpose(2, 0, 1))
