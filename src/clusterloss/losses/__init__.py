"""Losses: the facility-location clustering loss (ours) and pytorch-metric-learning baselines."""

from .facility_location import (
    FacilityLocationDetails,
    FacilityLocationLoss,
    facility_location_details,
    facility_location_loss,
)
from .registry import LOSSES, build_loss

__all__ = [
    "LOSSES",
    "FacilityLocationDetails",
    "FacilityLocationLoss",
    "build_loss",
    "facility_location_details",
    "facility_location_loss",
]
