"""Losses: the facility-location clustering loss (ours) and pytorch-metric-learning baselines."""

from .registry import LOSSES, build_loss

__all__ = ["LOSSES", "build_loss"]

try:  # facility_location.py is written separately; keep the registry importable until it lands
    from .facility_location import FacilityLocationLoss, facility_location_loss  # noqa: F401
except ImportError:  # pragma: no cover
    pass
else:
    __all__ += ["FacilityLocationLoss", "facility_location_loss"]
