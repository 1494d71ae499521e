"""Model registry: ``build_model(name, embedding_dim=64, in_channels=3, **options)``."""

from __future__ import annotations

import difflib
from collections.abc import Callable

from torch import nn

from .convnet import convnet
from .densenet import densenet40, densenet_bc40, densenet_bc100

MODELS: dict[str, Callable[..., nn.Module]] = {
    "densenet40": densenet40,
    "densenet_bc40": densenet_bc40,
    "densenet_bc100": densenet_bc100,
    "convnet": convnet,
}


def build_model(name: str, embedding_dim: int = 64, in_channels: int = 3, **options) -> nn.Module:
    """Build a registered model mapping normalized [B, in_channels, H, W] to unit-norm [B, embedding_dim].

    ``options`` go to the model's constructor (``growth``, ``dropout`` for DenseNets; ``width``, ``dropout``
    for ``convnet``).
    """
    if name not in MODELS:
        close = difflib.get_close_matches(name, MODELS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}.{hint}")
    try:
        return MODELS[name](embedding_dim=embedding_dim, in_channels=in_channels, **options)
    except TypeError as err:
        raise ValueError(f"bad options {sorted(options)} for model {name!r}: {err}") from err
