"""The cooling paths of method.md [C16]: the same T0, Tf and budget along the seed's exponential,
a linear or a cosine path; the lr follows T (lr ∝ T) and ends at eta0·Tf/T0."""

from __future__ import annotations

import math

import pytest
import torch

import thermocal
from conftest import SAMPLES, mlp, one_line_error, run
from thermocal.config import Config
from thermocal.schedule.functions import cooling_phase, cooling_rate, learning_rate, path_fraction, temperature

DIGITS = SAMPLES / "digits_mlp"


@pytest.fixture(scope="module")
def made() -> dict:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(256, 6, generator=generator)
    y = (x[:, 0] > 0).long()
    model = mlp([6, 16, 2])
    return {shape: thermocal.probe(model, (x, y), Config(batch_size=16, steps=600, seed=2, epsilon_stderrs=1,
                                                         warmup_steps=20, shape=shape))
            for shape in ("exponential", "linear", "cosine")}


def test_every_path_shares_eta0_t0_tf_and_the_budget(made: dict) -> None:
    base = made["exponential"].schedule
    assert base.kind == "exponential" and base.T0 > base.Tf
    for shape in ("linear", "cosine"):
        s = made[shape].schedule
        assert s.kind == shape and s.tau is None and s.gamma == 1.0
        assert (s.eta0, s.T0, s.Tf, s.steps) == (base.eta0, base.T0, base.Tf, base.steps)
        assert made[shape].calibration.tau_budget == made["exponential"].calibration.tau_budget


@pytest.mark.parametrize("shape", ["exponential", "linear", "cosine"])
def test_each_path_runs_from_t0_to_tf_and_the_lr_follows_t(made: dict, shape: str) -> None:
    s = made[shape].schedule
    lr, temp = learning_rate(s), temperature(s)
    end = s.warmup_steps + s.steps
    assert temp(0) == s.T0 and temp(s.warmup_steps) == pytest.approx(s.T0, rel=1e-12)
    assert temp(end) == pytest.approx(s.Tf, rel=1e-12)
    if shape != "exponential":  # a path holds Tf past the budget; the seed's exponential keeps cooling
        assert temp(10 * end) == pytest.approx(s.Tf, rel=1e-12)
    for t in range(s.warmup_steps, end + 1, 37):
        assert lr(t) / s.eta0 == pytest.approx(temp(t) / s.T0, rel=1e-12)  # lr ∝ T
    values = [temp(t) for t in range(s.warmup_steps, end + 1)]
    assert all(a >= b for a, b in zip(values, values[1:]))  # it only cools


def test_the_paths_fractions_and_cooling_rates() -> None:
    for u, linear, cosine in ((0.0, 1.0, 1.0), (0.5, 0.6, 0.6), (1.0, 0.2, 0.2), (0.25, 0.8, 0.2 + 0.8 * (1 + math.cos(math.pi / 4)) / 2)):
        assert path_fraction("linear", 0.2, u) == pytest.approx(linear)
        assert path_fraction("cosine", 0.2, u) == pytest.approx(cosine)


@pytest.mark.parametrize("shape", ["linear", "cosine"])
def test_the_cooling_rate_is_minus_the_derivative_of_ln_lr(made: dict, shape: str) -> None:
    s = cooling_phase(made[shape].schedule)
    lr, rate = learning_rate(s), cooling_rate(s)
    for t in (1.0, 100.0, 300.0, 550.0):
        h = 1e-3
        numeric = -(math.log(lr(t + h)) - math.log(lr(t - h))) / (2 * h)
        assert rate(t) == pytest.approx(numeric, rel=1e-5)


def test_the_adiabatic_margin_of_a_path_is_its_largest_along_the_path(made: dict) -> None:
    for shape in ("linear", "cosine"):
        diagnostic = {d.name: d for d in made[shape].diagnostics}["adiabatic"]
        assert diagnostic.value is not None and diagnostic.value > 0 and "along the path" in diagnostic.rule


def test_a_path_file_checks_and_needs_the_loss_unit_rules(tmp_path) -> None:
    out = tmp_path / "cosine.json"
    assert run("probe", DIGITS / "model.pt", DIGITS / "data", "--steps", 800, "--epsilon-stderrs", 1, "--shape", "cosine",
               "-q", "-o", out).exit_code == 0
    assert run("check", out).exit_code == 0
    one_line_error(run("probe", DIGITS / "model.pt", DIGITS / "data", "--shape", "linear", "--rules", "literal"), 2,
                   "--shape linear")
    one_line_error(run("probe", DIGITS / "model.pt", DIGITS / "data", "--shape", "linear", "--lr-law", "sqrt"), 2,
                   "--shape linear")
