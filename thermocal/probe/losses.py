"""Choose and check the loss (`--loss auto|cross_entropy|mse`); every loss is a mean over examples."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from thermocal.errors import DataError

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
LOSS_NAMES = ("auto", "cross_entropy", "mse")


def _cross_entropy(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(outputs, targets)


def _mse(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(outputs, targets.reshape(outputs.shape).to(outputs.dtype))


def _per_example(shape: torch.Size) -> int:
    return int(torch.Size(shape[1:]).numel())


def _check_cross_entropy(outputs: torch.Tensor, targets: torch.Tensor) -> None:
    if outputs.dim() < 2:
        raise DataError(f"cross_entropy needs outputs of shape (N, C), the model gives {tuple(outputs.shape)}")
    if targets.is_floating_point():
        if targets.shape[1:] != outputs.shape[1:]:
            raise DataError(
                f"cross_entropy with float targets needs class probabilities shaped like the outputs "
                f"{tuple(outputs.shape[1:])} per example, got {tuple(targets.shape[1:])}"
            )
        return
    classes = outputs.shape[1]
    if targets.shape[1:] != outputs.shape[2:]:
        raise DataError(
            f"cross_entropy needs class-index targets of shape {tuple(outputs.shape[2:])} per example "
            f"for outputs {tuple(outputs.shape[1:])}, got {tuple(targets.shape[1:])}"
        )
    low, high = int(targets.min()), int(targets.max())
    if low < 0 or high >= classes:
        raise DataError(f"targets range over [{low}, {high}] but the model has {classes} classes (0..{classes - 1})")


def _check_mse(outputs: torch.Tensor, targets: torch.Tensor) -> None:
    if _per_example(targets.shape) != _per_example(outputs.shape):
        raise DataError(
            f"mse needs targets shaped like the outputs: {tuple(outputs.shape[1:])} per example, "
            f"got {tuple(targets.shape[1:])}"
        )


def resolve_loss(name: str, outputs: torch.Tensor, targets: torch.Tensor) -> tuple[str, LossFn]:
    """Return the loss's name and function, after checking that it fits `outputs` and all `targets`.

    `outputs` are the model's outputs on the first examples; `targets` is the whole sample's.
    auto: integer targets -> cross_entropy; float targets with as many values per example as
    the outputs -> mse; anything else is an error asking for --loss.
    """
    if name == "auto":
        is_integer = not targets.is_floating_point() and targets.dtype != torch.bool
        if is_integer:
            name = "cross_entropy"
        elif targets.is_floating_point() and _per_example(targets.shape) == _per_example(outputs.shape):
            name = "mse"
        else:
            raise DataError(
                f"cannot choose a loss: targets are {targets.dtype} of shape {tuple(targets.shape[1:])} per "
                f"example, outputs are {tuple(outputs.shape[1:])}; pass --loss cross_entropy or --loss mse"
            )
    if name == "cross_entropy":
        _check_cross_entropy(outputs, targets)
        return name, _cross_entropy
    if name == "mse":
        _check_mse(outputs, targets)
        return name, _mse
    raise DataError(f"unknown loss {name!r}; choose one of {', '.join(LOSS_NAMES)}")
