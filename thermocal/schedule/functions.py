"""Schedules as pure functions of the optimizer step t (method.md §3, [C5], [C8], [C9]; seed §5.2, §5.3).

Each factory checks its arguments once and returns a function of t, in the style of optax;
warmup and the learning-rate floor compose by functions (`join`, `floored`), not subclasses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Literal

from thermocal.records import ScheduleBase

StepFn = Callable[[float], float]


def _positive(name: str, value: float) -> None:
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be positive and finite, got {value}")


def exponential(initial: float, timescale: float) -> StepFn:
    """t ↦ initial · exp(−t / timescale)."""
    _positive("initial value", initial)
    _positive("timescale", timescale)
    return lambda t: initial * math.exp(-t / timescale)


def constant(value: float) -> StepFn:
    _positive("value", value)
    return lambda t: value


def linear_warmup(peak: float, steps: int) -> StepFn:
    """t ↦ peak · (t + 1) / steps: reaches `peak` at t = steps − 1, never starts at zero."""
    _positive("peak", peak)
    if steps < 1:
        raise ValueError(f"warmup steps must be at least 1, got {steps}")
    return lambda t: peak * (t + 1) / steps


def join(first: StepFn, second: StepFn, boundary: int) -> StepFn:
    """`first` before `boundary`, then `second` counted from the boundary (optax.join_schedules)."""
    return lambda t: first(t) if t < boundary else second(t - boundary)


def floored(fn: StepFn, minimum: float) -> StepFn:
    return lambda t: max(minimum, fn(t))


def timescale_of(tau: float, law: str) -> float:
    """The learning rate's e-folding time when T(t) = T0·exp(−t/tau): tau when eta ∝ T (`linear`),
    2·tau when eta ∝ √T (`sqrt`)."""
    return tau if law == "linear" else 2.0 * tau


def lr_timescale(schedule: ScheduleBase) -> float | None:
    """`timescale_of` the schedule's tau and lr_law; None for a flat schedule."""
    return None if schedule.tau is None else timescale_of(schedule.tau, schedule.lr_law)


def gamma_of(tau: float, law: str) -> float:
    """The per-step learning-rate factor exp(−1/timescale)."""
    return math.exp(-1.0 / timescale_of(tau, law))


def learning_rate(schedule: ScheduleBase) -> StepFn:
    """eta(t): optional linear warmup over warmup_steps, then eta0 · exp(−t'/timescale) with t' the
    steps since warmup (constant eta0 for a flat schedule), never below min_lr."""
    timescale = lr_timescale(schedule)
    cooling = constant(schedule.eta0) if timescale is None else exponential(schedule.eta0, timescale)
    fn = join(linear_warmup(schedule.eta0, schedule.warmup_steps), cooling, schedule.warmup_steps) if schedule.warmup_steps else cooling
    return floored(fn, schedule.min_lr) if schedule.min_lr > 0 else fn


def cooling_phase(schedule: ScheduleBase) -> ScheduleBase:
    """The schedule without its warmup and floor (t counted from the end of warmup): what the
    diagnostics judge."""
    return schedule.model_copy(update={"warmup_steps": 0, "min_lr": 0.0})


def minimal_work(schedule: ScheduleBase, grad_sq_mean: float) -> float | None:
    """W = Σ eta(t)·grad_sq_mean over the cooling budget (seed §4.2), in closed form: eta0·g²·S
    for a flat schedule, eta0·g²·timescale·(1 − exp(−S/timescale)) for an exponential one; None
    without a budget."""
    end = schedule.steps
    if end is None:
        return None
    timescale = lr_timescale(schedule)
    if timescale is None:
        return schedule.eta0 * grad_sq_mean * end
    return schedule.eta0 * grad_sq_mean * timescale * -math.expm1(-end / timescale)


def temperature(schedule: ScheduleBase) -> StepFn:
    """T(t) = T0 during warmup, then T0 · exp(−t'/tau) (constant T0 for a flat schedule)."""
    cooling = constant(schedule.T0) if schedule.tau is None else exponential(schedule.T0, schedule.tau)
    return join(constant(schedule.T0), cooling, schedule.warmup_steps) if schedule.warmup_steps else cooling


@dataclass(frozen=True)
class Syntax:
    """How one language spells the pieces of the lr law: the schedule's names, the step, the
    exponential, a two-way choice and the floor. Every text form of the law (the file's
    `lr_expression`, the Keras snippet) is printed from `lr_expression` in one Syntax."""

    eta0: str
    tau: str
    warmup_steps: str
    min_lr: str
    t: str
    two: str
    exp: str
    select: Callable[[str, str, str], str]  # (condition, if true, if false)
    floor: Callable[[str, str], str]  # (minimum, value)


PYTHON = Syntax("eta0", "tau", "warmup_steps", "min_lr", "t", "2", "exp",
                lambda c, a, b: f"{a} if {c} else {b}", lambda m, v: f"max({m}, {v})")
# Keras ops on the snippet's constants; the floor by where, not ops.maximum (it drops float64 on torch).
KERAS = Syntax("ETA0", "TAU", "WARMUP_STEPS", "MIN_LR", "step", "2.0", "keras.ops.exp",
               lambda c, a, b: f"keras.ops.where({c}, {a}, {b})", lambda m, v: f"keras.ops.where({v} > {m}, {v}, {m})")


def timescale_source(law: str, syntax: Syntax = PYTHON) -> str:
    """`timescale_of` as text: tau, or 2·tau for the seed's eta ∝ √T."""
    return syntax.tau if law == "linear" else f"({syntax.two} * {syntax.tau})"


def lr_expression(kind: str, warmup_steps: int, min_lr: float, law: Literal["linear", "sqrt"] = "sqrt",
                  syntax: Syntax = PYTHON) -> str:
    """The closed form of `learning_rate` as an expression in `syntax` (by default Python, in the
    schedule's own field names and the step t, with exp = math.exp: what files hold)."""
    n = syntax
    since = n.t if not warmup_steps else f"({n.t} - {n.warmup_steps})"
    cooling = n.eta0 if kind == "constant" else f"{n.eta0} * {n.exp}(-{since} / {timescale_source(law, n)})"
    if warmup_steps:
        cooling = n.select(f"{n.t} < {n.warmup_steps}", f"{n.eta0} * ({n.t} + 1) / {n.warmup_steps}", cooling)
    return n.floor(n.min_lr, cooling) if min_lr > 0 else cooling


def temperature_expression(kind: str, warmup_steps: int) -> str:
    if kind == "constant":
        return "T0"
    return "T0 if t < warmup_steps else T0 * exp(-(t - warmup_steps) / tau)" if warmup_steps else "T0 * exp(-t / tau)"


def total_steps(schedule: ScheduleBase) -> int | None:
    """Warmup plus the cooling budget; None for a flat schedule without a budget."""
    return None if schedule.steps is None else schedule.warmup_steps + schedule.steps
