"""``jit``: numba's ``njit`` with the machine code cached on disk (a fresh install compiles once)."""

from __future__ import annotations

import warnings
from collections.abc import Callable

from numba import njit


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
