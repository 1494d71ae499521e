"""The facility-location clustering loss (Song, Jegelka, Rathod, Murphy, CVPR 2017, arXiv 1612.01213).

    L(X, y) = max(0, F(X, S*) + gamma * (1 - score(y, assignment(S*))) - F~(X, y))          (eq. 7)

where D are the Euclidean distances of the embeddings X [B, D], F(X, S) = -sum_i min_{s in S} D[s, i] is the
facility energy of the medoids S, S* are the loss-augmented medoids (greedy, then PAM; see
``facility_search``), F~ is the ground-truth score (each class's best medoid) and score is NMI, AMI, ARI,
V-measure or partition equality. Gradients flow through the distances only; the medoid choices and the
margin are constants, as in TensorFlow's ``tf.contrib.losses.metric_learning.cluster_loss``.

Differences from the original: ``margin_type="const"`` scores 1 when the predicted partition equals the
true one up to relabeling (the original compared raw label ids with slot numbers, so it depended on how
classes were numbered); candidates whose objectives differ only by round-off (relative 1e-10) count as
tied and the first wins.
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import nn

from clusterloss.losses.facility_search import (
    MARGIN_TYPES,
    SEARCH_CHOICES,
    assign_to_medoids,
    facility_location_search,
    ground_truth_facility_score,
    pairwise_distances,
)
from clusterloss.metrics.partition_scores import contingency_statistics, scores_from_statistics
from clusterloss.utils.threads import torch_threads


def _validate(embeddings, labels, margin_multiplier, margin_type, pam_iterations, search) -> torch.Tensor:
    if not isinstance(embeddings, torch.Tensor):
        raise ValueError(f"embeddings must be a torch.Tensor [B, D], got {type(embeddings).__name__}")
    if embeddings.dim() != 2:
        raise ValueError(f"embeddings must be 2-D [B, D], got shape {tuple(embeddings.shape)}")
    if embeddings.shape[0] == 0 or embeddings.shape[1] == 0:
        raise ValueError(f"embeddings is empty (shape {tuple(embeddings.shape)}); the loss needs B, D >= 1")
    if not embeddings.is_floating_point():
        raise ValueError(f"embeddings must be floating point, got {embeddings.dtype}; cast with .float()")
    if not bool(torch.isfinite(embeddings).all()):
        raise ValueError("embeddings contain NaN or Inf; check the model output (e.g. learning rate, AMP)")
    if not isinstance(labels, torch.Tensor):
        raise ValueError(f"labels must be a torch.Tensor [B] of integer ids, got {type(labels).__name__}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"labels must hold integer class ids, got dtype {labels.dtype}; cast with .long()")
    if labels.dim() == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.dim() != 1 or labels.shape[0] != embeddings.shape[0]:
        raise ValueError(
            f"labels must have shape [B] or [B, 1] with B = {embeddings.shape[0]} (the embeddings' batch), "
            f"got {tuple(labels.shape)}"
        )
    if margin_type not in MARGIN_TYPES:
        raise ValueError(f"unknown margin_type {margin_type!r}; choose one of {MARGIN_TYPES}")
    if isinstance(margin_multiplier, bool) or not isinstance(margin_multiplier, numbers.Real):
        raise ValueError(f"margin_multiplier must be a number, got {margin_multiplier!r}")
    if not math.isfinite(float(margin_multiplier)) or margin_multiplier < 0:
        raise ValueError(f"margin_multiplier must be finite and >= 0, got {margin_multiplier}")
    if isinstance(pam_iterations, bool) or not isinstance(pam_iterations, int) or pam_iterations < 0:
        raise ValueError(f"pam_iterations must be an int >= 0 (0 turns PAM off), got {pam_iterations!r}")
    if search not in SEARCH_CHOICES:
        raise ValueError(f"unknown search {search!r}; choose one of {SEARCH_CHOICES}")
    return labels.to(embeddings.device).long()


def facility_location_loss(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    *,
    margin_multiplier: float = 1.0,
    margin_type: str = "nmi",
    pam_iterations: int = 5,
    return_details: bool = False,
    search: str = "auto",
) -> torch.Tensor | tuple[torch.Tensor, dict]:
    """Clustering loss of a batch (eq. 7 of the paper); see the module docstring.

    Args:
        embeddings: [B, D] float (the paper feeds L2-normalized embeddings; no normalization here).
            float16/bfloat16 are computed in float32; float64 stays float64.
        labels: [B] or [B, 1] integer class ids (any ids: negative and non-contiguous are fine).
            K, the number of clusters, is the number of distinct labels in the batch.
        margin_multiplier: gamma, the weight of the structured margin.
        margin_type: ``nmi`` | ``ami`` | ``ari`` | ``vmeasure`` | ``const``.
        pam_iterations: PAM refinement passes after the greedy search (0 turns PAM off).
        return_details: also return a dict with ``medoids`` [K] (slot order, after PAM),
            ``greedy_medoids`` [K] (pick order), ``assignment`` [B] (slot of each sample),
            ``score_pred`` F(S*), ``score_gt`` F~(y), ``clustering_score`` (float), ``margin``
            gamma * (1 - score), ``num_clusters`` K and ``classes`` (the distinct labels, sorted).
        search: how the medoids are found; every choice gives the same medoids. ``"auto"``: the compiled
            CPU kernel (numba) for CPU tensors, the batched tensor search on other devices;
            ``"compiled"``: the kernel (CPU only); ``"tensor"``: the batched tensor search everywhere.

    Returns:
        Scalar loss (float32 for half inputs, else the embeddings' dtype), or ``(loss, details)``.
    """
    labels = _validate(embeddings, labels, margin_multiplier, margin_type, pam_iterations, search)
    x = embeddings.float() if embeddings.dtype in (torch.float16, torch.bfloat16) else embeddings
    # Inside a caller's autocast region the distance matmul would run in bf16/fp16 and change the loss and
    # the medoid choices; the loss is defined in the embeddings' own precision.
    with torch.autocast(x.device.type, enabled=False):
        return _loss(x, labels, float(margin_multiplier), margin_type, pam_iterations, return_details, search)


def _loss(x: torch.Tensor, labels: torch.Tensor, gamma: float, margin_type: str, pam_iterations: int,
          return_details: bool, search: str):
    dist = pairwise_distances(x)
    class_ids, classes = torch.unique(labels, return_inverse=True)
    k = class_ids.shape[0]
    # inference_mode: cheaper dispatch for the many small ops of the search; its outputs are cloned into
    # normal tensors because they index the differentiable distances below.
    with torch.inference_mode(), torch_threads(1 if dist.device.type == "cpu" else None):
        found = facility_location_search(
            dist.detach(), classes, k, margin_type, gamma, pam_iterations, round32=x.dtype != torch.float64,
            search=search,
        )
        assignment = assign_to_medoids(dist.detach(), found.medoids)
        stats = contingency_statistics(classes, assignment, with_emi=margin_type == "ami")
        score = float(scores_from_statistics(margin_type, **stats).clamp_min(0.0))
    medoids, greedy_medoids = found.medoids.clone(), found.greedy_medoids.clone()
    assignment = assignment.clone()
    if x.dtype != torch.float64:
        score = float(torch.tensor(score, dtype=torch.float32))  # the original casts the score to float32
    score_pred = -torch.amin(dist[medoids], dim=0).sum()
    score_gt = ground_truth_facility_score(dist, classes, k)
    margin = gamma * (1.0 - score)
    augmented = score_pred + margin - score_gt
    # max(0, .) whose gradient passes at equality, like tf.maximum.
    loss = torch.where(augmented >= 0, augmented, torch.zeros_like(augmented))
    if not return_details:
        return loss
    details = {
        "medoids": medoids,
        "greedy_medoids": greedy_medoids,
        "assignment": assignment,
        "score_pred": score_pred,
        "score_gt": score_gt,
        "clustering_score": score,
        "margin": margin,
        "num_clusters": k,
        "classes": class_ids,
    }
    return loss, details


class FacilityLocationLoss(nn.Module):
    """``nn.Module`` wrapper of :func:`facility_location_loss` with the same keyword arguments."""

    def __init__(
        self,
        *,
        margin_multiplier: float = 1.0,
        margin_type: str = "nmi",
        pam_iterations: int = 5,
        return_details: bool = False,
        search: str = "auto",
    ):
        super().__init__()
        # Validate eagerly so a bad config fails at construction, not at the first batch.
        _validate(torch.zeros(1, 1), torch.zeros(1, dtype=torch.long), margin_multiplier, margin_type,
                  pam_iterations, search)
        self.margin_multiplier = margin_multiplier
        self.margin_type = margin_type
        self.pam_iterations = pam_iterations
        self.return_details = return_details
        self.search = search

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor):
        return facility_location_loss(
            embeddings,
            labels,
            margin_multiplier=self.margin_multiplier,
            margin_type=self.margin_type,
            pam_iterations=self.pam_iterations,
            return_details=self.return_details,
            search=self.search,
        )

    def extra_repr(self) -> str:
        return (f"margin_multiplier={self.margin_multiplier}, margin_type={self.margin_type!r}, "
                f"pam_iterations={self.pam_iterations}, search={self.search!r}")
