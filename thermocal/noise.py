"""Gradient noise at the training batch size (method.md §1; the seed's §6.1 var(∇L) and mean(|∇L|)).

All statistics are functions of the K×K Gram matrix G_kl = g_k·g_l of the minibatch gradients,
computed in float64 (the gradients are kept in the dtype they were computed in, which halves
their memory for a float32 model and loses nothing). The bootstrap resamples minibatches: a
resample is a vector of counts c (how often each minibatch was drawn), and every statistic is
evaluated from (c, G) directly.
"""

from __future__ import annotations

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


def minibatch_gradients(
    model: torch.nn.Module,
    loss_fn: LossFn,
    batches: Sequence[Batch],
    params: Sequence[torch.Tensor],
    on_batch: Callable[[], None] = lambda: None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (gradients as a K×d matrix in the model's dtype, the K float64 minibatch losses)."""
    grads, losses = [], []
    for index, (inputs, targets) in enumerate(batches):
        loss = loss_fn(model(inputs), targets)
        if not bool(torch.isfinite(loss)):
            raise NumericalError(f"the loss on minibatch {index} is {loss.item()}, not finite")
        grad = flat_gradient(loss, params)
        if not bool(torch.isfinite(grad).all()):
            raise NumericalError(f"the gradient on minibatch {index} holds NaN or Inf values")
        grads.append(grad)
        losses.append(loss.detach().to(torch.float64))
        on_batch()
    return torch.stack(grads), torch.stack(losses)


def split_batches(inputs: torch.Tensor, targets: torch.Tensor, size: int) -> list[Batch]:
    """(inputs, targets) in consecutive batches of `size` (the last may be shorter)."""
    return list(zip(torch.split(inputs, size), torch.split(targets, size)))


def gathered_gradients(model: torch.nn.Module, loss_fn: LossFn, batches: list[Batch], params: Sequence[torch.Tensor],
                       on_batch: Callable[[], None], group: Group = SINGLE) -> tuple[torch.Tensor, torch.Tensor]:
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


def gram_matrix(rows: torch.Tensor, chunk: int = 1 << 20) -> torch.Tensor:
    """rows·rowsᵀ in float64 on the CPU, upcasting `chunk` columns at a time (bounds the copy)."""
    gram = torch.zeros(rows.shape[0], rows.shape[0], dtype=torch.float64, device=rows.device)
    for first in range(0, rows.shape[1], chunk):
        block = rows[:, first:first + chunk].to(torch.float64)
        gram += block @ block.T
    return gram.cpu()


def _statistics(counts: torch.Tensor, gram: torch.Tensor, batch_size: int) -> dict[str, torch.Tensor]:
    """The §1 statistics for each row of `counts` (R×K, each row summing to K)."""
    k = gram.shape[0]
    sq = torch.diagonal(gram)
    norms = sq.clamp_min(0).sqrt()
    mean_sq = torch.einsum("rk,kl,rl->r", counts, gram, counts) / k**2  # |ḡ|²
    grad_sq_mean = counts @ sq / k
    grad_var = (counts @ sq - k * mean_sq) / (k - 1)
    full_grad_sq = (mean_sq - grad_var / k).clamp_min(0)
    return {
        "grad_norm_mean": counts @ norms / k,
        "grad_sq_mean": grad_sq_mean,
        "grad_var": grad_var.clamp_min(0),
        "full_grad_sq": full_grad_sq,
        "noise_scale": batch_size * grad_var / full_grad_sq,
    }


def noise_statistics(
    grads: torch.Tensor,
    losses: torch.Tensor,
    *,
    batch_size: int,
    samples_dropped: int,
    resamples: int,
    generator: torch.Generator,
) -> GradientNoise:
    """Gradient-noise record with bootstrap standard errors over the K minibatches."""
    k = grads.shape[0]
    if k < 2:
        raise ValueError(f"need at least 2 minibatch gradients, got {k}")
    gram = gram_matrix(grads)
    point = {name: float(v[0]) for name, v in _statistics(torch.ones(1, k, dtype=torch.float64), gram, batch_size).items()}
    draws = torch.randint(0, k, (resamples, k), generator=generator)
    counts = torch.zeros(resamples, k, dtype=torch.float64).scatter_add_(1, draws, torch.ones_like(draws, dtype=torch.float64))
    boot = _statistics(counts, gram, batch_size)
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
