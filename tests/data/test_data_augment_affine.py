import numpy as np
import pytest
import torch

from clusterloss.data.augment import AUGMENTATIONS, resolve_augmentation
from clusterloss.data.augment_affine import affine_augmentation, random_affine, rotate90_classes
from clusterloss.data.omniglot import load_omniglot


def _bilinear_reference(image: np.ndarray, angle: float, zoom: float, tx: float, ty: float) -> np.ndarray:
    """Per output pixel, loops: the inverse of "scale by zoom and rotate by angle about the centre, then shift
    by (tx, ty) pixels", sampled bilinearly with zeros outside (pixel centres at i + 0.5)."""
    h, w = image.shape
    out = np.zeros_like(image, dtype=np.float64)
    c, s = np.cos(angle), np.sin(angle)
    for i in range(h):
        for j in range(w):
            x, y = j + 0.5 - w / 2 - tx, i + 0.5 - h / 2 - ty  # output point relative to the centre
            sx, sy = (c * x + s * y) / zoom, (-s * x + c * y) / zoom  # rotate back, unscale
            u, v = sx + w / 2 - 0.5, sy + h / 2 - 0.5  # source pixel coordinates
            j0, i0 = int(np.floor(u)), int(np.floor(v))
            total = 0.0
            for di in (0, 1):
                for dj in (0, 1):
                    ii, jj = i0 + di, j0 + dj
                    weight = (1 - abs(v - ii)) * (1 - abs(u - jj))
                    if 0 <= ii < h and 0 <= jj < w:
                        total += weight * image[ii, jj]
            out[i, j] = total
    return out


def test_random_affine_matches_a_per_pixel_reference():
    g = torch.Generator().manual_seed(5)
    images = torch.rand(3, 1, 12, 12, generator=g) * 255
    out = random_affine(images, torch.Generator().manual_seed(9), max_shift=2.0, max_rotation=20.0,
                        scale=(0.8, 1.2))
    # The same draws, in the function's order: angle, zoom, shift x, shift y (one value per image each).
    replay = torch.Generator().manual_seed(9)
    angle = (-20 + 40 * torch.rand(3, generator=replay)) * np.pi / 180
    zoom = 0.8 + 0.4 * torch.rand(3, generator=replay)
    tx = -2 + 4 * torch.rand(3, generator=replay)
    ty = -2 + 4 * torch.rand(3, generator=replay)
    for b in range(3):
        expected = _bilinear_reference(images[b, 0].double().numpy(), float(angle[b]), float(zoom[b]),
                                       float(tx[b]), float(ty[b]))
        np.testing.assert_allclose(out[b, 0].double().numpy(), expected, atol=1e-3)


def test_identity_is_exact_on_uint8_and_a_shift_keeps_the_ink():
    images = load_omniglot("train").images[:8]
    same = random_affine(images, max_shift=0.0, max_rotation=0.0, scale=(1.0, 1.0))
    assert same.dtype == torch.uint8 and torch.equal(same, images)
    # A pure shift keeps a single bright pixel's mass (bilinear weights sum to 1 inside the image).
    dot = torch.zeros(1, 1, 28, 28)
    dot[0, 0, 14, 14] = 255.0
    moved = random_affine(dot, torch.Generator().manual_seed(0), max_shift=2.0, max_rotation=0.0,
                          scale=(1.0, 1.0))
    assert float(moved.sum()) == pytest.approx(255.0, rel=1e-5)


def test_registry_entry_and_dataset_default():
    data = load_omniglot("train")
    assert resolve_augmentation("auto", data) == "affine"
    batch = data.images[:16]
    out = AUGMENTATIONS["affine"](batch, 28, torch.Generator().manual_seed(1), padding=4, crop_fraction=1.0)
    assert out.shape == batch.shape and out.dtype == torch.uint8 and not torch.equal(out, batch)
    again = affine_augmentation(batch, 28, torch.Generator().manual_seed(1))
    assert torch.equal(out, again)  # seeded: reproducible
    assert affine_augmentation(batch, 20, torch.Generator().manual_seed(1)).shape == (16, 1, 20, 20)


def test_bad_inputs():
    with pytest.raises(ValueError, match="batch"):
        random_affine(torch.zeros(28, 28))
    with pytest.raises(ValueError, match="scale"):
        random_affine(torch.zeros(1, 1, 4, 4), scale=(1.2, 0.8))
    assert random_affine(torch.zeros(0, 1, 4, 4)).shape == (0, 1, 4, 4)
    with pytest.raises(ValueError, match="square"):
        rotate90_classes(torch.zeros(1, 1, 4, 5), torch.zeros(1, dtype=torch.int64), 1)


def test_rotate90_classes_labels_and_images():
    images = torch.arange(2 * 9, dtype=torch.uint8).reshape(2, 1, 3, 3)
    labels = torch.tensor([0, 1])
    out, out_labels = rotate90_classes(images, labels, num_classes=2)
    assert out_labels.tolist() == [0, 1, 2, 3, 4, 5, 6, 7]
    assert torch.equal(out[:2], images)
    assert torch.equal(out[2, 0], torch.rot90(images[0, 0], 1))  # label 2 = class 0 rotated by 90 degrees
    assert torch.equal(out[7, 0], torch.rot90(images[1, 0], 3))
