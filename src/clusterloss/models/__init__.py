"""Embedding networks: DenseNet-40, DenseNet-BC-40/100 and a small digits convnet, all ending in the
BN-ReLU-pool -> Linear -> L2-normalize head."""

from .head import EmbeddingHead, EmbeddingNet
from .registry import MODELS, build_model

__all__ = ["MODELS", "EmbeddingHead", "EmbeddingNet", "build_model"]
