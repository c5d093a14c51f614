"""The seed's run-time adaptation rule (§6.2; method.md §7, [M1]–[M4]).

    monitor = thermocal.CoolingMonitor("thermocal.json")
    reading = monitor.update(step, loss.item(), grad_sq_norm)
    if reading.fired: ...  # cooling too fast: stretch tau by reading.stretch from here on

The ratio is r_t = |∂t s| / ṡ_tot with ∂t s ≈ L̇_t / T_t and ṡ_tot ≈ eta_t·|g_t|²/T_t, so
r_t = |L̇_t| / (eta_t·|g_t|²): the temperature cancels. L̇_t is the least-squares slope of an
exponential moving average of the loss over the last `window` updates. The rule fires when
r_t > epsilon on `window` consecutive updates. No CLI dependencies (no typer, no rich).
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from thermocal.schedule.runtime import LoadedSchedule, load_schedule

DEFAULT_EPSILON = 0.5
DEFAULT_WINDOW = 50
MAX_STRETCH = 10.0


@dataclass(frozen=True)
class Reading:
    """One update: the ratio r_t (None until the slope has `window` points), whether the rule
    fired at this step, and the factor to stretch tau by from here on (1 when it did not fire)."""

    step: int
    ratio: float | None
    fired: bool
    stretch: float
    sustained: int


class CoolingMonitor:
    """Watches a training run for cooling faster than the seed's §6.2 rule allows.

    `schedule` (a path or a LoadedSchedule) gives eta_t when `update` is not told the learning
    rate; without a schedule every update must pass `lr`.
    """

    def __init__(self, schedule: LoadedSchedule | str | Path | None = None, *, epsilon: float = DEFAULT_EPSILON,
                 window: int = DEFAULT_WINDOW, ema: float | None = None) -> None:
        if not (epsilon > 0 and math.isfinite(epsilon)):
            raise ValueError(f"epsilon must be positive, got {epsilon}")
        if window < 2:
            raise ValueError(f"window must be at least 2, got {window}")
        self.schedule = schedule if schedule is None or isinstance(schedule, LoadedSchedule) else load_schedule(schedule)
        self.epsilon, self.window = epsilon, window
        self.beta = ema if ema is not None else 1.0 - 2.0 / (window + 1)  # the EMA whose span is the window
        if not 0.0 <= self.beta < 1.0:
            raise ValueError(f"ema must be in [0, 1), got {self.beta}")
        self._ema: float | None = None
        self._slope = _SlidingSlope(window)
        self._above = 0
        self._ratios = _SlidingMedian(window)

    def update(self, step: int, loss: float, grad_sq_norm: float, lr: float | None = None) -> Reading:
        """Feed one optimizer step: its loss, |g_t|² of the minibatch gradient, and (optionally) eta_t."""
        if lr is None:
            if self.schedule is None:
                raise ValueError("no schedule to read the learning rate from: pass lr=")
            lr = self.schedule.lr(step)
        if not (math.isfinite(loss) and math.isfinite(grad_sq_norm)):
            raise ValueError(f"step {step}: loss and grad_sq_norm must be finite, got {loss}, {grad_sq_norm}")
        self._ema = loss if self._ema is None else self.beta * self._ema + (1.0 - self.beta) * loss
        self._slope.append(float(step), self._ema)
        if self._slope.count < self.window:
            return Reading(step, None, False, 1.0, 0)
        ratio = abs(self._slope.value()) / max(lr * grad_sq_norm, 1e-300)
        self._ratios.append(ratio)
        self._above = self._above + 1 if ratio > self.epsilon else 0
        fired = self._above >= self.window
        stretch = min(MAX_STRETCH, max(1.0, self._ratios.median() / self.epsilon)) if fired else 1.0
        return Reading(step, ratio, fired, stretch, self._above)


class _SlidingSlope:
    """Least-squares slope dy/dx of the last `size` points, O(1) per point from running sums
    (x counted from the first point seen, so that the sums stay small)."""

    def __init__(self, size: int) -> None:
        self.points: deque[tuple[float, float]] = deque()
        self.size = size
        self.origin: float | None = None
        self.sx = self.sy = self.sxx = self.sxy = 0.0

    @property
    def count(self) -> int:
        return len(self.points)

    def append(self, x: float, y: float) -> None:
        self.origin = x if self.origin is None else self.origin
        x -= self.origin
        self.points.append((x, y))
        self._add(x, y, 1.0)
        if len(self.points) > self.size:
            self._add(*self.points.popleft(), -1.0)

    def _add(self, x: float, y: float, sign: float) -> None:
        self.sx += sign * x
        self.sy += sign * y
        self.sxx += sign * x * x
        self.sxy += sign * x * y

    def value(self) -> float:
        n = len(self.points)
        sxx = self.sxx - self.sx * self.sx / n
        return (self.sxy - self.sx * self.sy / n) / sxx if sxx > 0 else 0.0


class _SlidingMedian:
    """Median of the last `size` values: a sorted copy kept beside them (insort/remove)."""

    def __init__(self, size: int) -> None:
        self.values: deque[float] = deque()
        self.ordered: list[float] = []
        self.size = size

    def append(self, value: float) -> None:
        self.values.append(value)
        bisect.insort(self.ordered, value)
        if len(self.values) > self.size:
            del self.ordered[bisect.bisect_left(self.ordered, self.values.popleft())]

    def median(self) -> float:
        ordered, mid = self.ordered, len(self.ordered) // 2
        return ordered[mid] if len(ordered) % 2 else 0.5 * (ordered[mid - 1] + ordered[mid])


@dataclass(frozen=True)
class Firing:
    """A stretch of steps where the rule held: first step it fired, last step, its largest stretch."""

    first_step: int
    last_step: int
    peak_ratio: float
    stretch: float


def replay(rows: Iterable[tuple[int, float, float, float]], *, epsilon: float = DEFAULT_EPSILON,
           window: int = DEFAULT_WINDOW) -> tuple[list[Reading], list[Firing]]:
    """Offline: run the monitor over logged (step, loss, grad_norm, lr) rows; return every
    reading and the runs of consecutive steps on which the rule fired."""
    monitor = CoolingMonitor(epsilon=epsilon, window=window)
    readings = [monitor.update(step, loss, grad_norm ** 2, lr=lr) for step, loss, grad_norm, lr in rows]
    firings: list[Firing] = []
    for i, reading in enumerate(readings):
        if not reading.fired:
            continue
        if i > 0 and readings[i - 1].fired:
            last = firings[-1]
            firings[-1] = Firing(last.first_step, reading.step, max(last.peak_ratio, reading.ratio or 0.0),
                                 max(last.stretch, reading.stretch))
        else:
            firings.append(Firing(reading.step, reading.step, reading.ratio or 0.0, reading.stretch))
    return readings, firings
