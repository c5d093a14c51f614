"""Where the Gibbs law of [G1] is exact and where it approximates (method.md [G2]): SGD's stationary
excess loss on a quadratic is a weighted sum of χ²₁ variables whose weights are the eigenvalues of
M = ½·H^(1/2)·C·H^(1/2); a Gamma with the same mean and variance has shape (tr M)²/(2·tr M²). With
noise aligned to H (Σ = s·H, the Fisher near a minimum) that is half of tr(H)²/tr(H²), at least
the Gibbs count tr(H)/λ_max: [G1]'s probability at the upper quantiles that set Tf is then a lower
bound (the schedule cools further than needed, never less)."""

from __future__ import annotations

import functools

import pytest
import torch

from thermocal.calibrate.gibbs import gamma_cdf

LAM = torch.tensor([1.0, 0.7, 0.5, 0.3, 0.2, 0.1, 0.07, 0.05], dtype=torch.float64)
ETA = 0.03  # the slowest mode relaxes by exp(−2·ETA·0.05·1500) ≈ 1%: stationary


@functools.cache
def stationary_excess(name: str, chains: int = 8000, steps: int = 1500) -> torch.Tensor:
    """L − L* over `chains` independent SGD runs on ½Σλ_i x_i² with gradient noise N(0, diag(σ)), σ of `name`."""
    sigma, eta = NOISE[name], ETA
    generator = torch.Generator().manual_seed(11)
    x = torch.zeros(chains, len(LAM), dtype=torch.float64)
    for _ in range(steps):
        x = x - eta * (LAM * x + sigma.sqrt() * torch.randn(chains, len(LAM), generator=generator, dtype=torch.float64))
    return (0.5 * LAM * x.square()).sum(dim=1)


NOISE = {"aligned": LAM.clone(), "isotropic": torch.full_like(LAM, 0.4)}  # Σ = s·H, and Σ = σ²·I


def moment_modes(sigma: torch.Tensor) -> float:
    """2·shape of the moment-matched Gamma: (tr M)²/tr(M²), M's eigenvalues η·Σ_ii/4 to first order."""
    return float(sigma.sum()) ** 2 / float(sigma.square().sum())


@pytest.mark.parametrize("name", ["aligned", "isotropic"])
def test_the_moment_matched_gamma_gives_the_excess_loss_distribution(name: str) -> None:
    sigma = NOISE[name]
    excess = stationary_excess(name)
    floor = ETA * float(sigma.sum()) / 4.0  # [C9]
    assert float(excess.mean()) == pytest.approx(floor, rel=0.03)
    k = moment_modes(sigma) / 2.0
    for multiple in (1.0, 1.5, 2.0):  # the upper quantiles, where Tf is set (p = 0.9 by default)
        measured = float((excess < multiple * floor).double().mean())  # binomial sd ≤ 0.0056 at 8,000 chains
        assert measured == pytest.approx(gamma_cdf(k, multiple * floor / (floor / k)), abs=0.02)


def test_with_aligned_noise_the_gibbs_count_is_conservative_where_tf_is_set() -> None:
    excess = stationary_excess("aligned")
    floor = ETA * float(LAM.sum()) / 4.0
    gibbs = float(LAM.sum() / LAM.max())  # d_eff = tr(H)/λ_max
    assert gibbs <= moment_modes(LAM)  # tr(H)/λ_max ≤ tr(H)²/tr(H²), always
    for multiple in (1.5, 2.0, 2.5):
        measured = float((excess < multiple * floor).double().mean())
        assert gamma_cdf(gibbs / 2.0, multiple * floor / (floor / (gibbs / 2.0))) < measured
