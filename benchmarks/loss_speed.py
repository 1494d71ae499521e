"""Forward + backward time of the facility-location loss: ours vs the brute-force oracle, same run.

    .venv/bin/python benchmarks/loss_speed.py [--sizes 32,64,128,256,512,1024] [--repeats 5] [--threads N]

For each batch size B: D = 64, K = B / 4 classes of 4 samples, L2-normalized Gaussian embeddings, margins
nmi and ami, PAM off (0) and on (5 passes). "ours" is the loss as called by default (``search="auto"``: the
compiled kernel on CPU, the batched tensor search on CUDA), "tensor search" the same loss with
``search="tensor"``; each is the median over ``--repeats`` timed runs after one warm-up; the oracle
(``tests/losses/facility_oracle.py``: NumPy + one scikit-learn call per candidate, as
the TensorFlow original) is timed once, and skipped when its time, extrapolated from the previous sizes
(with the growth exponent measured between the last two sizes, else B^3), would exceed ``--oracle-limit``.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "losses"))
import facility_oracle  # noqa: E402

from clusterloss.losses.facility_location import facility_location_loss  # noqa: E402


def _ours_ms(x: torch.Tensor, labels: torch.Tensor, kind: str, pam: int, repeats: int, search: str) -> float:
    times = []
    for i in range(repeats + 1):
        e = x.clone().requires_grad_()
        _sync(x.device)
        t0 = time.perf_counter()
        facility_location_loss(e, labels, margin_type=kind, pam_iterations=pam, search=search).backward()
        _sync(x.device)
        if i:  # the first run is a warm-up
            times.append(time.perf_counter() - t0)
    return 1000.0 * statistics.median(times)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _oracle_ms(x: torch.Tensor, labels: torch.Tensor, kind: str, pam: int) -> float:
    t0 = time.perf_counter()
    facility_oracle.facility_location_loss(x.double().numpy(), labels.numpy(), 1.0, kind, pam)
    return 1000.0 * (time.perf_counter() - t0)


def _extrapolate(points: list[tuple[int, float]], b: int) -> float:
    """Seconds at size b from (size, seconds) measurements: power law through the last two, else B^3."""
    if not points:
        return 0.0
    exponent = 3.0
    if len(points) >= 2:
        (b1, t1), (b2, t2) = points[-2:]
        exponent = max(1.0, math.log(t2 / t1) / math.log(b2 / b1))
    b_last, t_last = points[-1]
    return t_last * (b / b_last) ** exponent


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="32,64,128,256,512,1024")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--oracle-limit", type=float, default=60.0, help="seconds")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}; "
          "D = 64, K = B/4, forward + backward, gamma = 1")
    print("| B | K | margin | PAM | ours (ms) | tensor search (ms) | oracle (ms) | speed-up |")
    print("|---:|---:|:---|---:|---:|---:|---:|---:|")
    measured: dict[tuple[str, int], list[tuple[int, float]]] = {}
    for b in sizes:
        k = max(1, b // 4)
        gen = torch.Generator().manual_seed(b)
        x = torch.nn.functional.normalize(torch.randn(b, 64, generator=gen), dim=1).to(args.device)
        labels = torch.arange(k).repeat_interleave(4)[:b].to(args.device)
        for kind in ("nmi", "ami"):
            for pam in (0, 5):
                ours = _ours_ms(x, labels, kind, pam, args.repeats, "auto")
                tensor = _ours_ms(x, labels, kind, pam, args.repeats, "tensor")
                estimate = _extrapolate(measured.get((kind, pam), []), b)
                if estimate > args.oracle_limit:
                    oracle_txt = f"skipped (est. {estimate:,.0f} s)"
                    speed_txt = f"~{estimate * 1000 / ours:,.0f}x"
                else:
                    oracle = _oracle_ms(x.cpu(), labels.cpu(), kind, pam)
                    measured.setdefault((kind, pam), []).append((b, oracle / 1000.0))
                    oracle_txt, speed_txt = f"{oracle:,.0f}", f"{oracle / ours:,.0f}x"
                times = f"{ours:,.1f} | {tensor:,.1f} | {oracle_txt}"
                row = f"| {b} | {k} | {kind} | {pam} | {times} | {speed_txt} |"
                print(row, flush=True)


if __name__ == "__main__":
    main()
