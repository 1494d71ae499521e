"""benchmarks/loss_speed.py runs end to end at tiny sizes and prints its table (no timings asserted)."""

import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "loss_speed.py"


def test_loss_speed_prints_one_row_per_size_margin_and_pam(capsys):
    spec = importlib.util.spec_from_file_location("loss_speed", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--sizes", "8,16", "--repeats", "1", "--threads", "1"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "x |" in line]
    assert len(rows) == 2 * 2 * 2  # sizes x margins x PAM
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        ours, tensor, oracle, speedup = (float(c.rstrip("x").replace(",", "")) for c in cells[4:])
        assert ours > 0 and tensor > 0 and oracle > 0 and speedup > 0
