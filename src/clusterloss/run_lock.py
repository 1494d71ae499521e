"""One process per run directory: an exclusive OS-level lock held for the whole run.

``with run_lock(run_dir, "train"):`` takes ``fcntl.flock(LOCK_EX | LOCK_NB)`` on ``run_dir/.clusterloss.lock``
and writes the holder's pid and command into it. A second process asking for the same directory gets
``RunDirLocked`` (a ``ValueError``, so the CLI prints one ``error:`` line) naming the holder's pid. The kernel
drops the lock when its process ends, however it ends (SIGKILL included), so a lock file left behind by a
killed run never blocks: the file stays, the lock does not.

The lock is re-entrant within one process (``quickstart`` holds it and calls ``train``, which asks again).
The file is never deleted: deleting it while another process waits to open it would let two processes hold
locks on two different files of the same name.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

__all__ = ["LOCK_NAME", "RunDirLocked", "run_lock", "lock_holder"]

LOCK_NAME = ".clusterloss.lock"
_held: dict[str, list] = {}  # resolved run dir -> [fd, depth] for locks this process holds


class RunDirLocked(ValueError):
    """Another live process holds the run directory."""


def lock_holder(run_dir: str | Path) -> str:
    """What the lock file says about its last holder ("pid 123 (train)"), or "" when unknown."""
    try:
        text = (Path(run_dir) / LOCK_NAME).read_text().strip()
    except OSError:
        return ""
    return text.splitlines()[0] if text else ""


def _writable_dir(run_dir: Path) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise ValueError(f"run directory {run_dir} exists and is not a folder; choose another "
                         "--run-dir") from None
    except OSError as err:
        raise ValueError(f"cannot create run directory {run_dir}: {err.strerror}; choose a writable "
                         "--run-dir") from None


@contextlib.contextmanager
def run_lock(run_dir: str | Path, command: str = "train", *, create: bool = True) -> Iterator[Path]:
    """Hold the exclusive lock of ``run_dir`` for the ``with`` block (``create``: make the folder first)."""
    run_dir = Path(run_dir)
    if not create and not run_dir.is_dir():
        raise ValueError(f"cannot resume: run directory {run_dir} does not exist (or is not a folder); "
                         "check the path")
    _writable_dir(run_dir)
    key = str(run_dir.resolve())
    if key in _held:
        _held[key][1] += 1
        try:
            yield run_dir
        finally:
            _held[key][1] -= 1
        return
    path = run_dir / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise ValueError(f"cannot write to run directory {run_dir} ({err.strerror}: {path}); make it "
                         "writable or choose another --run-dir") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        os.close(fd)
        if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise ValueError(f"cannot lock {path}: {err.strerror}") from None
        holder = lock_holder(run_dir) or "another process"
        raise RunDirLocked(
            f"{run_dir} is in use by {holder}; wait for it to finish (or stop it, then continue with "
            f"`clusterloss train --resume {run_dir}`), or choose another --run-dir") from None
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} ({command})\n".encode())
    except OSError:
        pass  # the lock itself is held; the note about the holder is a courtesy
    _held[key] = [fd, 1]
    try:
        yield run_dir
    finally:
        del _held[key]
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
