"""What both engines share (method.md §2): the estimate records, the far end of the spectrum by
shifted power iteration ([H4]), and the finite-value check."""

from __future__ import annotations

import math

import torch

from thermocal.config import Config
from thermocal.curvature.hutchinson import TraceEstimate
from thermocal.curvature.operator import Operator
from thermocal.curvature.power import EigenEstimate, power_iteration
from thermocal.errors import NumericalError
from thermocal.records import EIG_FLOOR_FRACTION, EstimateRecord, Estimator

# The shifted power iteration's shift: this fraction of the way from the known end of the
# spectrum towards (an upper confidence bound on) the mean eigenvalue tr(H)/d ([H4]).
SHIFT_FRACTION = 0.45
TRACE_BOUND_ERRORS = 3.0


def record(estimator: Estimator, method: str, hvps: int, iterations: int, residual: float | None, tolerance: float,
           converged: bool, restarts: int | None = None) -> EstimateRecord:
    return EstimateRecord(method=method, estimator=estimator, restarts=restarts, hvps=hvps, iterations=iterations,
                          residual=residual, tolerance=tolerance, converged=converged)


def trace_record(estimator: Estimator, method: str, hvps: int, estimate: TraceEstimate, rtol: float,
                 scale: float) -> EstimateRecord:
    return EstimateRecord(method=method, estimator=estimator, hvps=hvps, iterations=estimate.probes, residual=None,
                          tolerance=rtol, converged=estimate.converged, scale=scale)


def opposite_shift(extreme: float, trace_bound: float) -> float:
    """The shift σ for the power iteration that finds the other end of the spectrum ([H4]).

    The mean eigenvalue tr(H)/d lies between λ_min and λ_max, so with λ_max known the
    midpoint (λ_max + λ_min)/2 is at most (λ_max + m)/2 for any m ≥ tr(H)/d (and likewise
    mirrored when λ_min is the known end). σ = extreme + SHIFT_FRACTION·(m − extreme) sits
    just on the far side of that midpoint, so the wanted end dominates H − σI, and it
    converges almost twice as fast as σ = extreme.
    """
    return extreme + SHIFT_FRACTION * (trace_bound - extreme)


def other_end(op: Operator, dominant: float, trace: TraceEstimate, s: Config, generator: torch.Generator) -> EigenEstimate:
    """Power iteration on H − σI for the end of the spectrum opposite `dominant` ([H4]); σ = the
    dominant end itself when the shift past the midpoint found the same end again."""
    side = 1.0 if dominant >= 0 else -1.0  # +1: lambda_max is known, look for lambda_min
    mean_bound = (trace.value + side * TRACE_BOUND_ERRORS * trace.stderr) / op.dim
    v0 = torch.randn(op.dim, generator=generator, dtype=torch.float64).to(op.device)
    floor = EIG_FLOOR_FRACTION * abs(dominant)
    for shift in (opposite_shift(dominant, mean_bound), dominant):
        other = power_iteration(op, v0, shift=shift, rtol=s.eigen_rtol, floor=floor, max_iter=s.iterations)
        if side * (shift - other.value) > 0:  # found the far end, as intended
            break
    return other


def both_ends(op: Operator, dominant: tuple[float, EstimateRecord], trace: TraceEstimate, s: Config,
              generator: torch.Generator) -> tuple[tuple[float, EstimateRecord], tuple[float, EstimateRecord]]:
    """((lambda_max, record), (lambda_min, record)) from the end the first power iteration found
    and the other end by shifted power iteration on `op`."""
    counted = op.counted()
    found = other_end(counted, dominant[0], trace, s, generator)
    other = (found.value, record("shifted_power", "power iteration on H - sigma*I", counted.products, found.iterations,
                                 found.residual, s.eigen_rtol, found.converged))
    return (dominant, other) if dominant[0] >= other[0] else (other, dominant)


def check_finite(**values: float) -> None:
    for name, value in values.items():
        if not math.isfinite(value):
            raise NumericalError(f"the Hessian's {name} came out as {value}")
