"""Hutchinson's trace estimator (method.md §2): tr H = E[zᵀHz] for Rademacher z.

The estimate is the mean of the probe values and its standard error their sample standard
deviation over √n. Probing stops once the standard error is at most rtol·|mean| (after a
minimum number of probes) or the probe budget is spent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

MIN_PROBES = 10


@dataclass(frozen=True)
class TraceEstimate:
    value: float
    stderr: float
    probes: int
    converged: bool


def summarize(samples: Sequence[float], rtol: float) -> TraceEstimate:
    """Mean, standard error, and whether the rtol target is met, for probe values zᵀHz."""
    n = len(samples)
    mean = math.fsum(samples) / n
    if n < 2:
        return TraceEstimate(mean, math.inf, n, False)
    variance = math.fsum((s - mean) ** 2 for s in samples) / (n - 1)
    stderr = math.sqrt(variance / n)
    return TraceEstimate(mean, stderr, n, n >= MIN_PROBES and stderr <= rtol * abs(mean))


def hutchinson(
    draw_probes: Callable[[int], Sequence[float]],
    *,
    rtol: float,
    max_probes: int,
    chunk: int = MIN_PROBES,
) -> TraceEstimate:
    """Run `draw_probes(n)` (which returns n values zᵀHz) until the target or the budget is met."""
    samples: list[float] = []
    while len(samples) < max_probes:
        samples.extend(draw_probes(min(chunk, max_probes - len(samples))))
        estimate = summarize(samples, rtol)
        if estimate.converged:
            return estimate
    return summarize(samples, rtol)
