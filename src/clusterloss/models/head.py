"""The embedding head every model ends in: BN-ReLU-global average pool -> Linear -> L2 normalization."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class EmbeddingHead(nn.Module):
    """Map a feature map [B, C, H, W] to L2-normalized embeddings [B, embedding_dim].

    The final BN-ReLU of a pre-activation network lives here (not in the backbone), so a model whose
    backbone is loaded from a classifier (``--init-from``) still learns its own head statistics.
    """

    def __init__(self, in_channels: int, embedding_dim: int) -> None:
        super().__init__()
        if embedding_dim < 1:
            raise ValueError(f"embedding_dim must be >= 1, got {embedding_dim}")
        self.norm = nn.BatchNorm2d(in_channels)
        self.linear = nn.Linear(in_channels, embedding_dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        pooled = F.relu(self.norm(features)).mean(dim=(2, 3))
        # Normalize in fp32: under bf16 autocast the squared-norm sum would lose the unit norm.
        return F.normalize(self.linear(pooled).float(), p=2.0, dim=1)


class EmbeddingNet(nn.Module):
    """``backbone`` (images -> feature map) followed by ``head`` (feature map -> unit embeddings)."""

    def __init__(self, backbone: nn.Module, head: EmbeddingHead) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    @property
    def embedding_dim(self) -> int:
        return self.head.linear.out_features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images: normalized float [B, C, H, W] -> embeddings [B, embedding_dim] with unit L2 norm."""
        if images.dim() != 4:
            raise ValueError(f"expected images [B, C, H, W], got shape {tuple(images.shape)}")
        return self.head(self.backbone(images))
