"""benchmarks/loss_speed.py runs end to end at tiny sizes: its table's rows, its loss against the oracle's,
its derived columns, and the same-run baseline column (no timings asserted)."""

import importlib.util
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks" / "loss_speed.py"


def _load():
    spec = importlib.util.spec_from_file_location("loss_speed", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rows(out: str) -> list[list[str]]:
    lines = [line for line in out.splitlines() if line.startswith("| ") and "x |" in line]
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines]


def _number(cell: str) -> float:
    return float(cell.rstrip("x").replace(",", "").lstrip("≈"))


def test_loss_speed_rows_match_the_oracle_and_their_own_arithmetic(capsys):
    module = _load()
    module.main(["--sizes", "8,16", "--repeats", "1", "--threads", "1"])
    rows = _rows(capsys.readouterr().out)
    sizes = (("8", "2"), ("16", "4"))
    expected = [(b, k, kind, pam) for b, k in sizes for kind in ("nmi", "ami") for pam in ("0", "5")]
    assert [(r[0], r[1], r[2], r[3]) for r in rows] == expected
    for b, _, _, _, ours, oracle, speedup, delta in rows:
        assert float(delta) < 1e-4, b  # the timed loss is the oracle's loss on the same batch
        # speed-up = oracle / ours, up to the rounding of the printed cells (0.1 ms, 1 ms, 1x)
        low = (_number(oracle) - 0.5) / (_number(ours) + 0.05) - 0.5
        high = (_number(oracle) + 0.5) / max(_number(ours) - 0.05, 1e-9) + 0.5
        assert low <= _number(speedup) <= high, (b, ours, oracle, speedup)
    x, labels = module.batch(16, "cpu")  # the documented batch: unit rows, K = B/4 classes of 4
    assert torch.allclose(x.norm(dim=1), torch.ones(16)) and torch.bincount(labels).tolist() == [4] * 4


@pytest.mark.slow  # four subprocesses
def test_baseline_column_times_another_checkout_on_the_same_batches(capsys):
    # The repository's own src as the "other checkout": the same loss, so the benchmark's check that both
    # compute the same loss passes and the ratio column is ours / baseline.
    _load().main(["--sizes", "8", "--repeats", "1", "--threads", "1", "--baseline-src", str(ROOT / "src")])
    rows = _rows(capsys.readouterr().out)
    assert len(rows) == 4
    for row in rows:
        ours, base, ratio = _number(row[4]), _number(row[5]), float(row[6])
        low, high = (ours - 0.05) / (base + 0.05), (ours + 0.05) / max(base - 0.05, 1e-9)
        assert low - 0.005 <= ratio <= high + 0.005, row


def test_partition_speed_prints_its_three_shapes(capsys):
    path = ROOT / "benchmarks" / "partition_speed.py"
    spec = importlib.util.spec_from_file_location("partition_speed", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main()
    out = capsys.readouterr().out.splitlines()
    rows = [line for line in out if line.startswith("| ") and "ms" not in line]
    cells = [[c.strip() for c in row.strip("|").split("|")] for row in rows]
    assert [(c[0], c[1]) for c in cells] == [("10,000", "10"), ("100,000", "1,000"), ("60,502", "11,316")]
    assert all(float(c[2]) >= 0 for c in cells)
