"""Whole-batch augmentation and normalization on uint8 image tensors, on any device.

Everything here works on a batch at once with tensor ops (no per-image Python), so the data path keeps up
with training even on 2 CPU cores, and runs on the GPU when the batch is already there.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = ["random_crop_flip", "normalize", "channel_stats"]


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
    b, c, h, w = images.shape
    device = images.device
    if b == 0:
        return images.clone()
    offset_y = _random_ints(2 * padding + 1, b, device, generator)
    offset_x = _random_ints(2 * padding + 1, b, device, generator)
    flip = _random_ints(2, b, device, generator).bool()

    padded = F.pad(images, (padding, padding, padding, padding)) if padding else images
    padded_w = w + 2 * padding
    rows = offset_y[:, None] + torch.arange(h, device=device)  # [B, H]
    cols_forward = torch.arange(w, device=device)
    cols = offset_x[:, None] + torch.where(flip[:, None], cols_forward.flip(0), cols_forward)  # [B, W]
    # One flat gather per batch: index into the padded plane, shared across channels.
    flat_index = (rows[:, :, None] * padded_w + cols[:, None, :]).reshape(b, 1, h * w).expand(b, c, h * w)
    out = torch.gather(padded.reshape(b, c, -1), 2, flat_index)
    return out.reshape(b, c, h, w)


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


def channel_stats(images: torch.Tensor, chunk_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and (population) std of uint8 images [N, C, H, W] in [0, 1] units.

    Accumulates in float64 over chunks of ``chunk_size`` images (default: ~4M values, 32 MB), so memory
    stays small even for memory-mapped data. Returns two float32 tensors of shape [C].
    """
    if images.dim() != 4 or images.shape[0] == 0:
        raise ValueError(f"channel_stats expects a non-empty [N, C, H, W] tensor, got {tuple(images.shape)}")
    channels = images.shape[1]
    if chunk_size is None:
        chunk_size = max(1, (1 << 22) // images[0].numel())
    total = torch.zeros(channels, dtype=torch.float64)
    total_sq = torch.zeros(channels, dtype=torch.float64)
    for start in range(0, images.shape[0], chunk_size):
        chunk = images[start : start + chunk_size].to(torch.float64)
        total += chunk.sum(dim=(0, 2, 3)).cpu()
        total_sq += chunk.square().sum(dim=(0, 2, 3)).cpu()
    count = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / count
    var = (total_sq / count - mean.square()).clamp_min(0)
    return (mean / 255.0).float(), (var.sqrt() / 255.0).float()
