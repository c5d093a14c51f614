"""The seed's conditions as named checks, read literally (method.md §4, [D1]–[D8]): the diagnostics
of v1 files and of `--rules literal`. Each is a heuristic reading of the seed.

Plain float math. A check without a threshold is reported with status "info".
"""

from __future__ import annotations

import math

from thermocal.records import CalibrationDetails, Diagnostic, GradientNoise, HessianSpectrum, ScheduleBase
from thermocal.schedule.functions import cooling_phase, learning_rate, minimal_work, temperature

EXPLORATION_MIN = 10.0  # T0/lambda_max "≫ 1"
EXPLOITATION_FACTOR = 10.0  # Tf/|lambda_min| "~ 1": within a factor of 10
REGIME_FACTOR = 10.0  # Q "~ 1" is annealing: within a factor of 10
ADIABATIC_MAX = 0.1  # A "≪ 1"
BUDGET_MIN = 1.0  # the budget reaches §6.1's relaxation time


def _within_factor(value: float, factor: float) -> str:
    return "pass" if 1.0 / factor <= value <= factor else "warn"


def quench_number(eta: float, temp: float, grad_sq_mean: float) -> float:
    """Q = eta·|∇L| / √(2·D) with D = eta·T (§3, §2): Q = √(eta·|∇L|² / (2·T))."""
    return math.sqrt(eta * grad_sq_mean / (2.0 * temp))


def diagnose(
    schedule: ScheduleBase,
    details: CalibrationDetails,
    noise: GradientNoise,
    spectrum: HessianSpectrum,
    *,
    epsilon: float,
) -> list[Diagnostic]:
    """Every check of method.md §4, in that order, on the cooling phase (t counted from the end
    of any warmup, no learning-rate floor)."""
    cooling = cooling_phase(schedule)
    eta, temp = learning_rate(cooling), temperature(cooling)
    g2 = noise.grad_sq_mean
    lam_max, lam_min = spectrum.lambda_max, spectrum.lambda_min
    end = schedule.steps
    out: list[Diagnostic] = []

    exploration = schedule.T0 / lam_max if lam_max > 0 else None
    out.append(Diagnostic(
        name="exploration", section="§5.1", value=exploration, threshold=EXPLORATION_MIN,
        status="info" if exploration is None else ("pass" if exploration >= EXPLORATION_MIN else "warn"),
        rule="T0 / lambda_max >> 1 (pass at >= 10)",
    ))
    tiny = 1e-12 * max(abs(lam_max), 1.0)
    exploitation = schedule.Tf / max(abs(lam_min), tiny)
    out.append(Diagnostic(
        name="exploitation", section="§5.1", value=exploitation, threshold=EXPLOITATION_FACTOR,
        status=_within_factor(exploitation, EXPLOITATION_FACTOR), rule="Tf / |lambda_min| ~ 1 (pass within a factor of 10)",
    ))
    q_start = quench_number(eta(0), temp(0), g2)
    out.append(Diagnostic(
        name="regime_start", section="§3", value=q_start, threshold=REGIME_FACTOR,
        status=_within_factor(q_start, REGIME_FACTOR), rule="Q(0) = eta|grad L|/sqrt(2D): ~1 anneals, >>1 quenches",
    ))
    q_end = quench_number(eta(end), temp(end), g2) if end is not None else None
    out.append(Diagnostic(
        name="regime_end", section="§3", value=q_end, threshold=REGIME_FACTOR,
        status="info" if q_end is None else _within_factor(q_end, REGIME_FACTOR),
        rule="Q(S) at the end of the budget, as regime_start",
    ))
    out.append(Diagnostic(
        name="minimal_work", section="§4.2", value=minimal_work(schedule, g2), threshold=None, status="info",
        rule="W = eta0 * grad_sq_mean * 2 tau (1 - exp(-S/(2 tau)))",
    ))
    floor = eta(end) * temp(end) * lam_max if end is not None else None
    out.append(Diagnostic(
        name="exploration_floor", section="§4.2", value=floor, threshold=None, status="info",
        rule="D(S) * lambda_max: the largest c with D >= c/|Hessian| at the end",
    ))
    if schedule.tau is None:
        adiabatic = 0.0
    else:
        d_eff = max(spectrum.trace, 0.0) / lam_max if lam_max > 0 else 0.0
        adiabatic = math.sqrt(d_eff / 2.0) * schedule.T0 / (schedule.tau * g2) if g2 > 0 else None
    out.append(Diagnostic(
        name="adiabatic", section="§4.1", value=adiabatic, threshold=ADIABATIC_MAX,
        status="info" if adiabatic is None else ("pass" if adiabatic <= ADIABATIC_MAX else "warn"),
        rule="A = sqrt(d_eff/2) * T0 / (tau * grad_sq_mean) << 1 (pass at <= 0.1)",
    ))
    out.append(Diagnostic(
        name="guarantee", section="§7", value=-math.expm1(-epsilon / schedule.Tf), threshold=None, status="info",
        rule=f"P(|L - L_min| < epsilon) >= 1 - exp(-epsilon/Tf), epsilon = {epsilon:g}",
    ))
    budget = None
    if end is not None and schedule.tau is not None:
        budget = end / (details.tau_relaxation * math.log(schedule.T0 / schedule.Tf))
    out.append(Diagnostic(
        name="budget", section="§6.1", value=budget, threshold=BUDGET_MIN,
        status="info" if budget is None else ("pass" if budget >= BUDGET_MIN else "warn"),
        rule="S / (tau_6.1 * ln(T0/Tf)): the budget against §6.1's relaxation time (pass at >= 1)",
    ))
    return out
