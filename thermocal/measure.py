"""Wire the estimators: sample → minibatches → gradient noise and Hessian spectrum (method.md §0–§2).

`probe` is the recipe. Its public steps (split_batches, hessian_operator, krylov_run,
native_trace) are what bench/targets.py and bench/trace_coverage.py run piece by piece."""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Callable, Iterator, Protocol, Sequence

import torch

from thermocal.config import Config
from thermocal.distributed import SINGLE, Group
from thermocal.errors import DataError, InputError, NumericalError
from thermocal.curvature.blocks import partition, restricted
from thermocal.curvature.density import slq_density
from thermocal.noise import Batch, minibatch_gradients, noise_statistics
from thermocal.curvature.hvp import HessianOperator, Mode, supports_forward_mode
from thermocal.curvature.lanczos import LanczosResult, lanczos
from thermocal.losses import LossFn, LossSpec, check_callable, resolve_loss
from thermocal.curvature.power import power_iteration
from thermocal.curvature.sampling import mean_stderr, rayleigh_quotients
from thermocal.curvature.trace import TraceEstimate, deflated_probes, hutchinson, hutchpp_sketch, sketch_trace
from thermocal.records import (
    EIG_FLOOR_FRACTION, BlockCurvature, EstimateRecord, Estimator, HessianSpectrum, Measurements, NoiseCurvature,
    SpectralDensity,
)

# pyhessian's own stopping rule (relative change between iterations) for its power iteration;
# tight, because the residual test that follows is what decides "converged".
PYHESSIAN_POWER_TOL = 1e-7
# The shifted power iteration's shift: this fraction of the way from the known end of the
# spectrum towards (an upper confidence bound on) the mean eigenvalue tr(H)/d ([H4]).
SHIFT_FRACTION = 0.45
TRACE_BOUND_ERRORS = 3.0
HUTCHPP_SKETCH = 20
# Lanczos runs at least this many steps: its basis deflates the trace's probes ([H8]), and 20 rows
# cost fewer products in all than stopping at lambda_max's 6-12 and probing longer ([H12]).
LANCZOS_MIN_ITER = 20
BOOTSTRAP = 1000  # resamples of the minibatches for the noise statistics' standard errors ([N6])
DENSITY_PROBES, DENSITY_STEPS = 4, 80  # stochastic Lanczos quadrature ([H9])
# Deviations g_k − ḡ whose curvature gives tr(H·Σ_B) ([N8]), fewer when d numbers each would pass PROBE_MEMORY.
NOISE_CURVATURE_MINIBATCHES = 8
TRACE_CHUNK = 10
# Groups of the Hessian's examples whose Rayleigh quotients give lambda_max's sampling error ([H13]).
SAMPLING_GROUPS = 16
GIB = 1 << 30
# At most this many bytes of trace probe vectors (and their products) exist at once ([H11]).
PROBE_MEMORY = GIB

class Progress(Protocol):
    """Where the probe reports its phases and products. `total` is the phase's exact length when
    it is known (minibatches, density steps), None for iterative solvers that stop when converged."""

    def phase(self, name: str, total: int | None) -> None: ...

    def advance(self, amount: int = 1) -> None: ...


class NoProgress:
    def phase(self, name: str, total: int | None) -> None:
        pass

    def advance(self, amount: int = 1) -> None:
        pass


@dataclass(frozen=True)
class ProbeResult:
    loss: str
    num_params: int
    dtype: str
    measurements: Measurements
    hessian_samples: int
    timings: dict[str, float] = field(default_factory=dict)
    unused_parameters: list[str] = field(default_factory=list)


class _Timer:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - start


def _gradients(model: torch.nn.Module, loss_fn: LossFn, batches: list[Batch], params, on_batch,
               group: Group) -> tuple[torch.Tensor, torch.Tensor]:
    """The K minibatch gradients and losses; under torchrun each process takes every world-th
    minibatch and the rows are gathered back into order. A non-finite value on any process
    stops all of them with the same error (no process is left waiting in a collective)."""
    if not group.distributed:
        return minibatch_gradients(model, loss_fn, batches, params, on_batch)
    if len(batches) < group.world:
        raise DataError(f"{len(batches)} minibatches for {group.world} processes: use fewer processes or more data")
    error: NumericalError | None = None
    try:
        grads, losses = minibatch_gradients(model, loss_fn, group.shard(batches), params, on_batch)
    except NumericalError as exc:
        error, grads, losses = exc, None, None
    failed = group.sum(torch.tensor([1.0 if error else 0.0], device=params[0].device))
    if float(failed) > 0:
        raise error or NumericalError("another process met a non-finite loss or gradient")
    return group.unshard(grads, len(batches)), group.unshard(losses, len(batches))


def split_batches(inputs: torch.Tensor, targets: torch.Tensor, size: int) -> list[Batch]:
    """(inputs, targets) in consecutive batches of `size` (the last may be shorter)."""
    return list(zip(torch.split(inputs, size), torch.split(targets, size)))


def _unused_parameters(model: torch.nn.Module, loss_fn: LossFn, inputs: torch.Tensor, targets: torch.Tensor,
                       named: list[tuple[str, torch.nn.Parameter]]) -> list[str]:
    """Trainable parameters the loss does not depend on: left out of d and the Hessian (a
    warning names them), since they would only add exact zero rows."""
    grads = torch.autograd.grad(loss_fn(model(inputs), targets), [p for _, p in named], allow_unused=True)
    return [n for (n, _), g in zip(named, grads) if g is None]


# Words in torch's messages for inputs of the wrong shape or type.
_SHAPE_WORDS = ("shape", "size", "mat1", "mat2", "dimension", "dim ", "expected input", "Expected input", "channels")


def _first_outputs(model: torch.nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """The model's outputs on the first minibatch, which must be one floating-point tensor.
    An error there is told as the inputs not fitting when torch's message is about shapes,
    else as the model's own error."""
    try:
        with torch.no_grad():
            outputs = model(inputs)
    except (DataError, MemoryError):
        raise
    except Exception as exc:  # the model's own error, often several lines long
        if "out of memory" in str(exc):
            raise
        text = str(exc).strip().splitlines()
        detail = text[-1][:200] if text else type(exc).__name__
        if any(word in detail for word in _SHAPE_WORDS):
            raise DataError(f"inputs of shape {tuple(inputs.shape[1:])} per example do not fit the model ({detail})") from exc
        raise DataError(f"the model's forward raised {type(exc).__name__} on the first minibatch (inputs of shape "
                        f"{tuple(inputs.shape[1:])} per example): {detail}") from exc
    if not isinstance(outputs, torch.Tensor):
        raise DataError(f"the model must return one floating-point tensor, it returned a {type(outputs).__name__}")
    if not outputs.is_floating_point():
        raise DataError(f"the model must return floating-point outputs (logits or values) to differentiate, it "
                        f"returned {str(outputs.dtype).removeprefix('torch.')} values")
    return outputs


def opposite_shift(extreme: float, trace_bound: float) -> float:
    """The shift σ for the power iteration that finds the other end of the spectrum ([H4]).

    The mean eigenvalue tr(H)/d lies between λ_min and λ_max, so with λ_max known the
    midpoint (λ_max + λ_min)/2 is at most (λ_max + m)/2 for any m ≥ tr(H)/d (and likewise
    mirrored when λ_min is the known end). σ = extreme + SHIFT_FRACTION·(m − extreme) sits
    just on the far side of that midpoint, so the wanted end dominates H − σI, and it
    converges almost twice as fast as σ = extreme.
    """
    return extreme + SHIFT_FRACTION * (trace_bound - extreme)


def _record(estimator: Estimator, method: str, hvps: int, iterations: int, residual: float | None, tolerance: float,
            converged: bool, restarts: int | None = None) -> EstimateRecord:
    return EstimateRecord(method=method, estimator=estimator, restarts=restarts, hvps=hvps, iterations=iterations,
                          residual=residual, tolerance=tolerance, converged=converged)


def _trace_record(estimator: Estimator, method: str, hvps: int, estimate: TraceEstimate, rtol: float,
                  scale: float) -> EstimateRecord:
    return EstimateRecord(method=method, estimator=estimator, hvps=hvps, iterations=estimate.probes, residual=None,
                          tolerance=rtol, converged=estimate.converged, scale=scale)


def _other_end(matvec: Callable[[torch.Tensor], torch.Tensor], dominant: float, trace: TraceEstimate, dim: int,
               config: Config, generator: torch.Generator, device: torch.device, dtype: torch.dtype):
    """Power iteration on H − σI for the end of the spectrum opposite `dominant` ([H4])."""
    side = 1.0 if dominant >= 0 else -1.0  # +1: lambda_max is known, look for lambda_min
    mean_bound = (trace.value + side * TRACE_BOUND_ERRORS * trace.stderr) / dim
    v0 = torch.randn(dim, generator=generator, dtype=torch.float64).to(device, dtype)
    floor = EIG_FLOOR_FRACTION * abs(dominant)
    for shift in (opposite_shift(dominant, mean_bound), dominant):
        other = power_iteration(matvec, v0, shift=shift, rtol=config.eigen_rtol, floor=floor, max_iter=config.iterations)
        if side * (shift - other.value) > 0:  # found the far end, as intended
            break
    return other


def _both_ends(counter, matvec: Callable[[torch.Tensor], torch.Tensor], dominant: tuple[float, EstimateRecord],
               trace: TraceEstimate, s: Config, generator: torch.Generator, device: torch.device, dtype: torch.dtype,
               timer: "_Timer", progress: Progress):
    """The other end by shifted power iteration ([H4]), then ((lambda_max, record), (lambda_min, record)),
    whichever end the first power iteration found. `counter` counts the products (engine or operator)."""
    with timer("extremes"):
        progress.phase("Hessian: shifted power iteration", None)
        start = counter.hvps
        found = _other_end(matvec, dominant[0], trace, counter.dim, s, generator, device, dtype)
        other = (found.value, _record("shifted_power", "power iteration on H - sigma*I", counter.hvps - start, found.iterations,
                                      found.residual, s.eigen_rtol, found.converged))
    return (dominant, other) if dominant[0] >= other[0] else (other, dominant)


def _check_finite(**values: float) -> None:
    for name, value in values.items():
        if not math.isfinite(value):
            raise NumericalError(f"the Hessian's {name} came out as {value}")


def _pyhessian_spectrum(engine, s: Config, progress: Progress, generator: torch.Generator,
                        timer: _Timer) -> tuple[HessianSpectrum, torch.Tensor | None]:
    """The spectrum, and lambda_max's eigenvector when the power iteration's end is lambda_max's."""
    rtol = s.eigen_rtol
    with timer("extremes"):
        progress.phase("Hessian: power iteration (pyhessian)", None)
        start = engine.hvps
        vector = engine.dominant_eigenvector(tol=PYHESSIAN_POWER_TOL, max_iter=s.iterations)
        # pyhessian stops when the Rayleigh quotient stops changing, which can be well before the
        # eigenvector is resolved; continue the same iteration until the residual test passes.
        top = power_iteration(engine.matvec, vector, rtol=rtol, max_iter=s.iterations)
        first = _record("pyhessian_power", "power iteration (pyhessian), continued until the residual test passed",
                        engine.hvps - start, engine.hvps - start, top.residual, rtol, top.converged)
    with timer("trace"):
        progress.phase("Hessian: Hutchinson trace (pyhessian)", None)
        start = engine.hvps
        trace = hutchinson(engine.trace_probes, rtol=s.trace_rtol, max_probes=s.max_probes, scale=abs(top.value))
        trace_record = _trace_record("pyhessian_hutchinson", "Hutchinson, Rademacher probes (pyhessian)", engine.hvps - start, trace, s.trace_rtol,
                                     abs(top.value))
    (lam_max, max_rec), (lam_min, min_rec) = _both_ends(engine, engine.matvec, (top.value, first), trace, s, generator,
                                                        vector.device, vector.dtype, timer, progress)
    _check_finite(lambda_max=lam_max, lambda_min=lam_min, trace=trace.value)
    return HessianSpectrum(
        engine=engine.name, hvp_mode="rev-rev", lambda_max=lam_max, lambda_min=lam_min, trace=trace.value,
        trace_stderr=trace.stderr, hvps=engine.hvps, converged=max_rec.converged and min_rec.converged and trace.converged,
        details={"lambda_max": max_rec, "lambda_min": min_rec, "trace": trace_record},
    ), (top.vector if lam_max == top.value else None)


def hvp_mode(s: Config) -> Mode:
    """The native products' mode: `auto` is reverse-over-reverse; pyhessian's engine is always rev-rev."""
    return "rev-rev" if s.hvp == "auto" or s.engine != "native" else s.hvp


def hessian_operator(model: torch.nn.Module, loss_fn, batches: list[Batch], params, s: Config, on_hvp,
                     group: Group = SINGLE) -> HessianOperator:
    """The native operator in the asked mode. `auto` is reverse-over-reverse: it was the faster on
    every benchmark model, with and without graph reuse (bench/RESULTS.md)."""
    mode = hvp_mode(s)
    total = sum(int(x.shape[0]) for x, _ in batches)
    return HessianOperator(model, loss_fn, group.shard(batches), params, mode=mode, vmap=s.vmap_probes, on_hvp=on_hvp,
                           total_examples=total, reduce=group.sum, graph_memory=int(s.graph_memory * GIB))


def _basis_bounds(op: HessianOperator, s: Config, size: int | None = None) -> dict:
    """The Lanczos basis's dtype (float64 for a float64 model, else float32: the products are
    computed in the model's dtype anyway) and its row limit from --lanczos-memory ([H11])."""
    dtype = torch.float64 if op.dtype == torch.float64 else torch.float32
    size = size or op.dim
    rows = int(s.lanczos_memory * GIB) // (size * dtype.itemsize)
    return {"dtype": dtype, "max_basis": rows if rows < min(s.iterations, size) else None}


def krylov_run(op: HessianOperator, s: Config, generator: torch.Generator, *, top_k: int, bottom_k: int,
               index: torch.Tensor | None = None) -> LanczosResult:
    """Lanczos from a seeded Gaussian start on H, or on its diagonal block on `index` ([H10]),
    within the basis bounds of [H11]. The start is drawn in float64 and kept in the basis's
    dtype, and the products come back in it: a float32 model's are never copied to float64
    ([H6])."""
    size = len(index) if index is not None else op.dim
    bounds = _basis_bounds(op, s, size)
    v0 = torch.randn(size, generator=generator, dtype=torch.float64).to(bounds["dtype"]).to(op.device)
    matvec = partial(op.matvec, dtype=bounds["dtype"])
    if index is not None:
        matvec = restricted(matvec, index, op.dim)
    return lanczos(matvec, v0, rtol=s.eigen_rtol, floor_fraction=EIG_FLOOR_FRACTION, max_iter=s.iterations,
                   top_k=top_k, bottom_k=bottom_k, min_iter=min(LANCZOS_MIN_ITER, size), **bounds)


def _lanczos_method(name: str, run: LanczosResult) -> str:
    return name if not run.restarts else f"{name}, {run.restarts} thick restart(s) within --lanczos-memory"


def _probe_rows(op: HessianOperator) -> int:
    """Probe vectors alive at once: one when products are taken one at a time (no vmap: a
    chunk of probes would only hold memory), else float64 probes and products within PROBE_MEMORY."""
    return max(1, PROBE_MEMORY // (2 * 8 * op.dim)) if op.vmap else 1


def _sketch_rows(op: HessianOperator) -> int:
    """Columns of Meyer et al.'s sketch H·S: HUTCHPP_SKETCH, or fewer where the float64 probes,
    their products and the products' QR factor, all alive at once, would pass PROBE_MEMORY."""
    return min(HUTCHPP_SKETCH, op.dim, PROBE_MEMORY // (3 * 8 * op.dim))


def native_trace(op: HessianOperator, s: Config, krylov: tuple[torch.Tensor, float] | None, scale: float,
                 generator: torch.Generator) -> tuple[TraceEstimate, EstimateRecord]:
    """Trace by Hutch++ (sketch: the Lanczos basis when given, whose tr(QHQ^T) = Σ alpha is
    already known, else Meyer et al.'s H·S sketch) or by plain Hutchinson ([H3], [H8])."""
    start = op.hvps
    offset = 0.0
    if s.trace_estimator == "hutch++":
        if krylov is not None:
            sketch, offset = krylov
            estimator, method = "hutchpp_lanczos", ("Hutch++ with the Lanczos basis as sketch: tr(QHQ^T) = sum(alpha) + "
                                                    "Hutchinson on (I-QQ^T)H(I-QQ^T)")
        elif (columns := _sketch_rows(op)) >= 2:
            sketch = hutchpp_sketch(op.matmat, op.dim, columns, generator, op.device)
            offset = sketch_trace(op.matmat, sketch)
            estimator, method = "hutchpp_sketch", "Hutch++ (sketch Q = orth(H S)): tr(QHQ^T) + Hutchinson on (I-QQ^T)H(I-QQ^T)"
        else:
            sketch = None
            estimator, method = "hutchinson", "Hutchinson, Rademacher probes (a Hutch++ sketch of H S would pass the probe memory bound)"
    else:
        sketch, estimator, method = None, "hutchinson", "Hutchinson, Rademacher probes"
    matmat = partial(op.matmat, dtype=sketch.dtype if sketch is not None else torch.float64)  # the probes' dtype
    estimate = hutchinson(deflated_probes(matmat, sketch, op.dim, generator, op.device, _probe_rows(op)), rtol=s.trace_rtol,
                          max_probes=s.max_probes, chunk=TRACE_CHUNK, offset=offset, scale=scale)
    return estimate, _trace_record(estimator, method, op.hvps - start, estimate, s.trace_rtol, scale)


def _native_spectrum(op: HessianOperator, s: Config, progress: Progress, generator: torch.Generator,
                     timer: _Timer, names: Sequence[str]) -> tuple[HessianSpectrum, torch.Tensor | None]:
    """The spectrum, and lambda_max's eigenvector (None when the power iteration found lambda_min first)."""
    rtol = s.eigen_rtol
    top_values: list[float] | None = None
    if s.solver == "lanczos":
        with timer("extremes"):
            both = s.resolves_lambda_min
            progress.phase("Hessian: Lanczos (both ends)" if both else "Hessian: Lanczos (lambda_max)", None)
            start = op.hvps
            run = krylov_run(op, s, generator, top_k=s.top_k, bottom_k=1 if both else 0)
            hvps = op.hvps - start
            big = run.largest[0]
            method = _lanczos_method("Lanczos, full reorthogonalization, Ritz residual test", run)
            max_rec = _record("lanczos", method, hvps, run.iterations, big.residual, rtol, big.converged, run.restarts)
            lam_max = big.value
            if both:
                small = run.smallest[0]
                min_rec = _record("lanczos", method, hvps, run.iterations, small.residual, rtol, small.converged, run.restarts)
                lam_min = small.value
            else:
                small, min_rec, lam_min = None, None, None
            if s.top_k > 1:
                top_values = [p.value for p in run.largest]
            krylov, scale = (run.basis, float(run.alphas.sum())), max(abs(lam_max), run.abs_trace)
            top_vector = big.vector  # kept (d numbers) for lambda_max's sampling error ([H13])
            del run, big, small  # the Ritz vectors: d numbers each that the trace need not hold beside its own
        with timer("trace"):
            progress.phase("Hessian: trace", None)
            trace, trace_rec = native_trace(op, s, krylov, scale, generator)
            del krylov
    else:
        with timer("extremes"):
            progress.phase("Hessian: power iteration", None)
            start = op.hvps
            v0 = torch.randn(op.dim, generator=generator, dtype=torch.float64).to(op.device)
            top = power_iteration(op.matvec, v0, rtol=rtol, max_iter=s.iterations)
            first = _record("power", "power iteration", op.hvps - start, top.iterations, top.residual, rtol, top.converged)
        with timer("trace"):
            progress.phase("Hessian: trace", None)
            trace, trace_rec = native_trace(op, s, None, abs(top.value), generator)
        (lam_max, max_rec), (lam_min, min_rec) = _both_ends(op, op.matvec, (top.value, first), trace, s, generator,
                                                            op.device, torch.float64, timer, progress)
        top_vector = top.vector if lam_max == top.value else None
    _check_finite(lambda_max=lam_max, lambda_min=lam_min if lam_min is not None else 0.0, trace=trace.value)

    density = None
    if s.density:
        with timer("density"):
            progress.phase("Hessian: spectral density (SLQ)", DENSITY_PROBES * DENSITY_STEPS)
            start = op.hvps
            d = slq_density(op.matvec, op.dim, probes=DENSITY_PROBES, steps=DENSITY_STEPS, generator=generator,
                            device=op.device)
            density = SpectralDensity(grid=d.grid, density=d.density, sigma=d.sigma, probes=d.probes, steps=d.steps,
                                      hvps=op.hvps - start)
    blocks = None
    if s.per_layer or s.blocks:
        with timer("blocks"):
            parts = partition(names, op.sizes, per_layer=s.per_layer, patterns=s.blocks)
            progress.phase("Hessian: per-block curvature", None)
            blocks = [_block_curvature(op, b, s, generator) for b in parts]
    details = {"lambda_max": max_rec, "trace": trace_rec} | ({"lambda_min": min_rec} if min_rec is not None else {})
    return HessianSpectrum(
        engine="native", hvp_mode=op.mode, lambda_max=lam_max, lambda_min=lam_min, trace=trace.value,
        trace_stderr=trace.stderr, hvps=op.hvps, converged=all(rec.converged for rec in details.values()),
        details=details, top_eigenvalues=top_values, density=density, blocks=blocks,
    ), top_vector


def _block_curvature(op: HessianOperator, block, s: Config, generator: torch.Generator) -> BlockCurvature:
    """lambda_max by Lanczos on H_bb, trace by Hutch++ on H_bb with that Lanczos basis ([H10])."""
    size = len(block.index)
    start = op.hvps
    run = krylov_run(op, s, generator, top_k=1, bottom_k=0, index=block.index)
    big = run.largest[0]
    eig_rec = _record("lanczos_block", _lanczos_method("Lanczos on the diagonal block", run), op.hvps - start,
                      run.iterations, big.residual, s.eigen_rtol, big.converged, run.restarts)
    start = op.hvps
    # the block's probes are short, but their products pass through the whole d-length operator
    matmat = restricted(partial(op.matmat, dtype=run.basis.dtype), block.index, op.dim)
    scale = max(abs(big.value), run.abs_trace)
    trace = hutchinson(deflated_probes(matmat, run.basis, size, generator, op.device, _probe_rows(op)), rtol=s.trace_rtol,
                       max_probes=s.max_probes, chunk=TRACE_CHUNK, offset=float(run.alphas.sum()), scale=scale)
    trace_rec = _trace_record("hutchpp_block_lanczos", "Hutch++ with the block's Lanczos basis as sketch", op.hvps - start, trace, s.trace_rtol,
                              scale)
    return BlockCurvature(name=block.name, parameters=list(block.parameters), num_params=size, lambda_max=big.value,
                          trace=trace.value, trace_stderr=trace.stderr,
                          details={"lambda_max": eig_rec, "trace": trace_rec})


def _lambda_max_sampling(model: torch.nn.Module, loss_fn, inputs: torch.Tensor, targets: torch.Tensor, params,
                         vector: torch.Tensor, spectrum: HessianSpectrum, s: Config, progress: Progress,
                         group: Group) -> HessianSpectrum:
    """`spectrum` with lambda_max's sampling standard error ([H13]): at most SAMPLING_GROUPS equal
    groups of whole minibatches of the Hessian's (shuffled) examples (whole minibatches, so that a
    program exported for a fixed batch is fed what it takes), a remainder left out; one product
    over the sample in all, counted as one HVP. Unchanged with fewer than two minibatches."""
    batches = int(inputs.shape[0]) // s.batch_size
    if batches < 2:
        return spectrum
    per = -(-batches // SAMPLING_GROUPS)  # minibatches per group: at most SAMPLING_GROUPS groups
    count, size = batches // per, per * s.batch_size
    groups = split_batches(inputs[: count * size], targets[: count * size], size)
    progress.phase("Hessian: lambda_max's sampling error", count)
    quotients = rayleigh_quotients(model, loss_fn, groups, params, vector, mode=hvp_mode(s), group=group)
    progress.advance(count)
    return spectrum.model_copy(update={"lambda_max_stderr": mean_stderr(quotients), "sampling_groups": count,
                                       "hvps": spectrum.hvps + 1})


def set_eval(module: torch.nn.Module) -> None:
    """Eval mode ([S1]). A torch.export program keeps the mode it was exported in and refuses eval()."""
    try:
        module.eval()
    except NotImplementedError:
        pass


def _deviations(grads: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ḡ and the first m deviations g_k − ḡ (the minibatches are in shuffled order), in the
    gradients' dtype, m bounded so that they hold at most PROBE_MEMORY bytes (at least 2)."""
    k, d = grads.shape
    fit = PROBE_MEMORY // max(d * grads.element_size(), 1)
    m = max(2, min(k, NOISE_CURVATURE_MINIBATCHES, fit))
    mean = (grads.sum(0, dtype=torch.float64) / k).to(grads.dtype)
    return mean, grads[:m] - mean


def _noise_curvature(matvec: Callable[[torch.Tensor], torch.Tensor], mean: torch.Tensor, deviations: torch.Tensor,
                     k: int, progress: Progress, counter) -> NoiseCurvature:
    """∇LᵀH∇L and tr(HΣ_B) ([N8]). With s_i = (g_i − ḡ)ᵀH(g_i − ḡ) over m minibatches,
    E[s_i] = (1 − 1/K)·tr(HΣ_B) (ḡ holds g_i), and E[ḡᵀHḡ] = ∇LᵀH∇L + tr(HΣ_B)/K; both are
    corrected for that. m + 1 Hessian-vector products."""
    progress.phase("Hessian: along the gradient noise", len(deviations) + 1)
    start = counter.hvps
    values = [float(v.to(torch.float64) @ matvec(v).to(torch.float64)) for v in deviations]
    m = len(values)
    average = math.fsum(values) / m
    spread = math.sqrt(math.fsum((x - average) ** 2 for x in values) / (m - 1))
    trace_h_sigma = average * k / (k - 1)
    grad_h_grad = float(mean.to(torch.float64) @ matvec(mean).to(torch.float64)) - trace_h_sigma / k
    if not (math.isfinite(trace_h_sigma) and math.isfinite(grad_h_grad)):
        raise NumericalError("the curvature along the gradient noise is not finite")
    return NoiseCurvature(grad_h_grad=grad_h_grad, trace_h_sigma=trace_h_sigma,
                          trace_h_sigma_stderr=spread * k / (k - 1) / math.sqrt(m), minibatches=m,
                          hvps=counter.hvps - start)


def probe(
    model: torch.nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    settings: Config,
    device: torch.device,
    progress: Progress | None = None,
    loss_fn: LossFn | None = None,
    group: Group = SINGLE,
) -> ProbeResult:
    """Measure gradient noise and the Hessian spectrum of `model` on the sample.

    `loss_fn` (a mean over examples), when given, replaces the loss `settings.loss` names.

    The sample is shuffled with the seeded generator and cut into K = ⌊N/B⌋ minibatches of
    the training batch size B; a short last batch is dropped. The Hessian is that of the mean
    loss over the first `hessian_samples` of the same shuffled K·B examples (all by default
    when there are at most 512).
    """
    s = settings
    if s.engine == "pyhessian" and group.distributed:  # before any work: it would fail after the gradients
        raise InputError("--engine pyhessian runs in one process; use the native engine under torchrun")
    if s.hvp == "fwd-rev" and not supports_forward_mode(model):
        raise InputError("--hvp fwd-rev needs an eager module; TorchScript models use rev-rev")
    progress = progress or NoProgress()
    timer = _Timer()
    set_eval(model)
    model.to(device)
    if s.dtype != "model":
        model.to(getattr(torch, s.dtype))
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad and p.is_floating_point()]
    names, params = [n for n, _ in named], [p for _, p in named]
    dtype = params[0].dtype
    n, b = int(inputs.shape[0]), s.batch_size
    k = n // b
    if k < 2:
        remedy = f"lower --batch-size to {n // 2} or less, or add data" if n >= 2 else "add data"
        raise DataError(f"N = {n} examples at --batch-size {b} give {k} minibatch(es); at least 2 are needed: {remedy}")
    generator = torch.Generator().manual_seed(s.seed)
    order = torch.randperm(n, generator=generator)[: k * b]
    if inputs.is_floating_point():
        inputs = inputs.to(dtype)
    inputs, targets = inputs[order].to(device), targets[order].to(device)

    outputs = _first_outputs(model, inputs[:b])
    if loss_fn is None:
        loss_name, loss_fn = resolve_loss(LossSpec(s.loss, s.label_smoothing), outputs, targets)
    else:
        loss_name = s.loss
        check_callable(loss_name, loss_fn, outputs, targets)
    unused = _unused_parameters(model, loss_fn, inputs[:b], targets[:b], named)
    if unused:
        for name, param in named:
            if name in unused:
                param.requires_grad_(False)  # so that every engine leaves them out
        named = [(n, p) for n, p in named if n not in unused]
        names, params = [n for n, _ in named], [p for _, p in named]
        if not params:
            raise DataError("the loss depends on none of the model's trainable parameters")

    with timer("gradient_noise"):
        progress.phase("Gradient noise", k)
        grads, losses = _gradients(model, loss_fn, split_batches(inputs, targets, b), params, progress.advance, group)
        noise = noise_statistics(grads, losses, batch_size=b, samples_dropped=n - k * b, resamples=BOOTSTRAP,
                                 generator=generator)
        mean, deviations = _deviations(grads)
        del grads

    hessian_samples = min(s.hessian_samples or k * b, k * b)
    micro_batches = split_batches(inputs[:hessian_samples], targets[:hessian_samples], s.micro_batch)
    if s.engine == "pyhessian":
        from thermocal.curvature.pyhessian_engine import PyHessianEngine, seeded_global_rng  # only where it is used

        with seeded_global_rng(s.seed, device):
            engine = PyHessianEngine(model, loss_fn, micro_batches, device, on_hvp=progress.advance)
            try:
                spectrum, top_vector = _pyhessian_spectrum(engine, s, progress, generator, timer)
                with timer("noise_curvature"):
                    curvature = _noise_curvature(engine.matvec, mean, deviations, k, progress, engine)
            finally:
                engine.release()
    else:
        op = hessian_operator(model, loss_fn, micro_batches, params, s, progress.advance, group)
        try:
            spectrum, top_vector = _native_spectrum(op, s, progress, generator, timer, names)
            with timer("noise_curvature"):
                curvature = _noise_curvature(op.matvec, mean, deviations, k, progress, op)
        finally:
            op.release()
    if top_vector is not None:
        with timer("sampling"):
            spectrum = _lambda_max_sampling(model, loss_fn, inputs[:hessian_samples], targets[:hessian_samples], params,
                                            top_vector, spectrum, s, progress, group)
    return ProbeResult(
        loss=loss_name,
        num_params=sum(p.numel() for p in params),
        unused_parameters=unused,
        dtype=str(dtype).removeprefix("torch."),
        hessian_samples=hessian_samples,
        measurements=Measurements(gradient_noise=noise, hessian=spectrum, noise_curvature=curvature),
        timings={phase: round(seconds, 6) for phase, seconds in timer.seconds.items()},
    )
