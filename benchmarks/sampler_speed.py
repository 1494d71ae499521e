"""Time and memory per epoch of ClassBalancedBatchSampler at Stanford Online Products' size and beyond.

Class sizes drawn like SOP's training split (11,318 products, 59,551 images: 2-12 images each, mean 5.3),
then the same distribution with 2x and 4x the classes, to show how an epoch scales (linear = the time per
image stays flat). Each row: one full epoch's global schedule (all ranks' batches), P = 32 classes x K,
the median of ``--repeats`` epochs; peak memory = tracemalloc's peak of numpy/Python allocations during one
epoch. Also the per-batch weighted draw (the algorithm used below 4,096 classes) at the same sizes.
Run: .venv/bin/python benchmarks/sampler_speed.py [--k 2 3 4] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
import tracemalloc

import numpy as np

from clusterloss.data import sampler as sampler_module
from clusterloss.data.sampler import ClassBalancedBatchSampler

SOP_CLASSES, SOP_IMAGES = 11318, 59551


def sop_like_labels(num_classes: int, seed: int = 0) -> np.ndarray:
    """Class sizes in 2..12 whose mean matches SOP's training split (59,551 / 11,318 = 5.26)."""
    rng = np.random.default_rng(seed)
    sizes = np.clip(np.round(rng.exponential(SOP_IMAGES / SOP_CLASSES - 2, num_classes) + 2), 2, 12)
    return np.repeat(np.arange(num_classes), sizes.astype(int))


def measure(labels: np.ndarray, k: int, repeats: int) -> tuple[float, float, int]:
    sampler = ClassBalancedBatchSampler(labels, 32, k, seed=0)
    times = []
    for epoch in range(repeats):
        start = time.perf_counter()
        schedule = sampler.global_schedule(epoch)
        times.append(time.perf_counter() - start)
    tracemalloc.start()
    sampler.global_schedule(repeats)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    used = len(np.unique(schedule))
    assert used == len(labels), "an image was not used"
    return statistics.median(times), peak / 2**20, len(schedule)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print("| classes | images | K | algorithm | batches | s / epoch | µs / image | peak MiB |")
    print("|---:|---:|---:|---|---:|---:|---:|---:|")
    for k in args.k:
        for algorithm in ("layout", "weighted draw"):
            for scale in args.scales:
                labels = sop_like_labels(SOP_CLASSES * scale)
                saved = sampler_module.LAYOUT_MIN_CLASSES
                if algorithm != "layout":  # the per-batch weighted draw (used below 4,096 classes)
                    sampler_module.LAYOUT_MIN_CLASSES = 10**9
                try:
                    seconds, peak, batches = measure(labels, k, args.repeats if algorithm == "layout" else 1)
                finally:
                    sampler_module.LAYOUT_MIN_CLASSES = saved
                print(f"| {SOP_CLASSES * scale:,} | {len(labels):,} | {k} | {algorithm} | {batches:,} | "
                      f"{seconds:.2f} | {seconds / len(labels) * 1e6:.1f} | {peak:.1f} |")

if __name__ == "__main__":
    main()
