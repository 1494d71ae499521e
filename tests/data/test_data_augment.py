import pytest
import torch
import torch.nn.functional as F

from clusterloss.data import channel_stats, normalize, random_crop_flip


def _reference_crop_flip(images, padding, offsets_y, offsets_x, flips):
    """Per-image loop: the obvious implementation the batched one must equal."""
    out = []
    for image, y, x, flip in zip(images, offsets_y, offsets_x, flips, strict=True):
        padded = F.pad(image, (padding, padding, padding, padding))
        crop = padded[:, y : y + image.shape[1], x : x + image.shape[2]]
        out.append(crop.flip(-1) if flip else crop)
    return torch.stack(out)


@pytest.mark.parametrize("shape,padding", [((16, 3, 32, 32), 4), ((9, 1, 8, 6), 2), ((5, 2, 3, 3), 0)])
def test_matches_per_image_reference(shape, padding):
    images = torch.randint(0, 256, shape, dtype=torch.uint8)
    out = random_crop_flip(images, padding, generator=torch.Generator().manual_seed(11))
    # replay the same draws: offsets y, offsets x, flips, in this order
    g = torch.Generator().manual_seed(11)
    b = shape[0]
    oy = torch.randint(0, 2 * padding + 1, (b,), generator=g)
    ox = torch.randint(0, 2 * padding + 1, (b,), generator=g)
    fl = torch.randint(0, 2, (b,), generator=g).bool()
    expected = _reference_crop_flip(images, padding, oy.tolist(), ox.tolist(), fl.tolist())
    assert out.dtype == torch.uint8 and out.shape == images.shape
    assert torch.equal(out, expected)


def test_every_output_is_a_valid_crop_and_both_flips_occur():
    images = torch.randint(1, 256, (64, 3, 10, 10), dtype=torch.uint8)  # no zeros: padding is recognisable
    out = random_crop_flip(images, 3)
    flips = 0
    for image, crop in zip(images, out, strict=True):
        candidates = []
        padded = F.pad(image, (3, 3, 3, 3))
        for y in range(7):
            for x in range(7):
                window = padded[:, y : y + 10, x : x + 10]
                candidates += [(window, False), (window.flip(-1), True)]
        matches = [f for w, f in candidates if torch.equal(w, crop)]
        assert matches, "output is not a flipped/unflipped crop of the padded input"
        flips += matches[0]
    assert 0 < flips < 64


def test_generator_makes_it_reproducible_and_padding_zero_only_flips():
    images = torch.randint(0, 256, (8, 3, 5, 5), dtype=torch.uint8)
    a = random_crop_flip(images, 2, torch.Generator().manual_seed(0))
    b = random_crop_flip(images, 2, torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    only_flip = random_crop_flip(images, 0)
    for image, out in zip(images, only_flip, strict=True):
        assert torch.equal(out, image) or torch.equal(out, image.flip(-1))
    with pytest.raises(ValueError, match="B, C, H, W"):
        random_crop_flip(images[0], 2)
    assert random_crop_flip(images[:0], 2).shape == (0, 3, 5, 5)


def test_normalize_and_channel_stats():
    images = torch.randint(0, 256, (20, 3, 4, 5), dtype=torch.uint8)
    mean, std = channel_stats(images, chunk_size=7)
    as_float = images.double() / 255
    assert torch.allclose(mean.double(), as_float.mean(dim=(0, 2, 3)), atol=1e-6)
    assert torch.allclose(std.double(), as_float.std(dim=(0, 2, 3), unbiased=False), atol=1e-6)
    out = normalize(images, mean, std)
    assert out.dtype == torch.float32
    expected = (as_float - mean.double().view(1, 3, 1, 1)) / std.double().view(1, 3, 1, 1)
    assert torch.allclose(out.double(), expected, atol=1e-5)
    assert torch.allclose(out.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5)
    with pytest.raises(ValueError, match="channels"):
        normalize(images, [0.5], [0.2, 0.2, 0.2])
    with pytest.raises(ValueError, match="positive"):
        normalize(images, [0.5] * 3, [0.2, 0.0, 0.2])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_cuda_matches_the_cpu_result_for_the_same_draws():
    images = torch.randint(0, 256, (32, 3, 16, 16), dtype=torch.uint8)
    cpu = random_crop_flip(images, 4, torch.Generator().manual_seed(3))
    gpu = random_crop_flip(images.cuda(), 4, torch.Generator().manual_seed(3))  # CPU draws, GPU gather
    assert gpu.device.type == "cuda" and torch.equal(gpu.cpu(), cpu)
    on_device = random_crop_flip(images.cuda(), 4, torch.Generator(device="cuda").manual_seed(3))
    assert on_device.shape == images.shape and on_device.dtype == torch.uint8
    assert torch.allclose(
        normalize(images.cuda(), [0.5] * 3, [0.2] * 3).cpu(), normalize(images, [0.5] * 3, [0.2] * 3)
    )
