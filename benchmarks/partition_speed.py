"""Time of the partition scores at evaluation scale: contingency statistics + NMI + AMI of two labelings.

    .venv/bin/python benchmarks/partition_speed.py
    PYTHONPATH=OTHER_CHECKOUT/src .venv/bin/python benchmarks/partition_speed.py   # another version, same API

Rows: N points in C true classes (equal sizes) against C uniformly random clusters (seed 0); best of 3 after
one warm-up call (which also loads the compiled code).
"""

from __future__ import annotations

import time

import numpy as np

from clusterloss.metrics import partition_scores

SHAPES = ((10_000, 10), (100_000, 1_000), (60_502, 11_316))  # the last: Stanford Online Products' test split


def main() -> None:
    rng = np.random.default_rng(0)
    print("| N | classes | contingency + NMI + AMI (ms) |\n|---:|---:|---:|")
    for n, classes in SHAPES:
        true = np.repeat(np.arange(classes), n // classes + 1)[:n]
        pred = rng.integers(0, classes, n)
        partition_scores.adjusted_mutual_info(true[:100], pred[:100])
        times = []
        for _ in range(3):
            start = time.perf_counter()
            stats = partition_scores.contingency_statistics(true, pred)
            partition_scores.scores_from_statistics("nmi", **stats)
            partition_scores.scores_from_statistics("ami", **stats)
            times.append(time.perf_counter() - start)
        print(f"| {n:,} | {classes:,} | {1000 * min(times):.1f} |", flush=True)


if __name__ == "__main__":
    main()
