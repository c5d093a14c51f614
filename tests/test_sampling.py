"""lambda_max's sampling standard error ([H13]) against the spread of lambda_max over samples,
on linear regression with MSE, whose Hessian 2·mean(x xᵀ) is known in closed form per sample."""

from __future__ import annotations

import statistics

import pytest
import torch

from thermocal.curvature.sampling import mean_stderr, rayleigh_quotients

SCALES = torch.tensor([4.0, 1.0, 0.5, 0.25, 0.1], dtype=torch.float64)  # a well separated top direction
GROUPS, N = 16, 256


def _sample(generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(N, len(SCALES), generator=generator, dtype=torch.float64) * SCALES.sqrt()
    return x, torch.randn(N, 1, generator=generator, dtype=torch.float64)


def _model() -> torch.nn.Module:
    return torch.nn.Linear(len(SCALES), 1, bias=False).double()


def _quotients(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, vector: torch.Tensor) -> torch.Tensor:
    size = N // GROUPS
    groups = list(zip(torch.split(x, size), torch.split(y, size)))
    return rayleigh_quotients(model, torch.nn.functional.mse_loss, groups, list(model.parameters()), vector)


def test_the_group_quotients_average_to_lambda_max_exactly() -> None:
    """Equal groups: the mean of v·H_g·v is v·H·v, which for the top eigenvector is lambda_max."""
    x, y = _sample(torch.Generator().manual_seed(0))
    values, vectors = torch.linalg.eigh(2.0 * x.T @ x / N)
    quotients = _quotients(_model(), x, y, vectors[:, -1] * 3.0)  # any length: normalised inside
    assert len(quotients) == GROUPS
    assert abs(float(quotients.mean()) - float(values[-1])) < 1e-10 * float(values[-1])


def test_the_standard_error_is_the_spread_of_lambda_max_over_samples() -> None:
    """Over 200 samples of 256 examples, the mean reported standard error is within 20% of the
    standard deviation of lambda_max across the samples (the latter is known to about 5% from
    200 samples; the estimate from 16 groups is biased low by about 2%)."""
    generator = torch.Generator().manual_seed(1)
    model = _model()
    lambdas, errors = [], []
    for _ in range(200):
        x, y = _sample(generator)
        values, vectors = torch.linalg.eigh(2.0 * x.T @ x / N)
        lambdas.append(float(values[-1]))
        errors.append(mean_stderr(_quotients(model, x, y, vectors[:, -1])))
    spread = statistics.stdev(lambdas)
    assert abs(statistics.fmean(lambdas) - 8.0) < 3 * spread / 200**0.5 + 0.1  # 2·4, up to the max's small bias
    assert 0.8 < statistics.fmean(errors) / spread < 1.2, (statistics.fmean(errors), spread)


def test_a_standard_error_needs_two_groups() -> None:
    with pytest.raises(ValueError):
        mean_stderr(torch.tensor([1.0]))


def test_the_probe_reports_it_from_groups_of_whole_minibatches() -> None:
    """256 examples at B = 32 are 8 minibatches: 8 groups of one each. The error is positive and
    small beside lambda_max on a sample this size (a tanh MLP on Gaussian inputs), and costs
    one product: the spectrum's count is one more than its estimates'."""
    import thermocal
    from conftest import mlp
    from thermocal.config import Config

    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(256, 6, generator=generator), torch.randint(0, 3, (256,), generator=generator)
    doc = thermocal.probe(mlp([6, 8, 3]), (x, y), Config(batch_size=32, loss="cross_entropy"))
    h = doc.measurements.hessian
    assert h.sampling_groups == 8
    assert 0 < h.lambda_max_stderr < 0.5 * h.lambda_max
    assert h.hvps == sum(rec.hvps for rec in h.details.values()) + 1
