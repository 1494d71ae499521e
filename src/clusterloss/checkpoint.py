"""Checkpoints: atomic saves, ``weights_only=True`` loads, RNG capture, and rebuilding a model from a file.

A checkpoint is a plain dict (see docs/design.md): ``model`` (state_dict), ``optimizer``, ``scheduler``,
``sampler``, ``rng``, ``loss``, ``config`` (plain dict), ``epoch``, ``step``, plus ``in_channels`` and
``data_stats`` (``{"mean": [...], "std": [...]}``, the normalization the model was trained with).
Everything in it is a tensor, dict, list, number, string, bool or None, so
``torch.load(weights_only=True)`` reads it.
"""

from __future__ import annotations

import errno
import io
import os
import random
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .config import Config
from .models import build_model_from_config
from .utils.files import atomic_write

# Checkpoints a resume may start from, newest first: last.pt, the one it replaced, the best evaluation's.
RESUME_CANDIDATES = ("last.pt", "last.prev.pt", "best.pt")
RESUME_KEYS = ("model", "optimizer", "scheduler", "sampler", "rng", "loss", "config", "epoch", "step")
# The temp files of utils.files.atomic_write: ".<name>.<16 hex digits>.tmp".
_TEMP_NAME = re.compile(r"^\..+\.[0-9a-f]{16}\.tmp$")
_NO_ROOM = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EFBIG)


class CheckpointWriteError(ValueError):
    """A checkpoint could not be written (full disk, read-only folder); the previous one is untouched."""


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def _previous_name(path: Path) -> Path:
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def _keep_previous(path: Path) -> None:
    """Make ``<stem>.prev.pt`` the file now at ``path`` (a hard link: no copy, no extra space)."""
    if not path.exists():
        return
    prev = _previous_name(path)
    link = prev.with_name(f".{prev.name}.link.tmp")
    try:
        if link.exists():
            link.unlink()
        os.link(path, link)
        os.replace(link, prev)
    except OSError:  # a filesystem without hard links: copy instead (atomic as well)
        if link.exists():
            link.unlink()
        atomic_write(prev, lambda handle: handle.write(path.read_bytes()))


def save_checkpoint(state: dict[str, Any], path: str | Path, *, keep_previous: bool = False) -> None:
    """Write ``state`` to ``path`` atomically (never a torn file, whenever the process dies).

    ``keep_previous``: the checkpoint it replaces stays as ``<stem>.prev.pt`` (resume falls back to it if the
    new one is ever unreadable). A full disk or a read-only folder raises ``CheckpointWriteError`` naming the
    path and the space needed; the previous checkpoint is left as it was.
    """
    path = Path(path)
    buffer = io.BytesIO()
    torch.save(state, buffer)  # serialized first: its size is known, and torch never writes a torn zip
    data = buffer.getbuffer()
    try:
        if keep_previous:
            _keep_previous(path)
        atomic_write(path, lambda handle: handle.write(data))
    except OSError as err:
        folder = path.parent
        if err.errno in _NO_ROOM:
            free = shutil.disk_usage(folder).free if folder.exists() else 0
            raise CheckpointWriteError(
                f"cannot save checkpoint {path}: no space left on the device ({_size(free)} free, the "
                f"checkpoint needs {_size(len(data))}); free at least "
                f"{_size(max(len(data) - free, 0) + 2**20)} there, then continue with "
                f"`clusterloss train --resume {folder}`") from None
        if err.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise CheckpointWriteError(
                f"cannot save checkpoint {path}: {folder} is not writable ({err.strerror}); make it writable "
                "or train into another --run-dir") from None
        raise CheckpointWriteError(f"cannot save checkpoint {path}: {err.strerror or err}") from None


def remove_stale_temp_files(folder: str | Path) -> list[Path]:
    """Delete temp files that a killed save left in ``folder`` (call while holding its run lock)."""
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        if (_TEMP_NAME.match(entry.name) or entry.name.endswith(".link.tmp")) and entry.is_file():
            try:
                entry.unlink()
                removed.append(entry)
            except OSError:
                pass
    return removed


def _load_error(path: Path, err: BaseException) -> str:
    """Why ``torch.load`` failed, in one line, without PyTorch's advice to turn weights_only off."""
    text = str(err)
    if "Weights only load failed" in text or "weights_only" in text:
        detail = re.search(r"WeightsUnpickler error: ([^\n]*)", text)
        reason = detail.group(1).strip() if detail else "it holds objects other than tensors and plain values"
        reason = re.split(r" was not an allowed global| Please use|\. ", reason)[0].rstrip(".")  # no advice
        return (f"{path} is not a clusterloss checkpoint: refusing to load it, it asks for code to run "
                f"({reason}); only load checkpoints written by `clusterloss train`")
    # The first sentence only (torch appends paragraphs of advice); "a: b. c" keeps "a: b".
    parts = re.split(r"(?<=[.:])\s", text.splitlines()[0], maxsplit=2) if text else ["no data"]
    keep = parts[:2] if len(parts) > 1 and parts[0].endswith(":") else parts[:1]
    first = " ".join(keep).rstrip(".")
    if isinstance(err, (EOFError, RuntimeError)) or "zip" in text.lower() or not text:
        return f"{path} is truncated or not a checkpoint ({type(err).__name__}: {first}); it cannot be read"
    return f"{path} is not a readable checkpoint ({type(err).__name__}: {first})"


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``torch.load(weights_only=True)`` (no arbitrary code runs).

    A missing, empty, truncated, random or malicious file raises ValueError in one line naming the file.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"checkpoint {str(path)!r} is a folder; give a .pt file (e.g. {path / 'last.pt'})")
    if not path.is_file():
        raise ValueError(f"checkpoint {str(path)!r} not found")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # anything a damaged or hostile file makes torch.load raise
        raise ValueError(_load_error(path, err)) from None
    if not isinstance(ckpt, dict):
        raise ValueError(f"{path} is not a clusterloss checkpoint: it holds a {type(ckpt).__name__}, "
                         "not a dict")
    return ckpt


def load_resumable(run_dir: str | Path,
                   map_location: str | torch.device = "cpu") -> tuple[dict[str, Any], Path]:
    """The newest readable checkpoint of a run: ``last.pt``, else ``last.prev.pt`` / ``best.pt``.

    Falling back is said on stderr (which file was unreadable, and why). Raises ValueError when none can be
    read, naming each file and its problem.
    """
    run_dir = Path(run_dir)
    problems = []
    found = []
    for name in RESUME_CANDIDATES:
        path = run_dir / name
        if not path.exists():
            continue
        try:
            ckpt = load_checkpoint(path, map_location=map_location)
            missing = [key for key in RESUME_KEYS if key not in ckpt]
            if missing or not isinstance(ckpt["config"], dict):
                raise ValueError(f"{path} is not a resumable clusterloss checkpoint (it lacks "
                                 f"{', '.join(missing) or 'a config dict'})")
        except ValueError as err:
            problems.append(str(err))
            continue
        if name == RESUME_CANDIDATES[0]:
            return ckpt, path
        found.append((int(ckpt["step"]), path, ckpt))
    if not found:
        if not problems:
            raise ValueError(f"cannot resume: {run_dir / 'last.pt'} does not exist (was the run started in "
                             "this folder?)")
        raise ValueError(f"cannot resume {run_dir}: no readable checkpoint ({'; '.join(problems)})")
    step, path, ckpt = max(found, key=lambda item: item[0])
    print(f"warning: {problems[0] if problems else run_dir / 'last.pt'}; resuming from the older intact "
          f"{path} (step {step}, epoch {ckpt.get('epoch')})", file=sys.stderr)
    return ckpt, path


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
    first_conv = next((v for k, v in ckpt["model"].items()
                       if k.startswith("backbone.") and isinstance(v, torch.Tensor) and v.dim() == 4), None)
    if first_conv is None:
        raise ValueError("not a clusterloss checkpoint: no 'in_channels' entry and no backbone convolution "
                         "to read it from")
    return int(first_conv.shape[1])


def model_from_checkpoint(ckpt: dict[str, Any] | str | Path) -> tuple[nn.Module, Any]:
    """Rebuild the trained model (eval mode, on CPU) and its ``Config`` from a checkpoint dict or path."""
    if not isinstance(ckpt, dict):
        ckpt = load_checkpoint(ckpt)
    if not isinstance(ckpt.get("config"), dict) or not isinstance(ckpt.get("model"), dict):
        raise ValueError("not a clusterloss checkpoint: it needs 'config' and 'model' entries (dicts)")
    config = Config.from_dict(ckpt["config"])
    # Pretrained weights are not read again (the checkpoint holds the trained ones): only the architecture
    # and the preprocessing they imply.
    model = build_model_from_config(config.model, in_channels=_in_channels(ckpt), load_weights=False)
    load_weights(model, ckpt["model"], "the checkpoint")
    return model.eval(), config


def load_weights(model: nn.Module, state: dict[str, Any], where: str) -> None:
    """``model.load_state_dict(state)`` with a size or key mismatch as one ValueError line."""
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"the weights in {where} are not a state dict of tensors")
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        detail = next((line for line in lines[1:] if "size mismatch" in line or "key" in line.lower()),
                      lines[0] if lines else "")
        detail = detail if len(detail) <= 240 else detail[:240] + " ..."
        raise ValueError(f"the weights in {where} do not fit the model its config describes ({detail}); "
                         "it was written for another model, or the model settings were changed") from None


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
