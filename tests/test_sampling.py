"""lambda_max's sampling standard error ([H13]) against the spread of lambda_max over samples,
on linear regression with MSE, whose Hessian 2·mean(x xᵀ) is known in closed form per sample;
and, in the probe, against dense-Hessian group quotients, whether its groups are read off the
residual product's micro-batches or take their own pass."""

from __future__ import annotations

import statistics

import pytest
import torch

from conftest import used_examples
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


def _probe_mlp(examples: int, batch_size: int, **extra: object):
    import thermocal
    from conftest import mlp
    from thermocal.config import Config

    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(examples, 6, generator=generator), torch.randint(0, 3, (examples,), generator=generator)
    settings = Config(batch_size=batch_size, loss="cross_entropy", hessian_samples=None,
                      **{"hessian_trace": True, **extra})  # with tr H: 20 Lanczos steps, and its micro-batches
    return thermocal.probe(mlp([6, 8, 3]), (x, y), settings), settings, x, y


def _dense_pass(settings, x: torch.Tensor, y: torch.Tensor, groups: int) -> float:
    """[H13]'s standard error over `groups` equal groups of the probe's shuffled examples, from
    dense float64 Hessians at the whole sample's top eigenvector."""
    from conftest import dense_hessian, mlp

    order = used_examples(len(x), settings)
    x, y = x[order], y[order]
    loss = torch.nn.functional.cross_entropy
    vector = torch.linalg.eigh(dense_hessian(mlp([6, 8, 3]), loss, x, y))[1][:, -1]
    size = len(x) // groups
    quotients = torch.stack([vector @ dense_hessian(mlp([6, 8, 3]), loss, x[i:i + size], y[i:i + size]) @ vector
                             for i in range(0, groups * size, size)])
    return mean_stderr(quotients)


def test_the_probe_reads_it_off_the_micro_batches_when_they_are_its_groups() -> None:
    """256 examples at B = 32 are 8 minibatches: the trace's micro-batches ([H14]) are then [H13]'s
    8 groups of one minibatch, and the top pair's residual product has already computed each
    group's v·H_g·v. So the error costs no product of its own (the spectrum's count is its
    estimates'), and it equals [H13]'s own pass on those groups at the dense Hessian's top
    eigenvector (to 1e-4: on this 83-parameter model Lanczos's 20 steps leave the top pair a
    residual near 1e-7 of lambda_max, and a quotient's error is second order in it)."""
    doc, settings, x, y = _probe_mlp(256, 32)
    h = doc.measurements.hessian
    assert h.sampling_groups == 8
    assert h.hvps == sum(rec.hvps for rec in h.details.values())
    assert 0 < h.lambda_max_stderr < 0.5 * h.lambda_max
    assert h.lambda_max_stderr == pytest.approx(_dense_pass(settings, x, y, 8), rel=1e-4)
    # the default measures no tr H ([H12]): Lanczos stops once [H1] passes, a residual up to 10⁻² of
    # lambda_max, and the quotients' error is second order in it: within 10⁻² still
    doc, settings, x, y = _probe_mlp(256, 32, hessian_trace=False)
    h = doc.measurements.hessian
    assert h.sampling_groups == 8 and h.trace is None and h.hvps == sum(rec.hvps for rec in h.details.values())
    assert h.lambda_max_stderr == pytest.approx(_dense_pass(settings, x, y, 8), rel=1e-2)


def test_the_probe_takes_its_own_pass_when_the_micro_batches_are_not_its_groups() -> None:
    """512 examples at B = 32 are 16 minibatches: the trace's micro-batches are 8 pairs of them,
    [H13]'s groups 16 single ones, so [H13] takes its own product over the sample (one more HVP)."""
    doc, settings, x, y = _probe_mlp(512, 32)
    h = doc.measurements.hessian
    assert h.sampling_groups == 16 and h.trace_sampling_groups == 8
    assert h.hvps == sum(rec.hvps for rec in h.details.values()) + 1
    assert h.lambda_max_stderr == pytest.approx(_dense_pass(settings, x, y, 16), rel=1e-4)


def test_micro_batches_of_one_minibatch_are_its_groups_up_to_sixteen() -> None:
    """--micro-batch B on 16 minibatches makes 16 micro-batches of one: [H13]'s 16 groups, read
    off the residual product again. At 24 minibatches its groups are 12 pairs: its own pass."""
    doc, settings, x, y = _probe_mlp(512, 32, micro_batch=32)
    h = doc.measurements.hessian
    assert h.sampling_groups == 16 and h.trace_sampling_groups == 16
    assert h.hvps == sum(rec.hvps for rec in h.details.values())
    assert h.lambda_max_stderr == pytest.approx(_dense_pass(settings, x, y, 16), rel=1e-4)
    doc, settings, x, y = _probe_mlp(768, 32, micro_batch=32)
    h = doc.measurements.hessian
    assert h.sampling_groups == 12 and h.trace_sampling_groups == 24
    assert h.hvps == sum(rec.hvps for rec in h.details.values()) + 1
