"""The other benchmark scripts run end to end on tiny settings and print their tables (no timing asserts)."""

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _run(script: str, *args: str, timeout: float = 300) -> str:
    done = subprocess.run([sys.executable, str(BENCHMARKS / script), *args], capture_output=True, text=True,
                          timeout=timeout, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _table_rows(out: str) -> list[list[str]]:
    rows = [line for line in out.splitlines() if line.startswith("|") and not line.startswith("|--")
            and not line.startswith("|:") and "---" not in line]
    return [[c.strip() for c in row.strip("|").split("|")] for row in rows[1:]]  # without the header


@pytest.mark.slow
def test_data_speed_on_synthetic_data(tmp_path):
    out = _run("data_speed.py", "--root", str(tmp_path / "no_cifar_here"), "--batches", "3",
               "--baseline-batches", "2", "--threads", "1")
    assert "synthetic uint8" in out
    rows = _table_rows(out)
    assert len(rows) >= 2 and all(float(r[1].replace(",", "")) > 0 for r in rows)


@pytest.mark.slow
def test_eval_speed_at_the_smallest_size():
    rows = {r[3]: r for r in _table_rows(_run("eval_speed.py", "--sizes", "10000"))}
    ours, pml = rows["clusterloss"], rows["PML AccuracyCalculator"]
    assert ours[0] == "10,000" and float(ours[4]) > 0
    assert ours[9:12] == pml[9:12]  # R@1, R-Precision, MAP@R: the same numbers as PML's


@pytest.mark.slow
def test_train_speed_one_model_one_variant():
    out = _run("train_speed.py", "--models", "densenet_bc40", "--variants", "fp32", "--mallopt", "off",
               "--steps", "1", "--warmup", "1", "--threads", "1")
    rows = _table_rows(out)
    assert len(rows) == 1 and rows[0][:3] == ["densenet_bc40", "fp32", "off"]
    assert float(rows[0][3]) > 0  # images/s
