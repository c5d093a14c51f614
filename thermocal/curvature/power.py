"""Power iteration on a shifted symmetric operator (method.md §2).

Iterates v ← (H − σI)v / ‖(H − σI)v‖. The dominant eigenvalue of H − σI belongs to the end of
H's spectrum farthest from σ: with σ = λ_max that is λ_min, with σ = 0 the eigenvalue of
largest magnitude. Convergence is judged on the residual of the Ritz pair, not on the change
between iterations: stop when ‖Hv − λv‖ ≤ rtol · max(|λ|, floor).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

Matvec = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class EigenEstimate:
    value: float
    vector: torch.Tensor
    residual: float
    iterations: int
    converged: bool


def rayleigh_pair(matvec: Matvec, v: torch.Tensor) -> tuple[float, float, torch.Tensor]:
    """Return (θ = vᵀHv / vᵀv, ‖Hv − θv‖ / ‖v‖, Hv) in float64 reductions."""
    hv = matvec(v)
    v64, hv64 = v.to(torch.float64), hv.to(torch.float64)
    vv = float(v64 @ v64)
    theta = float(v64 @ hv64) / vv
    residual = float(torch.linalg.vector_norm(hv64 - theta * v64)) / vv**0.5
    return theta, residual, hv


def power_iteration(
    matvec: Matvec,
    v0: torch.Tensor,
    *,
    shift: float = 0.0,
    rtol: float = 1e-2,
    floor: float = 0.0,
    max_iter: int = 20000,
    on_iteration: Callable[[], None] = lambda: None,
) -> EigenEstimate:
    """Estimate the eigenvalue of H farthest from `shift`, one matvec per iteration.

    The returned value is the Rayleigh quotient of H (not of H − σI), and `residual` is
    ‖Hv − λv‖ for the returned unit vector v.
    """
    v = v0 / torch.linalg.vector_norm(v0.to(torch.float64)).to(v0.dtype)
    value, residual = float("nan"), float("inf")
    for iteration in range(1, max_iter + 1):
        value, residual, hv = rayleigh_pair(matvec, v)
        on_iteration()
        if residual <= rtol * max(abs(value), floor):
            return EigenEstimate(value, v, residual, iteration, True)
        w = hv - shift * v
        norm = torch.linalg.vector_norm(w.to(torch.float64))
        if norm == 0:  # v lies in the null space of H − σI: λ = σ exactly
            return EigenEstimate(value, v, residual, iteration, residual == 0)
        v = w / norm.to(w.dtype)
    return EigenEstimate(value, v, residual, max_iter, False)
