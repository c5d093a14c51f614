"""Schedules as pure functions of the optimizer step t (method.md §3; seed §5.2, §5.3).

Each factory checks its arguments once and returns a function of t, in the style of optax.
"""

from __future__ import annotations

import math
from typing import Callable

from thermocal.records import Schedule

StepFn = Callable[[float], float]


def exponential(initial: float, timescale: float) -> StepFn:
    """t ↦ initial · exp(−t / timescale)."""
    if not (initial > 0 and math.isfinite(initial)):
        raise ValueError(f"initial value must be positive and finite, got {initial}")
    if not (timescale > 0 and math.isfinite(timescale)):
        raise ValueError(f"timescale must be positive and finite, got {timescale}")
    return lambda t: initial * math.exp(-t / timescale)


def constant(value: float) -> StepFn:
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"value must be positive and finite, got {value}")
    return lambda t: value


def learning_rate(schedule: Schedule) -> StepFn:
    """eta(t) = eta0 · exp(−t / (2·tau)); constant eta0 for a flat schedule."""
    if schedule.tau is None:
        return constant(schedule.eta0)
    return exponential(schedule.eta0, 2.0 * schedule.tau)


def temperature(schedule: Schedule) -> StepFn:
    """T(t) = T0 · exp(−t / tau); constant T0 for a flat schedule."""
    if schedule.tau is None:
        return constant(schedule.T0)
    return exponential(schedule.T0, schedule.tau)
