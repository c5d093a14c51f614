"""thermocal: calibrate a cooling learning-rate schedule from measured gradient noise and curvature.

Runtime use needs no CLI: `load_schedule(path)` gives `lr(step)` and `temperature(step)`;
`ThermocalLR(optimizer, path)` is a torch scheduler, `CoolingMonitor(path)` the seed's §6.2
run-time rule (each imported on first use).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["CoolingMonitor", "ThermocalLR", "load_schedule", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "load_schedule":
        from thermocal.schedule.runtime import load_schedule

        return load_schedule
    if name == "ThermocalLR":
        from thermocal.schedule.torch_lr import ThermocalLR

        return ThermocalLR
    if name == "CoolingMonitor":
        from thermocal.monitor import CoolingMonitor

        return CoolingMonitor
    raise AttributeError(f"module 'thermocal' has no attribute {name!r}")
