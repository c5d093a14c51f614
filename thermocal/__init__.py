"""thermocal: calibrate a cooling learning-rate schedule from measured gradient noise and curvature.

`probe(model, (inputs, targets), Config(...))` measures and calibrates and returns the schedule
file; `dumps(file, "json")` writes it. Runtime use needs no CLI: `load_schedule(path)` gives
`lr(step)` and `temperature(step)`; `ThermocalLR(optimizer, path)` is a torch scheduler,
`CoolingMonitor(path)` the §6.2 run-time check. Each is imported on first use, so
`import thermocal` costs nothing (torch is imported only by what needs it).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"
__all__ = ["Config", "CoolingMonitor", "ThermocalLR", "dumps", "load_schedule", "probe", "__version__"]


# name -> the module that defines it, imported on first use
_LAZY = {"probe": "thermocal.api", "Config": "thermocal.config", "dumps": "thermocal.schedule.file",
         "load_schedule": "thermocal.schedule.runtime", "ThermocalLR": "thermocal.schedule.torch_lr",
         "CoolingMonitor": "thermocal.monitor"}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'thermocal' has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)
