"""Torch runtime settings: which device to run on, and how many intra-op CPU threads."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """Run torch CPU ops on ``count`` threads inside the block (None: leave the setting alone).

    Many tiny ops gain nothing from threads, and on a busy machine every parallel region can wait for a
    descheduled worker (measured here: the loss at B=32 took 90-200 ms with 2 threads, 7 ms with one).
    """
    previous = torch.get_num_threads()
    if count is None or count == previous:
        yield
        return
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> cuda when available, else cpu; any other torch device name as given.

    Asking for CUDA where there is none is an error rather than a silent fall-back to the CPU.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but no CUDA device is available; use cpu (or auto)")
    return device
