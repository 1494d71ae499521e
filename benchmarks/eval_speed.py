"""Evaluation speed and memory: clusterloss.metrics (all metrics) vs pytorch-metric-learning.

Each (tool, N) runs in a fresh subprocess so that its peak resident memory is its own: "peak RSS" is
``resource.getrusage(RUSAGE_SELF).ru_maxrss`` of that process (imports + data + evaluation), "base RSS" the
current RSS (/proc/self/statm) after imports and data generation, just before the evaluation starts.
Data: N points in D = 64 around C Gaussian class centres (same seed for both tools, so the same data).

* clusterloss: NMI + AMI (k-means with K = C, 3 seeds), Recall@1/2/4/8, Precision@1, R-Precision, MAP@R.
* PML: ``AccuracyCalculator(include=(NMI, AMI, precision_at_1, r_precision, mean_average_precision_at_r),
  k="max_bin_count")`` (one k-means run; its kNN is faiss too).

At N = 1M the exact leave-one-out kNN of all 1M queries costs ~10^12 distance evaluations (~25 min on
2 cores), so the retrieval metrics use a random 20,000-query subset searched against all 1M points (k-means
still clusters all 1M points), and PML is skipped (it would need the full 1M x 1M search and a 1M x 999 int64
neighbour table, 8 GB). Usage: python benchmarks/eval_speed.py [--sizes 10000 100000 1000000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

CONFIGS = {10_000: 100, 100_000: 1000, 1_000_000: 1000}  # N -> number of classes
DIM = 64
SUBSET_FROM = 1_000_000  # N at which retrieval uses a query subset
SUBSET_QUERIES = 20_000


def make_data(n: int, classes: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    centres = rng.normal(size=(classes, DIM)).astype(np.float32)
    x = centres[labels] + 1.3 * rng.standard_normal(size=(n, DIM), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x, labels


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def current_rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize() / 2**20


def worker(tool: str, n: int) -> dict:
    classes = CONFIGS[n]
    if tool == "clusterloss":
        from clusterloss.metrics import clustering_scores, retrieval_metrics
    else:
        import torch
        from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
    x, y = make_data(n, classes)
    base = current_rss_mb()
    start = time.perf_counter()
    parts = ""
    if tool == "clusterloss":
        # Exactly what evaluate_embeddings does (k-means scores, then one kNN pass), timed part by part.
        queries = None
        if n >= SUBSET_FROM:
            queries = np.random.default_rng(1).choice(n, SUBSET_QUERIES, replace=False)
        out = clustering_scores(x, y, seeds=(0, 1, 2))
        t_cluster = time.perf_counter() - start
        out.update(retrieval_metrics(x, y, (1, 2, 4, 8), query_indices=queries))
        t_knn = time.perf_counter() - start - t_cluster
        parts = f"k-means+NMI/AMI {t_cluster:.1f} s, kNN metrics {t_knn:.1f} s"
        result = {k: out[k] for k in ("nmi", "ami", "recall@1", "r_precision", "map@r")}
    else:
        calc = AccuracyCalculator(include=("NMI", "AMI", "precision_at_1", "r_precision",
                                           "mean_average_precision_at_r"),
                                  k="max_bin_count", device=torch.device("cpu"))
        out = calc.get_accuracy(x, y)
        result = {"nmi": out["NMI"], "ami": out["AMI"], "recall@1": out["precision_at_1"],
                  "r_precision": out["r_precision"], "map@r": out["mean_average_precision_at_r"]}
    seconds = time.perf_counter() - start
    return {"tool": tool, "n": n, "classes": classes, "seconds": seconds, "peak_rss_mb": peak_rss_mb(),
            "base_rss_mb": base, "parts": parts, **result}


def run(tool: str, n: int, timeout: float) -> dict:
    cmd = [sys.executable, __file__, "--worker", tool, str(n)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=True)
    except subprocess.TimeoutExpired:
        return {"tool": tool, "n": n, "note": f"skipped: over {timeout:.0f} s"}
    except subprocess.CalledProcessError as err:
        return {"tool": tool, "n": n, "note": f"failed: {err.stderr.strip().splitlines()[-1:]}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=sorted(CONFIGS), choices=sorted(CONFIGS))
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per (tool, N) before skipping")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker[0], int(args.worker[1]))))
        return
    header = ("| N | D | classes | tool | time (s) | peak RSS (MB) | base RSS (MB) | NMI | AMI | R@1 | "
              "R-Prec | MAP@R | PML time / ours | breakdown |")
    # The machine may be shared: the 1-minute load average says how many cores the run really had.
    print(f"load average at start: {os.getloadavg()[0]:.1f} ({os.cpu_count()} cores)\n")
    print(header)
    print("|---" * (header.count("|") - 1) + "|")
    for n in args.sizes:
        ours = run("clusterloss", n, args.timeout)
        if n >= SUBSET_FROM:
            pml = {"tool": "PML", "n": n, "note": "skipped: full 1M x 1M kNN + 8 GB neighbour table"}
        else:
            pml = run("pml", n, args.timeout)
        for r in (ours, pml):
            name = "clusterloss" if r["tool"] == "clusterloss" else "PML AccuracyCalculator"
            if n >= SUBSET_FROM and r["tool"] == "clusterloss":
                name += f" ({SUBSET_QUERIES // 1000}k-query subset)"
            if "note" in r:
                print(f"| {n:,} | {DIM} | {CONFIGS[n]} | {name} | {r['note']} | | | | | | | | | |")
                continue
            ratio = ""
            if r["tool"] == "pml" and "seconds" in ours:
                ratio = f"{r['seconds'] / ours['seconds']:.1f}x"
            print(f"| {n:,} | {DIM} | {r['classes']} | {name} | {r['seconds']:.1f} | "
                  f"{r['peak_rss_mb']:.0f} | {r['base_rss_mb']:.0f} | {r['nmi']:.4f} | {r['ami']:.4f} | "
                  f"{r['recall@1']:.4f} | "
                  f"{r['r_precision']:.4f} | {r['map@r']:.4f} | {ratio} | {r['parts']} |", flush=True)
    print(f"\nload average at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
