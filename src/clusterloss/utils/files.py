"""Atomic file writes: a crash at any moment leaves the previous file or the new one, never a torn one."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> None:
    """Write ``path`` atomically: ``write`` fills a temp file in the same folder, fsync, rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A fresh name opened with "x" (not mkstemp, whose files are private): the file gets the permissions
    # the user's umask gives any other output file.
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    handle = open(tmp, "xb")  # outside the try: if this fails there is nothing to clean up
    try:
        with handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Replace the text file ``path`` atomically (metrics, run summaries, configs), then fsync its folder."""
    path = Path(path)
    atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:  # some filesystems/platforms cannot open folders; the rename itself is still atomic
        return
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
