"""How far lambda_max and the trace would move with another sample of the same size (method.md
[H13], [H14]).

lambda_max of the Hessian of the mean loss over n examples is itself a sample statistic: another
n examples from the same data would give another value. To first order in the sample's
fluctuation δH, lambda_max moves by v·δH·v (v its unit eigenvector), so its sampling standard
error is that of a mean over examples of v·H_i·v. Estimated from G equal groups of the
(shuffled) examples: q_g = v·H_g·v for each group's mean-loss Hessian H_g, whose mean over
groups is v·H·v = lambda_max and whose spread gives se = sd(q_g)/√G. One Hessian-vector product
per group, on n/G examples each: one product over the sample in all (none where the groups are
the trace's micro-batches below: Lanczos's residual product has recorded the q_g). First order only: where
the top eigenvalue is nearly degenerate, the eigenvector itself moves between samples and the
error can be larger than this.

The trace's ([H14]) comes from the products the trace already takes, once the Hessian's examples
are split into groups (micro-batches of whole minibatches, at most TRACE_GROUPS of them) and each
product records every group's quadratic form (curvature/hvp.py, `forms`): a two-way layout of
probes × groups whose group effect is the sampling error and whose interaction is the probes'
noise on each group, removed in expectation (`trace_sampling_stderr`).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from thermocal.curvature.hvp import HessianOperator, Mode
from thermocal.distributed import SINGLE, Group
from thermocal.losses import LossFn
from thermocal.noise import Batch, split_batches
from thermocal.progress import NoProgress, Progress
from thermocal.records import HessianSpectrum

# At most this many groups of whole minibatches give lambda_max's sampling error.
SAMPLING_GROUPS = 16
# At most this many groups of whole minibatches (micro-batches of the Hessian's products) give the
# trace's; fewer and larger micro-batches than SAMPLING_GROUPS', since every product pays for the split.
TRACE_GROUPS = 8


def trace_micro_batch(examples: int, batch_size: int, micro_batch: int) -> int:
    """Examples per micro-batch of the Hessian's products: whole minibatches of `batch_size`, so
    that the `examples` make at most TRACE_GROUPS groups (a remainder of under one minibatch is a
    group of its own), and never more than the `micro_batch` setting. Unchanged with fewer than
    two minibatches: there is then no spread to read."""
    minibatches = examples // batch_size
    if minibatches < 2:
        return micro_batch
    return min(micro_batch, -(-minibatches // TRACE_GROUPS) * batch_size)


def trace_sampling_stderr(offset_forms: torch.Tensor, probe_forms: torch.Tensor, weights: torch.Tensor) -> float:
    """√ of `trace_sampling_variance`, floored at 0: where the probes' noise on each group
    outweighs the spread between groups the floor makes it err large, never negative."""
    return math.sqrt(max(0.0, trace_sampling_variance(offset_forms, probe_forms, weights)))


def trace_sampling_variance(offset_forms: torch.Tensor, probe_forms: torch.Tensor, weights: torch.Tensor) -> float:
    """The trace's sampling variance over examples from a probes × groups layout ([H14]).

    `offset_forms` (G): each group's exact part Σ_j q_jᵀH_g q_j (the deflating basis's quadratic
    forms; zeros without one); `probe_forms` (K × G): u_kᵀH_g u_k for each probe and group;
    `weights` (G): the groups' shares of the examples. Y[k, g] = offset_g + probe_kg has mean
    Σ_g w_g·mean_k Y[k, g] = the trace estimate. Read as probe + group + interaction effects of
    examples: the group means' weighted spread SS_B = Σ w_g (Ȳ_g − Ȳ)² has expectation
    (G − 1)(σ_b² + σ_e²/K)/n and the interaction's SS_E = Σ_g w_g Σ_k R_kg² has (K − 1)(G − 1)σ_e²/n,
    so the sampling variance σ_b²/n is (SS_B − SS_E/(K(K − 1)))/(G − 1): unbiased, and negative
    in some draws where it is small beside the probes' noise."""
    groups, probes = int(weights.numel()), int(probe_forms.shape[0])
    if groups < 2 or probes < 2:
        raise ValueError("the trace's sampling error needs at least two groups and two probes")
    w = weights.to(torch.float64) / weights.sum()
    y = probe_forms.to(torch.float64) + offset_forms.to(torch.float64)
    by_group = y.mean(dim=0)  # Ȳ_g
    by_probe = y @ w  # Ȳ_k: each probe on the whole sample
    grand = float(by_group @ w)
    between = float(((by_group - grand) ** 2) @ w)
    residual = y - by_group - by_probe.unsqueeze(1) + grand
    interaction = float((residual ** 2).sum(dim=0) @ w)
    return (between - interaction / (probes * (probes - 1))) / (groups - 1)


def sampling_groups(examples: int, batch_size: int) -> tuple[int, int]:
    """[H13]'s groups of `examples`: (how many, examples in each), each of p whole minibatches, p
    the fewest that make at most SAMPLING_GROUPS groups; a remainder is left out. Fewer than two
    groups (under two minibatches) means none: no sampling error."""
    batches = examples // batch_size
    if batches < 2:
        return batches, batch_size
    per = -(-batches // SAMPLING_GROUPS)  # minibatches per group
    return batches // per, per * batch_size


def rayleigh_quotients(model: torch.nn.Module, loss_fn: LossFn, groups: Sequence[Batch], params: Sequence[torch.nn.Parameter],
                       vector: torch.Tensor, *, mode: Mode = "rev-rev", group: Group = SINGLE) -> torch.Tensor:
    """v·H_g·v for each group's mean-loss Hessian (float64, one per group), v normalised here.
    Under torchrun each process takes every world-th group and the values are summed back."""
    v = vector.to(torch.float64)
    v = v / torch.linalg.vector_norm(v)
    values = torch.zeros(len(groups), dtype=torch.float64, device=v.device)
    for index in group.shard(range(len(groups))):
        op = HessianOperator(model, loss_fn, [groups[index]], params, mode=mode, vmap=False)
        try:
            values[index] = torch.dot(v, op.matvec(v))
        finally:
            op.release()
    return group.sum(values)


def mean_stderr(values: torch.Tensor) -> float:
    """The standard error of the mean of `values` (at least two): sample sd / √count."""
    count = int(values.numel())
    if count < 2:
        raise ValueError("a standard error needs at least two groups")
    return float(values.std(correction=1)) / math.sqrt(count)


def with_sampling_error(spectrum: HessianSpectrum, model: torch.nn.Module, loss_fn: LossFn, inputs: torch.Tensor,
                        targets: torch.Tensor, params: Sequence[torch.nn.Parameter], vector: torch.Tensor, *,
                        batch_size: int, mode: Mode, group: Group = SINGLE,
                        progress: Progress = NoProgress()) -> HessianSpectrum:
    """`spectrum` with lambda_max's sampling standard error: at most SAMPLING_GROUPS equal groups
    of whole minibatches of the Hessian's (shuffled) examples (whole minibatches, so that a
    program exported for a fixed batch is fed what it takes), a remainder left out; one product
    over the sample in all, counted as one HVP. Unchanged with fewer than two minibatches."""
    count, size = sampling_groups(int(inputs.shape[0]), batch_size)
    if count < 2:
        return spectrum
    groups = split_batches(inputs[: count * size], targets[: count * size], size)
    progress.phase("Hessian: lambda_max's sampling error", count)
    quotients = rayleigh_quotients(model, loss_fn, groups, params, vector, mode=mode, group=group)
    progress.advance(count)
    return spectrum.model_copy(update={"lambda_max_stderr": mean_stderr(quotients), "sampling_groups": count,
                                       "hvps": spectrum.hvps + 1})



def with_heldout_quotient(spectrum: HessianSpectrum, model: torch.nn.Module, loss_fn: LossFn, inputs: torch.Tensor,
                          targets: torch.Tensor, params: Sequence[torch.nn.Parameter], vector: torch.Tensor, *,
                          examples: int, batch_size: int, mode: Mode, group: Group = SINGLE,
                          progress: Progress = NoProgress()) -> HessianSpectrum:
    """`spectrum` with lambda_max's Ritz vector's Rayleigh quotient on up to `examples` of `inputs`
    (examples the Hessian did not see), in whole minibatches, with its sampling error over
    [H13]'s groups of them ([H16]); one product, counted as one HVP. Unchanged without a whole
    minibatch to spare."""
    count, size = sampling_groups(min(examples, int(inputs.shape[0])), batch_size)
    if count < 1:
        return spectrum
    used = count * size
    groups = split_batches(inputs[:used], targets[:used], size)
    progress.phase("Hessian: lambda_max on held-out examples", count)
    quotients = rayleigh_quotients(model, loss_fn, groups, params, vector, mode=mode, group=group)
    progress.advance(count)
    return spectrum.model_copy(update={
        "lambda_max_heldout": float(quotients.mean()), "heldout_examples": used, "hvps": spectrum.hvps + 1,
        "lambda_max_heldout_stderr": mean_stderr(quotients) if count >= 2 else None})
