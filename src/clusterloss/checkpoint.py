"""Checkpoints: atomic saves, ``weights_only=True`` loads, RNG capture, and rebuilding a model from a file.

A checkpoint is a plain dict (see docs/design.md): ``model`` (state_dict), ``optimizer``, ``scheduler``,
``sampler``, ``rng``, ``loss``, ``config`` (plain dict), ``epoch``, ``step``, plus ``in_channels`` and
``data_stats`` (``{"mean": [...], "std": [...]}``, the normalization the model was trained with).
Everything in it is a tensor, dict, list, number, string, bool or None, so
``torch.load(weights_only=True)`` reads it.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .config import Config
from .models import build_model_from_config
from .utils.files import atomic_write


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Write ``state`` to ``path`` atomically (never a torn file, whenever the process dies)."""
    atomic_write(path, lambda handle: torch.save(state, handle))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``torch.load(weights_only=True)`` (no arbitrary code runs)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint {str(path)!r} not found")
    return torch.load(path, map_location=map_location, weights_only=True)


def capture_rng_state() -> dict[str, Any]:
    """Torch (CPU and all CUDA devices), NumPy-global and Python ``random`` generator states, as tensors."""
    _, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002  (the global state is what we restore)
    version, py_state, gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": int(version), "state": torch.tensor(py_state, dtype=torch.int64),
                   "gauss": gauss},
    }
    if torch.cuda.is_available():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    numpy_state = ("MT19937", keys, n["pos"], n["has_gauss"], n["cached_gaussian"])
    np.random.set_state(numpy_state)  # noqa: NPY002
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def _in_channels(ckpt: dict[str, Any]) -> int:
    if "in_channels" in ckpt:
        return int(ckpt["in_channels"])
    first_conv = next(v for k, v in ckpt["model"].items() if k.startswith("backbone.") and v.dim() == 4)
    return int(first_conv.shape[1])


def model_from_checkpoint(ckpt: dict[str, Any] | str | Path) -> tuple[nn.Module, Any]:
    """Rebuild the trained model (eval mode, on CPU) and its ``Config`` from a checkpoint dict or path."""
    if not isinstance(ckpt, dict):
        ckpt = load_checkpoint(ckpt)
    if "config" not in ckpt or "model" not in ckpt:
        raise ValueError("not a clusterloss checkpoint: it needs 'config' and 'model' entries")
    config = Config.from_dict(ckpt["config"])
    # Pretrained weights are not read again (the checkpoint holds the trained ones): only the architecture
    # and the preprocessing they imply.
    model = build_model_from_config(config.model, in_channels=_in_channels(ckpt), load_weights=False)
    model.load_state_dict(ckpt["model"])
    return model.eval(), config


def load_backbone(model: nn.Module, ckpt: dict[str, Any] | str | Path) -> list[str]:
    """Copy ``backbone.*`` weights from a checkpoint into ``model`` (the ``--init-from`` path).

    Accepts our checkpoints and bare state_dicts; returns the loaded keys. Shape mismatches raise ValueError.
    """
    if not isinstance(ckpt, dict):
        ckpt = load_checkpoint(ckpt)
    source = ckpt.get("model", ckpt)
    backbone = {k[len("backbone."):]: v for k, v in source.items() if k.startswith("backbone.")}
    if not backbone:
        raise ValueError("the --init-from checkpoint holds no 'backbone.*' weights")
    try:
        model.backbone.load_state_dict(backbone, strict=True)
    except RuntimeError as err:
        raise ValueError(f"--init-from backbone does not fit this model: {err}") from err
    return sorted(backbone)
