"""Diagnostics (method.md §4) on hand-computed cases and their analytic identities."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import noise, spectrum
from thermocal.calibrate.literal import CalibrationSettings, calibrate
from thermocal.calibrate.literal_diagnostics import diagnose
from thermocal.schedule.file import sample_table
from thermocal.schedule.functions import exponential, learning_rate, temperature


def by_name(diags):
    return {d.name: d for d in diags}


def test_diagnostics_by_hand() -> None:
    # T0 = 0.25, Tf = 0.05, tau = 1000/ln5, eta0 = 0.1 (balance), grad_sq_mean = 5, lambda_max = 4, trace 20
    n, sp = noise(), spectrum()
    cal = calibrate(n, sp, 100, CalibrationSettings(steps=1000))
    s = cal.schedule
    d = by_name(diagnose(s, cal.details, n, sp, epsilon=0.1))
    tau = 1000 / math.log(5)
    assert d["exploration"].value == pytest.approx(0.25 / 4) and d["exploration"].status == "warn"
    assert d["exploitation"].value == pytest.approx(1.0) and d["exploitation"].status == "pass"
    assert d["regime_start"].value == pytest.approx(1.0, rel=1e-14)  # balance bound: Q(0) = 1
    assert d["regime_end"].value == pytest.approx(math.exp(1000 / (4 * tau)), rel=1e-12)  # Q(S) = Q(0)e^{S/4tau}
    assert d["minimal_work"].value == pytest.approx(0.1 * 5 * 2 * tau * (1 - math.exp(-1000 / (2 * tau))))
    assert d["exploration_floor"].value == pytest.approx(0.1 * math.exp(-1000 / (2 * tau)) * 0.25 * math.exp(-1000 / tau) * 4)
    assert d["adiabatic"].value == pytest.approx(math.sqrt((20 / 4) / 2) * 0.25 / (tau * 5))
    assert d["adiabatic"].status == "pass"
    assert d["guarantee"].value == pytest.approx(1 - math.exp(-0.1 / 0.05))
    assert d["budget"].value == pytest.approx(1000 / (2000 * math.log(5)))
    assert d["budget"].status == "warn"
    assert {x.section for x in d.values()} == {"§5.1", "§3", "§4.2", "§4.1", "§7", "§6.1"}


def test_quenching_is_flagged_and_flat_schedules_are_answered() -> None:
    n, sp = noise(), spectrum()
    # S = tau·ln(T0/Tf) makes Q(S) = Q(0)·(T0/Tf)^(1/4): cooling by 2.5e5 ends in a quench (Q ≈ 22)
    cal = calibrate(n, sp, 100, CalibrationSettings(steps=1000, tf_value=1e-6))
    end = by_name(diagnose(cal.schedule, cal.details, n, sp, epsilon=0.01))["regime_end"]
    assert end.value == pytest.approx((0.25 / 1e-6) ** 0.25) and end.status == "warn"
    flat = calibrate(n, sp, 100, CalibrationSettings(tf_value=1.0, flat_if_cold=True))
    d = by_name(diagnose(flat.schedule, flat.details, n, sp, epsilon=0.01))
    assert d["adiabatic"].value == 0.0 and d["budget"].status == "info" and d["regime_end"].value is None


def test_schedule_functions_match_torch_exponential_lr_over_the_budget() -> None:
    cal = calibrate(noise(), spectrum(), 100, CalibrationSettings(steps=3000))
    s = cal.schedule
    lr = learning_rate(s)
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=s.eta0)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=s.gamma)
    ours, theirs = [], []
    for step in range(s.steps + 1):
        ours.append(lr(step))
        theirs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    torch.testing.assert_close(torch.tensor(theirs, dtype=torch.float64), torch.tensor(ours, dtype=torch.float64), rtol=1e-9, atol=0)
    assert temperature(s)(0) == s.T0 and temperature(s)(s.tau) == pytest.approx(s.T0 / math.e)
    assert lr(10**9) == 0.0  # far past the budget: decays to zero, no overflow
    table = sample_table(s)
    assert [p.step for p in table] == [round(i * 300) for i in range(11)]


def test_schedule_factories_reject_bad_arguments() -> None:
    with pytest.raises(ValueError, match="timescale must be positive and finite, got 0"):
        exponential(1.0, 0.0)
    with pytest.raises(ValueError, match="initial value must be positive and finite, got nan"):
        exponential(float("nan"), 1.0)
