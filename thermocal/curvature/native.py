"""The native engine (method.md §2): Lanczos for lambda_max (and lambda_min when the rules or
the user ask for it), Hutch++ with the Lanczos basis for the trace, per-block curvature and the
spectral density, all over one counted `HessianOperator`. `--solver power` takes the same route
as pyhessian's engine: power iteration, Hutchinson, then shifted power iteration for the far end.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from thermocal.config import Config
from thermocal.curvature import memory
from thermocal.curvature.blocks import Block, partition
from thermocal.curvature.density import slq_density
from thermocal.curvature.hutchinson import TraceEstimate, deflated_probes, hutchinson
from thermocal.curvature.hutchpp import hutchpp_sketch, sketch_trace
from thermocal.curvature.hvp import HessianOperator, Mode
from thermocal.curvature.lanczos import LanczosResult, lanczos
from thermocal.curvature.power import power_iteration
from thermocal.curvature.sampling import mean_stderr, sampling_groups, trace_sampling_stderr
from thermocal.curvature.spectrum import both_ends, check_finite, record, trace_record
from thermocal.distributed import SINGLE, Group
from thermocal.losses import LossFn
from thermocal.noise import Batch
from thermocal.progress import Progress, Timer
from thermocal.records import EIG_FLOOR_FRACTION, BlockCurvature, EstimateRecord, HessianSpectrum, SpectralDensity

# Where the Hessian's trace is measured, Lanczos runs at least this many steps: its basis deflates the
# trace's probes ([H8]), and 20 rows cost fewer products in all than stopping at lambda_max's 6-12 and
# probing longer ([H12]). Without the trace, Lanczos stops when lambda_max passes [H1].
LANCZOS_MIN_ITER = 20
# The steps the probe budget plans for lambda_max alone ([S9]): Lanczos met [H1]'s 10⁻² in 6-12 steps on
# the benchmark's models ([H12]); a slower run costs more than planned, and the file says so.
LAMBDA_MAX_STEPS = 12
TRACE_CHUNK = 10
DENSITY_PROBES, DENSITY_STEPS = 4, 80  # stochastic Lanczos quadrature ([H9])


def lanczos_steps(measures_trace: bool) -> tuple[int, int]:
    """(the fewest steps Lanczos runs, the steps the budget's plan counts for it [S9]), from whether
    the Hessian's trace is measured: one rule for the run and its plan, so they cannot drift."""
    return (LANCZOS_MIN_ITER, LANCZOS_MIN_ITER) if measures_trace else (0, LAMBDA_MAX_STEPS)


def hvp_mode(s: Config) -> Mode:
    """The native products' mode: `auto` is reverse-over-reverse, the faster on every benchmark
    model, with and without graph reuse (bench/RESULTS.md); pyhessian's engine is always rev-rev."""
    return "rev-rev" if s.hvp == "auto" or s.engine != "native" else s.hvp


def _lanczos_method(name: str, run: LanczosResult) -> str:
    return name if not run.restarts else f"{name}, {run.restarts} thick restart(s) within --lanczos-memory"


class NativeEngine:
    """H of the mean loss over `batches` (this process's share under torchrun, summed over
    processes), counted: `operator.products` is every product the engine has paid for."""

    name = "native"

    def __init__(self, model: torch.nn.Module, loss_fn: LossFn, batches: Sequence[Batch],
                 params: Sequence[torch.nn.Parameter], names: Sequence[str], s: Config,
                 on_products: Callable[[int], None] = lambda count: None, group: Group = SINGLE,
                 keep_graphs: bool = False) -> None:
        """`keep_graphs`: keep every micro-batch's gradient graph whatever --graph-memory says
        (the micro-batches are the trace's sampling groups of a sample --micro-batch takes whole)."""
        total = sum(int(x.shape[0]) for x, _ in batches)
        self.hessian = HessianOperator(model, loss_fn, group.shard(batches), params, mode=hvp_mode(s), vmap=s.vmap_probes,
                                       total_examples=total, reduce=group.sum,
                                       graph_memory=None if keep_graphs else int(s.graph_memory * memory.GIB))
        self.operator = self.hessian.counted(on_products)
        self.settings, self.names = s, list(names)
        # The trace's sampling error needs each micro-batch's quadratic forms: one process's products
        # see only its own share of them ([H14]).
        self.groups = len(batches) if not group.distributed else 0

    @property
    def hvps(self) -> int:
        return self.operator.products

    def release(self) -> None:
        self.hessian.release()

    def krylov(self, generator: torch.Generator, *, top_k: int, bottom_k: int, index: torch.Tensor | None = None,
               min_iter: int = LANCZOS_MIN_ITER) -> LanczosResult:
        """Lanczos from a seeded Gaussian start on H, or on its diagonal block on `index` ([H10]),
        within the basis bounds of [H11]. The start is drawn in float64 and kept in the basis's
        dtype, and so are the products: a float32 model's are never copied to float64 ([H6])."""
        s = self.settings
        op = self.operator if index is None else self.operator.restrict(index)
        dtype = memory.basis_dtype(self.hessian.dtype)
        v0 = torch.randn(op.dim, generator=generator, dtype=torch.float64).to(dtype).to(op.device)
        return lanczos(op, v0, rtol=s.eigen_rtol, floor_fraction=EIG_FLOOR_FRACTION, max_iter=s.iterations,
                       top_k=top_k, bottom_k=bottom_k, min_iter=min(min_iter, op.dim), dtype=dtype,
                       max_basis=memory.basis_rows(op.dim, dtype, int(s.lanczos_memory * memory.GIB), s.iterations))

    def trace(self, krylov: tuple[torch.Tensor, float] | None, scale: float,
              generator: torch.Generator) -> tuple[TraceEstimate, EstimateRecord]:
        """Trace by Hutch++ (sketch: the Lanczos basis when given, whose tr(QHQ^T) = Σ alpha is
        already known, else Meyer et al.'s H·S sketch) or by plain Hutchinson ([H3], [H8])."""
        s, op = self.settings, self.operator.counted()
        offset = 0.0
        if s.trace_estimator == "hutch++":
            if krylov is not None:
                sketch, offset = krylov
                estimator, method = "hutchpp_lanczos", ("Hutch++ with the Lanczos basis as sketch: tr(QHQ^T) = sum(alpha) + "
                                                        "Hutchinson on (I-QQ^T)H(I-QQ^T)")
            elif (columns := memory.sketch_rows(op.dim)) >= 2:
                sketch = hutchpp_sketch(op, columns, generator)
                offset = sketch_trace(op, sketch)
                estimator, method = "hutchpp_sketch", "Hutch++ (sketch Q = orth(H S)): tr(QHQ^T) + Hutchinson on (I-QQ^T)H(I-QQ^T)"
            else:
                sketch = None
                estimator, method = "hutchinson", "Hutchinson, Rademacher probes (a Hutch++ sketch of H S would pass the probe memory bound)"
        else:
            sketch, estimator, method = None, "hutchinson", "Hutchinson, Rademacher probes"
        rows = memory.probe_rows(op.dim, self.hessian.vmap)
        estimate = hutchinson(deflated_probes(op, sketch, generator, rows), rtol=s.trace_rtol, max_probes=s.max_probes,
                              chunk=TRACE_CHUNK, offset=offset, scale=scale)
        return estimate, trace_record(estimator, method, op.products, estimate, s.trace_rtol, scale)

    def spectrum(self, generator: torch.Generator, progress: Progress,
                 timer: Timer) -> tuple[HessianSpectrum, torch.Tensor | None]:
        """The spectrum, and lambda_max's eigenvector (None when the power iteration found lambda_min first)."""
        s = self.settings
        run = self._lanczos_route if s.solver == "lanczos" else self._power_route
        ends, trace, trace_rec, top_vector, top_values, sampling, top_forms = run(generator, progress, timer)
        (lam_max, max_rec), (lam_min, min_rec) = ends
        check_finite(lambda_max=lam_max, lambda_min=lam_min if lam_min is not None else 0.0,
                     trace=trace.value if trace is not None else 0.0)
        density = None
        if s.density:
            with timer("density"):
                progress.phase("Hessian: spectral density (SLQ)", DENSITY_PROBES * DENSITY_STEPS)
                op = self.operator.counted()
                d = slq_density(op, probes=DENSITY_PROBES, steps=DENSITY_STEPS, generator=generator)
                density = SpectralDensity(grid=d.grid, density=d.density, sigma=d.sigma, probes=d.probes, steps=d.steps,
                                          hvps=op.products)
        blocks = None
        if s.per_layer or s.blocks:
            with timer("blocks"):
                parts = partition(self.names, self.hessian.sizes, per_layer=s.per_layer, patterns=s.blocks)
                progress.phase("Hessian: per-block curvature", None)
                blocks = [self._block_curvature(b, generator) for b in parts]
        details = {"lambda_max": max_rec} | ({"trace": trace_rec} if trace_rec is not None else {}) | \
            ({"lambda_min": min_rec} if min_rec is not None else {})
        return HessianSpectrum(
            engine=self.name, hvp_mode=self.hessian.mode, lambda_max=lam_max, lambda_min=lam_min,
            trace=trace.value if trace is not None else None, trace_stderr=trace.stderr if trace is not None else None,
            trace_sampling_stderr=sampling,
            trace_sampling_groups=self.groups if sampling is not None else None, hvps=self.hvps,
            converged=all(rec.converged for rec in details.values()),
            details=details, top_eigenvalues=top_values, density=density, blocks=blocks,
            **self._lambda_max_sampling(top_forms),
        ), top_vector

    def _lambda_max_sampling(self, top_forms: torch.Tensor | None) -> dict:
        """lambda_max's sampling error ([H13]) read off its residual product's per-micro-batch forms
        v·H_g·v, where the micro-batches are the very groups [H13] would form (`sampling_groups`):
        no product of its own. Empty otherwise (measure.py then takes [H13]'s own pass)."""
        b = self.settings.batch_size
        sizes = [int(x.shape[0]) for x, _ in self.hessian.batches]
        count, size = sampling_groups(sum(sizes), b)
        if top_forms is None or count < 2 or sizes != [size] * count:
            return {}
        return {"lambda_max_stderr": mean_stderr(top_forms), "sampling_groups": self.groups}

    def _lanczos_route(self, generator: torch.Generator, progress: Progress, timer: Timer):
        """Lanczos for lambda_max (and lambda_min when asked, [H7]), then, where the trace is
        measured (Config.measures_trace), Hutch++ with its basis ([H8]) and the trace's sampling
        error from the forms their products recorded ([H14]; None where it is not measured)."""
        s = self.settings
        grouped = self.groups >= 2
        with timer("extremes"):
            both = s.resolves_lambda_min
            progress.phase("Hessian: Lanczos (both ends)" if both else "Hessian: Lanczos (lambda_max)", None)
            start = self.hvps
            self.hessian.forms = [] if grouped else None
            run = self.krylov(generator, top_k=s.top_k, bottom_k=1 if both else 0,
                              min_iter=lanczos_steps(s.measures_trace)[0])
            hvps = self.hvps - start
            # the basis rows' forms, in the order they were multiplied (a restart rotates the rows)
            # (only Hutch++'s sampling error reads them: none where the trace is not measured)
            basis_forms = self.hessian.forms[: run.iterations] if grouped and not run.restarts and s.measures_trace \
                else None
            # the top pair's residual product (lanczos computes it first after its iterations): v·H_g·v ([H13])
            top_forms = self.hessian.forms[run.iterations] if grouped else None
            method = _lanczos_method("Lanczos, full reorthogonalization, Ritz residual test", run)

            def end(pair) -> tuple[float, EstimateRecord]:
                return pair.value, record("lanczos", method, hvps, run.iterations, pair.residual, s.eigen_rtol,
                                          pair.converged, run.restarts)

            top = end(run.largest[0])
            bottom = end(run.smallest[0]) if both else (None, None)
            top_values = [p.value for p in run.largest] if s.top_k > 1 else None
            krylov, scale = (run.basis, float(run.alphas.sum())), max(abs(top[0]), run.abs_trace)
            top_vector = run.largest[0].vector  # kept (d numbers) for lambda_max's sampling error ([H13])
            del run  # the other Ritz vectors: d numbers each that the trace need not hold beside its own
        if not s.measures_trace:
            return (top, bottom), None, None, top_vector, top_values, None, top_forms
        with timer("trace"):
            progress.phase("Hessian: trace", None)
            self.hessian.forms = [] if basis_forms is not None else None
            trace, trace_rec = self.trace(krylov, scale, generator)
            probe_forms, self.hessian.forms = self.hessian.forms, None
        sampling = None
        if probe_forms is not None:
            deflated = s.trace_estimator == "hutch++"  # by the Lanczos basis: its rows' forms are the exact part
            offset = torch.stack(basis_forms).sum(dim=0) if deflated else torch.zeros(self.groups, dtype=torch.float64)
            probes = torch.cat([f.reshape(-1, self.groups) for f in probe_forms])  # one row per probe
            sampling = trace_sampling_stderr(offset, probes, torch.tensor(self.hessian.weights, dtype=torch.float64))
        return (top, bottom), trace, trace_rec, top_vector, top_values, sampling, top_forms

    def _power_route(self, generator: torch.Generator, progress: Progress, timer: Timer):
        """Power iteration, the trace, then the far end by shifted power iteration ([H4])."""
        s = self.settings
        with timer("extremes"):
            progress.phase("Hessian: power iteration", None)
            op = self.operator.counted()
            v0 = torch.randn(op.dim, generator=generator, dtype=torch.float64).to(op.device)
            top = power_iteration(op, v0, rtol=s.eigen_rtol, max_iter=s.iterations)
            first = record("power", "power iteration", op.products, top.iterations, top.residual, s.eigen_rtol,
                           top.converged)
        with timer("trace"):
            progress.phase("Hessian: trace", None)
            trace, trace_rec = self.trace(None, abs(top.value), generator)
        with timer("extremes"):
            progress.phase("Hessian: shifted power iteration", None)
            ends = both_ends(self.operator, (top.value, first), trace, s, generator)
        top_vector = top.vector if ends[0][0] == top.value else None
        return ends, trace, trace_rec, top_vector, None, None, None

    def _block_curvature(self, block: Block, generator: torch.Generator) -> BlockCurvature:
        """lambda_max by Lanczos on H_bb, trace by Hutch++ on H_bb with that Lanczos basis ([H10])."""
        s = self.settings
        start = self.hvps
        run = self.krylov(generator, top_k=1, bottom_k=0, index=block.index)
        big = run.largest[0]
        eig_rec = record("lanczos_block", _lanczos_method("Lanczos on the diagonal block", run), self.hvps - start,
                         run.iterations, big.residual, s.eigen_rtol, big.converged, run.restarts)
        # the block's probes are short, but their products pass through the whole d-length operator
        op = self.operator.restrict(block.index).counted()
        scale = max(abs(big.value), run.abs_trace)
        rows = memory.probe_rows(self.operator.dim, self.hessian.vmap)
        trace = hutchinson(deflated_probes(op, run.basis, generator, rows), rtol=s.trace_rtol, max_probes=s.max_probes,
                           chunk=TRACE_CHUNK, offset=float(run.alphas.sum()), scale=scale)
        trace_rec = trace_record("hutchpp_block_lanczos", "Hutch++ with the block's Lanczos basis as sketch", op.products,
                                 trace, s.trace_rtol, scale)
        return BlockCurvature(name=block.name, parameters=list(block.parameters), num_params=op.dim, lambda_max=big.value,
                              trace=trace.value, trace_stderr=trace.stderr,
                              details={"lambda_max": eig_rec, "trace": trace_rec})
