"""Clustering quality of an embedding: k-means with K = number of classes, then NMI / AMI against the labels.

k-means runs with faiss when installed (``faiss.Kmeans``, 20 Lloyd iterations, k-means++-free random init,
at most 256 training points per centroid as faiss samples by default; the same call as
pytorch-metric-learning's ``AccuracyCalculator``, whose one run equals our seed 0) and falls back to
scikit-learn's ``KMeans`` (k-means++, one init). Embeddings on a GPU are clustered there by a torch Lloyd
loop (``backend="torch"``: random distinct points as initial centroids, the same number of iterations, an
empty cluster keeps its previous centroid) instead of being copied to the CPU.

Each seed gives one assignment; NMI and AMI (arithmetic-mean normalisation, as scikit-learn's defaults)
are computed with :mod:`clusterloss.metrics.partition_scores` and reported as the mean and (population)
standard deviation over seeds, because a single k-means run on a few thousand points moves NMI by about a
percent.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from clusterloss.metrics import partition_scores
from clusterloss.utils.threads import faiss_threads
from clusterloss.validation import check_embeddings, check_labels

try:
    import faiss
except ImportError:  # pragma: no cover - exercised only where faiss is absent
    faiss = None

__all__ = ["KMEANS_BACKENDS", "kmeans", "clustering_scores"]

KMEANS_BACKENDS = ("auto", "faiss", "sklearn", "torch")
# Bytes of the point-to-centroid distance block one assignment chunk of the torch backend may use.
_CHUNK_BYTES = 256 * 2**20


def _as_points(embeddings) -> np.ndarray:
    x = check_embeddings(embeddings, compute_dtype=torch.float32)  # k-means runs in float32
    return np.ascontiguousarray(x.detach().cpu().float().numpy(), dtype=np.float32)


def _assign_torch(x: torch.Tensor, sq: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Index of each row's nearest centroid (squared Euclidean), in chunks of rows."""
    csq = (centroids * centroids).sum(dim=1)
    step = max(1, _CHUNK_BYTES // (4 * centroids.shape[0]))
    parts = []
    for start in range(0, x.shape[0], step):
        rows = slice(start, start + step)
        d = torch.addmm(sq[rows, None] + csq[None, :], x[rows], centroids.T, alpha=-2.0)
        parts.append(d.argmin(dim=1))
    return torch.cat(parts)


def _kmeans_torch(x: torch.Tensor, num_clusters: int, seed: int, iterations: int) -> np.ndarray:
    """Lloyd's k-means on ``x``'s device (the GPU path): random distinct points as initial centroids."""
    generator = torch.Generator().manual_seed(int(seed))
    start = torch.randperm(x.shape[0], generator=generator)[:num_clusters].to(x.device)
    centroids = x[start].clone()
    sq = (x * x).sum(dim=1)
    for _ in range(iterations):
        assignment = _assign_torch(x, sq, centroids)
        sums = torch.zeros_like(centroids).index_add_(0, assignment, x)
        counts = torch.bincount(assignment, minlength=num_clusters)
        filled = counts > 0  # an empty cluster keeps its centroid
        centroids[filled] = sums[filled] / counts[filled, None].to(x.dtype)
    return _assign_torch(x, sq, centroids).cpu().numpy().astype(np.int64)


def kmeans(embeddings, num_clusters: int, *, seed: int = 0, backend: str = "auto", iterations: int = 20):
    """Cluster the rows of ``embeddings`` [N, D] into ``num_clusters`` groups.

    ``backend``: "auto" (torch for a CUDA tensor, else faiss when installed, else scikit-learn), "faiss",
    "sklearn" or "torch" (Lloyd on the tensor's own device). ``iterations``: Lloyd iterations (faiss, torch;
    scikit-learn runs at least 100 and stops when converged).

    Returns:
        assignment [N] int64 numpy array with values in [0, num_clusters).
    """
    x = _checked_points(embeddings, backend, iterations)
    return _kmeans(x, num_clusters, seed=seed, backend=backend, iterations=iterations)


def _checked_points(embeddings, backend: str, iterations: int):
    """The k-means options and points checked once: a float32 tensor where it is (torch backend, or "auto" on
    a GPU tensor), else a float32 C-contiguous array."""
    if backend not in KMEANS_BACKENDS:
        raise ValueError(f"backend must be one of {KMEANS_BACKENDS}, got {backend!r}")
    if backend == "faiss" and faiss is None:
        raise ValueError("backend='faiss' needs faiss (pip install faiss-cpu); or use backend='sklearn'")
    if int(iterations) < 1:
        raise ValueError(f"k-means iterations must be >= 1, got {iterations}")
    on_gpu = torch.is_tensor(embeddings) and embeddings.device.type != "cpu"
    if backend == "torch" or (backend == "auto" and on_gpu):  # a GPU tensor stays there
        return check_embeddings(embeddings).detach().float().contiguous()
    return _as_points(embeddings)


def _kmeans(x, num_clusters: int, *, seed: int, backend: str, iterations: int) -> np.ndarray:
    """:func:`kmeans` on checked points: a float32 tensor (torch backend) or a float32 C-contiguous array."""
    n = x.shape[0]
    if not 1 <= num_clusters <= n:
        raise ValueError(f"num_clusters must be in [1, N={n}], got {num_clusters}")
    if num_clusters == 1:
        return np.zeros(n, dtype=np.int64)
    if torch.is_tensor(x):
        return _kmeans_torch(x, int(num_clusters), seed, int(iterations))
    if backend in ("auto", "faiss") and faiss is not None:
        # min_points_per_centroid=1 silences faiss's "please provide at least 39 points per centroid".
        km = faiss.Kmeans(x.shape[1], num_clusters, niter=iterations, seed=int(seed) + 1234,
                          min_points_per_centroid=1, verbose=False)
        with faiss_threads():
            km.train(x)
            _, assignment = km.index.search(x, 1)
        return assignment[:, 0].astype(np.int64)
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=num_clusters, n_init=1, max_iter=max(iterations, 100), random_state=int(seed))
    return km.fit_predict(x).astype(np.int64)


def clustering_scores(
    embeddings,
    labels,
    *,
    seeds: Sequence[int] = (0, 1, 2),
    num_clusters: int | None = None,
    backend: str = "auto",
    iterations: int = 20,
) -> dict[str, float]:
    """NMI and AMI of k-means assignments against ``labels``, mean and std over ``seeds``.

    Args:
        embeddings: [N, D] float.
        labels: [N] integer class ids.
        seeds: one k-means run per seed (at least one).
        num_clusters: K of k-means (default: the number of distinct labels).
        backend: see :func:`kmeans`.
        iterations: Lloyd iterations per k-means run.

    Returns:
        {"nmi", "nmi_std", "ami", "ami_std"} as floats.
    """
    x = _checked_points(embeddings, backend, iterations)
    y = check_labels(labels, x.shape[0]).cpu().numpy()
    if len(seeds) == 0:
        raise ValueError("seeds must hold at least one k-means seed, e.g. (0, 1, 2)")
    k = len(np.unique(y)) if num_clusters is None else int(num_clusters)
    y_t = torch.as_tensor(y)
    nmis, amis = [], []
    for seed in seeds:
        assignment = torch.as_tensor(_kmeans(x, k, seed=seed, backend=backend, iterations=iterations))
        # One contingency pass (with its expected-mutual-information table) serves both scores.
        stats = partition_scores.contingency_statistics(y_t, assignment)
        nmis.append(float(partition_scores.scores_from_statistics("nmi", **stats)))
        amis.append(float(partition_scores.scores_from_statistics("ami", **stats)))
    return {
        "nmi": float(np.mean(nmis)),
        "nmi_std": float(np.std(nmis)),
        "ami": float(np.mean(amis)),
        "ami_std": float(np.std(amis)),
    }
