"""window_crop_flip (a random unscaled size x size window + flip) and data.eval_crop_size: the 227-of-256
recipe of Song et al. 2016/2017, on coordinate-coded tensors and through the photo cache of a CUB release."""

import pytest
import torch
import torchvision.transforms as T
from PIL import Image

from clusterloss.config import load_config
from clusterloss.data import DeviceBatchLoader, iterate_in_order
from clusterloss.data.augment import AUGMENTATIONS, window_crop_flip
from clusterloss.data.image_cache import PhotoOptions
from clusterloss.data.protocols import splits_from_config
from photo_releases import write_cub


def coordinate_images(batch: int, height: int, width: int) -> torch.Tensor:
    """float64 [B, 3, H, W]: channel 0 = row, 1 = column, 2 = image index (every pixel says where it is)."""
    rows = torch.arange(height, dtype=torch.float64)[:, None].expand(height, width)
    cols = torch.arange(width, dtype=torch.float64)[None, :].expand(height, width)
    index = [torch.full((height, width), float(b), dtype=torch.float64) for b in range(batch)]
    return torch.stack([torch.stack([rows, cols, plane]) for plane in index])


def test_each_output_is_an_unscaled_window_possibly_mirrored():
    images = coordinate_images(2000, 12, 10)
    out = window_crop_flip(images, 7, torch.Generator().manual_seed(0))
    assert out.shape == (2000, 3, 7, 7) and out.dtype == images.dtype
    steps = torch.arange(7, dtype=torch.float64)
    top, left = out[:, 0, 0, 0], out[:, 1, 0, 0]
    flipped = out[:, 1, 0, 1] < left
    for b in range(len(out)):
        assert torch.equal(out[b, 2], torch.full((7, 7), float(b)))  # its own image
        assert torch.equal(out[b, 0], (top[b] + steps)[:, None].expand(7, 7))  # rows: step 1, no scaling
        cols = left[b] - steps if flipped[b] else left[b] + steps  # columns: step 1, mirrored or not
        assert torch.equal(out[b, 1], cols[None, :].expand(7, 7))
    right = torch.where(flipped, left, left + 6)  # the window's rightmost source column
    assert top.min() == 0 and top.max() == 12 - 7 and right.min() == 6 and right.max() == 9
    # every offset drawn, about equally often; half the windows mirrored
    assert torch.bincount(top.long()).tolist() == pytest.approx([2000 / 6] * 6, rel=0.2)
    assert torch.bincount((right - 6).long()).tolist() == pytest.approx([500] * 4, rel=0.2)
    assert abs(float(flipped.double().mean()) - 0.5) < 0.05


def test_uint8_generator_reproducibility_and_bad_sizes():
    images = torch.randint(0, 256, (5, 3, 16, 20), dtype=torch.uint8)
    a = window_crop_flip(images, 16, torch.Generator().manual_seed(3))
    b = window_crop_flip(images, 16, torch.Generator().manual_seed(3))
    assert a.dtype == torch.uint8 and torch.equal(a, b)
    for image, window in zip(images, a, strict=True):  # all 16 rows: only the column offset and flip vary
        assert any(torch.equal(window, image[:, :, x:x + 16].flip(-1) if f else image[:, :, x:x + 16])
                   for x in range(5) for f in (False, True))
    assert AUGMENTATIONS["window_crop_flip"] is window_crop_flip
    with pytest.raises(ValueError, match="17 px window does not fit in 16 x 20"):
        window_crop_flip(images, 17)
    assert window_crop_flip(images[:0], 8).shape == (0, 3, 8, 8)


def test_eval_crop_size_is_checked():
    assert PhotoOptions(image_size=227, cache_size=256).eval_inner == 224  # the default: 87.5 %
    assert PhotoOptions(image_size=227, cache_size=256, eval_crop_size=227).eval_inner == 227
    with pytest.raises(ValueError, match=r"data.eval_crop_size must be in \[1, 256\]"):
        PhotoOptions(image_size=227, cache_size=256, eval_crop_size=257)


def _find_window(window: torch.Tensor, image: torch.Tensor) -> tuple[int, int, bool] | None:
    """(top, left, mirrored) of the exact ``window`` inside ``image`` ([3, S, S]), or None."""
    size, side = window.shape[-1], image.shape[-1]
    for mirrored in (False, True):
        target = window.flip(-1) if mirrored else window
        for top in range(side - size + 1):
            for left in range(side - size + 1):
                if torch.equal(image[:, top, left:left + 8], target[:, 0, :8]) and torch.equal(
                        image[:, top:top + size, left:left + size], target):
                    return top, left, mirrored
    return None


def test_cub_227_of_256_training_windows_and_centre_evaluation(tmp_path):
    write_cub(tmp_path, class_ids=(1, 2, 101, 102), per_class=3, size=(300, 260))
    config = load_config(None, [f"data.root={tmp_path}", "data.name=cub200", f"data.cache_dir={tmp_path}/c",
                                "data.image_size=227", "data.cache_size=256", "data.eval_crop_size=227",
                                "data.augmentation=window_crop_flip"])
    splits = splits_from_config(config.data)
    train, evaluation = splits.train, splits.eval
    assert train.images.shape[-2:] == (256, 256) and train.view_size == 227
    raw = ([0.0, 0.0, 0.0], [1 / 255] * 3)  # normalization that leaves the pixel values as they are
    loader = DeviceBatchLoader(train, [list(range(len(train)))] * 4, "cpu", *raw,
                               generator=torch.Generator().manual_seed(0), augmentation="window_crop_flip")
    found = []
    for images, _ in loader:
        assert images.shape == (len(train), 3, 227, 227)
        for b, image in enumerate(images):
            where = _find_window(image.round().to(torch.uint8), train.images[b])
            assert where is not None, f"training image {b} is not an unscaled 227 window of its 256 square"
            found.append(where)
    assert {f[2] for f in found} == {False, True} and len({f[:2] for f in found}) > 1
    # evaluation: the centre 227 x 227 of the 256 square, which is torchvision's Resize(256) + CenterCrop(227)
    views = torch.cat([x for x, _ in iterate_in_order(evaluation, 64, "cpu", *raw)]).round().to(torch.uint8)
    assert torch.equal(views, evaluation.images[:, :, 14:241, 14:241])
    reference = T.Compose([T.Resize(256), T.CenterCrop(227), T.PILToTensor()])
    for view, path in zip(views, evaluation.paths, strict=True):
        with Image.open(tmp_path / "CUB_200_2011" / path) as image:
            assert torch.equal(view, reference(image.convert("RGB")))
