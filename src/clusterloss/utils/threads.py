"""CPU thread counts: torch's intra-op threads, and the OpenMP threads of faiss (and openTSNE) when shared."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch


@contextlib.contextmanager
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


def _running_threads(path: str) -> int:
    """Threads in state R (running or runnable) among ``path``/*/stat (``/proc/self/task``)."""
    count = 0
    for name in os.listdir(path):
        try:
            with open(os.path.join(path, name, "stat"), "rb") as handle:
                stat = handle.read()
        except OSError:  # the thread ended meanwhile
            continue
        count += stat[stat.rindex(b")") + 2 : stat.rindex(b")") + 3] == b"R"
    return count


def busy_elsewhere(samples: int = 3) -> int | None:
    """Threads of *other* processes running right now: the kernel's count of runnable threads
    (``procs_running`` in /proc/stat) minus this process's own running threads, the smallest of a few
    samples (back to back, ~0.1 ms each); None where /proc is not there (not Linux)."""
    try:
        counts = []
        for _ in range(samples):
            with open("/proc/stat", "rb") as handle:
                line = next(row for row in handle if row.startswith(b"procs_running"))
            counts.append(int(line.split()[1]) - _running_threads("/proc/self/task"))
    except (OSError, StopIteration, ValueError):
        return None
    return max(0, min(counts))


def idle_cores() -> int:
    """Cores not busy with other processes (>= 1, at most the cpu count): the cpu count minus the threads of
    other processes running now (:func:`busy_elsewhere`); without /proc, minus the 1-minute load average
    plus one for the caller.

    ``$CLUSTERLOSS_THREADS`` overrides it. On a shared machine, OpenMP-style libraries (faiss, openTSNE)
    run faster with this many threads than with all cores, whose barrier spinning stalls on busy CPUs.
    Not the load average where /proc exists: it counts this process's own work of the last minute too (a
    training epoch, a benchmark's previous call), so evaluation after busy work ran on one core of an idle
    machine (100k x 64 kNN: 14.7 s against 5-6 s on two).
    """
    env = os.environ.get("CLUSTERLOSS_THREADS")
    if env:
        return max(1, int(env))
    cores = os.cpu_count() or 1
    busy = busy_elsewhere()
    if busy is not None:
        return max(1, min(cores, cores - busy))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    # Never more threads than cores: on an idle machine "cores - load + 1" would oversubscribe by one.
    return max(1, min(cores, round(cores - load + 1)))


@contextlib.contextmanager
def faiss_threads(threads: int | None = None) -> Iterator[None]:
    """Run the enclosed faiss calls with ``threads`` OpenMP threads, then restore the previous setting.

    Default: :func:`idle_cores`. faiss's OpenMP threads spin at barriers, so on a shared machine one
    descheduled thread stalls the rest: k-means of 10,000 points took 1.2 s with 2 threads and 0.05 s
    with 1 on 2 cores at load 4. Without faiss installed the block just runs.
    """
    try:  # faiss is optional and heavy: imported only by the callers that use it
        import faiss
    except ImportError:  # pragma: no cover - exercised only where faiss is absent
        yield
        return
    previous = faiss.omp_get_max_threads()
    if threads is None:
        threads = idle_cores()
    faiss.omp_set_num_threads(max(1, min(int(threads), previous)))
    try:
        yield
    finally:
        faiss.omp_set_num_threads(previous)


@contextlib.contextmanager
def numba_threads(threads: int | None = None) -> Iterator[None]:
    """Run the enclosed numba ``parallel=True`` kernels on ``threads`` threads (default :func:`idle_cores`),
    then restore the previous count. Measured here at load 3 on 2 cores: a selection kernel took 7 ns per
    distance on 2 threads and 0.6 ns on one (its threads wait for each other at every call's end)."""
    import numba  # a dependency already; imported here so that this module stays light to import

    previous = numba.get_num_threads()
    count = max(1, min(int(idle_cores() if threads is None else threads), numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(count)
    try:
        yield
    finally:
        numba.set_num_threads(previous)
