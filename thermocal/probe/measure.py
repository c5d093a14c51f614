"""Wire the estimators: sample → minibatches → gradient noise and Hessian spectrum (method.md §0–§2)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import torch

from thermocal.errors import DataError, NumericalError
from thermocal.probe.gradient_noise import Batch, minibatch_gradients, noise_statistics
from thermocal.probe.losses import resolve_loss
from thermocal.probe.power import power_iteration
from thermocal.probe.pyhessian_engine import PyHessianEngine, seeded_global_rng
from thermocal.probe.trace import hutchinson
from thermocal.records import EstimateRecord, HessianSpectrum, Measurements

# Eigenvalues smaller in magnitude than this fraction of |lambda_max| are resolved only to
# rtol times this floor: below it they cannot move Tf (method.md §2, "convergence").
EIG_FLOOR_FRACTION = 1e-3
# pyhessian's own stopping rule (relative change between iterations) for its power iteration;
# tight, because the residual test that follows is what decides "converged".
PYHESSIAN_POWER_TOL = 1e-7
# The shifted power iteration's shift: this fraction of the way from the known end of the
# spectrum towards (an upper confidence bound on) the mean eigenvalue tr(H)/d.
SHIFT_FRACTION = 0.45
TRACE_BOUND_ERRORS = 3.0


class Progress(Protocol):
    def phase(self, name: str, total: int | None) -> None: ...

    def advance(self) -> None: ...


class NoProgress:
    def phase(self, name: str, total: int | None) -> None:
        pass

    def advance(self) -> None:
        pass


@dataclass(frozen=True)
class ProbeSettings:
    batch_size: int = 32
    loss: str = "auto"
    seed: int = 0
    eig_rtol: float = 1e-2
    max_iter: int = 20000
    trace_rtol: float = 2e-2
    max_probes: int = 1000
    micro_batch: int = 1024
    bootstrap: int = 1000


@dataclass(frozen=True)
class ProbeResult:
    loss: str
    num_params: int
    dtype: str
    measurements: Measurements


def _split(inputs: torch.Tensor, targets: torch.Tensor, size: int) -> list[Batch]:
    return list(zip(torch.split(inputs, size), torch.split(targets, size)))


def _first_outputs(model: torch.nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    try:
        with torch.no_grad():
            outputs = model(inputs)
    except Exception as exc:  # the model's own error, often several lines long
        text = str(exc).strip().splitlines()
        raise DataError(
            f"inputs of shape {tuple(inputs.shape[1:])} per example do not fit the model "
            f"({text[-1][:200] if text else type(exc).__name__})"
        ) from exc
    if not isinstance(outputs, torch.Tensor) or not outputs.is_floating_point():
        raise DataError(f"the model must return one floating-point tensor, it returned {type(outputs).__name__}")
    return outputs


def opposite_shift(extreme: float, trace_bound: float) -> float:
    """The shift σ for the power iteration that finds the other end of the spectrum.

    The mean eigenvalue tr(H)/d lies between λ_min and λ_max, so with λ_max known the
    midpoint (λ_max + λ_min)/2 is at most (λ_max + m)/2 for any m ≥ tr(H)/d (and likewise
    mirrored when λ_min is the known end). σ = extreme + SHIFT_FRACTION·(m − extreme) sits
    just on the far side of that midpoint, so the wanted end dominates H − σI, and it
    converges almost twice as fast as σ = extreme.
    """
    return extreme + SHIFT_FRACTION * (trace_bound - extreme)


def _hessian_spectrum(engine: PyHessianEngine, settings: ProbeSettings, progress: Progress, generator: torch.Generator) -> HessianSpectrum:
    rtol = settings.eig_rtol
    progress.phase("Hessian: power iteration (pyhessian)", None)
    start = engine.hvps
    vector = engine.dominant_eigenvector(tol=PYHESSIAN_POWER_TOL, max_iter=settings.max_iter)
    # pyhessian stops when the Rayleigh quotient stops changing, which can be well before the
    # eigenvector is resolved; continue the same iteration until the residual test passes.
    top = power_iteration(engine.matvec, vector, rtol=rtol, max_iter=settings.max_iter)
    dominant, vector = top.value, top.vector
    floor = EIG_FLOOR_FRACTION * abs(dominant)
    first = EstimateRecord(
        method="power iteration (pyhessian), continued until the residual test passed",
        hvps=engine.hvps - start,
        iterations=engine.hvps - start,
        residual=top.residual,
        tolerance=rtol,
        converged=top.converged,
    )

    progress.phase("Hessian: Hutchinson trace (pyhessian)", settings.max_probes)
    start = engine.hvps
    trace = hutchinson(engine.trace_probes, rtol=settings.trace_rtol, max_probes=settings.max_probes)
    trace_record = EstimateRecord(
        method="Hutchinson, Rademacher probes (pyhessian)",
        hvps=engine.hvps - start,
        iterations=trace.probes,
        tolerance=settings.trace_rtol,
        converged=trace.converged,
    )

    progress.phase("Hessian: shifted power iteration", None)
    start = engine.hvps
    side = 1.0 if dominant >= 0 else -1.0  # +1: lambda_max is known, look for lambda_min
    mean_bound = (trace.value + side * TRACE_BOUND_ERRORS * trace.stderr) / engine.dim
    v0 = torch.randn(engine.dim, generator=generator, dtype=torch.float64).to(vector.device, vector.dtype)
    for shift in (opposite_shift(dominant, mean_bound), dominant):
        other = power_iteration(engine.matvec, v0, shift=shift, rtol=rtol, floor=floor, max_iter=settings.max_iter)
        if side * (shift - other.value) > 0:  # found the far end, as intended
            break
    second = EstimateRecord(
        method="power iteration on H - sigma*I",
        hvps=engine.hvps - start,
        iterations=other.iterations,
        residual=other.residual,
        tolerance=rtol,
        converged=other.converged,
    )
    if side > 0:
        (lambda_max, max_record), (lambda_min, min_record) = (dominant, first), (other.value, second)
    else:
        (lambda_max, max_record), (lambda_min, min_record) = (other.value, second), (dominant, first)
    for name, value in (("lambda_max", lambda_max), ("lambda_min", lambda_min), ("trace", trace.value)):
        if not math.isfinite(value):
            raise NumericalError(f"the Hessian's {name} came out as {value}")
    return HessianSpectrum(
        engine=engine.name,
        lambda_max=lambda_max,
        lambda_min=lambda_min,
        trace=trace.value,
        trace_stderr=trace.stderr,
        hvps=engine.hvps,
        converged=max_record.converged and min_record.converged and trace_record.converged,
        details={"lambda_max": max_record, "lambda_min": min_record, "trace": trace_record},
    )


def probe(
    model: torch.nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    settings: ProbeSettings,
    device: torch.device,
    progress: Progress | None = None,
) -> ProbeResult:
    """Measure gradient noise and the Hessian spectrum of `model` on the sample.

    The sample is shuffled with the seeded generator and cut into K = ⌊N/B⌋ minibatches of
    the training batch size B; a short last batch is dropped. The Hessian is that of the mean
    loss over the same K·B examples.
    """
    progress = progress or NoProgress()
    model.eval()
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad and p.is_floating_point()]
    dtype = params[0].dtype
    n, b = int(inputs.shape[0]), settings.batch_size
    k = n // b
    if k < 2:
        raise DataError(
            f"N = {n} examples at --batch-size {b} give {k} minibatch(es); at least 2 are needed: "
            f"lower --batch-size to {max(n // 2, 1)} or less, or add data"
        )
    generator = torch.Generator().manual_seed(settings.seed)
    order = torch.randperm(n, generator=generator)[: k * b]
    if inputs.is_floating_point():
        inputs = inputs.to(dtype)
    inputs, targets = inputs[order].to(device), targets[order].to(device)

    loss_name, loss_fn = resolve_loss(settings.loss, _first_outputs(model, inputs[:b]), targets)

    progress.phase("Gradient noise", k)
    grads, losses = minibatch_gradients(model, loss_fn, _split(inputs, targets, b), params, progress.advance)
    noise = noise_statistics(
        grads, losses, batch_size=b, samples_dropped=n - k * b, resamples=settings.bootstrap, generator=generator
    )
    del grads

    with seeded_global_rng(settings.seed, device):
        engine = PyHessianEngine(
            model, loss_fn, _split(inputs, targets, settings.micro_batch), device, on_hvp=progress.advance
        )
        try:
            spectrum = _hessian_spectrum(engine, settings, progress, generator)
        finally:
            engine.release()
    return ProbeResult(
        loss=loss_name,
        num_params=engine.dim,
        dtype=str(dtype).removeprefix("torch."),
        measurements=Measurements(gradient_noise=noise, hessian=spectrum),
    )
