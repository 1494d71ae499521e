"""The fast photo path: channels-last cache, channels-last crops normalized in place, reused batch buffers.

References: torchvision's own per-image pipeline on PIL images (the benchmark's baseline) on the same boxes,
and plain NumPy / torch computations; buffers are checked against every way a caller can keep a batch."""

import gc

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image

from clusterloss.data import DeviceBatchLoader, ImageDataset, iterate_in_order, load_dataset
from clusterloss.data.augment import (
    apply_affine,
    channels_last_empty,
    normalization_affine,
    random_resized_crop,
    resized_crop_batch,
)
from clusterloss.data.batch_buffers import BatchBuffers
from clusterloss.data.image_cache import EVAL_CROP, PhotoOptions
from clusterloss.data.image_decode import decode_square

MEAN, STD = [0.45, 0.5, 0.55], [0.2, 0.25, 0.3]
# boxes (top, left, h, w) that enlarge, shrink, keep, and change the aspect, on 64 x 80 images
BOXES = [[0, 0, 64, 80], [3, 5, 20, 17], [10, 1, 50, 70], [0, 30, 8, 22], [5, 5, 5, 5], [1, 2, 63, 60]]


def _channels_last_images(count=6, height=64, width=80, seed=0):
    pixels = torch.randint(0, 256, (count, height, width, 3), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(seed))
    return pixels.permute(0, 3, 1, 2)  # the cache's layout: [N, 3, H, W] view of [N, H, W, 3] memory


def test_channels_last_crops_match_torchvision_pil_pipeline_on_the_same_boxes():
    images = _channels_last_images()
    boxes = torch.tensor(BOXES)
    flips = torch.tensor([False, True, False, True, True, False])
    affine = normalization_affine(MEAN, STD, 3, torch.device("cpu"))
    ours = resized_crop_batch(images, boxes, 48, flips, workers=2, affine=affine)
    assert ours.shape == (6, 3, 48, 48) and ours.dtype == torch.float32
    assert ours.is_contiguous(memory_format=torch.channels_last)
    for image, (top, left, h, w), flip, out in zip(images, BOXES, flips, ours, strict=True):
        pil = Image.fromarray(image.permute(1, 2, 0).numpy())
        crop = TF.resized_crop(pil, top, left, h, w, [48, 48])  # PIL bilinear, antialiased (torchvision)
        crop = TF.hflip(crop) if flip else crop
        expected = TF.normalize(TF.to_tensor(crop), MEAN, STD)
        # torch's uint8 kernel is Pillow-SIMD's: at most one grey level apart from Pillow
        one_level = 1 / 255 / min(STD) + 1e-5
        assert float((out - expected).abs().max()) <= one_level, (top, left, h, w)


def test_channels_last_path_equals_the_contiguous_path_and_any_out_layout():
    images = _channels_last_images()
    boxes, flips = torch.tensor(BOXES), torch.tensor([True, False, True, False, False, True])
    affine = normalization_affine(MEAN, STD, 3, torch.device("cpu"))
    fast = resized_crop_batch(images, boxes, 40, flips, affine=affine)
    contiguous_input = resized_crop_batch(images.contiguous(), boxes, 40, flips, affine=affine)
    into = torch.full((6, 3, 40, 40), float("nan"))  # a [C, H, W]-contiguous buffer works too
    assert resized_crop_batch(images, boxes, 40, flips, affine=affine, out=into) is into
    uint8 = resized_crop_batch(images, boxes, 40, flips)
    assert torch.equal(fast, contiguous_input) and torch.equal(fast, into)
    assert torch.equal(fast, apply_affine(uint8.contiguous(), *affine))  # bit-identical normalization
    floats = resized_crop_batch(images.float(), boxes, 40, flips)  # the float path (GPU), channels-last input
    assert torch.equal(floats, resized_crop_batch(images.float().contiguous(), boxes, 40, flips))
    assert float((floats - uint8.float()).abs().max()) <= 1.0
    flipped_back = resized_crop_batch(images, boxes, 40, ~flips)
    assert torch.equal(uint8, flipped_back.flip(-1))  # the flip mirrors exactly, whichever view it uses
    with pytest.raises(ValueError, match="out must be"):
        resized_crop_batch(images, boxes, 40, flips, affine=affine, out=torch.empty(6, 3, 40, 41))


def test_batch_buffers_reuse_only_memory_nobody_holds():
    pool = BatchBuffers(capacity=2)
    first = pool.take((2, 3))
    a = first.data_ptr()
    del first
    held = pool.take((2, 3))
    assert held.data_ptr() == a  # dropped: reused
    second = pool.take((2, 3))
    b = second.data_ptr()
    assert b != a  # `held` is still referenced: another buffer
    view, array = second[1:], held.numpy()  # keep each memory only through a view / a NumPy array
    del held, second
    unpooled = pool.take((2, 3))
    assert unpooled.data_ptr() not in (a, b) and len(pool) == 2  # none free, capacity reached
    del unpooled, view
    again = pool.take((2, 3))
    assert again.data_ptr() == b  # the view is gone, the NumPy array still holds `a`
    del array
    assert pool.take((2, 3)).data_ptr() == a
    assert pool.take((4, 3)).shape == (4, 3) and len(pool) == 2  # a new shape replaces a free buffer
    with pytest.raises(ValueError, match="capacity"):
        BatchBuffers(capacity=0)


def test_batch_buffers_respect_tensors_saved_for_backward():
    pool = BatchBuffers(capacity=3)
    batch = pool.take((4, 3, 8, 8))
    batch.fill_(1.0)
    conv = torch.nn.Conv2d(3, 2, 3)
    loss = conv(batch).square().sum()  # autograd keeps the input for the weight gradient
    ptr = batch.data_ptr()
    del batch
    gc.collect()
    assert pool.take((4, 3, 8, 8)).data_ptr() != ptr
    loss.backward()
    expected = torch.autograd.grad(conv(torch.ones(4, 3, 8, 8)).square().sum(), conv.weight)[0]
    assert torch.allclose(conv.weight.grad, expected)  # the saved input was not overwritten


def test_loader_batches_are_right_whether_kept_or_dropped():
    images = _channels_last_images(count=20, seed=3)
    labels = torch.arange(20) % 5
    photos = ImageDataset(images, labels, list("abcde"), view_size=32, eval_crop=EVAL_CROP,
                          default_augmentation="random_resized_crop")
    batches = [[3, 17, 0, 5], [1, 2, 8, 9], [4, 4, 6, 7], [10, 11, 12, 13], [0, 1, 2, 3], [5, 6]]
    scale, shift = normalization_affine(MEAN, STD, 3, torch.device("cpu"))
    g = torch.Generator().manual_seed(5)
    expected = [apply_affine(random_resized_crop(images[b].contiguous(), 32, g), scale, shift).contiguous()
                for b in batches]

    def loader():
        generator = torch.Generator().manual_seed(5)
        return DeviceBatchLoader(photos, batches, "cpu", MEAN, STD, generator=generator)

    kept = list(loader())  # every batch held at once: none may share memory
    assert len({batch.data_ptr() for batch, _ in kept}) == len(batches)
    for (batch, _), want in zip(kept, expected, strict=True):
        assert torch.equal(batch, want) and batch.is_contiguous(memory_format=torch.channels_last)
    pointers = []
    for (batch, _), want in zip(loader(), expected, strict=True):  # the usual loop: memory is reused
        assert torch.equal(batch, want)
        pointers.append(batch.data_ptr())
    assert len(set(pointers[:5])) < 5


def test_cache_is_stored_channels_last_and_evaluation_is_unchanged(tmp_path, official):
    root = tmp_path / "photos"
    official.image_folder(root, {"a": 3, "b": 2})
    data = load_dataset("imagefolder", "all", root,
                        options=PhotoOptions(image_size=24, cache_dir=str(tmp_path / "cache"), workers=2))
    (npy,) = (tmp_path / "cache").glob("*.npy")
    on_disk = np.load(npy, mmap_mode="r")
    assert on_disk.shape == (5, 27, 27, 3) and data.images.shape == (5, 3, 27, 27)
    assert data.images.is_contiguous(memory_format=torch.channels_last)
    for i, relative in enumerate(data.paths):
        square = decode_square(root / relative, 27, 24)
        assert np.array_equal(on_disk[i], square.transpose(1, 2, 0))
        assert np.array_equal(data.images[i].numpy(), square)
    (evaluated, _), = list(iterate_in_order(data, 8, "cpu", MEAN, STD))
    squares = torch.from_numpy(np.stack([decode_square(root / p, 27, 24) for p in data.paths]))
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    expected = (squares[:, :, 2:26, 2:26].float() / 255 - mean) / std
    assert torch.allclose(evaluated, expected, atol=1e-5)


def test_channels_last_empty_layout():
    out = channels_last_empty(2, 3, 5, torch.uint8)
    assert out.shape == (2, 3, 5, 5) and out.is_contiguous(memory_format=torch.channels_last)
