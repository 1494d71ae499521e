"""clusterloss: deep metric learning via facility location (Song, Jegelka, Rathod, Murphy, CVPR 2017)."""

__version__ = "0.1.0"
