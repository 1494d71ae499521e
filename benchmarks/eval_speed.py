"""Evaluation speed and memory: clusterloss.metrics (all metrics) vs pytorch-metric-learning.

Each (tool, N) runs in a fresh subprocess so that its peak resident memory is its own: "peak RSS" is
``resource.getrusage(RUSAGE_SELF).ru_maxrss`` of that process (imports + data + evaluation), "base RSS" the
current RSS (/proc/self/statm) after imports and data generation, just before the evaluation starts.

Data (same seed for both tools, so the same data):

* N = 10,000 / 100,000 / 1,000,000: D = 64, C = 100 / 1,000 / 1,000 Gaussian class centres, class of each
  point uniform at random, noise 1.3, L2-normalized.
* N = 60,502 ("SOP"): Stanford Online Products' evaluation split in shape: D = 512, 11,316 classes of 2-12
  images (mean 5.35). SOP's per-class histogram is not published, so the sizes are synthesized: each class
  draws its size from a discrete exponential p(s) ~ exp(-lambda s) on s = 2..12 with lambda fitted (bisection)
  so that the mean is 60,502 / 11,316, then single classes are moved up or down by one image (within 2..12)
  until the total is exactly 60,502; centres N(0, I), noise 2.2 (R@1 ~0.79, as published SOP models),
  L2-normalized.

Tools, each with its k-means settings stated in the table:

* clusterloss: ``evaluate_embeddings``: NMI + AMI (faiss k-means, K = C, 20 iterations, one run per seed),
  Recall@K (1, 2, 4, 8; SOP: 1, 10, 100, 1000), Precision@1, R-Precision, MAP@R, one kNN for all of them.
  The main row uses one k-means seed (seed 0 = faiss seed 1234, the very call PML makes); the "default
  seeds" row (10k and 100k) the command-line default of three seeds.
* PML: ``AccuracyCalculator(include=(NMI, AMI, precision_at_1, r_precision, mean_average_precision_at_r),
  k="max_bin_count")``: faiss k-means (``FaissKMeans(niter=20)``, one run, seed 1234) and a faiss kNN.

Per-process costs, reported apart from the evaluation call: "import (s)" is the tool's own import (after
torch and numpy, which both tools need): ``from clusterloss.metrics import ...`` for us, PML's
``AccuracyCalculator`` (which imports scikit-learn and scipy) for PML. numba imports most of its machinery
only at a process's first compiled call, so our first call carries numba's start-up; the line under the table
measures that start-up alone in a fresh process (``clusterloss.utils.compiled.start_compiler()`` after the
imports, which our evaluation's first compiled call runs). "fresh process" = import + first call: what a
script that imports the tool and evaluates once pays.

At N = 1M the exact leave-one-out kNN of all 1M queries costs ~10^12 distance evaluations (~25 min on
2 cores), so the retrieval metrics use a random 20,000-query subset searched against all 1M points (k-means
still clusters all 1M points), and PML is skipped (it would need the full 1M x 1M search and a 1M x 999 int64
neighbour table, 8 GB). Usage: python benchmarks/eval_speed.py [--sizes 10000 100000 60502 1000000]
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

SOP = 60_502
# N -> (classes, D, Recall@K's K)
CONFIGS = {10_000: (100, 64, (1, 2, 4, 8)), 100_000: (1000, 64, (1, 2, 4, 8)),
           SOP: (11_316, 512, (1, 10, 100, 1000)), 1_000_000: (1000, 64, (1, 2, 4, 8))}
SUBSET_FROM = 1_000_000  # N at which retrieval uses a query subset
SUBSET_QUERIES = 20_000
DEFAULT_SEEDS_SIZES = (10_000, 100_000)  # sizes with a 3-seed row too (at SOP one k-means run is ~3 min)


def sop_class_sizes(classes: int = 11_316, total: int = SOP, lo: int = 2, hi: int = 12, seed: int = 0):
    """Class sizes in lo..hi with the given total: discrete exponential fitted to the mean, then fixed up."""
    sizes = np.arange(lo, hi + 1)
    a, b = 0.0, 5.0
    for _ in range(60):  # bisection on lambda: the mean falls as lambda grows
        lam = (a + b) / 2
        p = np.exp(-lam * sizes)
        p /= p.sum()
        a, b = (lam, b) if (p * sizes).sum() > total / classes else (a, lam)
    rng = np.random.default_rng(seed)
    out = rng.choice(sizes, size=classes, p=p)
    diff = total - int(out.sum())
    while diff:
        i, step = rng.integers(classes), (1 if diff > 0 else -1)
        if lo <= out[i] + step <= hi:
            out[i] += step
            diff -= step
    return out


def make_data(n: int, classes: int, dim: int = 64, seed: int = 0):
    rng = np.random.default_rng(seed)
    if n == SOP:
        labels = np.repeat(np.arange(classes), sop_class_sizes(classes, n))
        labels = labels[rng.permutation(n)]
        noise = 2.2
    else:
        labels = rng.integers(0, classes, n)
        noise = 1.3
    centres = rng.standard_normal(size=(classes, dim), dtype=np.float32)
    x = centres[labels] + noise * rng.standard_normal(size=(n, dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x, labels


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def current_rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize() / 2**20


def numba_startup_seconds() -> float:
    """numba's start-up in a fresh process after our imports, as our evaluation's first compiled call pays
    it (``clusterloss.utils.compiled.start_compiler``: numba's typing and lowering registries loaded, the
    garbage collector paused)."""
    import torch  # noqa: F401  (imported first, as in the evaluation workers)

    from clusterloss.metrics import clustering_scores, retrieval_metrics  # noqa: F401
    from clusterloss.utils.compiled import start_compiler

    start = time.perf_counter()
    start_compiler()
    return time.perf_counter() - start


def worker(tool: str, n: int, seeds: int, iterations: int = 20, knn_backend: str = "auto",
           repeat: int = 1) -> dict:
    classes, dim, ks = CONFIGS[n]
    import torch  # both tools need torch (and numpy): not counted as the tool's import

    start = time.perf_counter()
    if tool == "clusterloss":
        from clusterloss.metrics import clustering_scores, retrieval_metrics
        from clusterloss.utils.threads import idle_cores, torch_threads
    else:
        from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
    import_seconds = time.perf_counter() - start
    x, y = make_data(n, classes, dim)
    base = current_rss_mb()
    load = os.getloadavg()[0]
    if tool != "clusterloss":
        calc = AccuracyCalculator(include=("NMI", "AMI", "precision_at_1", "r_precision",
                                           "mean_average_precision_at_r"),
                                  k="max_bin_count", device=torch.device("cpu"))
    times, parts = [], ""
    for _ in range(repeat):  # call 1: a fresh process (numba / faiss start-up included); then warm calls
        start = time.perf_counter()
        if tool == "clusterloss":
            # Exactly what evaluate_embeddings does (k-means scores, then one kNN pass, torch on the idle
            # cores), timed part by part.
            queries = None
            if n >= SUBSET_FROM:
                queries = np.random.default_rng(1).choice(n, SUBSET_QUERIES, replace=False)
            with torch_threads(max(1, min(idle_cores(), torch.get_num_threads()))):
                out = clustering_scores(x, y, seeds=tuple(range(seeds)), iterations=iterations)
                t_cluster = time.perf_counter() - start
                out.update(retrieval_metrics(x, y, ks, query_indices=queries, backend=knn_backend))
            t_knn = time.perf_counter() - start - t_cluster
            if not parts:
                parts = (f"k-means+NMI/AMI {t_cluster:.1f} s, kNN metrics (k = max(K, R), {knn_backend}) "
                         f"{t_knn:.1f} s")
            result = {k: out[k] for k in ("nmi", "ami", "recall@1", "r_precision", "map@r")}
            result["recall@last"] = out[f"recall@{ks[-1]}"]
        else:
            out = calc.get_accuracy(x, y)
            result = {"nmi": out["NMI"], "ami": out["AMI"], "recall@1": out["precision_at_1"],
                      "r_precision": out["r_precision"], "map@r": out["mean_average_precision_at_r"]}
        times.append(time.perf_counter() - start)
    return {"tool": tool, "n": n, "classes": classes, "dim": dim, "seconds": times[0],
            "repeat_seconds": float(np.median(times[1:])) if repeat > 1 else None, "seeds": seeds,
            "import_seconds": import_seconds,
            "iterations": iterations if tool == "clusterloss" else 20,
            "peak_rss_mb": peak_rss_mb(), "base_rss_mb": base, "parts": parts, "load": load, **result}


def run(tool: str, n: int, seeds: int, timeout: float, iterations: int = 20,
        knn_backend: str = "auto", repeat: int = 1) -> dict:
    if tool == "numba-startup":
        cmd = [sys.executable, __file__, "--numba-startup"]
    else:
        cmd = [sys.executable, __file__, "--worker", tool, str(n), str(seeds), str(iterations), knn_backend,
               str(repeat)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=True)
    except subprocess.TimeoutExpired:
        return {"tool": tool, "n": n, "seeds": seeds, "note": f"skipped: over {timeout:.0f} s"}
    except subprocess.CalledProcessError as err:
        return {"tool": tool, "n": n, "seeds": seeds,
                "note": f"failed: {err.stderr.strip().splitlines()[-1:]}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=sorted(CONFIGS), choices=sorted(CONFIGS))
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per (tool, N) before skipping")
    parser.add_argument("--kmeans-iterations", type=int, default=20,
                        help="our k-means iterations (PML's are fixed at 20; other values change NMI/AMI)")
    parser.add_argument("--no-pml", action="store_true", help="time clusterloss only")
    parser.add_argument("--knn-backend", default="auto", choices=("auto", "faiss", "torch", "blocked"),
                        help="our kNN backend (retrieval_metrics(backend=...)); PML always uses faiss")
    parser.add_argument("--repeat", type=int, default=1,
                        help="calls per process on the same data: the time column is the first call (a "
                             "fresh process: numba's and faiss's start-up included), 'warm' the median "
                             "of the others (an evaluation inside a training run)")
    parser.add_argument("--worker", nargs=6, help=argparse.SUPPRESS)
    parser.add_argument("--numba-startup", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error("--repeat must be >= 1")
    if args.numba_startup:
        print(json.dumps({"seconds": numba_startup_seconds()}))
        return
    if args.worker:
        tool, n, seeds, iterations, knn_backend, repeat = args.worker
        print(json.dumps(worker(tool, int(n), int(seeds), int(iterations), knn_backend, int(repeat))))
        return
    header = ("| N | D | classes | tool | time (s) | peak RSS (MB) | base RSS (MB) | NMI | AMI | R@1 | "
              "R-Prec | MAP@R | PML time / this | k-means runs x iterations | R@K (largest K) | load | "
              "breakdown | warm (s) | PML warm / this warm | import (s) | fresh process (s) | "
              "PML fresh / this fresh |")
    # The machine may be shared: the 1-minute load average says how many cores each run really had.
    print(f"load average at start: {os.getloadavg()[0]:.1f} ({os.cpu_count()} cores)\n")
    print(header)
    print("|---" * (header.count("|") - 1) + "|")
    for n in args.sizes:
        classes, dim, ks = CONFIGS[n]
        # PML first, so that every row can be printed (with its ratio) as soon as it is measured.
        if n >= SUBSET_FROM or args.no_pml:
            pml = {"tool": "pml", "n": n, "seeds": 1,
                   "note": "not run (--no-pml)" if args.no_pml else
                   "skipped: full 1M x 1M kNN + 8 GB neighbour table"}
        else:
            pml = run("pml", n, 1, args.timeout, repeat=args.repeat)
        jobs = [("clusterloss", 1)] + ([("clusterloss", 3)] if n in DEFAULT_SEEDS_SIZES else [])
        for r in [pml] + [run(tool, n, seeds, args.timeout, args.kmeans_iterations, args.knn_backend,
                              args.repeat) for tool, seeds in jobs]:
            name = "PML AccuracyCalculator" if r["tool"] == "pml" else "clusterloss"
            if r["tool"] == "clusterloss" and r["seeds"] > 1:
                name += ", default seeds"
            if n >= SUBSET_FROM and r["tool"] == "clusterloss":
                name += f" ({SUBSET_QUERIES // 1000}k-query subset)"
            if "note" in r:
                print(f"| {n:,} | {dim} | {classes} | {name} | {r['note']} |" + " |" * 17, flush=True)
                continue
            ratio = ""
            if r["tool"] == "clusterloss" and "seconds" in pml:
                ratio = f"{pml['seconds'] / r['seconds']:.1f}x"
            recall_last = f"R@{ks[-1]} {r['recall@last']:.4f}" if "recall@last" in r else ""
            warm = "" if r.get("repeat_seconds") is None else f"{r['repeat_seconds']:.2f}"
            warm_ratio = ""
            if warm and r["tool"] == "clusterloss" and pml.get("repeat_seconds"):
                warm_ratio = f"{pml['repeat_seconds'] / r['repeat_seconds']:.1f}x"
            fresh = r["import_seconds"] + r["seconds"]
            fresh_ratio = ""
            if r["tool"] == "clusterloss" and "seconds" in pml:
                fresh_ratio = f"{(pml['import_seconds'] + pml['seconds']) / fresh:.1f}x"
            print(f"| {n:,} | {dim} | {r['classes']} | {name} | {r['seconds']:.1f} | "
                  f"{r['peak_rss_mb']:.0f} | {r['base_rss_mb']:.0f} | {r['nmi']:.4f} | {r['ami']:.4f} | "
                  f"{r['recall@1']:.4f} | {r['r_precision']:.4f} | {r['map@r']:.4f} | {ratio} | "
                  f"{r['seeds']} x {r['iterations']} | {recall_last} | {r['load']:.1f} | {r['parts']} | "
                  f"{warm} | {warm_ratio} | {r['import_seconds']:.2f} | {fresh:.2f} | {fresh_ratio} |",
                  flush=True)
    startup = run("numba-startup", 0, 0, args.timeout)
    if "seconds" in startup:
        print(f"\nnumba start-up in a fresh process (first compiled call after the imports; part of our "
              f"first call): {startup['seconds']:.2f} s")
    print(f"\nload average at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
