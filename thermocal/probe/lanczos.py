"""Lanczos with full reorthogonalization, for both ends of a symmetric spectrum at once
(method.md §2, [H7]).

After j steps, V_j (orthonormal rows) and the tridiagonal T_j = V_j H V_jᵀ give Ritz pairs
(θ_i, y_i = V_jᵀ s_i); with full reorthogonalization the residual of a Ritz pair is
‖H y_i − θ_i y_i‖ = β_j·|s_i[j]|, which is what the stopping test reads. Convergence is judged
on that residual, never on the change between iterations; the residuals finally reported are
recomputed with one product each.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

Matvec = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class RitzPair:
    value: float
    vector: torch.Tensor
    residual: float
    converged: bool


@dataclass(frozen=True)
class LanczosResult:
    largest: list[RitzPair]  # descending
    smallest: list[RitzPair]  # ascending
    ritz_values: torch.Tensor  # all, ascending
    basis: torch.Tensor  # j × d, orthonormal rows
    alphas: torch.Tensor
    betas: torch.Tensor  # the j − 1 off-diagonal entries of T_j
    iterations: int
    converged: bool


def tridiagonal(alphas: torch.Tensor, betas: torch.Tensor) -> torch.Tensor:
    return torch.diag(alphas) + torch.diag(betas, 1) + torch.diag(betas, -1)


class _Basis:
    """Orthonormal rows, stored in a buffer that doubles as it fills."""

    def __init__(self, dim: int, like: torch.Tensor) -> None:
        self._rows = torch.empty(64, dim, dtype=torch.float64, device=like.device)
        self.size = 0

    def append(self, v: torch.Tensor) -> None:
        if self.size == self._rows.shape[0]:
            self._rows = torch.cat([self._rows, torch.empty_like(self._rows)])
        self._rows[self.size] = v
        self.size += 1

    @property
    def rows(self) -> torch.Tensor:
        return self._rows[: self.size]

    def orthogonalize(self, w: torch.Tensor) -> torch.Tensor:
        """Remove the span of the rows from w, twice (classical Gram–Schmidt with one repeat)."""
        for _ in range(2):
            w = w - self.rows.T @ (self.rows @ w)
        return w


def _wanted(values: torch.Tensor, top_k: int, bottom_k: int) -> tuple[list[int], list[int]]:
    n = len(values)
    top = list(range(n - 1, max(n - 1 - top_k, -1), -1))
    bottom = [i for i in range(min(bottom_k, n))]
    return top, bottom


def lanczos(
    matvec: Matvec,
    v0: torch.Tensor,
    *,
    rtol: float = 1e-3,
    floor_fraction: float = 1e-3,
    max_iter: int = 500,
    top_k: int = 1,
    bottom_k: int = 1,
    min_iter: int = 0,
) -> LanczosResult:
    """Run until the `top_k` largest and `bottom_k` smallest Ritz pairs pass
    ‖Hy − θy‖ ≤ rtol·max(|θ|, floor_fraction·max|θ|), or `max_iter` steps (at least `min_iter`).
    With nothing wanted (top_k = bottom_k = 0) it runs `max_iter` steps, for quadrature.
    """
    v = v0.to(torch.float64)
    v = v / torch.linalg.vector_norm(v)
    basis = _Basis(v.numel(), v)
    alphas: list[float] = []
    betas: list[float] = []
    beta = 0.0
    previous = torch.zeros_like(v)
    values = torch.empty(0, dtype=torch.float64)
    vectors = torch.empty(0, 0, dtype=torch.float64)
    estimates_ok = False
    for j in range(1, max_iter + 1):
        basis.append(v)
        w = matvec(v).to(torch.float64)
        alpha = float(v @ w)
        alphas.append(alpha)
        w = basis.orthogonalize(w - alpha * v - beta * previous)
        beta = float(torch.linalg.vector_norm(w))
        t = tridiagonal(torch.tensor(alphas, dtype=torch.float64), torch.tensor(betas, dtype=torch.float64))
        check = j <= 100 or j % max(1, j // 20) == 0 or j == max_iter
        scale = float(max(abs(alpha), beta, 1e-300))
        exhausted = beta <= 1e-12 * scale or j == v.numel()
        if check or exhausted:
            values, vectors = torch.linalg.eigh(t)
            floor = floor_fraction * float(values.abs().max())
            top, bottom = _wanted(values, top_k, bottom_k)
            estimates = beta * vectors[-1].abs()
            estimates_ok = all(float(estimates[i]) <= rtol * max(abs(float(values[i])), floor) for i in top + bottom)
            if (estimates_ok and (top or bottom) and j >= min_iter) or exhausted:
                break
        betas.append(beta)
        previous, v = v, w / beta
    rows = basis.rows
    floor = floor_fraction * float(values.abs().max())
    top, bottom = _wanted(values, top_k, bottom_k)

    def pair(i: int) -> RitzPair:
        y = rows.T @ vectors[:, i].to(rows.device)
        y = y / torch.linalg.vector_norm(y)
        theta = float(values[i])
        residual = float(torch.linalg.vector_norm(matvec(y).to(torch.float64) - theta * y))
        return RitzPair(theta, y, residual, residual <= rtol * max(abs(theta), floor))

    largest = [pair(i) for i in top]
    smallest = [pair(i) for i in bottom]
    return LanczosResult(
        largest=largest,
        smallest=smallest,
        ritz_values=values,
        basis=rows,
        alphas=torch.tensor(alphas, dtype=torch.float64),
        betas=torch.tensor(betas[: len(alphas) - 1], dtype=torch.float64),
        iterations=len(alphas),
        converged=all(p.converged for p in largest + smallest),
    )
