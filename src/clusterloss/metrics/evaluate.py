"""evaluate_embeddings(): every evaluation metric of an embedding in one flat dict.

Two modes, as in :mod:`clusterloss.metrics.retrieval`: all against all (each sample a query against all the
others; CUB, Cars196, SOP), or query / gallery (In-Shop: ``gallery_embeddings`` + ``gallery_labels``, or one
array split by ``query_mask``). In query / gallery mode the retrieval metrics search each query among the
gallery only, and NMI / AMI cluster the **union** of queries and gallery (K = number of distinct labels in the
union) by default: the clustering question "do images of one item group together" does not depend on which
images were chosen as queries. ``clustering_on="query"`` clusters the queries alone, as
pytorch-metric-learning's ``AccuracyCalculator`` does; ``"gallery"`` the gallery alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from clusterloss.metrics.clustering import clustering_scores
from clusterloss.metrics.retrieval import retrieval_metrics
from clusterloss.utils.threads import idle_cores, torch_threads
from clusterloss.validation import check_embeddings, check_labels

__all__ = ["evaluate_embeddings", "evaluate_as_configured", "METRIC_KEYS", "CLUSTERING_ON"]

# Headline keys in display order (recall@K keys follow the ks given).
METRIC_KEYS = ("nmi", "nmi_std", "ami", "ami_std", "precision@1", "r_precision", "map@r")
CLUSTERING_ON = ("union", "query", "gallery")


def _split_query_gallery(x, y, gallery_embeddings, gallery_labels, query_mask):
    """-> (queries, query labels, gallery or None, gallery labels or None, union points, union labels)."""
    if query_mask is not None:
        if gallery_embeddings is not None or gallery_labels is not None:
            raise ValueError("give either query_mask or gallery_embeddings/gallery_labels, not both")
        mask = torch.as_tensor(query_mask)
        if mask.dtype != torch.bool or mask.shape != (x.shape[0],):
            raise ValueError(f"query_mask must be bool [{x.shape[0]}] (True = query), got {mask.dtype} "
                             f"{tuple(mask.shape)}")
        mask = mask.to(x.device)
        n_query = int(mask.sum())
        if n_query == 0 or n_query == x.shape[0]:
            raise ValueError(f"query_mask marks {n_query} of {x.shape[0]} samples as queries; a query / "
                             "gallery split needs one of each (or pass query_mask=None for all vs all)")
        return x[mask], y[mask.to(y.device)], x[~mask], y[~mask.to(y.device)], x, y
    if gallery_embeddings is None and gallery_labels is None:
        return x, y, None, None, x, y
    if gallery_embeddings is None or gallery_labels is None:
        raise ValueError("query / gallery evaluation needs both gallery_embeddings and gallery_labels")
    g = check_embeddings(gallery_embeddings, name="gallery embeddings", min_rows=1)
    if g.shape[1] != x.shape[1]:
        raise ValueError(f"query embeddings have D = {x.shape[1]} but gallery embeddings D = {g.shape[1]}")
    yg = check_labels(gallery_labels, g.shape[0], name="gallery labels")
    g = g.to(x.device)
    return x, y, g, yg, torch.cat([x.detach(), g.detach()]), torch.cat([y.cpu(), yg.cpu()])


def evaluate_embeddings(
    embeddings,
    labels,
    ks: Sequence[int] = (1, 2, 4, 8),
    kmeans_seeds: Sequence[int] = (0, 1, 2),
    *,
    gallery_embeddings=None,
    gallery_labels=None,
    query_mask=None,
    clustering: bool = True,
    clustering_on: str = "union",
    kmeans_iterations: int = 20,
    knn_backend: str = "auto",
    kmeans_backend: str = "auto",
) -> dict[str, Any]:
    """Clustering and retrieval quality of an embedding.

    Args:
        embeddings: [N, D] float (numpy or torch), used as given (Euclidean distance, no re-normalisation);
            the queries when ``gallery_embeddings`` is given.
        labels: [N] integer class ids.
        ks: the K of Recall@K (CUB/Cars 1, 2, 4, 8; SOP 1, 10, 100, 1000; In-Shop 1, 10, 20, 30, 40, 50).
        kmeans_seeds: one k-means (K = number of classes) per seed for NMI / AMI.
        gallery_embeddings, gallery_labels: [M, D] and [M]: query / gallery mode (see the module doc).
        query_mask: bool [N], True = query, False = gallery: query / gallery mode on one array (e.g. an
            ``ImageDataset.query_mask``); exclusive with ``gallery_embeddings``.
        clustering: set False to skip k-means (NMI / AMI keys are then absent).
        clustering_on: query / gallery mode only: what k-means clusters, "union" (default), "query" or
            "gallery".
        kmeans_iterations: Lloyd iterations of each k-means run (20, as pytorch-metric-learning).
        knn_backend, kmeans_backend: "auto": the blocked kNN all against all on CPU, else faiss when
            installed (see :func:`clusterloss.metrics.retrieval.iter_knn`); faiss k-means when installed.

    Returns:
        Flat dict: ``nmi``, ``nmi_std``, ``ami``, ``ami_std``, ``recall@K`` for each K, ``precision@1``,
        ``r_precision``, ``map@r`` (floats in [0, 1]), and ``num_samples``, ``num_classes``,
        ``excluded_queries`` (queries without a positive: singleton classes, or in query / gallery mode labels
        absent from the gallery; left out of the retrieval metrics). Query / gallery mode adds
        ``num_queries`` and ``num_gallery``; ``num_samples`` and ``num_classes`` then count the union.
        A metric that is undefined on this input (all classes singletons) is ``None``, never NaN, and
        ``undefined`` maps each such key to the reason. Labels go through
        :func:`clusterloss.validation.check_labels` (integers, at least two classes).
    """
    if clustering_on not in CLUSTERING_ON:
        raise ValueError(f"clustering_on must be one of {CLUSTERING_ON}, got {clustering_on!r}")
    # torch's CPU ops here are many and small: on a busy machine they run faster on the idle cores only
    # (as faiss does, utils.threads), since every parallel region waits for its slowest thread.
    with torch_threads(max(1, min(idle_cores(), torch.get_num_threads()))):
        return _evaluate(embeddings, labels, ks, kmeans_seeds, gallery_embeddings, gallery_labels, query_mask,
                         clustering, clustering_on, kmeans_iterations, knn_backend, kmeans_backend)


def evaluate_as_configured(embeddings, labels, eval_config, query_mask=None) -> dict[str, float]:
    """:func:`evaluate_embeddings` with an eval config's ``ks`` and ``kmeans_seeds`` (and a query/gallery
    mask), keeping only the numeric entries, as floats: the metrics a run summary stores."""
    metrics = evaluate_embeddings(embeddings, labels, ks=tuple(eval_config.ks),
                                  kmeans_seeds=tuple(eval_config.kmeans_seeds), query_mask=query_mask)
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}


def _evaluate(embeddings, labels, ks, kmeans_seeds, gallery_embeddings, gallery_labels, query_mask,
              clustering, clustering_on, kmeans_iterations, knn_backend, kmeans_backend) -> dict[str, Any]:
    two_sets = gallery_embeddings is not None or gallery_labels is not None or query_mask is not None
    # One query and one gallery sample suffice; the union must still hold two classes (checked below).
    x = check_embeddings(embeddings, min_rows=1 if two_sets else 2)
    y = check_labels(labels, x.shape[0], min_classes=1 if two_sets else 2)
    xq, yq, xg, yg, x_all, y_all = _split_query_gallery(x, y, gallery_embeddings, gallery_labels, query_mask)
    if two_sets and int(torch.unique(y_all).numel()) < 2:
        check_labels(y_all, min_classes=2, name="labels of queries and gallery together")
    retrieval = retrieval_metrics(xq, yq, ks, gallery=xg, gallery_labels=yg, backend=knn_backend)
    out: dict[str, Any] = {}
    if clustering:
        points, point_labels = x_all, y_all
        if two_sets and clustering_on == "query":
            points, point_labels = xq, yq
        elif two_sets and clustering_on == "gallery":
            points, point_labels = xg, yg
        out.update(clustering_scores(points, point_labels, seeds=kmeans_seeds, backend=kmeans_backend,
                                     iterations=kmeans_iterations))
    out.update({f"recall@{int(k)}": retrieval[f"recall@{int(k)}"] for k in ks})
    for key in ("precision@1", "r_precision", "map@r"):
        out[key] = retrieval[key]
    undefined = {}
    if retrieval["queries"] == 0:  # every class is a singleton: no query has a positive to find
        for key in [f"recall@{int(k)}" for k in ks] + ["precision@1", "r_precision", "map@r"]:
            out[key] = None
            undefined[key] = ("no query's label occurs in the gallery" if two_sets else
                              "every class has one sample, so no query has a same-class neighbour")
    for key, value in out.items():  # anything else undefined is reported the same way, never as NaN
        if isinstance(value, float) and not math.isfinite(value):
            out[key] = None
            undefined[key] = "not a finite number on these embeddings"
    out["num_samples"] = int(x_all.shape[0])
    out["num_classes"] = int(torch.unique(y_all).numel())
    out["excluded_queries"] = retrieval["excluded_queries"]
    if two_sets:
        out["num_queries"], out["num_gallery"] = int(xq.shape[0]), int(xg.shape[0])
    if undefined:
        out["undefined"] = undefined
    return out
