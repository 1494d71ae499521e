"""Conv-4: the 4-block convnet of the few-shot literature (Vinyals et al. 2016; Snell et al. 2017).

Each block is conv3x3 (64 channels) - BatchNorm - ReLU - 2x2 max-pool, so 28x28 inputs end as 64 x 1 x 1;
then global average pooling (a no-op at 28 px), a linear layer and L2 normalization. About 0.11M parameters.
"""

from __future__ import annotations

from torch import nn

from .head import EmbeddingNet, PooledEmbeddingHead


def conv4(embedding_dim: int = 64, in_channels: int = 1, width: int = 64, blocks: int = 4) -> EmbeddingNet:
    """[B, in_channels, H, W] -> [B, embedding_dim]; H, W >= 2**blocks (28 px for the default 4 blocks)."""
    if width < 1 or blocks < 1:
        raise ValueError(f"width and blocks must be >= 1, got {width}, {blocks}")
    layers: list[nn.Module] = []
    channels = in_channels
    for _ in range(blocks):
        layers += [nn.Conv2d(channels, width, kernel_size=3, padding=1, bias=False), nn.BatchNorm2d(width),
                   nn.ReLU(inplace=True), nn.MaxPool2d(2)]
        channels = width
    return EmbeddingNet(nn.Sequential(*layers), PooledEmbeddingHead(width, embedding_dim, pooling="avg"))
