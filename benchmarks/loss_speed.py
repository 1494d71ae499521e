"""Forward + backward time of the facility-location loss: ours vs the brute-force oracle, same run.

    .venv/bin/python benchmarks/loss_speed.py [--sizes 32,64,128,256,512,1024] [--repeats 5] [--threads N]
        [--baseline-src OTHER_CHECKOUT/src]

For each batch size B: D = 64, K = B / 4 classes of 4, L2-normalized Gaussian embeddings, margins nmi and
ami, PAM off (0) and on (5 passes). "ours" is the loss as called by default; it is the median over
``--repeats`` timed runs after one warm-up. The oracle (``tests/losses/facility_oracle.py``: NumPy + one
scikit-learn call per candidate, as the TensorFlow original) is timed once, and skipped when its time,
extrapolated from the previous sizes (with the growth exponent measured between the last two sizes, else
B^3), would exceed ``--oracle-limit``; "|Δ loss|" is how far our loss is from the oracle's on that batch.

``--baseline-src`` also times the loss of another checkout (e.g. ``git worktree add /tmp/before <commit>``,
then ``--baseline-src /tmp/before/src``) on the same batches, in a worker process asked right after ours
for each row, so both see the same machine load; "ours / baseline" < 1 means ours is faster. ``--rounds R``
alternates ours and the baseline R times per row and reports the median of each (steadier on a busy machine).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "losses"))
import facility_oracle  # noqa: E402

from clusterloss import facility_location_loss  # noqa: E402

# Run by the baseline subprocess, whose clusterloss is the other checkout's (only the keywords that every
# version of the loss has). Prints the median time in ms and the loss of the last run.
_BASELINE = """
import json, statistics, sys, time
import torch
from clusterloss import facility_location_loss
for line in sys.stdin:  # one request per line: [b, kind, pam, repeats, threads, device]
    b, kind, pam, repeats, threads, device = json.loads(line)
    if threads:
        torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(b)
    x = torch.nn.functional.normalize(torch.randn(b, 64, generator=gen), dim=1).to(device)
    labels = torch.arange(max(1, b // 4)).repeat_interleave(4)[:b].to(device)
    times = []
    for i in range(repeats + 1):
        e = x.clone().requires_grad_()
        t0 = time.perf_counter()
        loss = facility_location_loss(e, labels, margin_type=kind, pam_iterations=pam)
        loss.backward()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        if i:
            times.append(time.perf_counter() - t0)
    print(json.dumps([1000.0 * statistics.median(times), loss.item()]), flush=True)
"""


def batch(b: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch of size b: normalized Gaussian [b, 64] (seeded by b), labels: K = b/4 classes of 4."""
    x = torch.nn.functional.normalize(torch.randn(b, 64, generator=torch.Generator().manual_seed(b)), dim=1)
    return x.to(device), torch.arange(max(1, b // 4)).repeat_interleave(4)[:b].to(device)


def _ours(x: torch.Tensor, labels: torch.Tensor, kind: str, pam: int, repeats: int) -> tuple[float, float]:
    """Median ms over ``repeats`` runs after a warm-up, and the loss."""
    times = []
    for i in range(repeats + 1):
        e = x.clone().requires_grad_()
        _sync(x.device)
        t0 = time.perf_counter()
        loss = facility_location_loss(e, labels, margin_type=kind, pam_iterations=pam)
        loss.backward()
        _sync(x.device)
        if i:  # the first run is a warm-up
            times.append(time.perf_counter() - t0)
    return 1000.0 * statistics.median(times), loss.item()


class _Baseline:
    """The other checkout's loss in one worker process (started once), timed on request."""

    def __init__(self, src: str) -> None:
        env = dict(os.environ, PYTHONPATH=src + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.worker = subprocess.Popen(
            [sys.executable, "-c", _BASELINE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )

    def time(
        self, b: int, kind: str, pam: int, repeats: int, threads: int, device: str
    ) -> tuple[float, float]:
        """Median ms and the loss, as :func:`_ours` measures them."""
        self.worker.stdin.write(json.dumps([b, kind, pam, repeats, threads, device]) + "\n")
        self.worker.stdin.flush()
        line = self.worker.stdout.readline()
        if not line:
            raise SystemExit(f"the baseline worker stopped (exit code {self.worker.wait()})")
        ms, loss = json.loads(line)
        return ms, loss

    def close(self) -> None:
        self.worker.stdin.close()
        self.worker.wait()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _oracle(x: torch.Tensor, labels: torch.Tensor, kind: str, pam: int) -> tuple[float, float]:
    t0 = time.perf_counter()
    out = facility_oracle.facility_location_loss(x.double().numpy(), labels.numpy(), 1.0, kind, pam)
    return 1000.0 * (time.perf_counter() - t0), float(out["loss"])


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
    parser.add_argument("--no-oracle", action="store_true", help="do not time the oracle")
    parser.add_argument(
        "--rounds", type=int, default=1, help="with --baseline-src: alternate ours / baseline this many times"
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--baseline-src", default=None, help="src folder of another checkout to time too")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = [int(s) for s in args.sizes.split(",")]
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}; "
        "D = 64, K = B/4, forward + backward, gamma = 1"
    )
    extra = " baseline (ms) | ours / baseline |" if args.baseline_src else ""
    print(f"| B | K | margin | PAM | ours (ms) |{extra} oracle (ms) | speed-up | |Δ loss| |")
    print("|---:|---:|:---|---:|---:|" + ("---:|---:|" if args.baseline_src else "") + "---:|---:|---:|")
    measured: dict[tuple[str, int], list[tuple[int, float]]] = {}
    baseline = _Baseline(args.baseline_src) if args.baseline_src else None
    for b in sizes:
        x, labels = batch(b, args.device)
        for kind in ("nmi", "ami"):
            for pam in (0, 5):
                ours_times, base_times = [], []
                for _ in range(args.rounds if args.baseline_src else 1):  # ours, baseline, ours, ...
                    ours, loss = _ours(x, labels, kind, pam, args.repeats)
                    ours_times.append(ours)
                    if args.baseline_src:
                        base, base_loss = baseline.time(b, kind, pam, args.repeats, args.threads, args.device)
                        if abs(base_loss - loss) > 1e-4 * max(1.0, abs(loss)):
                            raise SystemExit(
                                f"B={b} {kind} PAM {pam}: the baseline's loss {base_loss} differs "
                                f"from ours {loss}; not the same computation"
                            )
                        base_times.append(base)
                ours = statistics.median(ours_times)
                cells = [str(b), str(labels.unique().numel()), kind, str(pam), f"{ours:,.1f}"]
                if args.baseline_src:
                    base = statistics.median(base_times)
                    cells += [f"{base:,.1f}", f"{ours / base:.2f}"]
                estimate = _extrapolate(measured.get((kind, pam), []), b)
                if args.no_oracle:
                    cells += ["not run", "—", "—"]
                elif estimate > args.oracle_limit:
                    cells += [f"skipped (est. {estimate:,.0f} s)", f"≈{estimate * 1000 / ours:,.0f}x", "—"]
                else:
                    oracle, oracle_loss = _oracle(x.cpu(), labels.cpu(), kind, pam)
                    measured.setdefault((kind, pam), []).append((b, oracle / 1000.0))
                    cells += [f"{oracle:,.0f}", f"{oracle / ours:,.0f}x", f"{abs(loss - oracle_loss):.1e}"]
                print("| " + " | ".join(cells) + " |", flush=True)
    if baseline is not None:
        baseline.close()


if __name__ == "__main__":
    main()
