"""Power iteration on a shifted symmetric operator (method.md §2).

Iterates v ← (H − σI)v / ‖(H − σI)v‖ on the operator `op.shift(σ)`. The dominant eigenvalue of
H − σI belongs to the end of H's spectrum farthest from σ: with σ = λ_max that is λ_min, with
σ = 0 the eigenvalue of largest magnitude. Convergence is judged on the residual of the Ritz
pair, not on the change between iterations: stop when ‖Hv − λv‖ ≤ rtol · max(|λ|, floor). The
shift leaves the residual unchanged (‖(H − σI)v − (λ − σ)v‖ = ‖Hv − λv‖).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from thermocal.curvature.operator import Operator


@dataclass(frozen=True)
class EigenEstimate:
    value: float
    vector: torch.Tensor
    residual: float
    iterations: int
    converged: bool


def power_iteration(
    op: Operator,
    v0: torch.Tensor,
    *,
    shift: float = 0.0,
    rtol: float = 1e-2,
    floor: float = 0.0,
    max_iter: int = 20000,
) -> EigenEstimate:
    """Estimate the eigenvalue of `op` farthest from `shift`, one product per iteration.

    The returned value is the Rayleigh quotient of `op` (not of op − σI), and `residual` is
    ‖Hv − λv‖ for the returned unit vector v. The iterate is float64 whatever v0's dtype (the
    products are computed in the model's dtype either way): (H − σI)v rounded to float32 would
    lose about eps·|σ|/|λ| of a small far end.
    """
    shifted = op.shift(shift)
    v = v0.to(torch.float64)
    v = v / torch.linalg.vector_norm(v)
    value, residual = float("nan"), float("inf")
    for iteration in range(1, max_iter + 1):
        w = shifted.matvec(v)  # (H − σI)v
        vv = float(v @ v)
        mu = float(v @ w) / vv  # the Rayleigh quotient of H − σI
        value = mu + shift
        residual = float(torch.linalg.vector_norm(w - mu * v)) / vv**0.5
        if residual <= rtol * max(abs(value), floor):
            return EigenEstimate(value, v, residual, iteration, True)
        norm = torch.linalg.vector_norm(w)
        if norm == 0:  # v lies in the null space of H − σI: λ = σ exactly
            return EigenEstimate(value, v, residual, iteration, residual == 0)
        v = w / norm
    return EigenEstimate(value, v, residual, max_iter, False)
