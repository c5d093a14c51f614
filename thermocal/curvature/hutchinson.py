"""Hutchinson's trace estimator (method.md §2, [H3], [H8]).

tr H = E[zᵀHz] for Rademacher z. Deflated (the remainder term of Hutch++, curvature/hutchpp.py):
with an orthonormal sketch Q (rows), tr H = tr(QHQᵀ) + E[(Pz)ᵀH(Pz)], P = I − QᵀQ; the first
term is exact and the second has far less variance when Q spans the large eigendirections.

The estimate is offset + the mean of the probe values, its standard error their sample
standard deviation over √n. Probing stops once the standard error is at most
rtol·max(|estimate|, scale) (after MIN_TRACE_PROBES probes) or the probe budget is spent. `scale`
is the spectral scale: |lambda_max|, or after Lanczos the larger of that and its quadrature
estimate of tr|H| = Σ|λ_i| (method.md [H3]). A trace near zero (at initialisation positive and
negative curvature cancel) cannot be had to a relative error; it is resolved to rtol of the
total curvature magnitude instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from thermocal.curvature.operator import Operator
from thermocal.records import MIN_TRACE_PROBES


@dataclass(frozen=True)
class TraceEstimate:
    value: float
    stderr: float
    probes: int
    converged: bool
    samples: tuple[float, ...] = ()


def summarize(samples: Sequence[float], rtol: float, offset: float = 0.0, scale: float = 0.0) -> TraceEstimate:
    """offset + mean, standard error, and whether the target rtol·max(|value|, scale) is met."""
    n = len(samples)
    mean = math.fsum(samples) / n
    value = offset + mean
    if n < 2:
        return TraceEstimate(value, math.inf, n, False, tuple(samples))
    variance = math.fsum((s - mean) ** 2 for s in samples) / (n - 1)
    stderr = math.sqrt(variance / n)
    return TraceEstimate(value, stderr, n, n >= MIN_TRACE_PROBES and stderr <= rtol * max(abs(value), scale), tuple(samples))


def hutchinson(
    draw_probes: Callable[[int], Sequence[float]],
    *,
    rtol: float,
    max_probes: int,
    chunk: int = MIN_TRACE_PROBES,
    offset: float = 0.0,
    scale: float = 0.0,
) -> TraceEstimate:
    """Run `draw_probes(n)` (which returns n probe values) until the target or the budget is met."""
    samples: list[float] = []
    while len(samples) < max_probes:
        samples.extend(draw_probes(min(chunk, max_probes - len(samples))))
        estimate = summarize(samples, rtol, offset, scale)
        if estimate.converged:
            return estimate
    return summarize(samples, rtol, offset, scale)


def rademacher(count: int, dim: int, generator: torch.Generator, device: torch.device,
               dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """count × dim matrix of ±1 in `dtype`, drawn on the CPU from `generator` (device-independent;
    the same draws whatever the dtype)."""
    return torch.randint(0, 2, (count, dim), generator=generator, dtype=dtype).mul_(2).sub_(1).to(device)


def deflated_probes(op: Operator, sketch: torch.Tensor | None, generator: torch.Generator,
                    max_rows: int | None = None) -> Callable[[int], list[float]]:
    """A `draw_probes` for Hutchinson on P H P, P = I − QᵀQ (plain Hutchinson when sketch is None).
    Probes live on the operator's device in the sketch's dtype (else float64), and so do their
    products: no float64 copy of a probe or a product is made. The probe values zᵀHz are summed
    in float64. `max_rows` bounds how many probe vectors exist at once (memory): a request for
    more is served in pieces, drawn in turn from the same generator."""
    dim, device = op.dim, op.device
    dtype = sketch.dtype if sketch is not None else torch.float64

    def draw_some(count: int) -> list[float]:
        z = rademacher(count, dim, generator, device, dtype)
        if sketch is not None:
            z.sub_((z @ sketch.T) @ sketch)
        return op.matmat(z).mul_(z).sum(dim=1, dtype=torch.float64).tolist()

    def draw(count: int) -> list[float]:
        if max_rows is None or count <= max_rows:
            return draw_some(count)
        values: list[float] = []
        while len(values) < count:
            values.extend(draw_some(min(max_rows, count - len(values))))
        return values

    return draw
