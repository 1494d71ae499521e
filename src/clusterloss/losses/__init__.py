"""Losses: the facility-location clustering loss (ours) and pytorch-metric-learning baselines."""

from .facility_location import FacilityLocationLoss, facility_location_loss
from .registry import LOSSES, build_loss

__all__ = ["LOSSES", "FacilityLocationLoss", "build_loss", "facility_location_loss"]
