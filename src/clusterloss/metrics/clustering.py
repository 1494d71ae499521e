"""Clustering quality of an embedding: k-means with K = number of classes, then NMI / AMI against the labels.

k-means runs with faiss when installed (``faiss.Kmeans``, 20 Lloyd iterations, k-means++-free random init,
at most 256 training points per centroid as faiss samples by default) and falls back to scikit-learn's
``KMeans`` (k-means++, one init). Each seed gives one assignment; NMI and AMI (arithmetic-mean
normalisation, as scikit-learn's defaults) are computed with :mod:`clusterloss.metrics.partition_scores` and
reported as the mean and (population) standard deviation over seeds, because a single k-means run on a few
thousand points moves NMI by about a percent.
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

KMEANS_BACKENDS = ("auto", "faiss", "sklearn")


def _as_points(embeddings) -> np.ndarray:
    x = check_embeddings(embeddings)
    return np.ascontiguousarray(x.detach().cpu().float().numpy(), dtype=np.float32)


def kmeans(embeddings, num_clusters: int, *, seed: int = 0, backend: str = "auto", iterations: int = 20):
    """Cluster the rows of ``embeddings`` [N, D] into ``num_clusters`` groups.

    Returns:
        assignment [N] int64 numpy array with values in [0, num_clusters).
    """
    x = _as_points(embeddings)
    n = x.shape[0]
    if not 1 <= num_clusters <= n:
        raise ValueError(f"num_clusters must be in [1, N={n}], got {num_clusters}")
    if backend not in KMEANS_BACKENDS:
        raise ValueError(f"backend must be one of {KMEANS_BACKENDS}, got {backend!r}")
    if backend == "faiss" and faiss is None:
        raise ValueError("backend='faiss' needs faiss (pip install faiss-cpu); or use backend='sklearn'")
    if num_clusters == 1:
        return np.zeros(n, dtype=np.int64)
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
) -> dict[str, float]:
    """NMI and AMI of k-means assignments against ``labels``, mean and std over ``seeds``.

    Args:
        embeddings: [N, D] float.
        labels: [N] integer class ids.
        seeds: one k-means run per seed (at least one).
        num_clusters: K of k-means (default: the number of distinct labels).
        backend: "auto" (faiss when installed), "faiss" or "sklearn".

    Returns:
        {"nmi", "nmi_std", "ami", "ami_std"} as floats.
    """
    x = _as_points(embeddings)
    y = check_labels(labels, x.shape[0]).cpu().numpy()
    if len(seeds) == 0:
        raise ValueError("seeds must hold at least one k-means seed, e.g. (0, 1, 2)")
    k = len(np.unique(y)) if num_clusters is None else int(num_clusters)
    y_t = torch.as_tensor(y)
    nmis, amis = [], []
    for seed in seeds:
        assignment = torch.as_tensor(kmeans(x, k, seed=seed, backend=backend))
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
