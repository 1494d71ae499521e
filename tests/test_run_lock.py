"""One process per run directory: the OS-level lock, tested with real concurrent processes."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from clusterloss.run_lock import LOCK_NAME, RunDirLocked, run_lock

HOLD = textwrap.dedent("""
    import sys, time
    from clusterloss.run_lock import run_lock
    with run_lock(sys.argv[1], "holder"):
        print("held", flush=True)
        time.sleep(60)
""")


def _hold(run_dir):
    """Start a process that takes the lock and sleeps; returns once it holds the lock."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_second_process_is_refused_naming_the_holder_pid(tmp_path):
    run = tmp_path / "run"
    holder = _hold(run)
    try:
        with pytest.raises(RunDirLocked, match=rf"in use by pid {holder.pid} \(holder\).*--resume"):
            with run_lock(run):
                pass
    finally:
        holder.terminate()
        holder.wait()
    with run_lock(run):  # released when the holder ended
        assert (run / LOCK_NAME).exists()


def test_a_lock_left_by_a_killed_process_never_blocks(tmp_path):
    run = tmp_path / "run"
    holder = _hold(run)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert (run / LOCK_NAME).read_text().startswith(f"pid {holder.pid}")  # the file stays ...
    with run_lock(run, "after"):  # ... the lock does not
        assert (run / LOCK_NAME).read_text().startswith(f"pid {os.getpid()} (after)")


def test_reentrant_in_one_process_and_exclusive_across_processes(tmp_path):
    run = tmp_path / "run"
    with run_lock(run, "outer"), run_lock(run, "inner"):  # quickstart holds it and calls train()
        probe = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
            from clusterloss.run_lock import run_lock, RunDirLocked
            try:
                with run_lock({str(run)!r}):
                    print("got it")
            except RunDirLocked as err:
                print("refused:", err)
        """)], capture_output=True, text=True, timeout=60)
        assert probe.stdout.startswith("refused:") and f"pid {os.getpid()}" in probe.stdout
    with run_lock(run):
        pass


def test_resume_of_a_missing_folder_creates_nothing(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        with run_lock(tmp_path / "typo", create=False):
            pass
    assert not (tmp_path / "typo").exists()


def test_read_only_run_dir_is_one_clear_error(tmp_path):
    run = tmp_path / "ro"
    run.mkdir()
    mounted = False
    if os.geteuid() == 0:  # root writes into chmod-read-only folders: use a read-only tmpfs instead
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(run)],
                                 capture_output=True).returncode == 0
        if not mounted:
            pytest.skip("as root a read-only folder needs a read-only mount, and mounting failed here")
    else:
        run.chmod(0o555)
    try:
        with pytest.raises(ValueError, match="cannot write to run directory"):
            with run_lock(run):
                pass
    finally:
        if mounted:
            subprocess.run(["umount", str(run)], check=False)
        else:
            run.chmod(0o755)


@pytest.mark.slow
def test_two_concurrent_trains_on_one_run_dir_one_is_refused_nothing_mixed(tmp_path):
    """The probe of the issue: two `clusterloss train` on the same --run-dir; one trains, one is refused."""
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "clusterloss", "train", "--config", "digits_convnet", "--run-dir", str(run),
           "--set", "train.epochs=2", "--set", "train.num_threads=1", "--set", "train.progress=false"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen([*cmd, "--set", "train.lr=0.01"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=env)
    deadline = time.time() + 120
    while not (run / LOCK_NAME).exists() and time.time() < deadline:
        time.sleep(0.05)
    second = subprocess.run([*cmd, "--set", "train.lr=0.03"], capture_output=True, text=True, env=env,
                            timeout=300)
    out, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    if second.returncode == 0:  # it could only succeed by starting after the first had finished
        pytest.fail("both trains exited 0 on one run directory")
    lines = [line for line in second.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), second.stderr
    assert f"pid {first.pid}" in lines[0] or "already holds a run" in lines[0]
    import json

    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [r["epoch"] for r in records if r["split"] == "eval"]
    steps = [r["step"] for r in records if r["split"] == "train"]
    assert evals == sorted(set(evals)) and evals[-1] == 2  # one run's records, each once
    assert steps and steps == sorted(set(steps))
    assert "lr: 0.01" in (run / "config.yaml").read_text()


@pytest.mark.slow
def test_two_concurrent_resumes_one_is_refused_no_duplicate_records(tmp_path):
    run = tmp_path / "run"
    base = [sys.executable, "-m", "clusterloss", "train"]
    fast = ["--set", "train.num_threads=1", "--set", "train.progress=false"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([*base, "--config", "digits_convnet", "--run-dir", str(run), "--set", "train.epochs=1",
                    *fast], check=True, capture_output=True, env=env, timeout=600)
    resume = [*base, "--resume", str(run), "--set", "train.epochs=3", *fast]
    first = subprocess.Popen(resume, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 120
    while f"pid {first.pid}" not in (run / LOCK_NAME).read_text() and time.time() < deadline:
        time.sleep(0.05)
    second = subprocess.run(resume, capture_output=True, text=True, env=env, timeout=300)
    _, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    lines = [line for line in second.stderr.splitlines() if line.strip()]
    assert second.returncode == 1 and len(lines) == 1, second.stderr
    assert f"in use by pid {first.pid}" in lines[0]
    import json

    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records if r["split"] == "train"]
    assert steps == sorted(set(steps))  # the refused resume wrote nothing
