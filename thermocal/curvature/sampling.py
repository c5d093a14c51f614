"""How far lambda_max would move with another sample of the same size (method.md [H13]).

lambda_max of the Hessian of the mean loss over n examples is itself a sample statistic: another
n examples from the same data would give another value. To first order in the sample's
fluctuation δH, lambda_max moves by v·δH·v (v its unit eigenvector), so its sampling standard
error is that of a mean over examples of v·H_i·v. Estimated from G equal groups of the
(shuffled) examples: q_g = v·H_g·v for each group's mean-loss Hessian H_g, whose mean over
groups is v·H·v = lambda_max and whose spread gives se = sd(q_g)/√G. One Hessian-vector product
per group, on n/G examples each: one product over the sample in all. First order only: where
the top eigenvalue is nearly degenerate, the eigenvector itself moves between samples and the
error can be larger than this.
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
    batches = int(inputs.shape[0]) // batch_size
    if batches < 2:
        return spectrum
    per = -(-batches // SAMPLING_GROUPS)  # minibatches per group: at most SAMPLING_GROUPS groups
    count, size = batches // per, per * batch_size
    groups = split_batches(inputs[: count * size], targets[: count * size], size)
    progress.phase("Hessian: lambda_max's sampling error", count)
    quotients = rayleigh_quotients(model, loss_fn, groups, params, vector, mode=mode, group=group)
    progress.advance(count)
    return spectrum.model_copy(update={"lambda_max_stderr": mean_stderr(quotients), "sampling_groups": count,
                                       "hvps": spectrum.hvps + 1})

