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
import functools
import io
import math
import mmap
import os
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


def _check_size(shape, dtype: np.dtype, max_bytes: int | None) -> tuple[int, ...]:
    """Refuse a shape whose array could not have come from the file (bounded before anything is allocated)."""
    dims = (shape,) if isinstance(shape, int) else tuple(shape)
    if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in dims) or len(dims) > 32:
        raise UnsafePickleError(f"malformed array shape {shape!r} in the pickle")
    nbytes = math.prod(dims) * max(dtype.itemsize, 1)
    if max_bytes is not None and nbytes > max_bytes:
        raise UnsafePickleError(f"the pickle declares a {nbytes:,}-byte array {dims} but the file holds only "
                                f"{max_bytes:,} bytes: it is corrupt or crafted")
    return dims


def _safe_reconstruct(subtype, shape, dtype, max_bytes: int | None = None):
    if subtype is not np.ndarray:
        raise UnsafePickleError(f"refusing to rebuild an array of type {subtype!r}; only numpy.ndarray")
    # The empty array is filled by BUILD -> ndarray.__setstate__, whose dtype can only come from _safe_dtype.
    dtype = _check_dtype(np.dtype(dtype), "an array")
    return np.ndarray.__new__(np.ndarray, _check_size(shape, dtype, max_bytes), dtype)


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
    def __init__(self, file: BinaryIO, *, encoding: str, max_bytes: int | None) -> None:
        super().__init__(file, encoding=encoding)
        self.max_bytes = max_bytes

    def find_class(self, module: str, name: str) -> Any:
        try:
            found = _ALLOWED[(module, name)]
            if found is _safe_reconstruct:
                return functools.partial(_safe_reconstruct, max_bytes=self.max_bytes)
            return found
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


def _file_size(file: BinaryIO) -> int | None:
    try:
        here = file.tell()
        end = file.seek(0, io.SEEK_END)
        file.seek(here)
        return end - here
    except (OSError, AttributeError, ValueError):
        return None


def _load(file: BinaryIO, encoding: str, max_bytes: int | None) -> Any:
    return _check_arrays(_SafeUnpickler(file, encoding=encoding, max_bytes=max_bytes).load())


def safe_load(file: str | Path | BinaryIO, encoding: str = "bytes") -> Any:
    """Unpickle a dataset file allowing only containers, str/bytes, numbers and numpy arrays/dtypes.

    ``encoding="bytes"`` keeps Python-2 byte strings (e.g. CIFAR's keys ``b"data"``) as bytes;
    ``"latin1"`` decodes them to str. Raises ``UnsafePickleError`` for anything else, and
    ``pickle.UnpicklingError`` naming the file for an empty, truncated or garbled one. No array larger than
    the file itself is allocated (a crafted header cannot ask for gigabytes), and a path is read through a
    read-only memory map, so a crafted length field cannot make a read allocate more than the file holds.
    """
    if not isinstance(file, str | Path):
        try:
            return _load(file, encoding, _file_size(file))
        except UnsafePickleError:
            raise
        except Exception as err:  # anything a garbled stream can raise inside the unpickler
            raise pickle.UnpicklingError(f"not a readable pickle ({type(err).__name__}: {err})") from err
    path = Path(file)
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if size == 0:
            raise pickle.UnpicklingError(f"{path} is empty (0 bytes): the download or copy was cut short; "
                                         "delete it and fetch the dataset again")
        try:
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as view:
                return _load(view, encoding, size)  # type: ignore[arg-type]
        except UnsafePickleError as err:
            raise UnsafePickleError(f"{path}: {err}") from None
        except Exception as err:
            what = "truncated" if isinstance(err, EOFError) else "not a readable pickle"
            raise pickle.UnpicklingError(
                f"{path} is {what} ({type(err).__name__}: {err or 'ran out of data'}); it is not an intact "
                "dataset file: delete it and fetch the dataset again") from None


def safe_loads(data: bytes, encoding: str = "bytes") -> Any:
    """``safe_load`` for a bytes object."""
    return safe_load(io.BytesIO(data), encoding=encoding)
