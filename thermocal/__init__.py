"""thermocal: calibrate a cooling learning-rate schedule from measured gradient noise and curvature.

`probe(model, (inputs, targets), Config(...))` measures and calibrates and returns the schedule
file; `dumps(file, "json")` writes it. Runtime use needs no CLI: `load_schedule(path)` gives
`lr(step)` and `temperature(step)`; `ThermocalLR(optimizer, path)` is a torch scheduler,
`CoolingMonitor(path)` the §6.2 run-time check. Each is imported on first use, so
`import thermocal` costs nothing (torch is imported only by what needs it).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["Config", "CoolingMonitor", "ThermocalLR", "dumps", "load_schedule", "probe", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "probe":
        from thermocal.api import probe

        return probe
    if name == "Config":
        from thermocal.config import Config

        return Config
    if name == "dumps":
        from thermocal.schedule.file import dumps

        return dumps
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
