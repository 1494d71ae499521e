"""The paper's baselines, taken from pytorch-metric-learning (PML) rather than rewritten.

Every loss here is a ``PMLLoss``: ``loss(embeddings [B, D], labels [B]) -> scalar``, optionally with a PML
miner that picks the tuples first. One exception lives in ``lifted_structure.py``: the lifted structured
loss of Song et al. (CVPR 2016), the baseline the facility-location paper compares against, in an O(B^2)
form equal to PML's ``LiftedStructureLoss`` (whose [positive pairs x negative pairs] matrix cost 0.3-0.7 s a
step on 2 CPU cores); the "generalized" variant of Hermans et al. is a different loss.

Under DDP the loss goes through PML's ``DistributedLossWrapper`` (and ``DistributedMinerWrapper``), which
computes the loss on the all-gathered global batch with gradients reaching this rank's own embeddings only.
The wrapper returns ``world_size * loss`` and proxies would get ``world_size`` times their gradient, so we
divide the value by ``world_size`` and instead scale the gradient reaching the local embeddings by
``world_size``: DDP's gradient averaging then gives the single-process update on the global batch.
"""

from __future__ import annotations

import torch
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners
from pytorch_metric_learning.utils.distributed import DistributedLossWrapper, DistributedMinerWrapper
from torch import nn

from .. import distributed
from ..validation import check_embeddings, check_labels


class PMLLoss(nn.Module):
    """A PML loss (and optional miner) behind the project's ``loss(embeddings, labels)`` signature."""

    def __init__(self, loss: nn.Module, miner: nn.Module | None = None) -> None:
        super().__init__()
        self.loss = loss
        self.miner = miner

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """embeddings [B, D] float, labels [B] or [B, 1] int -> scalar loss."""
        check_embeddings(embeddings)  # the shared rules of validation.py (finite, no distance overflow)
        labels = check_labels(labels, embeddings.shape[0])
        embeddings = embeddings.float()
        world = distributed.world_size()
        if world == 1:
            tuples = self.miner(embeddings, labels) if self.miner is not None else None
            return self.loss(embeddings, labels, tuples)
        embeddings = distributed.scale_grad(embeddings, float(world))
        tuples = DistributedMinerWrapper(self.miner)(embeddings, labels) if self.miner is not None else None
        return DistributedLossWrapper(self.loss)(embeddings, labels, tuples) / world


def triplet_semihard(margin: float = 0.2, **options) -> PMLLoss:
    """Triplet loss on semi-hard triplets (FaceNet): ``TripletMarginLoss`` + ``TripletMarginMiner``."""
    return PMLLoss(pml_losses.TripletMarginLoss(margin=margin, **options),
                   pml_miners.TripletMarginMiner(margin=margin, type_of_triplets="semihard"))


def npairs(**options) -> PMLLoss:
    """N-pair loss (Sohn 2016); PML picks one positive pair per class of the batch."""
    return PMLLoss(pml_losses.NPairsLoss(**options))


def contrastive(pos_margin: float = 0.0, neg_margin: float = 1.0, **options) -> PMLLoss:
    return PMLLoss(pml_losses.ContrastiveLoss(pos_margin=pos_margin, neg_margin=neg_margin, **options))


def multi_similarity(alpha: float = 2.0, beta: float = 50.0, base: float = 0.5, epsilon: float = 0.1,
                     **options) -> PMLLoss:
    """Multi-similarity loss with its pair miner (Wang et al., CVPR 2019)."""
    return PMLLoss(pml_losses.MultiSimilarityLoss(alpha=alpha, beta=beta, base=base, **options),
                   pml_miners.MultiSimilarityMiner(epsilon=epsilon))


def proxy_anchor(num_classes: int, embedding_dim: int, margin: float = 0.1, alpha: float = 32.0,
                 **options) -> PMLLoss:
    """Proxy-anchor loss (Kim et al., CVPR 2020); its ``[num_classes, D]`` proxies are trainable."""
    return PMLLoss(pml_losses.ProxyAnchorLoss(num_classes=num_classes, embedding_size=embedding_dim,
                                              margin=margin, alpha=alpha, **options))


def normalized_softmax(num_classes: int, embedding_dim: int, temperature: float = 0.05,
                       **options) -> PMLLoss:
    """Normalized softmax (Zhai & Wu, BMVC 2019): cosine classifier over ``[D, num_classes]`` trainable class
    weights at ``temperature``; strong in "A Metric Learning Reality Check" (Musgrave et al. 2020)."""
    return PMLLoss(pml_losses.NormalizedSoftmaxLoss(num_classes=num_classes, embedding_size=embedding_dim,
                                                    temperature=temperature, **options))


def arcface(num_classes: int, embedding_dim: int, margin: float = 28.6, scale: float = 64.0,
            **options) -> PMLLoss:
    """ArcFace (Deng et al., CVPR 2019): additive angular ``margin`` (degrees, PML's unit; 28.6 = 0.5 rad) at
    ``scale``, trainable ``[D, num_classes]`` class weights."""
    return PMLLoss(pml_losses.ArcFaceLoss(num_classes=num_classes, embedding_size=embedding_dim,
                                          margin=margin, scale=scale, **options))
