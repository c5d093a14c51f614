"""The measuring recipe (method.md §0–§2): prepare → minibatch gradients → gradient noise →
an engine's Hessian spectrum → the curvature along the noise → lambda_max's sampling error →
the Gauss-Newton trace (with --d-eff gauss-newton) → what it all cost (budget.py, which also
sizes the Hessian's sample to --probe-budget).

Each step lives beside what it bounds: preparation in prepare.py, the gradients and their
statistics in noise.py, the engines and estimators in curvature/ (engine.py says what every
engine provides). This module only orders them and times them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from thermocal.budget import budget_examples, cost, planned_products
from thermocal.config import Config
from thermocal.curvature.engine import open_engine
from thermocal.curvature.gauss_newton import EXAMPLE_GRADIENTS_PER_DRAW, GAUSS_NEWTON_DRAWS, gauss_newton_trace
from thermocal.curvature.hvp import supports_forward_mode
from thermocal.curvature.native import hvp_mode, lanczos_steps
from thermocal.curvature.memory import basis_dtype
from thermocal.curvature.noise_curvature import deviations, kept_deviations, noise_curvature
from thermocal.curvature.preconditioned import PRECONDITIONED_PRODUCTS, preconditioned_curvature
from thermocal.curvature.sampling import trace_micro_batch, with_heldout_quotient, with_sampling_error
from thermocal.distributed import SINGLE, Group
from thermocal.errors import InputError
from thermocal.losses import LossFn
from thermocal.noise import gathered_gradients, noise_statistics, split_batches
from thermocal.prepare import prepare
from thermocal.progress import NoProgress, Progress, Timer
from thermocal.records import Measurements

BOOTSTRAP = 1000  # resamples of the minibatches for the noise statistics' standard errors ([N6])

__all__ = ["BOOTSTRAP", "NoProgress", "ProbeResult", "Progress", "probe"]


@dataclass(frozen=True)
class ProbeResult:
    loss: str
    num_params: int
    dtype: str
    measurements: Measurements
    hessian_samples: int
    timings: dict[str, float] = field(default_factory=dict)
    unused_parameters: list[str] = field(default_factory=list)


def probe(
    model: torch.nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    settings: Config,
    device: torch.device,
    progress: Progress | None = None,
    loss_fn: LossFn | None = None,
    group: Group = SINGLE,
    example_chunk: int = 1,
) -> ProbeResult:
    """Measure gradient noise and the Hessian spectrum of `model` (changed in place: mode,
    device, dtype; thermocal.probe passes a copy) on the sample.

    `loss_fn` (a mean over examples), when given, replaces the loss `settings.loss` names.
    The sample is shuffled with the seeded generator and cut into K = ⌊N/B⌋ minibatches of the
    training batch size B; a short last batch is dropped. The Hessian is that of the mean loss
    over the first `hessian_samples` of the same shuffled K·B examples (all of them by default),
    fewer when `settings.budget` bounds the probe's cost.
    `example_chunk`: the examples the Gauss-Newton trace feeds the model at a time (a program
    exported for a fixed batch takes that batch; one otherwise, [H15]).
    """
    s = settings
    if s.engine == "pyhessian" and group.distributed:  # before any work: it would fail after the gradients
        raise InputError("--engine pyhessian runs in one process; use the native engine under torchrun")
    if s.hvp == "fwd-rev" and not supports_forward_mode(model):
        raise InputError("--hvp fwd-rev needs an eager module; TorchScript models use rev-rev")
    progress = progress or NoProgress()
    timer = Timer()
    generator = torch.Generator().manual_seed(s.seed)
    p = prepare(model, inputs, targets, s, device, generator, loss_fn)
    k, b = p.minibatches, s.batch_size

    with timer("gradient_noise"):
        progress.phase("Gradient noise", k)
        dim = sum(param.numel() for param in p.params)
        summary = gathered_gradients(p.model, p.loss_fn, split_batches(p.inputs, p.targets, b), p.params,
                                     progress.advance, group, keep=kept_deviations(dim, p.params[0].element_size(), k),
                                     second_moment=s.optimizer == "adamw")
        noise = noise_statistics(summary, batch_size=b, samples_dropped=p.dropped, resamples=BOOTSTRAP,
                                 generator=generator)
        mean, rows = deviations(summary)

    n_hessian = min(s.hessian_samples or k * b, k * b)
    gauss_newton = s.d_eff == "gauss-newton"
    # tr(G) costs EXAMPLE_GRADIENTS_PER_DRAW per example and draw, a product's worth per draw ([H15]);
    # without the Hessian's trace, Lanczos stops at lambda_max's convergence (LAMBDA_MAX_STEPS planned)
    planned = planned_products(lanczos_steps(s.measures_trace)[1], len(rows), trace=s.measures_trace,
                               heldout=s.budget is not None) + \
        (GAUSS_NEWTON_DRAWS if gauss_newton else 0) + (PRECONDITIONED_PRODUCTS if s.optimizer == "adamw" else 0)
    if s.budget is not None:
        n_hessian = min(n_hessian, budget_examples(s.budget, s.steps, b, k * b, planned))
    inputs, targets = p.inputs[:n_hessian], p.targets[:n_hessian]
    micro, whole = s.micro_batch, s.micro_batch >= n_hessian  # whole: --micro-batch takes the sample in one
    if s.engine == "native" and not group.distributed:  # micro-batches of whole minibatches: the trace's groups ([H14])
        micro = trace_micro_batch(n_hessian, b, s.micro_batch)
    engine = open_engine(p.model, p.loss_fn, split_batches(inputs, targets, micro), p.params, p.names, s, device,
                         progress, group, keep_graphs=whole)
    try:
        spectrum, top_vector = engine.spectrum(generator, progress, timer)
        with timer("noise_curvature"):
            progress.phase("Hessian: along the gradient noise", len(rows) + 1)
            curvature = noise_curvature(engine.operator, mean, rows, k)
        preconditioned = None
        if s.optimizer == "adamw":
            with timer("preconditioned"):
                progress.phase("Hessian in Adam's metric", None)
                preconditioned = preconditioned_curvature(engine.operator, summary, s, generator,
                                                          basis_dtype(p.dtype))
    finally:
        engine.release()
    if top_vector is not None and spectrum.lambda_max_stderr is None:  # not already read off the micro-batches ([H13])
        with timer("sampling"):
            spectrum = with_sampling_error(spectrum, p.model, p.loss_fn, inputs, targets, p.params, top_vector,
                                           batch_size=b, mode=hvp_mode(s), group=group, progress=progress)
    if top_vector is not None and n_hessian < k * b:  # a subsample: bound lambda_max's selection bias ([H16])
        with timer("sampling"):
            spectrum = with_heldout_quotient(spectrum, p.model, p.loss_fn, p.inputs[n_hessian:], p.targets[n_hessian:],
                                             p.params, top_vector, examples=n_hessian, batch_size=b, mode=hvp_mode(s),
                                             group=group, progress=progress)
    trace_g = None
    if gauss_newton:
        with timer("gauss_newton"):
            progress.phase("Gauss-Newton trace", n_hessian)
            trace_g = gauss_newton_trace(p.model, p.loss_fn, inputs, targets, p.params, chunk=example_chunk,
                                         generator=generator, progress=progress, group=group)
    extra = None if trace_g is None else EXAMPLE_GRADIENTS_PER_DRAW * trace_g.draws * trace_g.examples
    extra_hvps = preconditioned.hvps if preconditioned is not None else 0
    spent = cost(k * b, n_hessian, spectrum.hvps + curvature.hvps + extra_hvps, planned, s.steps, b, s.budget, extra)
    return ProbeResult(
        loss=p.loss_name,
        num_params=sum(param.numel() for param in p.params),
        unused_parameters=p.unused,
        dtype=str(p.dtype).removeprefix("torch."),
        hessian_samples=n_hessian,
        measurements=Measurements(gradient_noise=noise, hessian=spectrum, noise_curvature=curvature, cost=spent,
                                  gauss_newton=trace_g, preconditioned=preconditioned),
        timings={phase: round(seconds, 6) for phase, seconds in timer.seconds.items()},
    )
