"""The other benchmark scripts run end to end on tiny settings and print their tables (no timing asserts)."""

import subprocess
import sys
from pathlib import Path

import pytest

from photo_releases import write_cub

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _run(script: str, *args: str, timeout: float = 300) -> str:
    done = subprocess.run([sys.executable, str(BENCHMARKS / script), *args], capture_output=True, text=True,
                          timeout=timeout, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _ratio_agrees(printed: str, numerator: float, denominator: float) -> bool:
    """A ratio printed to 0.1 ("2.8x") from unrounded times lies within what any times that round to the
    printed ones (to 0.01 s) give: a call of ~0.15 s is only known to +-3 % here."""
    low = (numerator - 0.005) / (denominator + 0.005)
    high = (numerator + 0.005) / (denominator - 0.005)
    return printed.endswith("x") and low - 0.05 - 1e-9 <= float(printed[:-1]) <= high + 0.05 + 1e-9


def _table_rows(out: str) -> list[list[str]]:
    rows = [line for line in out.splitlines() if line.startswith("|") and not line.startswith("|--")
            and not line.startswith("|:") and "---" not in line]
    return [[c.strip() for c in row.strip("|").split("|")] for row in rows[1:]]  # without the header


@pytest.mark.slow
def test_data_speed_on_synthetic_data(tmp_path):
    out = _run("data_speed.py", "--root", str(tmp_path / "no_cifar_here"), "--batches", "3",
               "--baseline-batches", "2", "--threads", "1", "--no-photos")
    assert "synthetic uint8" in out
    rows = _table_rows(out)
    assert len(rows) >= 2 and all(float(r[1].replace(",", "")) > 0 for r in rows)


@pytest.mark.slow
def test_data_speed_photo_rows_on_a_tiny_cub(tmp_path):
    write_cub(tmp_path, class_ids=range(1, 65), per_class=4, size=(80, 60))  # 256 photos
    out = _run("data_speed.py", "--root", str(tmp_path / "no_cifar_here"), "--batches", "2",
               "--baseline-batches", "1", "--threads", "1", "--cub", str(tmp_path), "--photo-batches", "2",
               "--photo-baseline-batches", "1")
    assert "photos: 256 CUB images" in out and "images/s (decode + resize" in out
    photo_table = out[out.index("| pipeline (224 px)"):]
    rows = _table_rows(photo_table)
    assert len(rows) == 2 and all(float(r[1].replace(",", "")) > 0 for r in rows)


@pytest.mark.slow
def test_eval_speed_at_the_smallest_size():
    out = _run("eval_speed.py", "--sizes", "10000", "--repeat", "2")
    rows = {r[3]: r for r in _table_rows(out)}
    ours, pml = rows["clusterloss"], rows["PML AccuracyCalculator"]
    assert ours[0] == "10,000" and float(ours[4]) > 0
    assert ours[9:12] == pml[9:12]  # R@1, R-Precision, MAP@R: the same numbers as PML's
    # --repeat 2: the warm (second) call of each tool, and their ratio on our row
    warm_ours, warm_pml = float(ours[17]), float(pml[17])
    assert warm_ours > 0 and warm_pml > 0
    assert _ratio_agrees(ours[18], warm_pml, warm_ours)
    # Per-process costs: each tool's import, and import + first call ("fresh process") with its ratio.
    for row in (ours, pml):
        first, imported, fresh = float(row[4]), float(row[19]), float(row[20])
        assert imported > 0 and abs(fresh - (first + imported)) <= 0.05 + 0.005 + 1e-9
    assert _ratio_agrees(ours[21], float(pml[20]), float(ours[20]))
    startup = [line for line in out.splitlines() if line.startswith("numba start-up in a fresh process")]
    assert len(startup) == 1 and float(startup[0].rsplit(": ", 1)[1].removesuffix(" s")) > 0


@pytest.mark.slow
def test_train_speed_one_model_one_variant():
    out = _run("train_speed.py", "--models", "densenet_bc40", "--variants", "fp32", "--mallopt", "off",
               "--steps", "1", "--warmup", "1", "--threads", "1")
    rows = _table_rows(out)
    assert len(rows) == 1 and rows[0][:3] == ["densenet_bc40", "fp32", "off"]
    img_s, step_ms, shares = float(rows[0][3]), float(rows[0][4]), [float(c) for c in rows[0][5:]]
    # a batch of 128 per step, and the five phases (data, forward, loss, backward, optimizer) make the step
    assert 128_000 / (step_ms + 0.5) - 0.5 <= img_s <= 128_000 / max(step_ms - 0.5, 1e-9) + 0.5
    assert len(shares) == 5 and all(v >= 0 for v in shares) and abs(sum(shares) - 100) <= 0.3


@pytest.mark.slow
def test_omniglot_tune_leaves_each_training_alphabet_out_and_averages():
    import json

    out = _run("omniglot_tune.py", "--val", "all", "--steps", "2", "--rot90", "--P", "8", "--fast", "0")
    records = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    folds, mean = records[:-1], records[-1]
    assert [r["val"] for r in folds] == ["Balinese", "Early_Aramaic", "Greek", "Korean"]  # never Latin
    assert mean["folds"] == 4 and mean["rot90"] is True
    for key in ("ep5", "ep20", "bb5", "bb20"):
        assert all(0 <= r[key] <= 1 for r in folds)
        assert mean[key] == pytest.approx(sum(r[key] for r in folds) / 4, abs=1e-4)
    done = subprocess.run([sys.executable, str(BENCHMARKS / "omniglot_tune.py"), "--val", "Latin"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode != 0 and "error: --val must be one of" in done.stderr  # the held-out alphabet
