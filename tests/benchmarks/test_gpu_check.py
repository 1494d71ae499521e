"""benchmarks/gpu_check.sh parses, refuses a missing CUB folder in one line, and its CPU dry run
(GPU_CHECK_TINY=1) runs every step end to end on a tiny CUB tree in the official format."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from photo_releases import write_cub

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "gpu_check.sh"


def test_gpu_check_script_parses():
    assert subprocess.run(["bash", "-n", str(SCRIPT)], check=False).returncode == 0
    assert os.access(SCRIPT, os.X_OK)


def test_gpu_check_refuses_a_missing_cub_folder(tmp_path):
    done = subprocess.run([str(SCRIPT), str(tmp_path / "nothing")], capture_output=True, text=True,
                          check=False, env={**os.environ, "PYTHON": sys.executable})
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [f"error: no CUB_200_2011 folder under {tmp_path / 'nothing'} "
                                                "(pass the folder that holds it)"]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_gpu_check_dry_run_on_cpu(tmp_path):
    cub = tmp_path / "cub"  # 64 training species (batches of 32 x 4), 3 evaluated
    write_cub(cub, class_ids=[*range(1, 65), 101, 102, 103], per_class=4, size=(64, 48))
    env = {**os.environ, "PYTHON": sys.executable, "GPU_CHECK_TINY": "1", "OMP_NUM_THREADS": "1",
           "CACHE_DIR": str(tmp_path / "cache")}
    done = subprocess.run([str(SCRIPT), str(cub)], capture_output=True, text=True, check=False, env=env,
                          timeout=900)
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    out = done.stdout
    for section in ("== machine", "== CUDA tests", "== loss speed on cpu", "== data speed: 224-px photo rows",
                    "== training steps on CUB photographs (cpu)", "== done"):
        assert section in out, section
    table = out[out.index("| img/s | step ms"):].splitlines()
    values = [float(v) for v in table[2].strip("|").split("|")]
    assert len(values) == 8 and values[0] > 0 and values[1] > 0
    assert sum(values[2:7]) == pytest.approx(100, abs=0.5)  # the five phases make up the step
    assert values[7] == pytest.approx(values[2] + values[4], abs=0.11)  # data + loss
