"""Temporarily changing the number of torch intra-op CPU threads."""

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
