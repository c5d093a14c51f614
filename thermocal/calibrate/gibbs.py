"""The Gibbs law of the excess loss over d_eff modes (method.md [G1]; seed §7).

With p(θ) ∝ exp(−L(θ)/T) and L − L* a sum of d_eff quadratic modes, the excess loss
X = L − L* has density ∝ x^(k−1)·exp(−x/T) with k = d_eff/2: X/T follows a Gamma(k, 1)
distribution. So P(L − L* < ε) = P(k, ε/T), the regularized lower incomplete gamma function,
and the temperature at which that probability is p is T = ε / Q(k, p) with Q its inverse in x.

Plain float math (series and continued fraction, as in Numerical Recipes §6.2), no scipy.
"""

from __future__ import annotations

import math

_EPS = 1e-15
_ITERATIONS = 10_000


def gamma_cdf(k: float, x: float) -> float:
    """P(k, x) = γ(k, x)/Γ(k) for shape k > 0 and x ≥ 0: P(X < x) for X ~ Gamma(k, 1)."""
    if not k > 0:
        raise ValueError(f"shape must be positive, got {k}")
    if x <= 0:
        return 0.0
    if math.isinf(x):
        return 1.0
    log_prefactor = k * math.log(x) - x - math.lgamma(k)
    if x < k + 1:  # the series converges fast
        term = total = 1.0 / k
        a = k
        for _ in range(_ITERATIONS):
            a += 1
            term *= x / a
            total += term
            if abs(term) < abs(total) * _EPS:
                break
        return min(1.0, total * math.exp(log_prefactor))
    # the continued fraction for Q = 1 − P (modified Lentz)
    b = x + 1 - k
    c = 1.0 / 1e-300
    d = 1.0 / b
    h = d
    for i in range(1, _ITERATIONS):
        an = -i * (i - k)
        b += 2
        d = an * d + b
        d = 1e-300 if abs(d) < 1e-300 else d
        c = b + an / c
        c = 1e-300 if abs(c) < 1e-300 else c
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1) < _EPS:
            break
    return max(0.0, 1.0 - math.exp(log_prefactor) * h)


def gamma_quantile(k: float, p: float) -> float:
    """The x with P(k, x) = p, for 0 < p < 1 (bisection on a bracket, then Newton polishing)."""
    if not 0 < p < 1:
        raise ValueError(f"probability must be in (0, 1), got {p}")
    low, high = 0.0, max(1.0, k)
    while gamma_cdf(k, high) < p:
        low, high = high, 2 * high
    for _ in range(200):
        mid = 0.5 * (low + high)
        if gamma_cdf(k, mid) < p:
            low = mid
        else:
            high = mid
        if high - low <= 1e-13 * high:
            break
    return 0.5 * (low + high)
