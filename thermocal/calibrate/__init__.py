"""Measurements → the schedule: calibration v2 in loss units (the default) or the seed's literal
reading (method.md §3). Plain float math: no torch.

`calibrate(measurements, num_params, config)` gives the v2 file's schedule, calibration record
and diagnostics under `config.rules`; `literal.calibrate` and `literal_diagnostics.diagnose` are
also what v1 files are re-derived with.
"""

from __future__ import annotations

from dataclasses import dataclass

from thermocal.calibrate import literal, literal_diagnostics, loss_units
from thermocal.calibrate.literal import CalibrationSettings, temperature_t0
from thermocal.config import Config
from thermocal.errors import DegenerateError
from thermocal.records import (CalibrationDetails, Diagnostic, GradientNoise, HessianSpectrum, LiteralRules,
                              LossUnitCalibration, Measurements, ScheduleV2)

__all__ = ["CalibrationSettings", "Calibrated", "calibrate", "literal_settings", "temperature_t0"]


@dataclass(frozen=True)
class Calibrated:
    schedule: ScheduleV2
    details: CalibrationDetails | LossUnitCalibration
    diagnostics: list[Diagnostic]


def literal_settings(config: Config) -> CalibrationSettings:
    return CalibrationSettings(
        steps=config.steps, tf_rule=config.tf_rule, tf_value=config.tf, tf_floor=config.tf_floor,
        stability_fraction=config.stability_fraction, flat_if_cold=config.flat_if_cold,
        warmup_steps=config.warmup_steps, min_lr=config.min_lr,
        epsilon=config.epsilon if config.epsilon is not None else 0.01, lr_law=config.law,
    )


def gauss_newton_modes(measurements: Measurements) -> HessianSpectrum:
    """The spectrum the calibration reads with `--d-eff gauss-newton` ([H15]): the Hessian's, with
    the Gauss-Newton trace and its errors in place of the Hessian's trace (d_eff = tr G/λ_max)."""
    g = measurements.gauss_newton
    if g is None:
        raise DegenerateError("--d-eff gauss-newton, but the measurements have no Gauss-Newton trace")
    return measurements.hessian.debiased().model_copy(update={"trace": g.trace, "trace_stderr": g.stderr,
                                                   "trace_sampling_stderr": g.sampling_stderr})


def adam_metric(measurements: Measurements) -> tuple[GradientNoise, HessianSpectrum]:
    """The gradient noise and spectrum calibration v2 reads for AdamW ([O3]): those of
    φ = P^(1/2)·θ, where Adam is EMA-momentum SGD. d_eff = tr(P⁻¹H)/λ_max(P⁻¹H). The noise's
    curvature ([N8]) is not measured in that metric: the optimal step and λ_noise fall back as
    when it is absent."""
    pc = measurements.preconditioned
    if pc is None:
        raise DegenerateError("--optimizer adamw, but the measurements have no preconditioned curvature")
    noise = measurements.gradient_noise.model_copy(update={
        "grad_var": pc.grad_var, "grad_var_stderr": pc.grad_var_stderr, "full_grad_sq": pc.full_grad_sq,
        "full_grad_sq_stderr": 0.0, "grad_sq_mean": pc.grad_sq_mean})
    spectrum = measurements.hessian.debiased().model_copy(update={
        "lambda_max": pc.lambda_max, "lambda_max_stderr": None, "trace": pc.trace,
        "trace_stderr": pc.trace_stderr, "trace_sampling_stderr": None})
    return noise, spectrum


def calibrate(measurements: Measurements, num_params: int, config: Config) -> Calibrated:
    noise, spectrum = measurements.gradient_noise, measurements.hessian.debiased()  # [H16]
    curvature = measurements.noise_curvature
    if config.optimizer == "adamw":
        noise, spectrum = adam_metric(measurements)
        curvature = None
    elif config.d_eff == "hessian" and spectrum.trace is None:  # a file edited by hand, or settings that do not match
        raise DegenerateError("d_eff reads the Hessian's trace (--d-eff hessian or the literal rules), but the "
                              "measurements have none")
    if config.rules == "loss-units":
        if config.d_eff == "gauss-newton":
            spectrum = gauss_newton_modes(measurements)
        result = loss_units.calibrate(noise, spectrum, curvature, config)
        diagnostics = loss_units.diagnose(result.schedule, result.details, noise, spectrum, curvature, config)
        return Calibrated(result.schedule, result.details, diagnostics)
    settings = literal_settings(config)
    made = literal.calibrate(noise, spectrum, num_params, settings)
    rules = LiteralRules(rule_set="literal", **made.schedule.rules.model_dump())
    schedule = ScheduleV2(**{**made.schedule.model_dump(exclude={"rules"}), "rules": rules})
    diagnostics = literal_diagnostics.diagnose(made.schedule, made.details, noise, spectrum, epsilon=settings.epsilon)
    return Calibrated(schedule, made.details, diagnostics)
