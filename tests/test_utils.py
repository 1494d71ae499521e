import json
import os
import subprocess
import sys
import threading
import time

import pytest
import torch

from clusterloss.utils.threads import torch_threads


def test_torch_threads_sets_and_restores():
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with torch_threads(None):
        assert torch.get_num_threads() == before


def test_torch_threads_restores_after_an_error():
    before = torch.get_num_threads()
    try:
        with torch_threads(1):
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert torch.get_num_threads() == before


def test_resolve_device():
    import pytest

    from clusterloss.utils.devices import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            resolve_device("cuda:1")


def test_jit_compiles_without_a_disk_cache_where_numba_cannot_cache(monkeypatch):
    import numba
    import pytest

    from clusterloss.utils import compiled

    def refusing(*args, **kwargs):  # numba raises this at decoration when it finds no cache location
        if kwargs.get("cache"):
            raise RuntimeError("cannot cache function 'f': no locator available for file '<x>'")
        return numba.njit(*args, **kwargs)

    monkeypatch.setattr(compiled, "njit", refusing)

    def add_one(x):
        return x + 1

    with pytest.warns(RuntimeWarning, match="NUMBA_CACHE_DIR"):
        fast = compiled.jit(add_one)
    assert fast(41) == 42 and hasattr(fast, "py_func")
    with pytest.warns(RuntimeWarning, match="NUMBA_CACHE_DIR"):  # with options: they reach numba either way
        fast = compiled.jit(fastmath=True)(add_one)
    assert fast(1.5) == 2.5 and fast.targetoptions.get("fastmath")


def test_jit_takes_numba_options_as_a_decorator_factory():
    from clusterloss.utils import compiled

    @compiled.jit(inline="always")
    def twice(x):
        return 2 * x

    @compiled.jit
    def four_times(x):
        return twice(twice(x))

    assert four_times(3) == 12 and twice.targetoptions.get("inline") == "always"


_START_COMPILER = """
import gc, json, sys
import torch  # noqa: F401  (the heap that numba's start-up would make full collections walk)
gc.{switch}()
from clusterloss.utils.compiled import start_compiler
def state():  # numba's implementation modules are imported by its start-up, not by `import numba`
    return ["numba.np.arraymath" in sys.modules, gc.get_stats()[2]["collections"], gc.isenabled()]
before = state()
start_compiler()
after = state()
start_compiler()
print(json.dumps([before, after, state()]))
"""


@pytest.mark.parametrize("switch", ["enable", "disable"])
def test_start_compiler_starts_numba_once_without_full_collections_and_restores_the_collector(switch):
    # (Calling a compiled function directly instead sets off one full collection here, after `import torch`.)
    code = _START_COMPILER.format(switch=switch)
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    before, after, again = json.loads(done.stdout.strip().splitlines()[-1])
    assert before[0] is False and after[0] is True  # a fresh process: numba started by the call
    assert after[1] == before[1]  # no full collection while it started
    assert before[2] == after[2] == again[2] == (switch == "enable")  # the collector as it was
    assert again == after  # the second call did nothing


def test_idle_cores_is_between_one_and_the_core_count(monkeypatch):
    from clusterloss.utils import threads

    monkeypatch.delenv("CLUSTERLOSS_THREADS", raising=False)
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 4)
    for busy, cores in {0: 4, 1: 3, 3: 1, 9: 1}.items():  # threads of other processes running now
        monkeypatch.setattr(threads, "busy_elsewhere", lambda busy=busy: busy)
        assert threads.idle_cores() == cores, busy
    # Without /proc: the load average, plus one for the caller
    monkeypatch.setattr(threads, "busy_elsewhere", lambda: None)
    expected = {0.0: 4, 0.4: 4, 1.0: 4, 2.0: 3, 3.6: 1, 9.0: 1}  # min(4, max(1, round(4 - load + 1)))
    for load, cores in expected.items():
        monkeypatch.setattr(threads.os, "getloadavg", lambda load=load: (load, load, load))
        assert threads.idle_cores() == cores, load
    monkeypatch.setenv("CLUSTERLOSS_THREADS", "3")
    assert threads.idle_cores() == 3


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="needs Linux's /proc")
def test_busy_elsewhere_counts_other_processes_not_this_ones_threads():
    from clusterloss.utils import threads

    assert threads._running_threads("/proc/self/task") >= 1  # this thread, reading
    before = threads.busy_elsewhere()
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        deadline = time.monotonic() + 10
        while threads.busy_elsewhere() < 1 and time.monotonic() < deadline:  # until it is scheduled
            time.sleep(0.05)
        assert threads.busy_elsewhere() >= 1
    finally:
        spinner.kill()
        spinner.wait()
    assert before >= 0
    # This process's own busy threads are not "elsewhere": a thread multiplying matrices (without the GIL)
    # leaves the count alone.
    stop = threading.Event()
    a = torch.randn(400, 400)

    def multiply():
        while not stop.is_set():
            a @ a

    worker = threading.Thread(target=multiply)
    worker.start()
    try:
        assert threads.busy_elsewhere(samples=5) <= max(before, 0) + 1  # +1: another process may wake up
    finally:
        stop.set()
        worker.join()
