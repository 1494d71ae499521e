"""A small VGG-style network for 8x8 digit images (the quick end-to-end check of the whole pipeline)."""

from __future__ import annotations

from torch import nn

from .head import EmbeddingHead, EmbeddingNet


def _conv_bn_relu(in_channels: int, out_channels: int) -> list[nn.Module]:
    return [nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)]


def convnet(embedding_dim: int = 64, in_channels: int = 1, width: int = 32,
            dropout: float = 0.0) -> EmbeddingNet:
    """[B, in_channels, 8, 8] -> [B, embedding_dim]: conv(w)-conv(w)-pool-conv(2w)-conv(2w), then the head.

    Works for any input size >= 2x2 (one 2x2 max-pool). About 0.1M parameters at width 32.
    """
    if width < 1:
        raise ValueError(f"width must be >= 1, got {width}")
    layers = [*_conv_bn_relu(in_channels, width), *_conv_bn_relu(width, width), nn.MaxPool2d(2)]
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    layers += [*_conv_bn_relu(width, 2 * width), nn.Conv2d(2 * width, 2 * width, 3, padding=1, bias=False)]
    return EmbeddingNet(nn.Sequential(*layers), EmbeddingHead(2 * width, embedding_dim))
