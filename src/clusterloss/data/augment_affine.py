"""Batched random affine augmentation for handwritten characters (Omniglot): shift, rotation, scale.

One ``affine_grid`` + ``grid_sample`` per batch on the images' device; every image gets its own draw. The
``affine`` registry entry uses ``AFFINE_DEFAULTS``: shifts up to 3 px at 28 px, rotations up to 15 degrees,
scale 0.8-1.2, chosen on a validation alphabet (README, Omniglot); no flips (a mirrored character is another
character).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["random_affine", "affine_augmentation", "rotate90_classes", "AFFINE_DEFAULTS"]

# The "affine" entry of augment.AUGMENTATIONS (chosen on a validation alphabet, see the README).
AFFINE_DEFAULTS = {"max_shift": 3.0, "max_rotation": 15.0, "scale": (0.8, 1.2)}


def _uniform(low: float, high: float, size: int, device: torch.device,
             generator: torch.Generator | None) -> torch.Tensor:
    draw_device = generator.device if generator is not None else device
    values = torch.rand(size, generator=generator, device=draw_device, dtype=torch.float32)
    return (low + (high - low) * values).to(device)


def random_affine(images: torch.Tensor, generator: torch.Generator | None = None, *, max_shift: float = 2.0,
                  max_rotation: float = 10.0, scale: tuple[float, float] = (0.9, 1.1)) -> torch.Tensor:
    """Each image of ``images`` [B, C, H, W] (uint8 or float, background 0) moved by its own random affine
    map: a rotation uniform in ±``max_rotation`` degrees and a scale uniform in ``scale`` about the centre,
    then a shift uniform in ±``max_shift`` pixels on each axis. Bilinear sampling, zeros outside; same dtype
    (uint8 rounded), shape and device. ``generator`` (CPU or on the images' device) makes it reproducible.
    """
    if images.dim() != 4:
        raise ValueError(f"random_affine expects a batch [B, C, H, W], got shape {tuple(images.shape)}")
    if max_shift < 0 or max_rotation < 0 or not 0 < scale[0] <= scale[1]:
        raise ValueError(f"need max_shift >= 0, max_rotation >= 0, 0 < scale[0] <= scale[1]; got "
                         f"{max_shift}, {max_rotation}, {scale}")
    b, _, h, w = images.shape
    if b == 0:
        return images.clone()
    device = images.device
    angle = _uniform(-max_rotation, max_rotation, b, device, generator) * (math.pi / 180)
    zoom = _uniform(scale[0], scale[1], b, device, generator)
    shift_x = _uniform(-max_shift, max_shift, b, device, generator) * (2.0 / w)  # pixels -> [-1, 1] units
    shift_y = _uniform(-max_shift, max_shift, b, device, generator) * (2.0 / h)
    # affine_grid maps output coordinates to input ones: the inverse of "scale, rotate, then shift".
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack([torch.stack([cos, sin, -(cos * shift_x + sin * shift_y)], dim=1),
                         torch.stack([-sin, cos, -(-sin * shift_x + cos * shift_y)], dim=1)], dim=1)
    source = images.float()
    grid = F.affine_grid(theta, list(source.shape), align_corners=False)
    out = F.grid_sample(source, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if images.dtype == torch.uint8:
        return out.round_().clamp_(0, 255).to(torch.uint8)
    return out.to(images.dtype)


def affine_augmentation(images: torch.Tensor, size: int, generator: torch.Generator | None = None,
                        **options) -> torch.Tensor:
    """``data.augmentation: affine`` (the registry signature of ``augment.AUGMENTATIONS``): ``random_affine``
    with ``AFFINE_DEFAULTS`` (scaled with the image side from 28 px), then resized to ``size`` if needed;
    the other data settings in ``options`` (``padding``, ...) do not apply and are ignored."""
    del options
    side = images.shape[-1]
    out = random_affine(images, generator, max_shift=AFFINE_DEFAULTS["max_shift"] * side / 28,
                        max_rotation=AFFINE_DEFAULTS["max_rotation"], scale=AFFINE_DEFAULTS["scale"])
    if out.shape[-2:] != (size, size):
        out = F.interpolate(out.float(), size=(size, size), mode="bilinear", align_corners=False,
                            antialias=True)
    return out


def rotate90_classes(images: torch.Tensor, labels: torch.Tensor, num_classes: int
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Every image also rotated by 90, 180 and 270 degrees, each rotation a new class (Santoro et al. 2016;
    Vinyals et al. 2016): [N, C, H, W], [N] -> [4N, C, H, W], [4N] with label ``k * num_classes + y`` for
    rotation k (k = 0 keeps the originals first and their labels unchanged). Square images only.
    """
    if images.dim() != 4 or images.shape[-1] != images.shape[-2]:
        raise ValueError(f"rotate90_classes needs square images [N, C, S, S], got {tuple(images.shape)}")
    rotated = [torch.rot90(images, k, dims=(2, 3)) for k in range(4)]
    return torch.cat(rotated), torch.cat([labels + k * num_classes for k in range(4)])
