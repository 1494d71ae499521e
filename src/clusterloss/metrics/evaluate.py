"""evaluate_embeddings(): every evaluation metric of an embedding in one flat dict."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from clusterloss.metrics.clustering import clustering_scores
from clusterloss.metrics.retrieval import retrieval_metrics
from clusterloss.validation import check_embeddings, check_labels

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
) -> dict[str, Any]:
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
        A metric that is undefined on this input (all classes singletons) is ``None``, never NaN, and
        ``undefined`` maps each such key to the reason. Labels go through
        :func:`clusterloss.validation.check_labels` (integers, at least two classes).
    """
    x = check_embeddings(embeddings, min_rows=2)
    y = check_labels(labels, x.shape[0], min_classes=2)
    retrieval = retrieval_metrics(x, y, ks, backend=knn_backend)
    out: dict[str, Any] = {}
    if clustering:
        out.update(clustering_scores(x, y, seeds=kmeans_seeds, backend=kmeans_backend))
    out.update({f"recall@{int(k)}": retrieval[f"recall@{int(k)}"] for k in ks})
    for key in ("precision@1", "r_precision", "map@r"):
        out[key] = retrieval[key]
    undefined = {}
    if retrieval["queries"] == 0:  # every class is a singleton: no query has a positive to find
        for key in [f"recall@{int(k)}" for k in ks] + ["precision@1", "r_precision", "map@r"]:
            out[key] = None
            undefined[key] = "every class has one sample, so no query has a same-class neighbour"
    for key, value in out.items():  # anything else undefined is reported the same way, never as NaN
        if isinstance(value, float) and not math.isfinite(value):
            out[key] = None
            undefined[key] = "not a finite number on these embeddings"
    out["num_samples"] = retrieval["queries"] + retrieval["excluded_queries"]
    out["num_classes"] = int(torch.unique(y).numel())
    out["excluded_queries"] = retrieval["excluded_queries"]
    if undefined:
        out["undefined"] = undefined
    return out
