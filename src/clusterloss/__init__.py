"""clusterloss: deep metric learning via facility location (Song, Jegelka, Rathod, Murphy, CVPR 2017)."""

from .losses.facility_location import (
    FacilityLocationDetails,
    FacilityLocationLoss,
    facility_location_details,
    facility_location_loss,
)

__version__ = "0.1.0"
__all__ = [
    "FacilityLocationDetails",
    "FacilityLocationLoss",
    "facility_location_details",
    "facility_location_loss",
]
