"""Restricted unpickling for dataset files: pickles are untrusted input.

A pickle can name any importable callable (GLOBAL/STACK_GLOBAL) and call it (REDUCE/BUILD/NEWOBJ/INST/OBJ),
e.g. ``os.system``. ``safe_load`` only lets a pickle name these objects:

* numpy's array rebuild functions ``_reconstruct`` (under ``numpy.core.multiarray`` as written by old numpy
  and Python 2, or ``numpy._core.multiarray`` as written by numpy >= 2) and ``_frombuffer`` (protocol 5),
  ``numpy.ndarray``, ``numpy.dtype`` and ``scalar`` (numpy scalars), each wrapped so that only plain numeric,
  bool, bytes and str dtypes are accepted (no object arrays, no ndarray subclasses);
* ``_codecs.encode``, which Python 3 uses to write bytes into protocol-2 pickles (it only encodes a str).

Containers, str/bytes, numbers, None and bools need no globals. Anything else raises ``UnsafePickleError``
from ``find_class``, before the named object is even imported, so nothing is executed.
"""

from __future__ import annotations

import codecs
import io
import pickle
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

__all__ = ["UnsafePickleError", "safe_load", "safe_loads"]


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle refers to something outside the small set dataset files need."""


def _check_dtype(dtype: np.dtype, where: str) -> np.dtype:
    if dtype.hasobject or dtype.kind not in "biufcSU" or dtype.fields is not None:
        raise UnsafePickleError(
            f"refusing {where} with dtype {dtype!r}: only plain numeric/str dtypes allowed"
        )
    return dtype


def _safe_dtype(*args):
    return _check_dtype(np.dtype(*args), "a dtype")


def _safe_reconstruct(subtype, shape, dtype):
    if subtype is not np.ndarray:
        raise UnsafePickleError(f"refusing to rebuild an array of type {subtype!r}; only numpy.ndarray")
    # The empty array is filled by BUILD -> ndarray.__setstate__, whose dtype can only come from _safe_dtype.
    return np.ndarray.__new__(np.ndarray, shape, _check_dtype(np.dtype(dtype), "an array"))


def _safe_frombuffer(buffer, dtype, shape, order):
    dtype = _check_dtype(np.dtype(dtype), "an array")
    array = np.frombuffer(buffer, dtype=dtype)
    return array.reshape(shape, order=order)


def _safe_scalar(dtype, data=None):
    dtype = _check_dtype(np.dtype(dtype), "a numpy scalar")
    if not isinstance(data, bytes) or len(data) != dtype.itemsize:
        raise UnsafePickleError(f"malformed numpy scalar of dtype {dtype}")
    return np.frombuffer(data, dtype=dtype)[0]


def _safe_encode(text, encoding="utf-8"):
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafePickleError("refusing _codecs.encode other than str -> latin1 bytes")
    return codecs.encode(text, encoding)


_NUMPY_MODULES = ("numpy.core.multiarray", "numpy._core.multiarray")
_ALLOWED: dict[tuple[str, str], Any] = {
    **{(module, "_reconstruct"): _safe_reconstruct for module in _NUMPY_MODULES},
    **{(module, "scalar"): _safe_scalar for module in _NUMPY_MODULES},
    ("numpy.core.numeric", "_frombuffer"): _safe_frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _safe_frombuffer,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _safe_dtype,
    ("_codecs", "encode"): _safe_encode,
}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refusing to load {module}.{name}: dataset pickles may only contain containers, strings, "
                "numbers and numpy arrays; this file is not an official dataset file (or was tampered with)"
            ) from None


def _check_arrays(value: Any, depth: int = 0) -> Any:
    """Walk the loaded containers and re-check every array's final dtype (set by BUILD, after creation)."""
    if depth > 100:
        raise UnsafePickleError("pickle nests containers more than 100 deep")
    if isinstance(value, np.ndarray | np.generic):
        _check_dtype(value.dtype, "an array")
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_arrays(key, depth + 1)
            _check_arrays(item, depth + 1)
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            _check_arrays(item, depth + 1)
    return value


def safe_load(file: str | Path | BinaryIO, encoding: str = "bytes") -> Any:
    """Unpickle a dataset file allowing only containers, str/bytes, numbers and numpy arrays/dtypes.

    ``encoding="bytes"`` keeps Python-2 byte strings (e.g. CIFAR's keys ``b"data"``) as bytes;
    ``"latin1"`` decodes them to str. Raises ``UnsafePickleError`` for anything else.
    """
    if isinstance(file, str | Path):
        with open(file, "rb") as handle:
            return _check_arrays(_SafeUnpickler(handle, encoding=encoding).load())
    return _check_arrays(_SafeUnpickler(file, encoding=encoding).load())


def safe_loads(data: bytes, encoding: str = "bytes") -> Any:
    """``safe_load`` for a bytes object."""
    return safe_load(io.BytesIO(data), encoding=encoding)
