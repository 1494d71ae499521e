"""Whole-batch augmentation and normalization on uint8 image tensors, on any device.

Everything here works on a batch at once with tensor ops (no per-image Python), so the data path keeps up
with training even on 2 CPU cores, and runs on the GPU when the batch is already there.

``AUGMENTATIONS`` names the training augmentations that ``data.augmentation`` picks ("auto" = the
dataset's ``default_augmentation``). Each is ``fn(images [B, C, H, W] uint8, size, generator=None,
**options) -> [B, C, size, size]`` (uint8 or float in 0..255 units; normalization follows), where
``size`` is the network input side and ``options`` are the data settings (``padding``; unknown ones are
ignored). ``eval_view`` is the matching deterministic evaluation view.
"""

from __future__ import annotations

import difflib
import functools
import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import torch
import torch.nn.functional as F

from clusterloss.data.augment_affine import affine_augmentation

__all__ = [
    "AUGMENTATIONS",
    "channel_stats",
    "eval_view",
    "normalize",
    "random_crop_flip",
    "random_resized_crop",
    "register_augmentation",
    "resize_batch",
    "resolve_augmentation",
    "resized_crop_batch",
    "sample_resized_crop_boxes",
    "window_crop_flip",
]


def _random_ints(
    high: int, size: int, device: torch.device, generator: torch.Generator | None
) -> torch.Tensor:
    """`size` integers uniform in [0, high), drawn on the generator's device, returned on `device`."""
    draw_device = generator.device if generator is not None else device
    values = torch.randint(0, high, (size,), generator=generator, device=draw_device)
    return values.to(device)


def random_crop_flip(
    images: torch.Tensor, padding: int = 4, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Random ``H x W`` crop of each zero-padded image, mirrored left-right with probability 1/2.

    Args:
        images: uint8 (or any dtype) [B, C, H, W] on any device.
        padding: zeros added on every side before cropping; the crop offset is uniform in [0, 2*padding]
            on each axis independently per image. ``padding=0`` only flips.
        generator: optional ``torch.Generator`` (on CPU or on the images' device) for reproducibility;
            the global RNG is used when None.

    Returns:
        Same dtype, shape and device: ``out[b] = flip_b(pad(images[b])[:, y_b:y_b+H, x_b:x_b+W])``.
    """
    if images.dim() != 4:
        raise ValueError(f"random_crop_flip expects a batch [B, C, H, W], got shape {tuple(images.shape)}")
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    b, _, h, w = images.shape
    device = images.device
    if b == 0:
        return images.clone()
    offset_y = _random_ints(2 * padding + 1, b, device, generator)
    offset_x = _random_ints(2 * padding + 1, b, device, generator)
    flip = _random_ints(2, b, device, generator).bool()

    padded = F.pad(images, (padding, padding, padding, padding)) if padding else images
    return _gather_windows(padded, offset_y, offset_x, flip, h, w)


def _gather_windows(images: torch.Tensor, offset_y: torch.Tensor, offset_x: torch.Tensor, flip: torch.Tensor,
                    h: int, w: int) -> torch.Tensor:
    """``out[b] = flip_b(images[b, :, y_b:y_b+h, x_b:x_b+w])``: [B, C, H', W'] -> [B, C, h, w], same dtype."""
    b, c, _, width = images.shape
    device = images.device
    rows = offset_y[:, None] + torch.arange(h, device=device)  # [B, h]
    cols_forward = torch.arange(w, device=device)
    cols = offset_x[:, None] + torch.where(flip[:, None], cols_forward.flip(0), cols_forward)  # [B, w]
    # One flat gather per batch: index into the image plane, shared across channels.
    flat_index = (rows[:, :, None] * width + cols[:, None, :]).reshape(b, 1, h * w).expand(b, c, h * w)
    out = torch.gather(images.reshape(b, c, -1), 2, flat_index)
    return out.reshape(b, c, h, w)


def window_crop_flip(images: torch.Tensor, size: int, generator: torch.Generator | None = None,
                     **_options) -> torch.Tensor:
    """A random ``size x size`` window of each image, pixels copied as they are (no padding, no scale or
    aspect jitter, no resampling), mirrored left-right with probability 1/2: Caffe's ``crop_size`` +
    ``mirror`` and torchvision's ``RandomCrop(size)`` + ``RandomHorizontalFlip()``.

    Args:
        images: [B, C, H, W] (uint8 or any dtype) on any device, H and W >= ``size``.
        size: the window's side; offsets are uniform in [0, H - size] and [0, W - size], per image.
        generator: optional ``torch.Generator`` (CPU or the images' device); the global RNG when None.

    Returns:
        Same dtype and device, [B, C, size, size]:
        ``out[b] = flip_b(images[b, :, y_b:y_b+size, x_b:x_b+size])``.
    """
    if images.dim() != 4:
        raise ValueError(f"window_crop_flip expects a batch [B, C, H, W], got shape {tuple(images.shape)}")
    b, _, h, w = images.shape
    if size > min(h, w):
        raise ValueError(f"window_crop_flip: a {size} px window does not fit in {h} x {w} images; store "
                         f"larger ones (data.cache_size >= data.image_size) or crop less")
    if b == 0:
        return images.new_empty((0, images.shape[1], size, size))
    device = images.device
    offset_y = _random_ints(h - size + 1, b, device, generator)
    offset_x = _random_ints(w - size + 1, b, device, generator)
    flip = _random_ints(2, b, device, generator).bool()
    return _gather_windows(images, offset_y, offset_x, flip, size, size)


def _as_channel_tensor(
    values: Sequence[float] | torch.Tensor, channels: int, device: torch.device, name: str
):
    tensor = torch.as_tensor(values, dtype=torch.float32, device=device).reshape(-1)
    if tensor.numel() != channels:
        raise ValueError(f"{name} has {tensor.numel()} values but the images have {channels} channels")
    return tensor.reshape(1, channels, 1, 1)


def normalization_affine(
    mean: Sequence[float] | torch.Tensor,
    std: Sequence[float] | torch.Tensor,
    channels: int,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift), float32 [1, C, 1, 1] each, such that ``normalize(x) = x * scale + shift``."""
    mean_t = _as_channel_tensor(mean, channels, device, "mean")
    std_t = _as_channel_tensor(std, channels, device, "std")
    if bool((std_t <= 0).any()):
        raise ValueError(f"std must be positive, got {std_t.flatten().tolist()}")
    return 1.0 / (255.0 * std_t), -mean_t / std_t


def apply_affine(images: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """uint8 [B, C, H, W] -> float32 ``images * scale + shift`` (one conversion, two in-place passes)."""
    return images.float().mul_(scale).add_(shift)


def normalize(
    images: torch.Tensor, mean: Sequence[float] | torch.Tensor, std: Sequence[float] | torch.Tensor
) -> torch.Tensor:
    """uint8 [B, C, H, W] (0..255) -> float32 ``(images / 255 - mean) / std`` on the images' device.

    ``mean`` and ``std`` are per-channel statistics in [0, 1] units (see ``channel_stats``), length C.
    """
    if images.dim() != 4:
        raise ValueError(f"normalize expects a batch [B, C, H, W], got shape {tuple(images.shape)}")
    scale, shift = normalization_affine(mean, std, images.shape[1], images.device)
    return apply_affine(images, scale, shift)


def channel_stats(
    images: torch.Tensor, chunk_size: int | None = None, max_images: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and (population) std of uint8 images [N, C, H, W] in [0, 1] units.

    Accumulates in float64 over chunks of ``chunk_size`` images (default: ~4M values, 32 MB), so memory
    stays small even for memory-mapped data. ``max_images``: use only that many evenly spaced images (all
    when N is smaller). Returns two float32 tensors of shape [C].
    """
    if images.dim() != 4 or images.shape[0] == 0:
        raise ValueError(f"channel_stats expects a non-empty [N, C, H, W] tensor, got {tuple(images.shape)}")
    channels = images.shape[1]
    if chunk_size is None:
        chunk_size = max(1, (1 << 22) // images[0].numel())
    total = torch.zeros(channels, dtype=torch.float64)
    total_sq = torch.zeros(channels, dtype=torch.float64)
    used = None
    if max_images is not None and images.shape[0] > max_images:
        used = torch.linspace(0, images.shape[0] - 1, max_images).round().long().unique()
    count_images = images.shape[0] if used is None else len(used)
    for start in range(0, count_images, chunk_size):
        if used is None:
            chunk = images[start : start + chunk_size].to(torch.float64)
        else:
            chunk = images[used[start : start + chunk_size]].to(torch.float64)
        total += chunk.sum(dim=(0, 2, 3)).cpu()
        total_sq += chunk.square().sum(dim=(0, 2, 3)).cpu()
    count = count_images * images.shape[2] * images.shape[3]
    mean = total / count
    var = (total_sq / count - mean.square()).clamp_min(0)
    return (mean / 255.0).float(), (var.sqrt() / 255.0).float()


@functools.lru_cache(maxsize=4)
def cpu_thread_pool(workers: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="clusterloss-augment")


def resize_batch(images: torch.Tensor, size: int) -> torch.Tensor:
    """[B, C, H, W] -> float [B, C, size, size], bilinear (antialiased when shrinking), 0..255 units."""
    if images.shape[-2:] == (size, size):
        return images
    return F.interpolate(images.float(), size=(size, size), mode="bilinear", align_corners=False,
                         antialias=True)


def sample_resized_crop_boxes(
    height: int,
    width: int,
    count: int,
    scale: tuple[float, float] = (0.16, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    generator: torch.Generator | None = None,
    attempts: int = 10,
) -> torch.Tensor:
    """int64 [count, 4] boxes (top, left, h, w): torchvision ``RandomResizedCrop.get_params``, vectorized.

    Per box: up to ``attempts`` draws of area ``U(scale) * H * W`` and aspect ``exp(U(log ratio))``, sides
    ``round(sqrt(area * aspect))`` x ``round(sqrt(area / aspect))``, the first that fits, at a uniform
    position; if none fits, the centre crop of the whole image clamped to the ratio range (as torchvision).
    Drawn on the generator's device (CPU when None); returned there.
    """
    gen = generator
    device = gen.device if gen is not None else torch.device("cpu")
    area = float(height * width)
    draws = torch.rand(2, count, attempts, generator=gen, dtype=torch.float64, device=device)
    target = area * (scale[0] + (scale[1] - scale[0]) * draws[0])
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * draws[1])
    w = torch.round(torch.sqrt(target * aspect)).long()
    h = torch.round(torch.sqrt(target / aspect)).long()
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = torch.argmax(fits.int(), dim=1)
    any_fit = fits.any(dim=1)
    rows = torch.arange(count, device=device)
    h, w = h[rows, first], w[rows, first]
    # Fallback (torchvision): whole image, clamped to the ratio range, centred.
    in_ratio = width / height
    if in_ratio < ratio[0]:
        fw, fh = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        fh, fw = height, int(round(height * ratio[1]))
    else:
        fw, fh = width, height
    h = torch.where(any_fit, h, torch.full_like(h, fh))
    w = torch.where(any_fit, w, torch.full_like(w, fw))
    u = torch.rand(count, 2, generator=gen, dtype=torch.float64, device=device)
    top = torch.floor(u[:, 0] * (height - h + 1).double()).long()
    left = torch.floor(u[:, 1] * (width - w + 1).double()).long()
    top = torch.where(any_fit, top, torch.full_like(top, (height - fh) // 2))
    left = torch.where(any_fit, left, torch.full_like(left, (width - fw) // 2))
    return torch.stack([top, left, h, w], dim=1)


def channels_last_empty(batch: int, channels: int, size: int, dtype: torch.dtype,
                        device: torch.device | str = "cpu") -> torch.Tensor:
    """An uninitialized [batch, channels, size, size] tensor stored channels last (pixel by pixel)."""
    return torch.empty((batch, size, size, channels), dtype=dtype, device=device).permute(0, 3, 1, 2)


def _pixels(image: torch.Tensor) -> torch.Tensor | None:
    """The [H, W, C] view of a [C, H, W] image when that view is contiguous (channels-last storage)."""
    pixels = image.permute(1, 2, 0)
    return pixels if pixels.is_contiguous() else None


def resized_crop_batch(images: torch.Tensor, boxes: torch.Tensor, size: int,
                       flip: torch.Tensor | None = None, workers: int = 1, index: torch.Tensor | None = None,
                       affine: tuple[torch.Tensor, torch.Tensor] | None = None,
                       out: torch.Tensor | None = None) -> torch.Tensor:
    """Each image's box (top, left, h, w) resized to ``size x size``, optionally mirrored left-right.

    ``torchvision.transforms.functional.resized_crop(img, top, left, h, w, [size, size], antialias=True)``
    per image: bilinear with antialiasing when shrinking (as torchvision on PIL images and v2 on tensors).
    The crops differ in size, so this is one interpolation kernel call per image. uint8 CPU input takes
    torch's vectorized uint8 path, which works on channels-last pixels: a channels-last ``images`` (the
    photo cache's layout) gives each crop as whole rows (a [N, C, H, W]-contiguous one is transposed per crop
    first: slower, same values), and the result is then stored channels last too (see ``channels_last_empty``;
    the same values as a contiguous tensor, and convolutions take it as it is), because transposing 224-px
    images back to [C, H, W] would cost more than resizing them. Returns the input's dtype (uint8 results are
    rounded), [B, C, size, size]. ``workers``: CPU threads that share the images (torch releases the GIL in
    its kernels); the result does not depend on it. ``index``: crop rows ``images[index[i]]`` (e.g. of a
    memory-mapped dataset: only the boxes are read, no gathered copy of the batch). ``affine``: (scale,
    shift) [1, C, 1, 1]: return float32 ``crop * scale + shift`` (the loader's normalization, applied per
    image while the crop is in cache; bit-identical to ``apply_affine`` on the uint8 batch). ``out``: a
    [B, C, size, size] tensor of the result's dtype to write into, any strides (the loader reuses its batch
    buffers: a fresh 77 MB batch costs page faults).
    """
    b, c = boxes.shape[0], images.shape[1]
    dtype = torch.float32 if affine is not None else images.dtype
    fast_uint8 = images.dtype == torch.uint8 and images.device.type == "cpu"
    if out is None:
        out = (channels_last_empty(b, c, size, dtype) if fast_uint8 else
               torch.empty((b, c, size, size), dtype=dtype, device=images.device))
    elif out.shape != (b, c, size, size) or out.dtype != dtype or out.device != images.device:
        raise ValueError(f"out must be {dtype} [{b}, {c}, {size}, {size}] on {images.device}, got "
                         f"{out.dtype} {tuple(out.shape)} on {out.device}")
    flips = [False] * b if flip is None else flip.tolist()
    box_list = boxes.tolist()
    rows = list(range(b)) if index is None else index.tolist()
    if affine is not None:
        scale, shift = affine[0][0], affine[1][0]  # [C, 1, 1]
        # the same per-channel values repeated along a row of pixels ([W * C]), for [H, W, C] images
        row_scale, row_shift = (v.reshape(c).repeat(size).to(images.device) for v in (scale, shift))

    def crop_range(start: int, stop: int) -> None:
        for i in range(start, stop):
            top, left, h, w = box_list[i]
            crop = images[rows[i] : rows[i] + 1, :, top : top + h, left : left + w]
            if fast_uint8:
                crop = crop.contiguous(memory_format=torch.channels_last)
            elif not crop.is_floating_point():
                crop = crop.float()
            resized = F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False,
                                    antialias=True)[0]
            if not fast_uint8 and not images.is_floating_point():
                resized = resized.round_().clamp_(0, 255)
            source = _pixels(resized)
            if flips[i]:  # torch's flip is ~6x faster along W of the [H, W, C] view than of [C, H, W]
                resized = resized.flip(-1) if source is None else source.flip(1).permute(2, 0, 1)
                source = _pixels(resized)
            target = _pixels(out[i])
            if source is not None and target is not None:  # channels last in and out: rows of pixels
                target.copy_(source)  # one pass, uint8 -> float32
                if affine is not None:
                    target.view(size, size * c).mul_(row_scale).add_(row_shift)
            else:
                out[i].copy_(resized)
                if affine is not None:
                    out[i].mul_(scale).add_(shift)

    if workers <= 1 or images.device.type != "cpu" or b < 2:
        crop_range(0, b)
    else:
        bounds = [b * j // workers for j in range(workers + 1)]
        pool = cpu_thread_pool(workers)
        for future in [pool.submit(crop_range, lo, hi) for lo, hi in zip(bounds, bounds[1:], strict=False)]:
            future.result()
    return out


def random_resized_crop(
    images: torch.Tensor,
    size: int,
    generator: torch.Generator | None = None,
    scale: tuple[float, float] = (0.16, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    workers: int = 1,
    index: torch.Tensor | None = None,
    affine: tuple[torch.Tensor, torch.Tensor] | None = None,
    out: torch.Tensor | None = None,
    **_options,
) -> torch.Tensor:
    """Random resized crop (torchvision's box rule, scale 0.16-1, ratio 3/4-4/3) to ``size`` + flip (p=1/2).

    The box parameters are drawn on ``generator``'s device (the global RNG when None), the resampling on
    the images' device. Returns the input's dtype (uint8 stays uint8), [B, C, size, size]; ``index``,
    ``affine`` and ``out`` as in ``resized_crop_batch`` (crop rows of a larger tensor; fused normalization;
    a buffer to write into).
    """
    if images.dim() != 4:
        raise ValueError(f"random_resized_crop expects a batch [B, C, H, W], got shape {tuple(images.shape)}")
    _, _, height, width = images.shape
    b = images.shape[0] if index is None else len(index)
    if b == 0:
        return images.new_empty((0, images.shape[1], size, size))
    boxes = sample_resized_crop_boxes(height, width, b, scale, ratio, generator)
    draw_device = generator.device if generator is not None else images.device
    flip = torch.rand(b, generator=generator, device=draw_device) < 0.5
    return resized_crop_batch(images, boxes, size, flip, workers, index, affine, out)


def _crop_flip(images: torch.Tensor, size: int, generator: torch.Generator | None = None,
               padding: int = 4, **_options) -> torch.Tensor:
    """``random_crop_flip`` at the stored size, then a resize when the network wants another size."""
    return resize_batch(random_crop_flip(images, padding, generator), size)


def _no_augmentation(images: torch.Tensor, size: int, generator: torch.Generator | None = None,
                     crop_fraction: float = 1.0, **_options) -> torch.Tensor:
    """The evaluation view (deterministic)."""
    return eval_view(images, size, crop_fraction)


AUGMENTATIONS: dict[str, Callable[..., torch.Tensor]] = {
    "crop_flip": _crop_flip,
    "window_crop_flip": window_crop_flip,  # the 2016-17 Caffe/TF recipe: 227 of 256, no resampling
    "random_resized_crop": random_resized_crop,
    "none": _no_augmentation,
    "affine": affine_augmentation,  # Omniglot: shifts, rotations, scale (augment_affine.py)
}


def register_augmentation(name: str, fn: Callable[..., torch.Tensor]) -> None:
    """Add ``fn`` (see the module docstring for the signature) to ``AUGMENTATIONS`` under ``name``."""
    if name in AUGMENTATIONS and AUGMENTATIONS[name] is not fn:
        raise ValueError(f"augmentation {name!r} is already registered")
    AUGMENTATIONS[name] = fn


def resolve_augmentation(name: str, dataset) -> str:
    """``name``, or the dataset's ``default_augmentation`` for "auto"; unknown names are an error."""
    resolved = getattr(dataset, "default_augmentation", "crop_flip") if name == "auto" else name
    if resolved not in AUGMENTATIONS:
        close = difflib.get_close_matches(resolved, AUGMENTATIONS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown data.augmentation {resolved!r}; known: auto, "
                         f"{', '.join(sorted(AUGMENTATIONS))}.{hint}")
    return resolved


def eval_view(images: torch.Tensor, size: int | None = None, crop_fraction: float = 1.0) -> torch.Tensor:
    """Centre crop of ``round(side * crop_fraction)`` pixels (torchvision ``CenterCrop`` offsets), resized
    to ``size x size`` when that differs. Identity (same tensor) when nothing is to be done."""
    height, width = images.shape[-2:]
    crop_h, crop_w = int(round(height * crop_fraction)), int(round(width * crop_fraction))
    if (crop_h, crop_w) != (height, width):
        top, left = int(round((height - crop_h) / 2.0)), int(round((width - crop_w) / 2.0))
        images = images[..., top : top + crop_h, left : left + crop_w]
    if size is None or (crop_h, crop_w) == (size, size):
        return images
    return resize_batch(images, size)
