"""Lifted structured loss (Song, Xiang, Jegelka, Savarese, CVPR 2016), in O(B^2) time and memory.

The facility-location paper's main baseline. For each positive pair (i, j) of the batch (same label,
i != j), with D the Euclidean distances of the L2-normalized embeddings and m_- / m_+ the negative / positive
margins (the 2016 paper's eq. 4, in pytorch-metric-learning's ``LiftedStructureLoss`` form)::

    J_ij = log( sum_{k: y_k != y_i} exp(m_- - D_ik) + sum_{l: y_l != y_j} exp(m_- - D_jl) ) + D_ij - m_+
    L    = mean over ordered positive pairs (i, j) of  max(0, J_ij)^2 / 2

pytorch-metric-learning evaluates the log-sum-exp over a [positive pairs x negative pairs] matrix (384 x
15,872 entries at 32 classes x 4 images: 0.3-0.7 s a step on 2 CPU cores). Since i and j share a label,
their negatives are the same samples, and the sum splits into one log-sum-exp per anchor:
``J_ij = logaddexp(a_i, a_j) + D_ij - m_+`` with ``a_i = logsumexp_{k: y_k != y_i} (m_- - D_ik)``; that is a
[B, B] computation. It equals PML's value and gradient (tested against it), so results made with either
agree. A batch with one class (no negatives) or no positive pair gives 0, as in PML.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import distributed
from ..validation import check_embeddings, check_labels

__all__ = ["lifted_structure_loss", "LiftedStructureLoss"]


def lifted_structure_loss(embeddings: torch.Tensor, labels: torch.Tensor, neg_margin: float = 1.0,
                          pos_margin: float = 0.0) -> torch.Tensor:
    """embeddings [B, D] float, labels [B] int (checked by the caller) -> scalar loss (module docstring)."""
    x = F.normalize(embeddings, p=2, dim=1)  # PML's LpDistance normalizes before measuring
    dist = torch.cdist(x, x)  # [B, B]
    same = labels[:, None] == labels[None, :]
    pos = same & ~torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    if not pos.any() or same.all():
        return embeddings.sum() * 0.0  # no positive pair or no negative: nothing to lift (PML: 0)
    # a_i over the negatives of anchor i: every anchor has one, since the batch has >= 2 classes
    anchor = torch.logsumexp((neg_margin - dist).masked_fill(same, float("-inf")), dim=1)  # [B]
    i, j = pos.nonzero(as_tuple=True)  # ordered positive pairs
    lifted = torch.logaddexp(anchor[i], anchor[j]) + dist[i, j] - pos_margin
    return (torch.relu(lifted) ** 2 / 2).mean()


class LiftedStructureLoss(nn.Module):
    """``loss(embeddings [B, D], labels [B]) -> scalar``; under DDP on the all-gathered global batch (the
    gradient of each rank's rows reaches that rank, as for the facility-location loss)."""

    def __init__(self, neg_margin: float = 1.0, pos_margin: float = 0.0) -> None:
        super().__init__()
        self.neg_margin, self.pos_margin = float(neg_margin), float(pos_margin)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        check_embeddings(embeddings)
        labels = check_labels(labels, embeddings.shape[0])
        x = distributed.all_gather_with_grad(embeddings.float())
        y = distributed.all_gather_no_grad(labels.reshape(-1))
        return lifted_structure_loss(x, y, self.neg_margin, self.pos_margin)
