"""Schedules as pure functions of the optimizer step t (method.md §3, [C5], [C8], [C9]; seed §5.2, §5.3).

Each factory checks its arguments once and returns a function of t, in the style of optax;
warmup and the learning-rate floor compose by functions (`join`, `floored`), not subclasses.
A schedule's laws are `Law` trees over its field names (`lr_law`, `temperature_law`): the
closures, the file's expressions and every export's law are generated from them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Literal, Mapping

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


def path_fraction(shape: str, ratio: float, u: float) -> float:
    """The cooling paths from 1 at u = 0 to `ratio` at u = 1 (method.md [C16]): `linear`
    1 − (1 − ratio)·u, `cosine` ratio + (1 − ratio)·(1 + cos(πu))/2; held at `ratio` past u = 1."""
    u = min(u, 1.0)
    if shape == "linear":
        return 1.0 - (1.0 - ratio) * u
    return ratio + (1.0 - ratio) * (1.0 + math.cos(math.pi * u)) / 2.0


def cooling_path(initial: float, ratio: float, steps: int, shape: str) -> StepFn:
    """t ↦ initial · path_fraction(shape, ratio, t / steps)."""
    _positive("initial value", initial)
    _positive("end ratio", ratio)
    if steps < 1:
        raise ValueError(f"the budget must be at least 1 step, got {steps}")
    return lambda t: initial * path_fraction(shape, ratio, t / steps)


# The learning rate's e-folding time in units of tau: eta ∝ T (`linear`) decays with T, eta ∝ √T
# (`sqrt`, the seed's) half as fast.
TIMESCALE_FACTOR = {"linear": 1, "sqrt": 2}


def timescale_of(tau: float, law: str) -> float:
    """The learning rate's e-folding time when T(t) = T0·exp(−t/tau): tau when eta ∝ T (`linear`),
    2·tau when eta ∝ √T (`sqrt`)."""
    return TIMESCALE_FACTOR[law] * tau


def lr_timescale(schedule: ScheduleBase) -> float | None:
    """`timescale_of` the schedule's tau and lr_law; None for a flat schedule (and for the linear
    and cosine paths, whose cooling rate varies: `cooling_rate`)."""
    return None if schedule.tau is None else timescale_of(schedule.tau, schedule.lr_law)


def cooling_rate(schedule: ScheduleBase) -> StepFn:
    """t ↦ −d ln eta/dt on the cooling phase (t from the end of warmup, no floor): 1/timescale for
    an exponential, (1 − r)/S / f(u) for the linear path and (1 − r)·π·sin(πu)/(2S) / f(u) for the
    cosine one (f the path fraction, u = t/S, r = Tf/T0), 0 past the budget and when flat."""
    timescale = lr_timescale(schedule)
    if timescale is not None:
        return lambda t: 1.0 / timescale
    if schedule.kind not in ("linear", "cosine") or schedule.steps is None:
        return lambda t: 0.0
    steps, ratio, shape = schedule.steps, schedule.Tf / schedule.T0, schedule.kind

    def rate(t: float) -> float:
        u = t / steps
        if u >= 1.0:
            return 0.0
        slope = (1.0 - ratio) if shape == "linear" else (1.0 - ratio) * math.pi * math.sin(math.pi * u) / 2.0
        return slope / steps / path_fraction(shape, ratio, u)

    return rate


def gamma_of(tau: float, law: str) -> float:
    """The per-step learning-rate factor exp(−1/timescale)."""
    return math.exp(-1.0 / timescale_of(tau, law))


def cooling_phase(schedule: ScheduleBase) -> ScheduleBase:
    """The schedule without its warmup and floor (t counted from the end of warmup): what the
    diagnostics judge."""
    return schedule.model_copy(update={"warmup_steps": 0, "min_lr": 0.0})


def minimal_work(schedule: ScheduleBase, grad_sq_mean: float) -> float | None:
    """W = Σ eta(t)·grad_sq_mean over the cooling budget (seed §4.2), in closed form: eta0·g²·S
    for a flat schedule, eta0·g²·timescale·(1 − exp(−S/timescale)) for an exponential one,
    eta0·g²·S·(1 + Tf/T0)/2 for the linear and cosine paths (each averages its two ends); None
    without a budget."""
    end = schedule.steps
    if end is None:
        return None
    if schedule.kind in ("linear", "cosine"):
        return schedule.eta0 * grad_sq_mean * end * (1.0 + schedule.Tf / schedule.T0) / 2.0
    timescale = lr_timescale(schedule)
    if timescale is None:
        return schedule.eta0 * grad_sq_mean * end
    return schedule.eta0 * grad_sq_mean * timescale * -math.expm1(-end / timescale)


@dataclass(frozen=True)
class Syntax:
    """How one language spells the pieces of a law: a schedule field's name, the step, a whole
    number, the exponential, a two-way choice and the floor."""

    name: Callable[[str], str]  # a schedule field (eta0, tau, T0, ...) as this language names it
    t: str
    number: Callable[[int], str]
    exp: str
    select: Callable[[str, str, str], str]  # (condition, if true, if false)
    floor: Callable[[str, str], str]  # (minimum, value)
    cos: str = "cos"
    pi: str = "pi"
    cap: Callable[[str, str], str] = lambda m, v: f"min({m}, {v})"  # (maximum, value)


PYTHON = Syntax(str, "t", str, "exp", lambda c, a, b: f"{a} if {c} else {b}", lambda m, v: f"max({m}, {v})")
# Keras ops on the snippet's constants; the floor by where, not ops.maximum (it drops float64 on torch).
KERAS = Syntax(str.upper, "step", lambda n: f"{n}.0", "keras.ops.exp", lambda c, a, b: f"keras.ops.where({c}, {a}, {b})",
               lambda m, v: f"keras.ops.where({v} > {m}, {v}, {m})", "keras.ops.cos", "math.pi",
               lambda m, v: f"keras.ops.where({v} < {m}, {v}, {m})")

Values = Mapping[str, float]  # a schedule's fields by name


class Law:
    """A schedule law of the step t as a tree over the schedule's field names: the one
    representation. `closure` binds the fields' values (the functions the runtime, the
    diagnostics and csv evaluate), `text` prints it in a Syntax (the file's lr_expression, the
    Keras snippet), `optax` composes optax's schedules (the optax snippet)."""

    def closure(self, values: Values) -> StepFn:
        raise NotImplementedError

    def text(self, syntax: Syntax, t: str | None = None) -> str:
        raise NotImplementedError

    def optax(self, lines: list[str]) -> str:
        """An optax schedule expression; any statement it needs first is appended to `lines`."""
        raise NotImplementedError


@dataclass(frozen=True)
class Constant(Law):
    value: str

    def closure(self, values: Values) -> StepFn:
        return constant(values[self.value])

    def text(self, syntax: Syntax, t: str | None = None) -> str:
        return syntax.name(self.value)

    def optax(self, lines: list[str]) -> str:
        return f"optax.constant_schedule({self.value.upper()})"


@dataclass(frozen=True)
class Exponential(Law):
    """initial · exp(−t / (factor·tau)); `per_step`, when given, names the field that holds
    exp(−1/(factor·tau)) (optax decays by it)."""

    initial: str
    tau: str
    factor: int = 1
    per_step: str | None = None

    def closure(self, values: Values) -> StepFn:
        return exponential(values[self.initial], self.factor * values[self.tau])

    def timescale(self, syntax: Syntax) -> str:
        tau = syntax.name(self.tau)
        return tau if self.factor == 1 else f"({syntax.number(self.factor)} * {tau})"

    def text(self, syntax: Syntax, t: str | None = None) -> str:
        return f"{syntax.name(self.initial)} * {syntax.exp}(-{t or syntax.t} / {self.timescale(syntax)})"

    def optax(self, lines: list[str]) -> str:
        if self.per_step is None:
            raise ValueError("optax decays by a per-step factor, and this law names none")
        return (f"optax.exponential_decay(init_value={self.initial.upper()}, transition_steps=1, "
                f"decay_rate={self.per_step.upper()})")


@dataclass(frozen=True)
class CoolingPath(Law):
    """initial · path_fraction(shape, end/start, min(t, steps)/steps): the linear or cosine path of
    [C16] from `initial` to initial·end/start over `steps` (end/start: Tf/T0)."""

    initial: str
    shape: Literal["linear", "cosine"]
    end: str = "Tf"
    start: str = "T0"
    steps: str = "steps"

    def closure(self, values: Values) -> StepFn:
        return cooling_path(values[self.initial], values[self.end] / values[self.start], int(values[self.steps]),
                            self.shape)

    def text(self, syntax: Syntax, t: str | None = None) -> str:
        n = syntax.name
        ratio, u = f"{n(self.end)} / {n(self.start)}", f"{syntax.cap(n(self.steps), t or syntax.t)} / {n(self.steps)}"
        if self.shape == "linear":
            return f"{n(self.initial)} * (1 - (1 - {ratio}) * {u})"
        return f"{n(self.initial)} * ({ratio} + (1 - {ratio}) * (1 + {syntax.cos}({syntax.pi} * {u})) / 2)"

    def optax(self, lines: list[str]) -> str:
        initial, ratio, steps = self.initial.upper(), f"{self.end.upper()} / {self.start.upper()}", self.steps.upper()
        if self.shape == "linear":
            return f"optax.linear_schedule(init_value={initial}, end_value={initial} * {ratio}, transition_steps={steps})"
        return f"optax.cosine_decay_schedule(init_value={initial}, decay_steps={steps}, alpha={ratio})"


@dataclass(frozen=True)
class Warmup(Law):
    """peak · (t + 1) / steps: reaches the peak at t = steps − 1, never starts at zero."""

    peak: str
    steps: str

    def closure(self, values: Values) -> StepFn:
        return linear_warmup(values[self.peak], int(values[self.steps]))

    def text(self, syntax: Syntax, t: str | None = None) -> str:
        return f"{syntax.name(self.peak)} * ({t or syntax.t} + 1) / {syntax.name(self.steps)}"

    def optax(self, lines: list[str]) -> str:
        peak, steps = self.peak.upper(), self.steps.upper()
        return f"optax.linear_schedule(init_value={peak} / {steps}, end_value={peak}, transition_steps={steps} - 1)"


@dataclass(frozen=True)
class Join(Law):
    """`first` before `boundary`, then `second` counted from the boundary."""

    first: Law
    second: Law
    boundary: str

    def closure(self, values: Values) -> StepFn:
        return join(self.first.closure(values), self.second.closure(values), int(values[self.boundary]))

    def text(self, syntax: Syntax, t: str | None = None) -> str:
        t, boundary = t or syntax.t, syntax.name(self.boundary)
        return syntax.select(f"{t} < {boundary}", self.first.text(syntax, t), self.second.text(syntax, f"({t} - {boundary})"))

    def optax(self, lines: list[str]) -> str:
        lines += [f"warmup = {self.first.optax(lines)}", f"cooling = {self.second.optax(lines)}"]
        return f"optax.join_schedules([warmup, cooling], boundaries=[{self.boundary.upper()}])"


@dataclass(frozen=True)
class Floor(Law):
    """max(minimum, inner)."""

    inner: Law
    minimum: str

    def closure(self, values: Values) -> StepFn:
        return floored(self.inner.closure(values), values[self.minimum])

    def text(self, syntax: Syntax, t: str | None = None) -> str:
        return syntax.floor(syntax.name(self.minimum), self.inner.text(syntax, t))

    def optax(self, lines: list[str]) -> str:
        lines.append(f"unfloored = {self.inner.optax(lines)}")
        return f"lambda count: jnp.maximum({self.minimum.upper()}, unfloored(count))"


def lr_law(kind: str, warmup_steps: int, min_lr: float, law: Literal["linear", "sqrt"] = "sqrt") -> Law:
    """eta(t): optional linear warmup over warmup_steps, then eta0 · exp(−t'/timescale) with t' the
    steps since warmup (constant eta0 for a flat schedule), never below min_lr; the timescale is
    tau for eta ∝ T (`linear`) and 2·tau for eta ∝ √T (`sqrt`)."""
    if kind in ("linear", "cosine"):
        cooling: Law = CoolingPath("eta0", kind)  # lr ∝ T: the loss-units rules alone have these paths
    else:
        cooling = Constant("eta0") if kind == "constant" else Exponential("eta0", "tau", TIMESCALE_FACTOR[law], "gamma")
    if warmup_steps:
        cooling = Join(Warmup("eta0", "warmup_steps"), cooling, "warmup_steps")
    return Floor(cooling, "min_lr") if min_lr > 0 else cooling


def temperature_law(kind: str, warmup_steps: int) -> Law:
    """T(t) = T0 during warmup, then T0 · exp(−t'/tau) (constant T0 for a flat schedule)."""
    if kind == "constant":
        return Constant("T0")
    cooling = CoolingPath("T0", kind) if kind in ("linear", "cosine") else Exponential("T0", "tau")
    return Join(Constant("T0"), cooling, "warmup_steps") if warmup_steps else cooling


def _values(schedule: ScheduleBase) -> dict[str, float]:
    return {"eta0": schedule.eta0, "tau": schedule.tau, "gamma": schedule.gamma, "T0": schedule.T0, "Tf": schedule.Tf,
            "steps": schedule.steps, "warmup_steps": schedule.warmup_steps, "min_lr": schedule.min_lr}


def schedule_lr_law(schedule: ScheduleBase) -> Law:
    return lr_law(schedule.kind, schedule.warmup_steps, schedule.min_lr, schedule.lr_law)


def learning_rate(schedule: ScheduleBase) -> StepFn:
    """eta(t) of the schedule: its `lr_law` with the schedule's values bound."""
    return schedule_lr_law(schedule).closure(_values(schedule))


def temperature(schedule: ScheduleBase) -> StepFn:
    """T(t) of the schedule: its `temperature_law` with the schedule's values bound."""
    return temperature_law(schedule.kind, schedule.warmup_steps).closure(_values(schedule))


def timescale_source(law: str) -> str:
    """The lr's e-folding time as text: tau, or (2 * tau) for the seed's eta ∝ √T."""
    return Exponential("eta0", "tau", TIMESCALE_FACTOR[law]).timescale(PYTHON)


def lr_expression(kind: str, warmup_steps: int, min_lr: float, law: Literal["linear", "sqrt"] = "sqrt",
                  syntax: Syntax = PYTHON) -> str:
    """`lr_law` as text in `syntax` (by default Python, in the schedule's own field names and the
    step t, with exp = math.exp: what files hold)."""
    return lr_law(kind, warmup_steps, min_lr, law).text(syntax)


def temperature_expression(kind: str, warmup_steps: int) -> str:
    return temperature_law(kind, warmup_steps).text(PYTHON)


def total_steps(schedule: ScheduleBase) -> int | None:
    """Warmup plus the cooling budget; None for a flat schedule without a budget."""
    return None if schedule.steps is None else schedule.warmup_steps + schedule.steps
