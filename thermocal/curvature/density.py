"""Spectral density by stochastic Lanczos quadrature (method.md §2, [H9]).

For each Rademacher start vector, m Lanczos steps give Ritz values θ_i and weights
w_i = (first component of the i-th eigenvector of T_m)²; the spectral measure
(1/d)·Σ_j δ(λ − λ_j) is approximated by the probe average of Σ_i w_i δ(λ − θ_i), and drawn
smoothed by a Gaussian of width sigma on an even grid. The density integrates to 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
import torch

from thermocal.curvature.hutchinson import rademacher
from thermocal.curvature.lanczos import lanczos, tridiagonal
from thermocal.curvature.operator import Operator


@dataclass(frozen=True)
class Density:
    grid: list[float]
    density: list[float]
    nodes: list[float]
    weights: list[float]
    sigma: float
    probes: int
    steps: int


def slq_density(
    op: Operator,
    *,
    probes: int,
    steps: int,
    generator: torch.Generator,
    grid_points: int = 200,
    sigma_fraction: float = 0.01,
) -> Density:
    """The smoothed spectral density of `op` from `probes` Rademacher starts of `steps` Lanczos steps."""
    nodes, weights = [], []
    dim = op.dim
    for _ in range(probes):
        start = rademacher(1, dim, generator, op.device)[0]
        run = lanczos(op, start, rtol=0.0, max_iter=min(steps, dim), top_k=0, bottom_k=0)
        values, vectors = torch.linalg.eigh(tridiagonal(run.alphas, run.betas))
        nodes.extend(values.tolist())
        weights.extend((vectors[0] ** 2 / probes).tolist())
    low, high = min(nodes), max(nodes)
    sigma = sigma_fraction * max(high - low, 1e-12)
    grid = torch.linspace(low - 3 * sigma, high + 3 * sigma, grid_points, dtype=torch.float64)
    theta = torch.tensor(nodes, dtype=torch.float64)
    w = torch.tensor(weights, dtype=torch.float64)
    kernel = torch.exp(-0.5 * ((grid[:, None] - theta[None, :]) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))
    return Density(
        grid=grid.tolist(), density=(kernel @ w).tolist(), nodes=nodes, weights=weights,
        sigma=sigma, probes=probes, steps=steps,
    )
