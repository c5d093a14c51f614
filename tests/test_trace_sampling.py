"""The trace's sampling standard error over examples ([H14]): the two-way estimator's algebra, the
probe's exact value where its deflation leaves no probe noise, and the spread of the trace over
samples of linear regression with MSE, whose Hessian 2·mean(x xᵀ) is known per sample."""

from __future__ import annotations

import math
import statistics

import pytest
import torch

import thermocal
from conftest import used_examples
from thermocal.config import Config
from thermocal.curvature.sampling import (TRACE_GROUPS, trace_micro_batch, trace_sampling_stderr,
                                         trace_sampling_variance)


def test_micro_batches_are_whole_minibatches_in_at_most_trace_groups() -> None:
    assert trace_micro_batch(512, 32, 1024) == 64  # 16 minibatches: 8 groups of 2
    assert trace_micro_batch(160, 32, 1024) == 32  # 5 minibatches: 5 groups of 1
    assert trace_micro_batch(500, 32, 1024) == 64  # 15 minibatches: 7 groups of 2, 1 of 1 and a remainder of 20
    assert trace_micro_batch(512, 32, 48) == 48  # never above --micro-batch
    assert trace_micro_batch(40, 32, 1024) == 1024  # one minibatch: no spread to read
    assert -(-512 // trace_micro_batch(512, 16, 1024)) == TRACE_GROUPS


def test_without_probe_noise_it_is_the_weighted_spread_of_the_group_traces() -> None:
    """Probe values that do not depend on the group (zero interaction): the estimate is the
    standard error of the weighted mean of the groups' exact parts, Σ w_g (o_g − ō)²/(G − 1)."""
    offset = torch.tensor([3.0, 5.0, 4.0, 8.0], dtype=torch.float64)
    weights = torch.tensor([2.0, 2.0, 2.0, 1.0], dtype=torch.float64)
    probes = torch.tensor([[0.5], [-1.0], [2.0]], dtype=torch.float64).expand(3, 4)
    w = weights / weights.sum()
    mean = float(offset @ w)
    expected = math.sqrt(float(((offset - mean) ** 2) @ w) / 3)
    assert trace_sampling_stderr(offset, probes, weights) == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ValueError):
        trace_sampling_stderr(offset[:1], probes[:, :1], weights[:1])


def test_it_removes_the_probe_noise_in_expectation() -> None:
    """Crossed effects with known variances: example effects b_i (sd 2), probe effects a_k (sd 5)
    and an interaction e_ki (sd 10) larger than the example effects, on 7 unequal groups of n = 140
    examples and K = 10 probes. The variance estimate (before the floor) averages to σ_b²/n = 4/140
    over 8000 draws within 10% (its standard error there is about 2.3%), while the spread of the
    group means alone, which keeps the probes' noise, is 3.5 times that."""
    generator = torch.Generator().manual_seed(0)
    sizes = torch.tensor([10, 20, 20, 20, 20, 20, 30])
    n, probes = int(sizes.sum()), 10
    group_of = torch.repeat_interleave(torch.arange(len(sizes)), sizes)
    w = sizes.double() / n
    estimates, naive = [], []
    for _ in range(8000):
        b = 2.0 * torch.randn(n, generator=generator, dtype=torch.float64)
        a = 5.0 * torch.randn(probes, 1, generator=generator, dtype=torch.float64)
        e = 10.0 * torch.randn(probes, n, generator=generator, dtype=torch.float64)
        x = 7.0 + a + b + e  # per probe and example
        forms = torch.zeros(probes, len(sizes), dtype=torch.float64).index_add_(1, group_of, x) / sizes
        estimates.append(trace_sampling_variance(torch.zeros(len(sizes), dtype=torch.float64), forms, sizes))
        means = forms.mean(dim=0)
        naive.append(float(((means - means @ w) ** 2) @ w) / (len(sizes) - 1))
    truth = 4.0 / n
    assert statistics.fmean(estimates) == pytest.approx(truth, rel=0.10)
    assert statistics.fmean(naive) > 3 * truth


def _regression(n: int, scales: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(n, len(scales), generator=generator, dtype=torch.float64) * scales.sqrt()
    return x, torch.randn(n, 1, generator=generator, dtype=torch.float64)


def test_where_the_basis_spans_the_space_it_is_the_exact_spread_of_the_group_traces() -> None:
    """d = 5: Lanczos's basis spans every direction, so the deflated probes are zero and each
    group's part is its exact trace 2·mean‖x_i‖² over the group: the estimate must equal the
    weighted spread of those (the probe's groups: micro-batches of whole minibatches)."""
    scales = torch.tensor([4.0, 1.0, 0.5, 0.25, 0.1], dtype=torch.float64)
    x, y = _regression(480, scales, torch.Generator().manual_seed(2))
    settings = Config(batch_size=16, hessian_samples=None, hessian_trace=True)
    doc = thermocal.probe(torch.nn.Linear(5, 1, bias=False).double(), (x, y), settings)
    h = doc.measurements.hessian
    shuffled = x[used_examples(480, settings)]
    size = trace_micro_batch(480, 16, settings.micro_batch)
    traces = torch.stack([2.0 * (g ** 2).sum(dim=1).mean() for g in torch.split(shuffled, size)])
    weights = torch.tensor([len(g) for g in torch.split(shuffled, size)], dtype=torch.float64) / 480
    mean = float(traces @ weights)
    expected = math.sqrt(float(((traces - mean) ** 2) @ weights) / (len(traces) - 1))
    assert h.trace_sampling_groups == len(traces) == math.ceil(30 / math.ceil(30 / TRACE_GROUPS))
    assert h.trace == pytest.approx(mean, rel=1e-9)
    assert h.trace_sampling_stderr == pytest.approx(expected, rel=1e-6)


def test_the_standard_error_is_the_spread_of_the_trace_over_samples() -> None:
    """d = 40, beyond what 20 Lanczos rows span, so the probes carry noise of their own: over 150
    samples of 256 examples the root mean square of the reported sampling error is within 20% of
    the trace's spread over the samples, known in closed form: tr H = 2·mean‖x‖², whose variance
    is 8·Σ s_j²/n for x ~ N(0, diag s). (From 8 groups each estimate has about 7 degrees of
    freedom; over 150 samples their mean square is known to about 10%.)"""
    scales = torch.linspace(0.2, 2.0, 40, dtype=torch.float64)
    truth = math.sqrt(8.0 * float((scales ** 2).sum()) / 256)
    generator = torch.Generator().manual_seed(3)
    squares = []
    for seed in range(150):
        x, y = _regression(256, scales, generator)
        settings = Config(batch_size=32, hessian_samples=None, seed=seed, hessian_trace=True)
        h = thermocal.probe(torch.nn.Linear(40, 1, bias=False).double(), (x, y), settings).measurements.hessian
        assert h.trace_sampling_groups == 8
        squares.append(h.trace_sampling_stderr ** 2)
    assert 0.8 < math.sqrt(statistics.fmean(squares)) / truth < 1.2, (math.sqrt(statistics.fmean(squares)), truth)


def test_not_measured_with_one_minibatch_or_on_pyhessian() -> None:
    scales = torch.tensor([4.0, 1.0, 0.5], dtype=torch.float64)
    x, y = _regression(64, scales, torch.Generator().manual_seed(4))
    for settings in (Config(batch_size=16, hessian_samples=16, hessian_trace=True), Config(batch_size=16, engine="pyhessian")):
        h = thermocal.probe(torch.nn.Linear(3, 1, bias=False).double(), (x, y), settings).measurements.hessian
        assert h.trace_sampling_stderr is None and h.trace_sampling_groups is None
