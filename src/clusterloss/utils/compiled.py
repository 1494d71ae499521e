"""``jit``: numba's ``njit`` with the machine code cached on disk (a fresh install compiles once), and
:func:`start_compiler`, numba's once-per-process start-up with the garbage collector paused."""

from __future__ import annotations

import gc
import warnings
from collections.abc import Callable

from numba import njit

_started = False


def jit(function: Callable | None = None, **options) -> Callable:
    """``numba.njit(cache=True, **options)``, as ``@jit`` or ``@jit(parallel=True, ...)``. Where numba finds
    no writable cache location it refuses ``cache=True`` (RuntimeError at decoration), and the function is
    then compiled in each process instead (a warning)."""
    if function is None:
        return lambda f: jit(f, **options)
    try:
        return njit(cache=True, **options)(function)
    except RuntimeError as err:
        warnings.warn(
            f"numba cannot cache {function.__name__} ({err}); it is compiled in every process "
            "(set NUMBA_CACHE_DIR to a writable folder to cache it)",
            RuntimeWarning,
            stacklevel=2,
        )
        return njit(**options)(function)


@jit
def _identity(x):
    return x


def start_compiler() -> None:
    """Start numba in this process now, with Python's cyclic garbage collector paused; later calls return at
    once.

    A process's first call of any compiled function (cached or not) makes numba import its implementation
    modules and build its typing and lowering registries (about a thousand overload templates). That burst
    of new objects sets off full collections, each of which walks every object in the process, torch's
    included. Measured here in fresh processes after ``import torch`` and our metrics: 0.39-0.47 s with the
    collector on, 0.31-0.41 s with it paused (README, "Evaluation speed"). Pausing leaves no garbage behind:
    those objects live as long as the process.
    Called by the Python entry points of compiled code (the partition scores, the blocked kNN, the loss's
    search) before their first compiled call; the collector is switched back on only if it was on.
    """
    global _started
    if _started:
        return
    collecting = gc.isenabled()
    gc.disable()
    try:
        _identity(0)
    finally:
        if collecting:
            gc.enable()
    _started = True
