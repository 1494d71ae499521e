"""Loss registry: ``build_loss(name, embedding_dim, num_classes, **options) -> nn.Module``.

Every built loss is called as ``loss(embeddings [B, D], labels [B]) -> scalar``. Losses with parameters
(``proxy_anchor``'s proxies) expose them through ``.parameters()`` so the trainer optimizes and checkpoints
them with the model.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable

from torch import nn

from .. import distributed
from .facility_location import FacilityLocationLoss, check_options, facility_location_details
from .lifted_structure import LiftedStructureLoss

ENERGY_SCALES = ("sum", "mean")


class GlobalBatchFacilityLocation(nn.Module):
    """The facility-location loss computed on the all-gathered global batch under DDP (identity otherwise).

    ``energy_scale`` (``loss.options.energy_scale``): ``"sum"`` (default) is the paper's loss, energies summed
    over the batch. ``"mean"`` puts the energies per point so that the margin gamma * (1 - score), at most
    gamma, stays commensurate with them at any batch size B: L = max(0, (F(S*) - F~(y)) / B + gamma *
    (1 - score)) with S* maximizing F / B + gamma * (1 - score), i.e. exactly the paper's loss at gamma * B,
    divided by B. After each forward ``last_stats`` holds the batch's ``margin`` and ``energy_gap``
    (F(S*) - F~(y)), both on the loss's scale, for the trainer's log. ``set_margin_multiplier`` changes
    gamma between steps (the trainer's ``loss.margin_decay_rate`` schedule).
    """

    def __init__(self, margin_multiplier: float = 1.0, margin_type: str = "nmi",
                 pam_iterations: int = 5, energy_scale: str = "sum") -> None:
        super().__init__()
        if energy_scale not in ENERGY_SCALES:
            raise ValueError(f"loss.options.energy_scale must be one of {ENERGY_SCALES}, "
                             f"got {energy_scale!r}")
        self.loss = FacilityLocationLoss(margin_multiplier=margin_multiplier, margin_type=margin_type,
                                         pam_iterations=pam_iterations)
        self.energy_scale = energy_scale
        self.last_stats: dict[str, float] | None = None

    def set_margin_multiplier(self, gamma: float) -> None:
        """Use ``gamma`` (finite, >= 0) from the next forward on."""
        self.loss.margin_multiplier = check_options(gamma, self.loss.margin_type, self.loss.pam_iterations)[0]

    def forward(self, embeddings, labels):
        x = distributed.all_gather_with_grad(embeddings)
        y = distributed.all_gather_no_grad(labels.reshape(-1))
        if self.energy_scale == "sum":
            details, scale = self.loss.details(x, y), 1.0
        else:
            batch = int(x.shape[0])
            details = facility_location_details(x, y, margin_multiplier=self.loss.margin_multiplier * batch,
                                                margin_type=self.loss.margin_type,
                                                pam_iterations=self.loss.pam_iterations)
            scale = 1.0 / batch
        gap = float((details.score_pred - details.score_gt).detach())
        self.last_stats = {"margin": details.margin * scale, "energy_gap": gap * scale}
        return details.loss * scale if scale != 1.0 else details.loss


def _facility_location(num_classes: int, embedding_dim: int, **options) -> nn.Module:
    return GlobalBatchFacilityLocation(**options)


def _lifted_structure(num_classes: int, embedding_dim: int, **options) -> nn.Module:
    return LiftedStructureLoss(**options)


def _baseline(name: str, sizes: bool = False) -> Callable[..., nn.Module]:
    """Builder of ``baselines.<name>``; ``sizes``: it takes ``num_classes`` and ``embedding_dim`` too."""

    def build(num_classes: int, embedding_dim: int, **options) -> nn.Module:
        # pytorch-metric-learning takes ~1.5 s to import: loaded only when a baseline is built
        from . import baselines
        factory = getattr(baselines, name)
        if sizes:
            return factory(num_classes=num_classes, embedding_dim=embedding_dim, **options)
        return factory(**options)

    build.__name__ = name
    return build


LOSSES: dict[str, Callable[..., nn.Module]] = {
    "facility_location": _facility_location,
    "triplet_semihard": _baseline("triplet_semihard"),
    "lifted_structure": _lifted_structure,  # our O(B^2) form; equals PML's LiftedStructureLoss (tested)
    "npairs": _baseline("npairs"),
    "contrastive": _baseline("contrastive"),
    "multi_similarity": _baseline("multi_similarity"),
    "proxy_anchor": _baseline("proxy_anchor", sizes=True),
    "normalized_softmax": _baseline("normalized_softmax", sizes=True),
    "arcface": _baseline("arcface", sizes=True),
}
# Losses with one trainable vector per training class (proxies / class weights): they need num_classes.
CLASS_PARAMETER_LOSSES = ("proxy_anchor", "normalized_softmax", "arcface")


def build_loss(name: str, embedding_dim: int = 64, num_classes: int | None = None, **options) -> nn.Module:
    """Build a registered loss. ``num_classes`` is required by ``proxy_anchor`` (one proxy per class)."""
    if name not in LOSSES:
        close = difflib.get_close_matches(name, LOSSES, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown loss {name!r}; choose one of {sorted(LOSSES)}.{hint}")
    if name in CLASS_PARAMETER_LOSSES and not num_classes:
        raise ValueError(f"{name} needs num_classes (number of training classes) for its proxies")
    try:
        return LOSSES[name](num_classes=num_classes, embedding_dim=embedding_dim, **options)
    except TypeError as err:
        raise ValueError(f"bad options {sorted(options)} for loss {name!r}: {err}") from err
