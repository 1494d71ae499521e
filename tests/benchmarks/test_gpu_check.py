"""benchmarks/gpu_check.sh parses, refuses a missing CUB folder in one line, and its CPU dry run
(GPU_CHECK_TINY=1) runs every step end to end on a tiny CUB tree in the official format."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "gpu_check.sh"


def _tiny_cub(root: Path) -> Path:
    from PIL import Image

    folder = root / "CUB_200_2011"
    lines = {"classes.txt": [], "images.txt": [], "image_class_labels.txt": [], "train_test_split.txt": []}
    rng = np.random.default_rng(0)
    for c in [*range(1, 65), 101, 102, 103]:  # 64 training species (batches of 32 x 4), 3 evaluated
        lines["classes.txt"].append(f"{c} {c:03d}.S{c}")
        for i in range(4):
            n = len(lines["images.txt"]) + 1
            (folder / "images" / f"{c:03d}.S{c}").mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(
                folder / "images" / f"{c:03d}.S{c}" / f"{i}.jpg")
            lines["images.txt"].append(f"{n} {c:03d}.S{c}/{i}.jpg")
            lines["image_class_labels.txt"].append(f"{n} {c}")
            lines["train_test_split.txt"].append(f"{n} {i % 2}")
    for name, text in lines.items():
        (folder / name).write_text("\n".join(text) + "\n")
    return root


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
    cub = _tiny_cub(tmp_path / "cub")
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
