"""Embedding heads and the backbone + head container.

``EmbeddingHead`` (the from-scratch networks): BN-ReLU-global average pool -> Linear -> L2 normalization.
``PooledEmbeddingHead`` (pretrained backbones, as deep-metric-learning papers use them): global pooling
(``avg``, ``max`` or ``avg+max``, the sum of the two) -> Linear -> L2 normalization, no BN-ReLU (a pretrained
post-activation network already ends in BN + activation).
"""

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


POOLINGS = ("avg", "max", "avg+max")


def global_pool(features: torch.Tensor, pooling: str) -> torch.Tensor:
    """[B, C, H, W] -> [B, C]: spatial mean (``avg``), max (``max``) or their sum (``avg+max``)."""
    if pooling == "avg":
        return features.mean(dim=(2, 3))
    if pooling == "max":
        return features.amax(dim=(2, 3))
    if pooling == "avg+max":
        return features.mean(dim=(2, 3)) + features.amax(dim=(2, 3))
    raise ValueError(f"unknown pooling {pooling!r}; use one of {POOLINGS}")


class PooledEmbeddingHead(nn.Module):
    """Feature map [B, C, H, W] (pooled here) or features [B, C] already pooled by the backbone (a ViT's
    class token) -> Linear -> L2-normalized [B, embedding_dim]."""

    def __init__(self, in_features: int, embedding_dim: int, pooling: str = "avg") -> None:
        super().__init__()
        if embedding_dim < 1:
            raise ValueError(f"embedding_dim must be >= 1, got {embedding_dim}")
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}; use one of {POOLINGS}")
        self.pooling = pooling
        self.linear = nn.Linear(in_features, embedding_dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        pooled = global_pool(features, self.pooling) if features.dim() == 4 else features
        return F.normalize(self.linear(pooled).float(), p=2.0, dim=1)


class PooledFeatures(nn.Module):
    """An ``EmbeddingNet``'s backbone features, globally pooled like its head pools them and L2-normalized,
    without the head's Linear layer: [B, C, H, W] -> [B, backbone channels] (reference rows)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.net.backbone(images)
        if features.dim() == 4:
            features = global_pool(features, getattr(self.net.head, "pooling", "avg"))
        return F.normalize(features.float(), p=2.0, dim=1)


class EmbeddingNet(nn.Module):
    """``backbone`` (images -> feature map) followed by ``head`` (feature map -> unit embeddings).

    ``freeze_bn``: the backbone's BatchNorm layers stay in eval mode during training (running statistics
    frozen, their affine parameters still learned), the usual choice when fine-tuning with small batches.
    ``freeze_backbone``: the backbone's parameters get no gradient and it stays in eval mode; only the head
    trains. ``preprocessing``: ``{"mean", "std", "interpolation", "source"}`` the backbone's pretrained
    weights expect (mean/std per channel in [0, 1] units), or None to normalize with the training images'
    statistics.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module, *, freeze_bn: bool = False,
                 freeze_backbone: bool = False, preprocessing: dict | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.preprocessing = preprocessing
        self.freeze_bn = freeze_bn
        self.freeze_backbone = freeze_backbone
        if freeze_backbone:
            for param in backbone.parameters():
                param.requires_grad_(False)
        self.train(self.training)

    def train(self, mode: bool = True) -> EmbeddingNet:
        super().train(mode)
        if mode and getattr(self, "freeze_backbone", False):
            self.backbone.eval()
        elif mode and getattr(self, "freeze_bn", False):
            for module in self.backbone.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self

    @property
    def embedding_dim(self) -> int:
        return self.head.linear.out_features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images: normalized float [B, C, H, W] -> embeddings [B, embedding_dim] with unit L2 norm."""
        if images.dim() != 4:
            raise ValueError(f"expected images [B, C, H, W], got shape {tuple(images.shape)}")
        return self.head(self.backbone(images))
