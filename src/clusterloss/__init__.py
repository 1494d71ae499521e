"""clusterloss: deep metric learning via facility location (Song, Jegelka, Rathod, Murphy, CVPR 2017)."""

from .losses.facility_location import FacilityLocationLoss, facility_location_loss

__version__ = "0.1.0"
__all__ = ["FacilityLocationLoss", "facility_location_loss"]
