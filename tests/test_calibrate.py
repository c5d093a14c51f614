"""The literal calibration (method.md §3, [C1]–[C8]) on hand-computed cases."""

from __future__ import annotations

import math

import pytest

from thermocal.calibrate.literal import CalibrationSettings, calibrate, temperature_t0
from thermocal.errors import DegenerateError
from conftest import noise, spectrum






def test_budget_schedule_by_hand() -> None:
    # T0 = 0.5/2 = 0.25; Tf = max(|-0.05|, 1e-3*4) = 0.05; tau = 1000/ln(5)
    # eta_balance = 2*0.25/5 = 0.1; eta_stable = 0.25*2/4 = 0.125 -> balance active
    cal = calibrate(noise(), spectrum(), 100, CalibrationSettings(steps=1000))
    s = cal.schedule
    assert s.T0 == pytest.approx(0.25, rel=1e-15)
    assert s.Tf == pytest.approx(0.05, rel=1e-15)
    assert s.tau == pytest.approx(1000 / math.log(5), rel=1e-15)
    assert s.gamma == pytest.approx(math.exp(-math.log(5) / 2000), rel=1e-15)
    assert s.eta0 == pytest.approx(0.1, rel=1e-15)
    assert (s.rules.tf_rule, s.rules.tau_rule, s.rules.eta0_bound, s.steps) == ("abs", "budget", "balance", 1000)
    assert cal.details.eta_stable == pytest.approx(0.125)
    assert cal.details.tau_relaxation == pytest.approx(100 / 0.05)
    assert cal.details.tau_budget == pytest.approx(s.tau)


def test_relaxation_tau_and_implied_budget() -> None:
    cal = calibrate(noise(), spectrum(), 100, CalibrationSettings())
    assert cal.schedule.tau == pytest.approx(2000.0)
    assert cal.schedule.steps == math.ceil(2000 * math.log(5)) == cal.details.implied_steps
    assert cal.schedule.rules.steps_source == "implied"
    assert cal.details.tau_budget is None


def test_stability_bound_caps_eta0() -> None:
    # lambda_max = 40 -> eta_stable = 0.25*2/40 = 0.0125 < eta_balance = 0.1
    cal = calibrate(noise(), spectrum(lambda_max=40.0), 100, CalibrationSettings(steps=10))
    assert cal.schedule.eta0 == pytest.approx(0.0125)
    assert cal.schedule.rules.eta0_bound == "stability"
    cal = calibrate(noise(), spectrum(lambda_max=40.0), 100, CalibrationSettings(steps=10, stability_fraction=0.1))
    assert cal.schedule.eta0 == pytest.approx(0.005)


def test_tf_rules() -> None:
    # floor rule: max(lambda_min, tf_floor*lambda_max) = max(-0.05, 0.004) = 0.004
    assert calibrate(noise(), spectrum(), 100, CalibrationSettings(tf_rule="floor")).schedule.Tf == pytest.approx(0.004)
    # abs rule with a tiny lambda_min falls back to the floor 1e-2 * 4 = 0.04
    cal = calibrate(noise(), spectrum(lambda_min=-1e-5), 100, CalibrationSettings(tf_floor=1e-2))
    assert cal.schedule.Tf == pytest.approx(0.04)
    assert cal.details.lambda_min_raw == -1e-5
    explicit = calibrate(noise(), spectrum(), 100, CalibrationSettings(tf_value=0.01)).schedule
    assert (explicit.Tf, explicit.rules.tf_rule) == (0.01, "explicit")


def test_t0_stderr_delta_method() -> None:
    n = noise(grad_var=0.5, grad_norm_mean=2.0, var_se=0.05, norm_se=0.1, cov=0.002)
    t0, se = temperature_t0(n)
    rel_var = (0.05 / 0.5) ** 2 + (0.1 / 2.0) ** 2 - 2 * 0.002 / (0.5 * 2.0)
    assert t0 == 0.25
    assert se == pytest.approx(0.25 * math.sqrt(rel_var), rel=1e-14)


def test_already_cold_is_an_error_unless_flat_is_asked() -> None:
    with pytest.raises(DegenerateError, match=r"already cold: T0 = 0\.25 <= Tf = 0\.5 \(explicit rule\)"):
        calibrate(noise(), spectrum(), 100, CalibrationSettings(tf_value=0.5))
    flat = calibrate(noise(), spectrum(), 100, CalibrationSettings(tf_value=0.5, flat_if_cold=True, steps=50)).schedule
    assert (flat.kind, flat.tau, flat.gamma, flat.steps, flat.lr_expression) == ("constant", None, 1.0, 50, "eta0")


def test_non_positive_inputs() -> None:
    with pytest.raises(DegenerateError, match="every minibatch gradient is zero"):
        calibrate(noise(grad_norm_mean=0.0, grad_var=0.0), spectrum(), 100, CalibrationSettings())
    with pytest.raises(DegenerateError, match=r"Tf = -0\.001 by the 'floor' rule is not positive"):
        calibrate(noise(), spectrum(lambda_max=-1.0, lambda_min=-0.05), 100, CalibrationSettings(tf_rule="floor"))
