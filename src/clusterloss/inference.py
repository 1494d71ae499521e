"""Embedding a whole dataset with a model: batched, in dataset order, no augmentation, no gradients."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence

import torch
from torch import nn
from tqdm import tqdm

from .data.dataset import ImageDataset
from .data.loader import iterate_in_order


@torch.no_grad()
def embed_dataset(
    model: nn.Module,
    dataset: ImageDataset,
    mean: Sequence[float] | torch.Tensor,
    std: Sequence[float] | torch.Tensor,
    *,
    batch_size: int = 512,
    device: str | torch.device | None = None,
    amp_dtype: torch.dtype | None = None,
    memory_format: torch.memory_format = torch.contiguous_format,
    progress: bool = False,
) -> torch.Tensor:
    """Embeddings [N, D] (float32, on the CPU) of ``dataset.images`` [N, C, H, W], row i for image i.

    The images are normalized with the *training* statistics ``mean``/``std`` (per channel, [0, 1] units).
    ``device`` defaults to where the model's parameters are. ``amp_dtype`` (torch.bfloat16 or torch.float16)
    runs the forward pass under autocast; the result is float32 either way. The model is put in eval mode
    for the pass (BatchNorm uses its running statistics) and its previous mode is restored afterwards.
    """
    if device is None:
        device = next(model.parameters()).device
    device = torch.device(device)
    batches = iterate_in_order(dataset, batch_size, device, mean, std)
    if progress:
        batches = tqdm(batches, total=math.ceil(len(dataset) / batch_size), dynamic_ncols=True,
                       desc=f"embedding {dataset.name}/{dataset.split}")
    autocast = (torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None
                else contextlib.nullcontext())
    was_training = model.training
    model.eval()
    parts = []
    try:
        with autocast:
            for images, _ in batches:
                parts.append(model(images.contiguous(memory_format=memory_format)).float().cpu())
    finally:
        model.train(was_training)
    if not parts:
        raise ValueError(f"dataset {dataset.name}/{dataset.split} is empty: nothing to embed")
    return torch.cat(parts)
