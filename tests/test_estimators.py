"""Power iteration, Hutchinson and gradient-noise statistics on operators and data with known answers."""

from __future__ import annotations

import math

import pytest
import torch

from thermocal.curvature.hutchinson import hutchinson
from thermocal.curvature.operator import Dense
from thermocal.curvature.power import power_iteration
from thermocal.noise import GradientSums, noise_statistics
from conftest import symmetric_with_spectrum




@pytest.mark.parametrize("shift_from_top", [False, True])
def test_power_iteration_finds_both_ends_of_an_indefinite_spectrum(shift_from_top: bool) -> None:
    eigenvalues = torch.cat([torch.tensor([-0.3]), torch.linspace(-0.2, 2.0, 48), torch.tensor([3.0])]).double()
    h = symmetric_with_spectrum(eigenvalues)
    v0 = torch.randn(50, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    shift = 3.0 if shift_from_top else 0.0
    est = power_iteration(Dense(h), v0, shift=shift, rtol=1e-6, max_iter=20000)
    expected = -0.3 if shift_from_top else 3.0
    assert est.converged
    assert est.residual <= 1e-6 * abs(est.value)
    # For a symmetric matrix some eigenvalue lies within the residual of the Ritz value.
    assert abs(est.value - expected) <= est.residual
    assert torch.linalg.vector_norm(h @ est.vector - est.value * est.vector) == pytest.approx(est.residual, rel=1e-6)


def test_power_iteration_on_a_diagonal_operator_with_negative_dominant() -> None:
    d = torch.tensor([-5.0, 1.0, 2.0, 3.0], dtype=torch.float64)
    est = power_iteration(Dense(torch.diag(d)), torch.ones(4, dtype=torch.float64), rtol=1e-10, max_iter=1000)
    assert est.converged and est.value == pytest.approx(-5.0, rel=1e-9)


def test_power_iteration_reports_an_unmet_tolerance() -> None:
    h = symmetric_with_spectrum(torch.linspace(1.0, 2.0, 30).double())
    est = power_iteration(Dense(h), torch.ones(30, dtype=torch.float64), rtol=1e-12, max_iter=5)
    assert not est.converged
    assert est.iterations == 5
    assert est.residual > 1e-12 * est.value


def test_hutchinson_converges_to_the_trace_within_its_standard_error() -> None:
    h = symmetric_with_spectrum(torch.linspace(-1.0, 4.0, 200).double(), seed=3)
    generator = torch.Generator().manual_seed(0)

    def probes(n: int) -> list[float]:
        z = torch.randint(0, 2, (n, 200), generator=generator).double() * 2 - 1
        return torch.einsum("ni,ij,nj->n", z, h, z).tolist()

    estimates = [hutchinson(probes, rtol=rtol, max_probes=100000) for rtol in (0.05, 0.01)]
    exact = float(h.trace())
    for est in estimates:
        assert est.converged and est.stderr <= est.value * (0.05 if est is estimates[0] else 0.01)
        assert abs(est.value - exact) <= 4 * est.stderr  # a 4-sigma band: fails by chance < 1e-4
    assert estimates[1].probes > estimates[0].probes  # more accuracy costs more probes


def test_a_trace_near_zero_stops_on_the_spectral_scale() -> None:
    """Eigenvalues ±1..±4 in pairs: trace 0, so rtol·|trace| is unreachable and plain relative
    stopping spends the whole budget; with scale = lambda_max = 4 it stops once the standard
    error is rtol·4, and the exact trace 0 lies within 4 standard errors."""
    values = torch.linspace(1.0, 4.0, 20).double()
    h = symmetric_with_spectrum(torch.cat([values, -values]), seed=5)
    generator = torch.Generator().manual_seed(0)

    def probes(n: int) -> list[float]:
        z = torch.randint(0, 2, (n, 40), generator=generator).double() * 2 - 1
        return torch.einsum("ni,ij,nj->n", z, h, z).tolist()

    relative = hutchinson(probes, rtol=0.05, max_probes=400)
    assert (relative.probes, relative.converged) == (400, False)
    scaled = hutchinson(probes, rtol=0.05, max_probes=100000, chunk=500, scale=4.0)
    assert scaled.converged and scaled.stderr <= 0.05 * 4.0 and scaled.probes < 100000
    assert abs(scaled.value - float(h.trace())) <= 4 * scaled.stderr


def test_hutchinson_stops_at_the_budget() -> None:
    est = hutchinson(lambda n: [1.0, 3.0] * (n // 2) + [1.0] * (n % 2), rtol=1e-9, max_probes=30)
    assert (est.probes, est.converged) == (30, False)


def direct_noise(grads: torch.Tensor, batch_size: int) -> dict[str, float]:
    """METHOD.md §1 written out literally on the gradient vectors."""
    k = grads.shape[0]
    norms = grads.norm(dim=1)
    mean = grads.mean(0)
    var = ((grads - mean) ** 2).sum() / (k - 1)
    full = max(float(mean @ mean) - float(var) / k, 0.0)
    return {
        "grad_norm_mean": float(norms.mean()), "grad_sq_mean": float((norms**2).mean()),
        "grad_var": float(var), "full_grad_sq": full, "noise_scale": batch_size * float(var) / full,
    }


def test_noise_statistics_equal_the_direct_formulas() -> None:
    generator = torch.Generator().manual_seed(0)
    grads = torch.randn(40, 300, generator=generator, dtype=torch.float64) * 0.3 + torch.linspace(0, 1, 300).double()
    rec = noise_statistics(GradientSums.of(grads), batch_size=16, samples_dropped=3, resamples=2000, generator=generator)
    for name, value in direct_noise(grads, 16).items():
        assert getattr(rec, name) == pytest.approx(value, rel=1e-12), name
    assert (rec.num_batches, rec.samples_used, rec.samples_dropped) == (40, 640, 3)
    # The bootstrap error of a mean is close to the plug-in sd/√K (2000 resamples: ~3% noise).
    norms = grads.norm(dim=1)
    assert rec.grad_norm_mean_stderr == pytest.approx(float(norms.std(unbiased=False)) / math.sqrt(40), rel=0.1)


def test_noise_scale_is_absent_when_the_mean_gradient_is_all_noise() -> None:
    generator = torch.Generator().manual_seed(1)
    grads = torch.randn(8, 50, generator=generator, dtype=torch.float64)
    grads = grads - grads.mean(0)  # ḡ = 0 exactly: no signal
    rec = noise_statistics(GradientSums.of(grads), batch_size=4, samples_dropped=0, resamples=50, generator=generator)
    assert rec.full_grad_sq == 0.0 and rec.noise_scale is None and rec.noise_scale_stderr is None


def test_the_operator_algebra_agrees_with_the_dense_matrices_and_counts_every_product() -> None:
    a = symmetric_with_spectrum(torch.linspace(-1.0, 3.0, 12).double(), seed=1)
    b = symmetric_with_spectrum(torch.linspace(0.5, 2.0, 12).double(), seed=2)
    rows = torch.randn(3, 12, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    index = torch.tensor([0, 3, 4, 9])
    seen: list[int] = []
    op = Dense(a).counted(seen.append)
    cases = {
        "shift": (op.shift(0.7), a - 0.7 * torch.eye(12, dtype=torch.float64)),
        "scale": (2.5 * op, 2.5 * a),
        "sum": (op + Dense(b), a + b),
        "difference": (op - Dense(b), a - b),
        "block": (op.restrict(index), a[index][:, index]),
        "shifted block": (op.restrict(index).shift(-1.5), a[index][:, index] + 1.5 * torch.eye(4, dtype=torch.float64)),
    }
    for name, (composite, matrix) in cases.items():
        x = rows[:, : composite.dim]
        torch.testing.assert_close(composite.matmat(x), x @ matrix, rtol=1e-12, atol=1e-12, msg=name)
        torch.testing.assert_close(composite.matvec(x[0]), matrix @ x[0], rtol=1e-12, atol=1e-12, msg=name)
        assert composite.matvec(x[0].float()).dtype == torch.float32  # products come back in the vectors' dtype
    # every composite went through the counted A: 3 rows + 1 vector + 1 float32 vector each
    assert op.products == sum(seen) == 5 * len(cases)
    with pytest.raises(ValueError, match="dimensions 12 and 4"):
        op + op.restrict(index)


def test_the_shifted_power_iteration_pays_one_product_per_iteration() -> None:
    eigenvalues = torch.cat([torch.tensor([-0.3]), torch.linspace(0.0, 2.0, 28), torch.tensor([3.0])]).double()
    op = Dense(symmetric_with_spectrum(eigenvalues)).counted()
    est = power_iteration(op, torch.ones(30, dtype=torch.float64), shift=3.0, rtol=1e-8, max_iter=5000)
    assert est.converged and est.value == pytest.approx(float(eigenvalues[0]), abs=est.residual)
    assert op.products == est.iterations
