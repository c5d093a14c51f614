"""thermocal: calibrate a cooling learning-rate schedule from measured gradient noise and curvature."""

__version__ = "0.1.0"
