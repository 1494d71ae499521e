"""DenseNets for 32x32 images (Huang et al., CVPR 2017), as used by Song et al. (CVPR 2017).

``densenet40``: growth k = 12, 3 dense blocks of 12 BN-ReLU-Conv3x3 layers, 2k-channel 3x3 stem, transitions
BN-ReLU-Conv1x1-AvgPool2 (about 1.0M parameters). ``densenet_bc40`` / ``densenet_bc100``: bottleneck layers
(BN-ReLU-Conv1x1 to 4k channels, then BN-ReLU-Conv3x3 to k) and compression 0.5 in the transitions; 6 and 16
layers per block. The final BN-ReLU-pool lives in the embedding head (see ``head.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .head import EmbeddingHead, EmbeddingNet


class DenseLayer(nn.Module):
    """[B, C, H, W] -> [B, C + growth, H, W]: concatenates ``growth`` new channels to its input."""

    def __init__(self, in_channels: int, growth: int, bottleneck: bool, dropout: float) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        if bottleneck:
            layers += [nn.BatchNorm2d(channels), nn.ReLU(inplace=True),
                       nn.Conv2d(channels, 4 * growth, kernel_size=1, bias=False)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            channels = 4 * growth
        layers += [nn.BatchNorm2d(channels), nn.ReLU(inplace=True),
                   nn.Conv2d(channels, growth, kernel_size=3, padding=1, bias=False)]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.body(x)], dim=1)


class Transition(nn.Module):
    """BN-ReLU-Conv1x1-AvgPool2: [B, C, H, W] -> [B, out_channels, H/2, W/2]."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(in_channels)
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(self.dropout(self.conv(F.relu(self.norm(x)))), 2)


class DenseNetBackbone(nn.Module):
    """Stem + 3 dense blocks with 2 transitions: [B, C_in, H, W] -> [B, out_channels, H/4, W/4]."""

    def __init__(self, depth: int, growth: int, bottleneck: bool, compression: float,
                 in_channels: int = 3, dropout: float = 0.0) -> None:
        super().__init__()
        per_block = (depth - 4) // (6 if bottleneck else 3)
        if per_block < 1 or (depth - 4) % (6 if bottleneck else 3):
            kind = "6n+4" if bottleneck else "3n+4"
            raise ValueError(f"DenseNet depth must be {kind} (e.g. 40 or 100), got {depth}")
        if not 0 < compression <= 1:
            raise ValueError(f"compression must be in (0, 1], got {compression}")
        channels = 2 * growth
        modules: list[nn.Module] = [nn.Conv2d(in_channels, channels, kernel_size=3, padding=1, bias=False)]
        for block in range(3):
            for _ in range(per_block):
                modules.append(DenseLayer(channels, growth, bottleneck, dropout))
                channels += growth
            if block < 2:
                out = int(channels * compression)
                modules.append(Transition(channels, out, dropout))
                channels = out
        self.features = nn.Sequential(*modules)
        self.out_channels = channels
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


def _densenet(depth: int, bottleneck: bool, compression: float, embedding_dim: int, in_channels: int,
              growth: int = 12, dropout: float = 0.0) -> EmbeddingNet:
    backbone = DenseNetBackbone(depth, growth, bottleneck, compression, in_channels, dropout)
    return EmbeddingNet(backbone, EmbeddingHead(backbone.out_channels, embedding_dim))


def densenet40(embedding_dim: int = 64, in_channels: int = 3, growth: int = 12,
               dropout: float = 0.0) -> EmbeddingNet:
    """DenseNet-40 (k = 12, no bottleneck, no compression): about 1.0M parameters."""
    return _densenet(40, False, 1.0, embedding_dim, in_channels, growth, dropout)


def densenet_bc40(embedding_dim: int = 64, in_channels: int = 3, growth: int = 12,
                  dropout: float = 0.0) -> EmbeddingNet:
    """DenseNet-BC-40 (k = 12, bottleneck, compression 0.5): about 0.18M parameters, the paper's network."""
    return _densenet(40, True, 0.5, embedding_dim, in_channels, growth, dropout)


def densenet_bc100(embedding_dim: int = 64, in_channels: int = 3, growth: int = 12,
                   dropout: float = 0.0) -> EmbeddingNet:
    """DenseNet-BC-100 (k = 12, bottleneck, compression 0.5): about 0.8M parameters."""
    return _densenet(100, True, 0.5, embedding_dim, in_channels, growth, dropout)
