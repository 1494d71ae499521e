"""Model registry: ``build_model(name, embedding_dim=64, in_channels=3, **options)`` and
``build_model_from_config(config.model, in_channels)``."""

from __future__ import annotations

import difflib
from collections.abc import Callable

from torch import nn

from .backbones import timm_model, torchvision_model
from .conv4 import conv4
from .convnet import convnet
from .densenet import densenet40, densenet_bc40, densenet_bc100

MODELS: dict[str, Callable[..., nn.Module]] = {
    "densenet40": densenet40,
    "densenet_bc40": densenet_bc40,
    "densenet_bc100": densenet_bc100,
    "convnet": convnet,
    "conv4": conv4,  # the few-shot literature's 4-block convnet (Omniglot quickstart)
    "timm": timm_model,
    "torchvision": torchvision_model,
}
# Models that take pretrained weights and a pooling choice (the others are trained from scratch).
PRETRAINABLE = ("timm", "torchvision")


def build_model(name: str, embedding_dim: int = 64, in_channels: int = 3, **options) -> nn.Module:
    """Build a registered model mapping normalized [B, in_channels, H, W] to unit-norm [B, embedding_dim].

    ``options`` go to the model's constructor (``growth``, ``dropout`` for DenseNets; ``width``, ``dropout``
    for ``convnet``; ``arch``, ``pretrained``, ``pooling`` and timm's own options for ``timm``).
    """
    if name not in MODELS:
        close = difflib.get_close_matches(name, MODELS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}.{hint}")
    try:
        return MODELS[name](embedding_dim=embedding_dim, in_channels=in_channels, **options)
    except TypeError as err:
        raise ValueError(f"bad options {sorted(options)} for model {name!r}: {err}") from err


def build_model_from_config(model_config, in_channels: int = 3, load_weights: bool = True) -> nn.Module:
    """The model a ``ModelConfig`` describes (``name``, ``embedding_dim``, ``options``, ``pretrained``,
    ``pooling``, ``freeze_bn``, ``freeze_backbone``, ``preprocessing``).

    ``load_weights=False`` skips reading pretrained weights (a checkpoint that holds the trained weights is
    loaded next) but keeps the preprocessing those weights imply.
    """
    m = model_config
    options = dict(m.options)
    if m.name in PRETRAINABLE:
        options.update(pretrained=m.pretrained, pooling=m.pooling, load_weights=load_weights)
    else:
        if m.pretrained is not False:
            raise ValueError(f"model.pretrained applies to model.name {' / '.join(PRETRAINABLE)}; "
                             f"{m.name!r} is trained from scratch (set model.pretrained: false)")
        if m.pooling not in ("auto", "avg"):
            raise ValueError(f"model.pooling {m.pooling!r} applies to model.name {' / '.join(PRETRAINABLE)}; "
                             f"{m.name!r} ends in BN-ReLU-average pooling (use model.pooling: auto)")
    model = build_model(m.name, embedding_dim=m.embedding_dim, in_channels=in_channels, **options)
    if m.preprocessing is not None:
        model.preprocessing = check_preprocessing(m.preprocessing, in_channels)
    model.freeze_bn = m.freeze_bn
    model.freeze_backbone = m.freeze_backbone
    if m.freeze_backbone:
        for param in model.backbone.parameters():
            param.requires_grad_(False)
    return model.train(model.training)


def check_preprocessing(values: dict, channels: int) -> dict:
    """``model.preprocessing`` ({mean: [...], std: [...], interpolation: ...}) checked and completed."""
    unknown = sorted(set(values) - {"mean", "std", "interpolation"})
    if unknown or "mean" not in values or "std" not in values:
        raise ValueError("model.preprocessing takes {mean: [..], std: [..], interpolation: bilinear|bicubic} "
                         f"(mean/std per channel in [0, 1] units), got {values!r}")
    out = {"interpolation": str(values.get("interpolation", "bilinear")), "source": "model.preprocessing"}
    for key in ("mean", "std"):
        v = values[key]
        v = [float(v)] * channels if isinstance(v, (int, float)) else [float(x) for x in v]
        if len(v) != channels or (key == "std" and min(v) <= 0):
            raise ValueError(f"model.preprocessing.{key} needs {channels} values"
                             + (" > 0" if key == "std" else "") + f", got {values[key]!r}")
        out[key] = v
    return out


def input_normalization(model: nn.Module, mean, std):
    """(mean, std) to normalize the model's inputs with: its ``preprocessing`` (the pretrained weights'
    own) when it has one, else the given training-image statistics."""
    pre = getattr(model, "preprocessing", None)
    if pre:
        return list(pre["mean"]), list(pre["std"])
    return mean, std
