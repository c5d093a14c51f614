"""Is the run cooling faster than it relaxes? The run-time check of seed §6.2 (method.md §7, [M1]–[M5]).

    monitor = thermocal.CoolingMonitor("thermocal.json")
    reading = monitor.update(step, loss.item(), grad_sq_norm)   # lr from the file, or pass lr=
    if reading.fired: ...                                      # stretch tau by reading.stretch from here on

At lr eta the loss relaxes towards its equilibrium L* + E(eta), E(eta) = eta·tr(Σ_B)/4 ([C9]): the
noise energy drains at the rate 2·eta·λ_noise per step, λ_noise = tr(H·Σ_B)/tr(Σ_B) the curvature
the noise lives in ([N8]). Cooling lowers E at the lr's relative rate c = −d ln eta/dt. The run
keeps up while c ≤ 2·eta·λ_noise; the check fires when

    r = c / (2·eta·λ_noise) > epsilon      on `window` consecutive updates,

c measured over the last `window` steps of the lr actually used (a step decay counts as the rate
it averages to over the window). At any constant lr c = 0: the check is quiet.

Beside r, each reading says how far the loss lags its equilibrium over the same window,
D = (mean loss now − mean loss a window before) − (E now − E a window before), and the smallest D
the window could resolve (`epsilon_noise` standard deviations of that difference): per-step
minibatch losses are noisy, and on the runs measured (method.md [M3]) a lag that the rate
predicts was below that resolution unless the window spans hundreds of steps, so D is evidence
shown, not the trigger. No CLI dependencies (no typer, no rich).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from thermocal.calibrate.loss_units import noise_curvature
from thermocal.schedule.file import ScheduleFile
from thermocal.schedule.optimizer import optimizer_of
from thermocal.schedule.runtime import LoadedSchedule, load_schedule

DEFAULT_EPSILON = 1.0
DEFAULT_WINDOW = 50
NOISE_EPSILON = 3.0  # a lag of this many standard deviations of D is resolved
MAX_STRETCH = 10.0


def relaxation_curvature(document: ScheduleFile) -> float:
    """λ_noise of a schedule file's measurements (calibrate.loss_units.noise_curvature), times the
    optimizer's effective step per unit lr (1/(1 − β) for momentum SGD, [O2]): the noise relaxes at
    2·lr·(this) per step. AdamW's relaxation, in its own metric, is not derived yet: refused."""
    m = document.measurements
    spec = optimizer_of(document)
    if spec.name == "adamw":
        raise ValueError("the cooling check is derived for SGD and momentum SGD; this file is for AdamW")
    lam = noise_curvature(m.noise_curvature, m.gradient_noise, m.hessian)
    if not lam > 0:
        raise ValueError("the schedule file has no positive curvature to relax in")
    return lam / (1.0 - spec.momentum) if spec.name == "momentum" else lam


@dataclass(frozen=True)
class Reading:
    """One update. `ratio`: cooling rate over relaxation rate (None until a window is full);
    `lag`, `resolution`: the loss's lag behind its equilibrium over the window and the smallest
    lag it could resolve (None until two windows are full); whether the check fired, and the
    factor by which to stretch tau from here on (1 when it did not)."""

    step: int
    ratio: float | None
    lag: float | None
    resolution: float | None
    fired: bool
    stretch: float
    sustained: int


class _Window:
    """Sum and sum of squares of the last `size` values, O(1) per value."""

    def __init__(self, size: int) -> None:
        self.values: deque[float] = deque()
        self.size = size
        self.total = self.squares = 0.0

    def push(self, value: float) -> float | None:
        """Add `value`; return the value that left the window, if one did."""
        self.values.append(value)
        self.total += value
        self.squares += value * value
        if len(self.values) > self.size:
            old = self.values.popleft()
            self.total -= old
            self.squares -= old * old
            return old
        return None

    @property
    def full(self) -> bool:
        return len(self.values) == self.size

    @property
    def mean(self) -> float:
        return self.total / len(self.values)

    @property
    def variance(self) -> float:
        n = len(self.values)
        return max(self.squares - self.total * self.total / n, 0.0) / max(n - 1, 1)


class CoolingMonitor:
    """Watches a training run for cooling faster than its noise relaxes.

    `schedule` (a path or a LoadedSchedule: the file the run was probed into) gives λ_noise, the
    probe's tr(Σ_B) and grad_sq_mean, and eta_t when `update` is not told the learning rate.
    """

    def __init__(self, schedule: LoadedSchedule | str | Path, *, epsilon: float = DEFAULT_EPSILON,
                 window: int = DEFAULT_WINDOW) -> None:
        if not (epsilon > 0 and math.isfinite(epsilon)):
            raise ValueError(f"epsilon must be positive, got {epsilon}")
        if window < 2:
            raise ValueError(f"window must be at least 2, got {window}")
        self.schedule = schedule if isinstance(schedule, LoadedSchedule) else load_schedule(schedule)
        self.epsilon, self.window = epsilon, window
        document = self.schedule.document
        self.curvature = relaxation_curvature(document)
        noise = document.measurements.gradient_noise
        self._grad_var, self._grad_sq = noise.grad_var, noise.grad_sq_mean
        self._rates: deque[float] = deque(maxlen=window + 1)  # the lr at each of the last window + 1 updates
        self._floors: deque[float] = deque(maxlen=window + 1)  # E at each of them
        self._now, self._before, self._energy = _Window(window), _Window(window), _Window(window)
        self._above = 0

    def _noise_trace(self) -> float:
        """tr(Σ_B) now: the probe's, scaled by how the gradient's energy changed since."""
        return self._grad_var * self._energy.mean / self._grad_sq if self._grad_sq > 0 else self._energy.mean

    def update(self, step: int, loss: float, grad_sq_norm: float, lr: float | None = None) -> Reading:
        """Feed one optimizer step: its minibatch loss, |g_t|² of its minibatch gradient, and (optionally) eta_t."""
        if lr is None:
            lr = self.schedule.lr(step)
        if not (math.isfinite(loss) and math.isfinite(grad_sq_norm) and math.isfinite(lr) and lr >= 0):
            raise ValueError(f"step {step}: loss, grad_sq_norm and lr must be finite (lr >= 0), got {loss}, {grad_sq_norm}, {lr}")
        left = self._now.push(loss)
        if left is not None:
            self._before.push(left)
        self._energy.push(grad_sq_norm)
        self._rates.append(lr)
        self._floors.append(lr * self._noise_trace() / 4.0)
        if len(self._rates) <= self.window:
            return Reading(step, None, None, None, False, 1.0, 0)
        if lr == 0:  # no step is taken: nothing relaxes and nothing cools, so there is no rate to judge
            return Reading(step, None, None, None, False, 1.0, self._above)
        # a window that starts at lr 0 (a warmup from zero) warmed up: it did not cool
        cooling = max(math.log(self._rates[0] / lr), 0.0) / self.window if self._rates[0] > 0 else 0.0
        ratio = cooling / (2.0 * lr * self.curvature)
        self._above = self._above + 1 if ratio > self.epsilon else 0
        fired = self._above >= self.window
        lag = resolution = None
        if self._before.full:
            lag = (self._now.mean - self._before.mean) + (self._floors[0] - self._floors[-1])
            resolution = NOISE_EPSILON * math.sqrt((self._now.variance + self._before.variance) / self.window)
        stretch = min(MAX_STRETCH, max(1.0, ratio / self.epsilon)) if fired else 1.0
        return Reading(step, ratio, lag, resolution, fired, stretch, self._above)


@dataclass(frozen=True)
class Firing:
    """A stretch of steps where the check held: first and last step, the largest ratio and stretch,
    and whether the loss's lag was resolved above its noise there."""

    first_step: int
    last_step: int
    peak_ratio: float
    stretch: float
    lag_resolved: bool


def replay(rows: Iterable[tuple[int, float, float, float]], schedule: LoadedSchedule, *, epsilon: float = DEFAULT_EPSILON,
           window: int = DEFAULT_WINDOW) -> tuple[list[Reading], list[Firing]]:
    """Offline: run the monitor over logged (step, loss, grad_norm, lr) rows; return every reading
    and the runs of consecutive steps on which the check fired. O(1) work per row."""
    monitor = CoolingMonitor(schedule, epsilon=epsilon, window=window)
    readings = [monitor.update(step, loss, grad_norm ** 2, lr=lr) for step, loss, grad_norm, lr in rows]
    firings: list[Firing] = []
    for i, reading in enumerate(readings):
        if not reading.fired:
            continue
        resolved = reading.lag is not None and reading.resolution is not None and reading.lag > reading.resolution
        if i > 0 and readings[i - 1].fired:
            last = firings[-1]
            firings[-1] = Firing(last.first_step, reading.step, max(last.peak_ratio, reading.ratio or 0.0),
                                 max(last.stretch, reading.stretch), last.lag_resolved or resolved)
        else:
            firings.append(Firing(reading.step, reading.step, reading.ratio or 0.0, reading.stretch, resolved))
    return readings, firings
