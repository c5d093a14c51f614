"""The seed's calibration read literally (method.md §3, [C1]–[C8]; seed §5, §6.1): the rules of
`thermocal.schedule/v1` files, and of v2 files made with `--rules literal`.

T0 = grad_var/grad_norm_mean is in gradient units and Tf = |λ_min| in curvature units, so this
schedule depends on how the parameters and the loss are scaled; calibration v2
(`thermocal.calibrate.loss_units`) is the default for that reason. Plain float math: no torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from thermocal.errors import DegenerateError
from thermocal.records import CalibrationDetails, GradientNoise, HessianSpectrum, Rules, Schedule
from thermocal.schedule.functions import gamma_of, lr_expression, temperature_expression


@dataclass(frozen=True)
class CalibrationSettings:
    """The user's choices; defaults are METHOD.md's."""

    steps: int | None = None
    tf_rule: Literal["abs", "floor"] = "abs"
    tf_value: float | None = None
    tf_floor: float = 1e-3
    stability_fraction: float = 0.25
    flat_if_cold: bool = False
    warmup_steps: int = 0
    min_lr: float = 0.0
    epsilon: float = 0.01
    lr_law: Literal["sqrt", "linear"] = "sqrt"


@dataclass(frozen=True)
class Calibration:
    schedule: Schedule
    details: CalibrationDetails


def temperature_t0(noise: GradientNoise) -> tuple[float, float]:
    """T0 = grad_var / grad_norm_mean (§6.1), with its delta-method standard error.

    Var(a/b) ≈ (a/b)²·(σa²/a² + σb²/b² − 2·cov(a,b)/(a·b)), a = grad_var, b = grad_norm_mean.
    """
    a, b = noise.grad_var, noise.grad_norm_mean
    if b <= 0:
        raise DegenerateError("every minibatch gradient is zero: the model is at a stationary point of the sample")
    t0 = a / b
    if a == 0:
        return t0, 0.0
    rel_var = (noise.grad_var_stderr / a) ** 2 + (noise.grad_norm_mean_stderr / b) ** 2 - 2 * noise.grad_var_norm_cov / (a * b)
    return t0, abs(t0) * math.sqrt(max(rel_var, 0.0))


def final_temperature(spectrum: HessianSpectrum, settings: CalibrationSettings) -> tuple[float, str]:
    """Tf by the chosen rule (§5.1, §6.1 read as METHOD.md §3 fixes it)."""
    if settings.tf_value is not None:
        return settings.tf_value, "explicit"
    if spectrum.lambda_min is None:
        raise DegenerateError("the literal Tf rules need lambda_min, which this probe did not resolve (probe with "
                              "--lambda-min, or --tf VALUE)")
    floor = settings.tf_floor * spectrum.lambda_max
    if settings.tf_rule == "abs":
        return max(abs(spectrum.lambda_min), floor), "abs"
    return max(spectrum.lambda_min, floor), "floor"


def calibrate(noise: GradientNoise, spectrum: HessianSpectrum, num_params: int, settings: CalibrationSettings) -> Calibration:
    """T0, Tf, tau, eta0 and gamma from the measurements.

    tau = S / ln(T0/Tf) with a budget S (§5.2), else tau = d / Tf (§6.1) with the implied
    budget S = tau·ln(T0/Tf). eta0 = min(2·T0 / grad_sq_mean, stability_fraction·2/lambda_max).
    gamma = exp(−1/(2·tau)) is the per-step learning-rate factor.
    """
    # The records hold finite numbers only (allow_inf_nan=False), so no NaN reaches this point.
    t0, t0_stderr = temperature_t0(noise)
    tf, tf_rule = final_temperature(spectrum, settings)
    if not tf > 0:
        raise DegenerateError(
            f"Tf = {tf:.4g} by the {tf_rule!r} rule is not positive (lambda_max = {spectrum.lambda_max:.4g}, "
            f"lambda_min = {spectrum.lambda_min:.4g}); pass --tf VALUE"
        )
    if t0 <= 0:
        raise DegenerateError("T0 = 0: the minibatch gradients do not vary, so there is no noise to cool")

    eta_balance = 2.0 * t0 / noise.grad_sq_mean
    eta_stable = settings.stability_fraction * 2.0 / spectrum.lambda_max if spectrum.lambda_max > 0 else None
    if eta_stable is not None and eta_stable < eta_balance:
        eta0, eta0_bound = eta_stable, "stability"
    else:
        eta0, eta0_bound = eta_balance, "balance"

    tau_relaxation = num_params / tf
    cold = t0 <= tf
    if not math.isfinite(tau_relaxation) or tau_relaxation * max(math.log(t0 / tf), 0.0) > 1e18:
        raise DegenerateError(f"the relaxation time d/Tf = {tau_relaxation:.3g} steps is beyond any training run; "
                              "pass --steps")
    if cold and not settings.flat_if_cold:
        raise DegenerateError(
            f"already cold: T0 = {t0:.4g} <= Tf = {tf:.4g} ({tf_rule} rule), so no cooling schedule exists; "
            f"pass --flat-if-cold for a constant learning rate, or --tf VALUE"
        )
    log_ratio = math.log(t0 / tf) if not cold else 0.0
    implied_steps = math.ceil(tau_relaxation * log_ratio)
    tau_budget = settings.steps / log_ratio if settings.steps is not None and not cold else None

    if cold:
        tau, tau_rule, gamma = None, "flat", 1.0
        steps, steps_source = settings.steps, "budget" if settings.steps is not None else "none"
        kind = "constant"
    else:
        if tau_budget is not None:
            tau, tau_rule, steps, steps_source = tau_budget, "budget", settings.steps, "budget"
        else:
            tau, tau_rule, steps, steps_source = tau_relaxation, "relaxation", max(implied_steps, 1), "implied"
        gamma = gamma_of(tau, settings.lr_law)
        kind = "exponential"
    if settings.min_lr >= eta0:
        raise DegenerateError(f"--min-lr {settings.min_lr:g} is not below eta0 = {eta0:.4g}: the schedule would be flat")

    rules = Rules(
        tf_rule=tf_rule, tf_floor=settings.tf_floor, tau_rule=tau_rule, steps_source=steps_source,
        eta0_bound=eta0_bound, stability_fraction=settings.stability_fraction, epsilon=settings.epsilon,
    )
    schedule = Schedule(
        kind=kind, eta0=eta0, T0=t0, Tf=tf, tau=tau, gamma=gamma, steps=steps,
        warmup_steps=settings.warmup_steps, min_lr=settings.min_lr,
        lr_expression=lr_expression(kind, settings.warmup_steps, settings.min_lr, settings.lr_law), lr_law=settings.lr_law,
        temperature_expression=temperature_expression(kind, settings.warmup_steps), rules=rules,
    )
    details = CalibrationDetails(
        T0_stderr=t0_stderr, lambda_min_raw=spectrum.lambda_min, tau_budget=tau_budget,
        tau_relaxation=tau_relaxation, implied_steps=implied_steps, eta_balance=eta_balance, eta_stable=eta_stable,
    )
    return Calibration(schedule=schedule, details=details)
