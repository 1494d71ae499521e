"""Embedding networks: DenseNet-40, DenseNet-BC-40/100 and a small digits convnet (BN-ReLU-pool -> Linear
-> L2 head), and ImageNet backbones from timm / torchvision (pool -> Linear -> L2 head)."""

from .head import EmbeddingHead, EmbeddingNet, PooledEmbeddingHead
from .registry import MODELS, build_model, build_model_from_config, input_normalization

__all__ = ["MODELS", "EmbeddingHead", "EmbeddingNet", "PooledEmbeddingHead", "build_model",
           "build_model_from_config", "input_normalization"]
