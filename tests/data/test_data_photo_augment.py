"""The augmentation registry, the 224-px batched random resized crop and the evaluation view, checked
against torchvision's per-image transforms on PIL images and tensors."""

import math

import numpy as np
import pytest
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as TF
from PIL import Image

from clusterloss.data import DeviceBatchLoader, ImageDataset, iterate_in_order, random_crop_flip
from clusterloss.data.augment import (
    AUGMENTATIONS,
    eval_view,
    random_resized_crop,
    register_augmentation,
    resized_crop_batch,
    resolve_augmentation,
    sample_resized_crop_boxes,
)
from clusterloss.data.image_cache import EVAL_CROP
from clusterloss.data.image_decode import decode_square


@pytest.mark.parametrize("size", [(500, 375), (375, 500), (256, 256), (301, 260), (640, 257)])
@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_eval_view_from_the_cache_is_resize256_centercrop224(tmp_path, official, size, fmt):
    path = tmp_path / f"photo.{fmt.lower()}"
    official.photo(path, 5, size, fmt=fmt)
    cached = torch.from_numpy(decode_square(path, 256, 224))[None]  # what the cache stores
    ours = eval_view(cached, 224, EVAL_CROP)[0]
    with Image.open(path) as image:
        reference = T.Compose([T.Resize(256), T.CenterCrop(224), T.PILToTensor()])(image.convert("RGB"))
    assert ours.shape == reference.shape == (3, 224, 224)
    difference = (ours.int() - reference.int()).abs()
    # identical geometry and filter: equal except where a JPEG >= 2x the target is DCT-downscaled (draft)
    assert difference.float().mean() < 1.5 and int(difference.max()) <= (255 if min(size) >= 512 else 0)


def test_eval_view_with_a_larger_cache_is_close_to_the_standard_view(tmp_path, official):
    path = tmp_path / "photo.png"
    official.photo(path, 7, (500, 375))
    cached = torch.from_numpy(decode_square(path, 320, 280))[None]
    ours = eval_view(cached, 224, EVAL_CROP)[0]
    with Image.open(path) as image:
        reference = T.Compose([T.Resize(256), T.CenterCrop(224), T.PILToTensor()])(image)
    assert (ours.float() - reference.float()).abs().mean() < 6  # a different resampling path, same view


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_resized_crop_batch_equals_torchvision_resized_crop_per_image(dtype):
    images = torch.randint(0, 256, (6, 3, 40, 52), dtype=torch.uint8)
    boxes = torch.tensor([[0, 0, 40, 52], [3, 5, 20, 17], [10, 1, 30, 40], [0, 30, 8, 22], [5, 5, 5, 5],
                          [1, 2, 39, 30]])
    flips = torch.tensor([False, True, False, True, True, False])
    ours = resized_crop_batch(images.to(dtype), boxes, 24, flips)
    assert ours.dtype == dtype and ours.shape == (6, 3, 24, 24)
    for image, (top, left, h, w), flip, out in zip(images, boxes.tolist(), flips, ours, strict=True):
        expected = TF.resized_crop(image.float(), top, left, h, w, [24, 24], antialias=True)
        if flip:
            expected = expected.flip(-1)
        # float: the same kernel; uint8: torch's integer path, within one grey level of the float result
        tolerance = 1.0 if dtype == torch.uint8 else 1e-3
        assert (out.float() - expected).abs().max() <= tolerance, (top, left, h, w)


def test_random_resized_crop_boxes_follow_torchvision_statistics():
    n, height, width = 20000, 256, 256
    boxes = sample_resized_crop_boxes(height, width, n, generator=torch.Generator().manual_seed(0))
    top, left, h, w = boxes.T.double()
    assert bool(((top >= 0) & (left >= 0) & (top + h <= height) & (left + w <= width)).all())
    scale, log_ratio = (h * w / (height * width)).numpy(), torch.log(w / h).numpy()
    assert scale.min() >= 0.155 and scale.max() <= 1.0
    assert log_ratio.min() >= math.log(3 / 4) - 0.02 and log_ratio.max() <= math.log(4 / 3) + 0.02
    torch.manual_seed(0)
    reference = np.array([T.RandomResizedCrop.get_params(torch.empty(1, height, width), [0.16, 1.0],
                                                         [3 / 4, 4 / 3]) for _ in range(n)], dtype=float)
    ref_scale = reference[:, 2] * reference[:, 3] / (height * width)
    ref_ratio = np.log(reference[:, 3] / reference[:, 2])
    quantiles = [0.05, 0.25, 0.5, 0.75, 0.95]
    assert np.allclose(np.quantile(scale, quantiles), np.quantile(ref_scale, quantiles), atol=0.02)
    assert np.allclose(np.quantile(log_ratio, quantiles), np.quantile(ref_ratio, quantiles), atol=0.03)
    # positions uniform: mean centre offset ~ 0 (relative to the image centre)
    centre = ((left + w / 2) / width - 0.5).numpy()
    assert abs(centre.mean()) < 0.01


def test_random_resized_crop_flip_rate_output_and_reproducibility():
    images = torch.arange(64, dtype=torch.uint8).repeat(400, 3, 64, 1)  # columns increase left to right
    out = random_resized_crop(images, 32, generator=torch.Generator().manual_seed(1))
    assert out.shape == (400, 3, 32, 32) and out.dtype == torch.uint8
    assert float(out.min()) >= 0 and float(out.max()) <= 63
    flipped = (out[:, 0, 0, 0].int() > out[:, 0, 0, -1].int()).float().mean()
    assert 0.43 < float(flipped) < 0.57
    again = random_resized_crop(images, 32, generator=torch.Generator().manual_seed(1))
    assert torch.equal(out, again)
    tall = sample_resized_crop_boxes(10, 100, 50, scale=(0.99, 1.0), ratio=(1.0, 1.0))  # never fits: fallback
    assert tall[:, 2].eq(10).all() and tall[:, 3].eq(10).all() and tall[:, 1].eq(45).all()


def test_registry_builds_every_entry_and_crop_flip_is_unchanged():
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    for name, fn in AUGMENTATIONS.items():
        out = fn(images, 24, torch.Generator().manual_seed(0), padding=4, crop_fraction=1.0)
        assert out.shape == (8, 3, 24, 24), name
    same = AUGMENTATIONS["crop_flip"](images, 32, torch.Generator().manual_seed(3), padding=4)
    assert torch.equal(same, random_crop_flip(images, 4, torch.Generator().manual_seed(3)))
    assert torch.equal(AUGMENTATIONS["none"](images, 32), images)
    dataset = ImageDataset(images, torch.zeros(8, dtype=torch.int64), ["a"])
    assert resolve_augmentation("auto", dataset) == "crop_flip"
    with pytest.raises(ValueError, match="Did you mean 'random_resized_crop'"):
        resolve_augmentation("random_resize_crop", dataset)
    with pytest.raises(ValueError, match="already registered"):
        register_augmentation("none", random_resized_crop)


def test_loader_produces_view_size_batches_for_photo_datasets():
    images = torch.randint(0, 256, (12, 3, 64, 64), dtype=torch.uint8)
    labels = torch.arange(4).repeat_interleave(3)
    photos = ImageDataset(images, labels, list("abcd"), view_size=56, eval_crop=EVAL_CROP,
                          default_augmentation="random_resized_crop")
    loader = DeviceBatchLoader(photos, [list(range(12))], "cpu", [0.5] * 3, [0.25] * 3,
                               generator=torch.Generator().manual_seed(0))
    assert loader.augmentation == "random_resized_crop"
    (batch, batch_labels), = list(loader)
    assert batch.shape == (12, 3, 56, 56) and torch.equal(batch_labels, labels)
    (evaluated, _), = list(iterate_in_order(photos, 100, "cpu", [0.5] * 3, [0.25] * 3))
    expected = (images[:, :, 4:60, 4:60].float() / 255 - 0.5) / 0.25
    assert torch.allclose(evaluated, expected, atol=1e-5)
    plain = DeviceBatchLoader(photos, [list(range(12))], "cpu", [0.5] * 3, [0.25] * 3, augment=False)
    (unaugmented, _), = list(plain)
    assert torch.allclose(unaugmented, expected, atol=1e-5)


def test_threads_do_not_change_the_batches():
    from clusterloss.data.augment import apply_affine, normalization_affine
    from clusterloss.data.loader import _parallel_affine

    images = torch.randint(0, 256, (9, 3, 70, 64), dtype=torch.uint8)
    one = random_resized_crop(images, 56, torch.Generator().manual_seed(4), workers=1)
    two = random_resized_crop(images, 56, torch.Generator().manual_seed(4), workers=3)
    assert torch.equal(one, two)
    scale, shift = normalization_affine([0.4, 0.5, 0.6], [0.2, 0.25, 0.3], 3, torch.device("cpu"))
    assert torch.equal(_parallel_affine(one, scale, shift, 2), apply_affine(one, scale, shift))


def test_fused_photo_path_equals_gather_crop_normalize():
    from clusterloss.data.augment import apply_affine, normalization_affine

    images = torch.randint(0, 256, (20, 3, 64, 64), dtype=torch.uint8)
    index = torch.tensor([3, 17, 0, 5, 5, 11])
    scale, shift = normalization_affine([0.4, 0.5, 0.6], [0.2, 0.25, 0.3], 3, torch.device("cpu"))
    fused = random_resized_crop(images, 48, torch.Generator().manual_seed(2), index=index,
                                affine=(scale, shift), workers=2)
    plain = random_resized_crop(images[index], 48, torch.Generator().manual_seed(2))
    plain = apply_affine(plain, scale, shift)
    assert fused.dtype == torch.float32 and torch.equal(fused, plain)
    photos = ImageDataset(images, torch.arange(20) % 5, list("abcde"), view_size=48, eval_crop=EVAL_CROP,
                          default_augmentation="random_resized_crop")
    batches = [[3, 17, 0, 5, 5, 11], [1, 2]]
    ours = list(DeviceBatchLoader(photos, batches, "cpu", [0.4, 0.5, 0.6], [0.2, 0.25, 0.3],
                                  generator=torch.Generator().manual_seed(9)))
    g = torch.Generator().manual_seed(9)
    for (got, labels), batch in zip(ours, batches, strict=True):
        expected = apply_affine(random_resized_crop(images[batch], 48, g), scale, shift)
        assert torch.equal(got, expected) and torch.equal(labels, torch.tensor(batch) % 5)


def test_image_size_resizes_array_datasets_on_the_device(tmp_path, official):
    from clusterloss.data import build_splits

    official.cifar10(tmp_path, per_batch=8)
    splits = build_splits("cifar10", tmp_path, protocol="zero_shot", image_size=64)
    assert splits.train.images.shape[-1] == 32 and splits.train.view_size == 64  # stored as is
    loader = DeviceBatchLoader(splits.train, [list(range(6))], "cpu", splits.mean, splits.std,
                               generator=torch.Generator().manual_seed(0))
    assert loader.augmentation == "crop_flip" and next(iter(loader))[0].shape == (6, 3, 64, 64)
    (evaluated, _), *_ = list(iterate_in_order(splits.eval, 4, "cpu", splits.mean, splits.std))
    expected = torch.nn.functional.interpolate(splits.eval.images[:4].float(), size=(64, 64), mode="bilinear",
                                               align_corners=False, antialias=True)
    expected = (expected / 255 - splits.mean.view(1, 3, 1, 1)) / splits.std.view(1, 3, 1, 1)
    assert torch.allclose(evaluated, expected, atol=1e-4)
    native = build_splits("cifar10", tmp_path, protocol="zero_shot")
    assert native.train.view_size is None and torch.equal(native.mean, splits.mean)
