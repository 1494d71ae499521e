"""evaluate_embeddings(): every evaluation metric of an embedding in one flat dict."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from clusterloss.metrics.clustering import clustering_scores
from clusterloss.metrics.retrieval import retrieval_metrics

__all__ = ["evaluate_embeddings", "METRIC_KEYS"]

# Headline keys in display order (recall@K keys follow the ks given).
METRIC_KEYS = ("nmi", "nmi_std", "ami", "ami_std", "precision@1", "r_precision", "map@r")


def evaluate_embeddings(
    embeddings,
    labels,
    ks: Sequence[int] = (1, 2, 4, 8),
    kmeans_seeds: Sequence[int] = (0, 1, 2),
    *,
    clustering: bool = True,
    knn_backend: str = "auto",
    kmeans_backend: str = "auto",
) -> dict[str, float]:
    """Clustering and retrieval quality of an embedding.

    Args:
        embeddings: [N, D] float (numpy or torch), used as given (Euclidean distance, no re-normalisation).
        labels: [N] integer class ids.
        ks: the K of Recall@K.
        kmeans_seeds: one k-means (K = number of classes) per seed for NMI / AMI.
        clustering: set False to skip k-means (NMI / AMI keys are then absent).
        knn_backend, kmeans_backend: "auto" picks faiss when installed.

    Returns:
        Flat dict: ``nmi``, ``nmi_std``, ``ami``, ``ami_std``, ``recall@K`` for each K, ``precision@1``,
        ``r_precision``, ``map@r`` (floats in [0, 1]), and ``num_samples``, ``num_classes``,
        ``excluded_queries`` (queries of singleton classes, left out of the retrieval metrics).
    """
    retrieval = retrieval_metrics(embeddings, labels, ks, backend=knn_backend)
    out: dict[str, float] = {}
    if clustering:
        out.update(clustering_scores(embeddings, labels, seeds=kmeans_seeds, backend=kmeans_backend))
    out.update({f"recall@{int(k)}": retrieval[f"recall@{int(k)}"] for k in ks})
    for key in ("precision@1", "r_precision", "map@r"):
        out[key] = retrieval[key]
    out["num_samples"] = retrieval["queries"] + retrieval["excluded_queries"]
    y = labels.detach().cpu().numpy() if torch.is_tensor(labels) else np.asarray(labels)
    out["num_classes"] = int(len(np.unique(y)))
    out["excluded_queries"] = retrieval["excluded_queries"]
    return out

