"""Gradient noise at the training batch size (method.md §1; the seed's §6.1 var(∇L) and mean(|∇L|)).

The K minibatch gradients are never kept ([N9]): each one, as it is computed, adds its |g_k|²,
|g_k| and loss (K numbers each) and is added into one of G ≤ MAX_GROUPS sums of consecutive
minibatches, in float64 (G = K while K ≤ MAX_GROUPS: then each sum is one gradient, exactly),
and, where asked, into Σ g_k² per coordinate (AdamW's second moment, [O3]); the first few are
kept whole for the noise's curvature ([N8]). Memory is G·d + a few d, whatever K is. Every
statistic is a function of the per-minibatch numbers and of the G×G Gram matrix of the sums;
the bootstrap resamples the groups (a resample is a vector of counts c, how often each group
was drawn), which with G = K is the minibatch bootstrap itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from thermocal.distributed import SINGLE, Group
from thermocal.errors import DataError, NumericalError
from thermocal.losses import LossFn
from thermocal.records import GradientNoise

Batch = tuple[torch.Tensor, torch.Tensor]


def flat_gradient(loss: torch.Tensor, params: Sequence[torch.Tensor]) -> torch.Tensor:
    grads = torch.autograd.grad(loss, params)
    return torch.cat([g.reshape(-1) for g in grads])


# The most group sums the gradients are kept as ([N9]); at most GROUP_MEMORY bytes of them, but
# never fewer than MIN_GROUPS (nor more than K).
MAX_GROUPS, MIN_GROUPS, GROUP_MEMORY = 64, 16, 1 << 29


def group_of(index, k: int, groups: int):
    """The group of minibatch `index` (an int, or a tensor of them) among `groups` groups of consecutive
    minibatches of the K: one rule for where a gradient is summed and what each group holds."""
    return index * groups // k


def group_count(k: int, dim: int) -> int:
    """G: K while K ≤ MAX_GROUPS (each sum one gradient), else as many float64 sums of d numbers
    as GROUP_MEMORY holds, between MIN_GROUPS and MAX_GROUPS."""
    fit = GROUP_MEMORY // max(8 * dim, 1)
    return min(k, max(MIN_GROUPS, min(MAX_GROUPS, fit)))


@dataclass
class GradientSums:
    """What the probe keeps of the K minibatch gradients ([N9]): per minibatch |g_k|², |g_k| and the
    loss (float64); G group sums of consecutive minibatches (float64, `counts` minibatches each);
    the first `first.shape[0]` gradients whole (the model's dtype); Σ g_k² per coordinate when
    asked (float64)."""

    sq: torch.Tensor
    norms: torch.Tensor
    losses: torch.Tensor
    sums: torch.Tensor
    counts: torch.Tensor
    first: torch.Tensor
    second_moment: torch.Tensor | None = None

    @property
    def k(self) -> int:
        return int(self.sq.numel())

    @property
    def mean(self) -> torch.Tensor:
        """ḡ in float64."""
        return self.sums.sum(dim=0) / self.k

    @classmethod
    def of(cls, grads: torch.Tensor, losses: torch.Tensor | None = None, *, groups: int | None = None,
           keep: int = 0, second_moment: bool = False) -> "GradientSums":
        """The summary of gradients held as a K×d matrix, added one row at a time as the probe adds them."""
        k = grads.shape[0]
        acc = Accumulator(k, grads.shape[1], grads.dtype, grads.device, groups=groups, keep=keep,
                          second_moment=second_moment)
        for index in range(k):
            acc.add(index, grads[index], 0.0 if losses is None else float(losses[index]))
        return acc.result()


class Accumulator:
    """Adds the K minibatch gradients into a GradientSums one at a time ([N9])."""

    def __init__(self, k: int, dim: int, dtype: torch.dtype, device: torch.device, *, groups: int | None = None,
                 keep: int = 0, second_moment: bool = False) -> None:
        self.k = k
        self.g = groups if groups is not None else group_count(k, dim)
        self.sq = torch.zeros(k, dtype=torch.float64)
        self.norms = torch.zeros(k, dtype=torch.float64)
        self.losses = torch.zeros(k, dtype=torch.float64)
        self.sums = torch.zeros(self.g, dim, dtype=torch.float64, device=device)
        self.counts = torch.bincount(group_of(torch.arange(k), k, self.g), minlength=self.g).to(torch.float64)
        self.first = torch.zeros(min(keep, k), dim, dtype=dtype, device=device)
        self.second = torch.zeros(dim, dtype=torch.float64, device=device) if second_moment else None

    def add(self, index: int, grad: torch.Tensor, loss: float) -> None:
        wide = grad.to(torch.float64)
        self.sq[index] = float(wide @ wide)
        self.norms[index] = self.sq[index].sqrt()
        self.losses[index] = loss
        self.sums[group_of(index, self.k, self.g)] += wide
        if index < self.first.shape[0]:
            self.first[index] = grad
        if self.second is not None:
            self.second += wide.square()

    def reduce(self, group: "Group") -> None:
        """Sum every process's share (each added its own minibatches; the rest are zeros)."""
        for tensor in (self.sq, self.norms, self.losses, self.sums, self.first) + \
                ((self.second,) if self.second is not None else ()):
            moved = tensor.to(self.sums.device)
            group.sum(moved)
            tensor.copy_(moved)

    def result(self) -> GradientSums:
        return GradientSums(self.sq, self.norms, self.losses, self.sums, self.counts, self.first, self.second)


def minibatch_gradients(
    model: torch.nn.Module,
    loss_fn: LossFn,
    batches: Sequence[Batch],
    params: Sequence[torch.Tensor],
    accumulator: Accumulator,
    indices: Sequence[int],
    on_batch: Callable[[], None] = lambda: None,
) -> None:
    """Add the minibatch gradients of `batches` (the K's `indices`) into `accumulator`, one at a time."""
    for index, (inputs, targets) in zip(indices, batches):
        loss = loss_fn(model(inputs), targets)
        if not bool(torch.isfinite(loss)):
            raise NumericalError(f"the loss on minibatch {index} is {loss.item()}, not finite")
        grad = flat_gradient(loss, params)
        if not bool(torch.isfinite(grad).all()):
            raise NumericalError(f"the gradient on minibatch {index} holds NaN or Inf values")
        accumulator.add(index, grad, float(loss.detach()))
        on_batch()


def split_batches(inputs: torch.Tensor, targets: torch.Tensor, size: int) -> list[Batch]:
    """(inputs, targets) in consecutive batches of `size` (the last may be shorter)."""
    return list(zip(torch.split(inputs, size), torch.split(targets, size)))


def gathered_gradients(model: torch.nn.Module, loss_fn: LossFn, batches: list[Batch], params: Sequence[torch.Tensor],
                       on_batch: Callable[[], None], group: Group = SINGLE, *, keep: int = 0,
                       second_moment: bool = False) -> GradientSums:
    """The K minibatch gradients' summary ([N9]); under torchrun each process takes every world-th
    minibatch and the summaries are summed. A non-finite value on any process stops all of them
    with the same error (no process is left waiting in a collective)."""
    dim = sum(p.numel() for p in params)
    acc = Accumulator(len(batches), dim, params[0].dtype, params[0].device, keep=keep, second_moment=second_moment)
    indices = list(range(len(batches)))
    if not group.distributed:
        minibatch_gradients(model, loss_fn, batches, params, acc, indices, on_batch)
        return acc.result()
    if len(batches) < group.world:
        raise DataError(f"{len(batches)} minibatches for {group.world} processes: use fewer processes or more data")
    error: NumericalError | None = None
    try:
        minibatch_gradients(model, loss_fn, group.shard(batches), params, acc, group.shard(indices), on_batch)
    except NumericalError as exc:
        error = exc
    failed = group.sum(torch.tensor([1.0 if error else 0.0], device=params[0].device))
    if float(failed) > 0:
        raise error or NumericalError("another process met a non-finite loss or gradient")
    acc.reduce(group)
    return acc.result()


def gram_matrix(rows: torch.Tensor, chunk: int = 1 << 20) -> torch.Tensor:
    """rows·rowsᵀ in float64 on the CPU, upcasting `chunk` columns at a time (bounds the copy)."""
    gram = torch.zeros(rows.shape[0], rows.shape[0], dtype=torch.float64, device=rows.device)
    for first in range(0, rows.shape[1], chunk):
        block = rows[:, first:first + chunk].to(torch.float64)
        gram += block @ block.T
    return gram.cpu()


def _statistics(counts: torch.Tensor, gram: torch.Tensor, per_group: dict[str, torch.Tensor], sizes: torch.Tensor,
                batch_size: int) -> dict[str, torch.Tensor]:
    """The §1 statistics for each row of `counts` (R×G: how often each group was drawn), from the
    Gram matrix of the group sums and the groups' sums of |g_k|² and |g_k| (`sizes` minibatches each)."""
    k = counts @ sizes  # minibatches in each resample (K when every group is drawn once)
    mean_sq = torch.einsum("rg,gh,rh->r", counts, gram, counts) / k**2  # |ḡ|²
    sq = counts @ per_group["sq"]
    grad_var = (sq - k * mean_sq) / (k - 1)
    full_grad_sq = (mean_sq - grad_var / k).clamp_min(0)
    return {
        "grad_norm_mean": counts @ per_group["norms"] / k,
        "grad_sq_mean": sq / k,
        "grad_var": grad_var.clamp_min(0),
        "full_grad_sq": full_grad_sq,
        "noise_scale": batch_size * grad_var / full_grad_sq,
    }


def noise_statistics(
    summary: GradientSums,
    *,
    batch_size: int,
    samples_dropped: int,
    resamples: int,
    generator: torch.Generator,
) -> GradientNoise:
    """Gradient-noise record with bootstrap standard errors over the groups of minibatches ([N6],
    [N9]: over the K minibatches themselves while K ≤ MAX_GROUPS)."""
    k, losses = summary.k, summary.losses
    if k < 2:
        raise ValueError(f"need at least 2 minibatch gradients, got {k}")
    g = summary.sums.shape[0]
    gram = gram_matrix(summary.sums)
    groups = group_of(torch.arange(k), k, g)
    per_group = {name: torch.zeros(g, dtype=torch.float64).index_add_(0, groups, values)
                 for name, values in (("sq", summary.sq), ("norms", summary.norms))}
    sizes = summary.counts.cpu()
    point = {name: float(v[0]) for name, v in
             _statistics(torch.ones(1, g, dtype=torch.float64), gram, per_group, sizes, batch_size).items()}
    draws = torch.randint(0, g, (resamples, g), generator=generator)
    counts = torch.zeros(resamples, g, dtype=torch.float64).scatter_add_(1, draws, torch.ones_like(draws, dtype=torch.float64))
    boot = _statistics(counts, gram, per_group, sizes, batch_size)
    stderr = {name: float(v.std()) if resamples > 1 else 0.0 for name, v in boot.items()}
    var_norm = torch.stack([boot["grad_var"], boot["grad_norm_mean"]])
    cov = float(torch.cov(var_norm)[0, 1]) if resamples > 1 else 0.0
    noise_finite = bool(torch.isfinite(boot["noise_scale"]).all())
    noise_scale = point["noise_scale"] if point["full_grad_sq"] > 0 else None
    return GradientNoise(
        batch_size=batch_size,
        num_batches=k,
        samples_used=k * batch_size,
        samples_dropped=samples_dropped,
        loss=float(losses.mean()),
        grad_norm_mean=point["grad_norm_mean"],
        grad_norm_mean_stderr=stderr["grad_norm_mean"],
        grad_sq_mean=point["grad_sq_mean"],
        grad_sq_mean_stderr=stderr["grad_sq_mean"],
        grad_var=point["grad_var"],
        grad_var_stderr=stderr["grad_var"],
        full_grad_sq=point["full_grad_sq"],
        full_grad_sq_stderr=stderr["full_grad_sq"],
        noise_scale=noise_scale,
        noise_scale_stderr=stderr["noise_scale"] if noise_scale is not None and noise_finite else None,
        grad_var_norm_cov=cov,
        bootstrap_resamples=resamples,
        loss_stderr=float(losses.std() / k**0.5),
    )
