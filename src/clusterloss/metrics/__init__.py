"""Evaluation metrics: partition scores (NMI/AMI/...), retrieval (Recall@K, MAP@R, ...), k-means clustering.

All functions are pure: tensors or arrays in, floats or tensors out.
"""

from clusterloss.metrics.clustering import clustering_scores, kmeans
from clusterloss.metrics.evaluate import METRIC_KEYS, evaluate_embeddings
from clusterloss.metrics.partition_scores import (
    adjusted_mutual_info,
    adjusted_rand_index,
    normalized_mutual_info,
    partition_score,
    partitions_equal,
    v_measure,
)
from clusterloss.metrics.retrieval import (
    iter_knn,
    map_at_r,
    nearest_neighbors,
    precision_at_1,
    r_precision,
    recall_at_k,
    retrieval_metrics,
)

__all__ = [
    "METRIC_KEYS",
    "adjusted_mutual_info",
    "adjusted_rand_index",
    "clustering_scores",
    "evaluate_embeddings",
    "iter_knn",
    "kmeans",
    "map_at_r",
    "nearest_neighbors",
    "normalized_mutual_info",
    "partition_score",
    "partitions_equal",
    "precision_at_1",
    "r_precision",
    "recall_at_k",
    "retrieval_metrics",
    "v_measure",
]
