"""The facility-location clustering loss (Song, Jegelka, Rathod, Murphy, CVPR 2017, arXiv 1612.01213).

    L(X, y) = max(0, F(X, S*) + gamma * (1 - score(y, assignment(S*))) - F~(X, y))          (eq. 7)

where D are the Euclidean distances of the embeddings X [B, D], F(X, S) = -sum_i min_{s in S} D[s, i] is the
facility energy of the medoids S, S* are the loss-augmented medoids (greedy, then PAM; see
``facility_search``), F~(X, y) = sum over classes of -min_{j in class} sum_{i in class} D[i, j] is the
ground-truth score (each class's best medoid) and score is NMI, AMI, ARI, V-measure or partition equality.
Gradients flow through the distances only; the medoid choices and the margin are constants, as in
TensorFlow's ``tf.contrib.losses.metric_learning.cluster_loss``.

Differences from the original: ``margin_type="const"`` scores 1 when the predicted partition equals the
true one up to relabeling (the original compared raw label ids with slot numbers, so it depended on how
classes were numbered); candidates whose objectives differ only by round-off (relative 1e-10) count as
tied and the first wins.

The options are checked once (when :class:`FacilityLocationLoss` is built, or per call of the functions),
the inputs once per call; everything below that is the math.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch
from torch import nn

from clusterloss.contingency import SCORE_KINDS
from clusterloss.losses.facility_search import facility_location_search
from clusterloss.validation import check_embeddings, check_labels


@dataclass(frozen=True)
class FacilityLocationDetails:
    """What the loss of one batch found (tensors on the embeddings' device)."""

    loss: torch.Tensor  # scalar, differentiable
    medoids: torch.Tensor  # [K] int64, slot order (after PAM)
    greedy_medoids: torch.Tensor  # [K] int64, pick order (before PAM)
    assignment: torch.Tensor  # [B] int64, slot of each sample
    score_pred: torch.Tensor  # F(X, S*), scalar, differentiable
    score_gt: torch.Tensor  # F~(X, y), scalar, differentiable
    clustering_score: float  # score(y, assignment), clamped at 0
    margin: float  # gamma * (1 - clustering_score)
    classes: torch.Tensor  # [K] the distinct labels, sorted (slot k's class is not implied)

    @property
    def num_clusters(self) -> int:
        return int(self.classes.shape[0])


def check_options(margin_multiplier: float, margin_type: str, pam_iterations: int) -> tuple[float, str, int]:
    """The loss's options, checked: ``(gamma, margin_type, pam_iterations)``; ValueError names a bad one."""
    if margin_type not in SCORE_KINDS:
        raise ValueError(f"unknown margin_type {margin_type!r}; choose one of {SCORE_KINDS}")
    if isinstance(margin_multiplier, bool) or not isinstance(margin_multiplier, numbers.Real):
        raise ValueError(f"margin_multiplier must be a number, got {margin_multiplier!r}")
    if not math.isfinite(float(margin_multiplier)) or margin_multiplier < 0:
        raise ValueError(f"margin_multiplier must be finite and >= 0, got {margin_multiplier}")
    if isinstance(pam_iterations, bool) or not isinstance(pam_iterations, int) or pam_iterations < 0:
        raise ValueError(f"pam_iterations must be an int >= 0 (0 turns PAM off), got {pam_iterations!r}")
    return float(margin_multiplier), margin_type, pam_iterations


def check_inputs(embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x [B, D] float32/float64, labels [B] int64 on x's device)``; ValueError names what is wrong.

    float16/bfloat16 embeddings are computed in float32; float64 stays float64.
    """
    if not isinstance(embeddings, torch.Tensor):
        raise ValueError(f"embeddings must be a torch.Tensor [B, D], got {type(embeddings).__name__}")
    if embeddings.dim() != 2:
        raise ValueError(f"embeddings must be 2-D [B, D], got shape {tuple(embeddings.shape)}")
    if embeddings.shape[0] == 0 or embeddings.shape[1] == 0:
        raise ValueError(f"embeddings is empty (shape {tuple(embeddings.shape)}); the loss needs B, D >= 1")
    if not embeddings.is_floating_point():
        raise ValueError(f"embeddings must be floating point, got {embeddings.dtype}; cast with .float()")
    # The shared rule (validation.py): finite, and no overflow of the squared distances (a 1e30-scaled batch
    # would otherwise give a loss of 0 and NaN gradients).
    check_embeddings(embeddings)
    if not isinstance(labels, torch.Tensor):
        raise ValueError(f"labels must be a torch.Tensor [B] of integer ids, got {type(labels).__name__}")
    labels = check_labels(labels, embeddings.shape[0])  # the one label rule of every entry point
    x = embeddings.float() if embeddings.dtype in (torch.float16, torch.bfloat16) else embeddings
    return x, labels.to(x.device).long()


def pairwise_distances(x: torch.Tensor) -> torch.Tensor:
    """Euclidean distances [B, B] of embeddings x [B, D] in the expanded form |a|^2 + |b|^2 - 2ab.

    Squared distances <= 0 (round-off) become exactly 0 with zero gradient; the diagonal is exactly 0.
    """
    sq = (x * x).sum(dim=1)  # [B]
    d2 = sq[:, None] + sq[None, :] - 2.0 * (x @ x.T)  # [B, B]
    nonpositive = d2 <= 0
    root = torch.sqrt(torch.where(nonpositive, torch.ones_like(d2), d2))
    dist = torch.where(nonpositive, torch.zeros_like(d2), root)
    eye = torch.eye(dist.shape[0], dtype=torch.bool, device=dist.device)
    return dist.masked_fill(eye, 0.0)


def ground_truth_facility_score(dist: torch.Tensor, classes: torch.Tensor, num_classes: int) -> torch.Tensor:
    """F~(y) = sum over classes of -min_{j in class} sum_{i in class} D[i, j] (differentiable, ties share).

    ``dist`` [B, B], ``classes`` [B] in 0..K-1 with K = ``num_classes``.
    """
    same_class = classes[:, None] == classes[None, :]  # [B, B]
    # O(B^2), where a one-hot [K, B] @ [B, B] product would cost K * B^2 (K ~ B for small classes)
    within = (dist * same_class).sum(dim=0)  # [B]: sum of D[i, j] over the class of j
    best = torch.full((num_classes,), float("inf"), dtype=dist.dtype, device=dist.device)  # [K]
    return -best.scatter_reduce(0, classes, within, "amin", include_self=False).sum()


def _facility_location(
    x: torch.Tensor, labels: torch.Tensor, gamma: float, margin_type: str, pam_iterations: int
) -> FacilityLocationDetails:
    """Eq. 7 for checked inputs: ``x`` [B, D] float32/float64, ``labels`` [B] int64 on x's device."""
    # Inside a caller's autocast region the distance matmul would run in bf16/fp16 and change the loss and
    # the medoid choices; the loss is defined in the embeddings' own precision.
    with torch.autocast(x.device.type, enabled=False):
        return _facility_location_fp(x, labels, gamma, margin_type, pam_iterations)


def _facility_location_fp(
    x: torch.Tensor, labels: torch.Tensor, gamma: float, margin_type: str, pam_iterations: int
) -> FacilityLocationDetails:
    dist = pairwise_distances(x)  # [B, B]
    class_ids, classes = torch.unique(labels, return_inverse=True)  # [K], [B] in 0..K-1
    k = class_ids.shape[0]
    # The search runs on the host in float64 whatever the device (one copy of [B, B]; see docs/design.md).
    host_dist = dist.detach().cpu().double().contiguous().numpy()  # [B, B]
    found = facility_location_search(
        host_dist,
        classes.cpu().numpy(),
        k,
        margin_type,
        gamma,
        pam_iterations,
        round32=x.dtype != torch.float64,
    )
    medoids = torch.from_numpy(found.medoids).to(x.device)  # [K]
    score_pred = -torch.amin(dist[medoids], dim=0).sum()  # F(X, S*)
    score_gt = ground_truth_facility_score(dist, classes, k)  # F~(X, y)
    margin = gamma * (1.0 - found.score)
    augmented = score_pred + margin - score_gt
    # max(0, .) whose gradient passes at equality, like tf.maximum.
    loss = torch.where(augmented >= 0, augmented, torch.zeros_like(augmented))
    return FacilityLocationDetails(
        loss=loss,
        medoids=medoids,
        greedy_medoids=torch.from_numpy(found.greedy_medoids).to(x.device),
        assignment=torch.from_numpy(found.assignment).to(x.device),
        score_pred=score_pred,
        score_gt=score_gt,
        clustering_score=found.score,
        margin=margin,
        classes=class_ids,
    )


def facility_location_details(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    *,
    margin_multiplier: float = 1.0,
    margin_type: str = "nmi",
    pam_iterations: int = 5,
) -> FacilityLocationDetails:
    """The loss of :func:`facility_location_loss` with what it found: a :class:`FacilityLocationDetails`."""
    gamma, margin_type, pam_iterations = check_options(margin_multiplier, margin_type, pam_iterations)
    x, labels = check_inputs(embeddings, labels)
    return _facility_location(x, labels, gamma, margin_type, pam_iterations)


def facility_location_loss(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    *,
    margin_multiplier: float = 1.0,
    margin_type: str = "nmi",
    pam_iterations: int = 5,
) -> torch.Tensor:
    """Clustering loss of a batch (eq. 7 of the paper); see the module docstring.

    Args:
        embeddings: [B, D] float (the paper feeds L2-normalized embeddings; no normalization here).
            float16/bfloat16 are computed in float32; float64 stays float64.
        labels: [B] or [B, 1] integer class ids (any ids: negative and non-contiguous are fine).
            K, the number of clusters, is the number of distinct labels in the batch.
        margin_multiplier: gamma, the weight of the structured margin.
        margin_type: ``nmi`` | ``ami`` | ``ari`` | ``vmeasure`` | ``const``.
        pam_iterations: PAM refinement passes after the greedy search (0 turns PAM off).

    Returns:
        Scalar loss (float32 for half inputs, else the embeddings' dtype). :func:`facility_location_details`
        returns the medoids, assignment, energies and margin as well.
    """
    return facility_location_details(
        embeddings,
        labels,
        margin_multiplier=margin_multiplier,
        margin_type=margin_type,
        pam_iterations=pam_iterations,
    ).loss


class FacilityLocationLoss(nn.Module):
    """``nn.Module`` form of :func:`facility_location_loss`; the options are checked once, here."""

    def __init__(self, *, margin_multiplier: float = 1.0, margin_type: str = "nmi", pam_iterations: int = 5):
        super().__init__()
        self.margin_multiplier, self.margin_type, self.pam_iterations = check_options(
            margin_multiplier, margin_type, pam_iterations
        )

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """embeddings [B, D] float, labels [B] or [B, 1] int -> scalar loss."""
        return self.details(embeddings, labels).loss

    def details(self, embeddings: torch.Tensor, labels: torch.Tensor) -> FacilityLocationDetails:
        x, labels = check_inputs(embeddings, labels)
        return _facility_location(x, labels, self.margin_multiplier, self.margin_type, self.pam_iterations)

    def extra_repr(self) -> str:
        return (
            f"margin_multiplier={self.margin_multiplier}, margin_type={self.margin_type!r}, "
            f"pam_iterations={self.pam_iterations}"
        )
