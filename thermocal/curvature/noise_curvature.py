"""The curvature along the gradient noise (method.md [N8]): ∇LᵀH∇L and tr(H·Σ_B).

With s_i = (g_i − ḡ)ᵀH(g_i − ḡ) over m of the K minibatch gradients, E[s_i] = (1 − 1/K)·tr(HΣ_B)
(ḡ holds g_i), and E[ḡᵀHḡ] = ∇LᵀH∇L + tr(HΣ_B)/K; both are corrected for that. m + 1 products.
"""

from __future__ import annotations

import math

import torch

from thermocal.curvature.memory import deviation_rows
from thermocal.curvature.operator import Operator
from thermocal.errors import NumericalError
from thermocal.noise import GradientSums
from thermocal.records import NoiseCurvature

# Deviations g_k − ḡ whose curvature gives tr(H·Σ_B), fewer when d numbers each would pass the probe memory.
NOISE_CURVATURE_MINIBATCHES = 8


def kept_deviations(dim: int, itemsize: int, minibatches: int) -> int:
    """m: the gradients kept whole for the deviations, from the memory policy (curvature/memory.py)."""
    return deviation_rows(dim, itemsize, NOISE_CURVATURE_MINIBATCHES, minibatches)


def deviations(summary: GradientSums) -> tuple[torch.Tensor, torch.Tensor]:
    """ḡ and the deviations g_k − ḡ of the first gradients the summary kept (the minibatches are in
    shuffled order), in the gradients' dtype."""
    mean = summary.mean.to(summary.first.dtype)
    return mean, summary.first - mean


def noise_curvature(op: Operator, mean: torch.Tensor, rows: torch.Tensor, minibatches: int) -> NoiseCurvature:
    """[N8] from ḡ and the deviations `rows` of K = `minibatches` gradients; products in float64."""
    counted = op.counted()
    k = minibatches

    def curvature(v: torch.Tensor) -> float:
        v = v.to(torch.float64)
        return float(v @ counted.matvec(v))

    values = [curvature(v) for v in rows]
    m = len(values)
    average = math.fsum(values) / m
    spread = math.sqrt(math.fsum((x - average) ** 2 for x in values) / (m - 1))
    trace_h_sigma = average * k / (k - 1)
    grad_h_grad = curvature(mean) - trace_h_sigma / k
    if not (math.isfinite(trace_h_sigma) and math.isfinite(grad_h_grad)):
        raise NumericalError("the curvature along the gradient noise is not finite")
    return NoiseCurvature(grad_h_grad=grad_h_grad, trace_h_sigma=trace_h_sigma,
                          trace_h_sigma_stderr=spread * k / (k - 1) / math.sqrt(m), minibatches=m,
                          hvps=counted.products)
