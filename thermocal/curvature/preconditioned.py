"""Adam's metric at this θ (method.md [O3]): its preconditioner and the curvature and noise in it.

At a fixed θ, Adam's second moment v ← β2·v + (1 − β2)·g² settles at v = E[g_B²] per coordinate:
the mean square of the minibatch gradients at the training batch size, which the probe has
already drawn (K of them, summed as they came: noise.GradientSums). With P = √v + eps frozen, Adam's step is EMA-momentum SGD on
φ = P^(1/2)·θ, whose curvature is H̃ = P^(-1/2)·H·P^(-1/2) (the eigenvalues of P⁻¹H) and whose
minibatch noise is P^(-1/2)·Σ_B·P^(-1/2), of trace tr(P⁻¹Σ_B). H̃ is the Hessian operator between
two diagonal scalings (`Operator.congruent`): Lanczos gives both ends of its spectrum (at
initialisation its largest magnitude can be negative, so the top one is the largest algebraic
eigenvalue, never the largest in magnitude) and Hutch++ with that basis its trace, each to the
tolerances of [H1] and [H3].

P's own sampling error (K minibatches) is not propagated: the standard errors here hold P fixed.
"""

from __future__ import annotations

import torch

from thermocal.config import Config
from thermocal.curvature import memory
from thermocal.curvature.hutchinson import deflated_probes, hutchinson
from thermocal.curvature.lanczos import lanczos
from thermocal.curvature.native import LANCZOS_MIN_ITER, TRACE_CHUNK
from thermocal.curvature.operator import Operator
from thermocal.curvature.spectrum import check_finite, record, trace_record
from thermocal.noise import GradientSums
from thermocal.records import EIG_FLOOR_FRACTION, MIN_TRACE_PROBES, PreconditionedCurvature

# The products the probe budget plans for Adam's metric ([S9]): Lanczos's fewest steps, its two
# residual checks, and the trace's fewest probes.
PRECONDITIONED_PRODUCTS = LANCZOS_MIN_ITER + 2 + MIN_TRACE_PROBES


def preconditioner(summary: GradientSums, eps: float) -> torch.Tensor:
    """P = √v + eps (Adam's denominator at its second moment's fixed point), v = Σ_k g_k²/K, float64."""
    if summary.second_moment is None:
        raise ValueError("the gradients' summary kept no second moment (gathered_gradients(second_moment=True))")
    return (summary.second_moment / summary.k).sqrt_().add_(eps)


def noise_in_metric(summary: GradientSums, inverse: torch.Tensor) -> dict[str, float]:
    """tr(P⁻¹Σ_B) with its standard error, ∇LᵀP⁻¹∇L and the mean of g_kᵀP⁻¹g_k, for `inverse` = P⁻¹
    (float64), from the summary ([N9]). tr(P⁻¹Σ_B) = (Σ_i P⁻¹_i·Σ_k g_ki² − K·ḡᵀP⁻¹ḡ)/(K − 1),
    unbiased over the K minibatches as grad_var [N3]; its standard error is the spread over the G
    groups of t_g = n_g·(ĝ_g − ḡ)ᵀP⁻¹(ĝ_g − ḡ) (ĝ_g a group's mean gradient, n_g its minibatches),
    sd(t_g)·√G/(G − 1): with G = K, t_k = (g_k − ḡ)ᵀP⁻¹(g_k − ḡ) and the error is that of the
    minibatches themselves; with G < K, that of an estimator with fewer degrees of freedom than
    the point value's, so it does not understate. ∇LᵀP⁻¹∇L is unbiased as full_grad_sq [N4]."""
    k, g = summary.k, summary.sums.shape[0]
    mean = summary.mean
    own = float(summary.second_moment @ inverse)  # Σ_k g_kᵀP⁻¹g_k
    mean_sq = float(mean.square() @ inverse)
    grad_var = (own - k * mean_sq) / (k - 1)
    sizes = summary.counts.to(mean.device)
    group_means = summary.sums / sizes.unsqueeze(1)
    spread = sizes * ((group_means - mean).square() @ inverse)
    stderr = float(spread.std()) * g ** 0.5 / (g - 1)
    return {"grad_var": grad_var, "grad_var_stderr": stderr, "full_grad_sq": max(mean_sq - grad_var / k, 0.0),
            "grad_sq_mean": own / k}


def preconditioned_curvature(operator: Operator, summary: GradientSums, s: Config, generator: torch.Generator,
                             dtype: torch.dtype) -> PreconditionedCurvature:
    """Adam's metric from the Hessian `operator` (counted by the caller) and the K minibatch
    gradients' summary (with their second moment), Lanczos and the trace's probes in `dtype`."""
    p = preconditioner(summary, s.adam_eps)
    inverse = p.reciprocal()
    op = operator.congruent(inverse.sqrt().to(operator.device)).counted()
    v0 = torch.randn(op.dim, generator=generator, dtype=torch.float64).to(dtype).to(op.device)
    run = lanczos(op, v0, rtol=s.eigen_rtol, floor_fraction=EIG_FLOOR_FRACTION, max_iter=s.iterations, top_k=1,
                  bottom_k=1, min_iter=min(LANCZOS_MIN_ITER, op.dim), dtype=dtype,
                  max_basis=memory.basis_rows(op.dim, dtype, int(s.lanczos_memory * memory.GIB), s.iterations))
    lanczos_products = op.products
    method = "Lanczos on P^(-1/2)·H·P^(-1/2), both ends, Ritz residual test"
    top, bottom = run.largest[0], run.smallest[0]
    top_rec = record("lanczos", method, lanczos_products, run.iterations, top.residual, s.eigen_rtol, top.converged,
                     run.restarts)
    bottom_rec = record("lanczos", method, lanczos_products, run.iterations, bottom.residual, s.eigen_rtol,
                        bottom.converged, run.restarts)
    scale = max(abs(top.value), abs(bottom.value), run.abs_trace)
    trace_op = op.counted()
    estimate = hutchinson(deflated_probes(trace_op, run.basis, generator, memory.probe_rows(op.dim, False)),
                          rtol=s.trace_rtol, max_probes=s.max_probes, chunk=TRACE_CHUNK, offset=float(run.alphas.sum()),
                          scale=scale)
    trace_rec = trace_record("hutchpp_lanczos", "Hutch++ on P^(-1/2)·H·P^(-1/2) with its Lanczos basis as sketch",
                             trace_op.products, estimate, s.trace_rtol, scale)
    check_finite(lambda_max=top.value, lambda_min=bottom.value, trace=estimate.value)
    noise = noise_in_metric(summary, inverse.to(summary.sums.device))
    ordered = p.sort().values
    return PreconditionedCurvature(
        eps=s.adam_eps, preconditioner_min=float(ordered[0]), preconditioner_median=float(ordered[len(ordered) // 2]),
        preconditioner_max=float(ordered[-1]), lambda_max=top.value, lambda_min=bottom.value, trace=estimate.value,
        trace_stderr=estimate.stderr, hvps=op.products, details={"lambda_max": top_rec, "lambda_min": bottom_rec,
                                                                  "trace": trace_rec}, **noise)

