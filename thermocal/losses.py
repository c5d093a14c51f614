"""Choose and check the loss (`--loss`); every loss is a mean over examples (method.md [S4]).

Each built-in loss is a function of (outputs, targets) plus a check that the targets fit the
outputs, run once on the model's outputs for the first examples before any measuring, so a
mismatch is one clear line instead of a failure deep inside autograd.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from thermocal.errors import DataError, InputError

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
IGNORE_INDEX = -100
LOSS_NAMES = ("auto", "cross_entropy", "nll", "mse", "l1", "huber", "bce", "bce_with_logits", "lm")


@dataclass(frozen=True)
class LossSpec:
    name: str = "auto"
    label_smoothing: float = 0.0


def _per_example(shape: torch.Size) -> int:
    return int(torch.Size(shape[1:]).numel())


def _shape(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(t.shape[1:])


def _check_classes(name: str, outputs: torch.Tensor, targets: torch.Tensor) -> None:
    """Class-index targets (N, d1...) for outputs (N, C, d1...), or probabilities shaped like them."""
    if outputs.dim() < 2:
        raise DataError(f"{name} needs outputs of shape (N, C), the model gives {tuple(outputs.shape)}")
    if targets.is_floating_point():
        if targets.shape[1:] != outputs.shape[1:]:
            raise DataError(f"{name} with float targets needs class probabilities shaped like the outputs "
                            f"{_shape(outputs)} per example, got {_shape(targets)}")
        return
    if targets.shape[1:] != outputs.shape[2:]:
        raise DataError(f"{name} needs class-index targets of shape {tuple(outputs.shape[2:])} per example "
                        f"for outputs {_shape(outputs)}, got {_shape(targets)}")
    _check_range(targets, outputs.shape[1])


def _check_range(targets: torch.Tensor, classes: int) -> None:
    """Class indices in 0..classes-1; -100 is torch's (and transformers') ignored target."""
    kept = targets[targets != IGNORE_INDEX]
    if kept.numel() == 0:
        raise DataError(f"every target is the ignore index {IGNORE_INDEX}")
    low, high = int(kept.min()), int(kept.max())
    if low < 0 or high >= classes:
        raise DataError(f"targets range over [{low}, {high}] but the model has {classes} classes (0..{classes - 1})")


def _check_lm(outputs: torch.Tensor, targets: torch.Tensor) -> None:
    if targets.is_floating_point() or outputs.dim() != targets.dim() + 1 or outputs.shape[1:-1] != targets.shape[1:]:
        raise DataError(f"lm needs token-id targets (N, T) for logits (N, T, V): got targets {tuple(targets.shape[1:])} "
                        f"{targets.dtype} per example for outputs {_shape(outputs)}")
    _check_range(targets, outputs.shape[-1])


def _check_like_outputs(name: str, outputs: torch.Tensor, targets: torch.Tensor) -> None:
    if _per_example(targets.shape) != _per_example(outputs.shape):
        raise DataError(f"{name} needs targets shaped like the outputs: {_shape(outputs)} per example, got {_shape(targets)}")


def _check_binary(name: str, outputs: torch.Tensor, targets: torch.Tensor) -> None:
    _check_like_outputs(name, outputs, targets)
    low, high = float(targets.min()), float(targets.max())
    if low < 0 or high > 1:
        raise DataError(f"{name} needs targets in [0, 1], got values in [{low:g}, {high:g}]")
    if name == "bce":
        out_low, out_high = float(outputs.min()), float(outputs.max())
        if out_low < 0 or out_high > 1:
            raise DataError(f"bce needs probabilities from the model, its outputs range over [{out_low:.3g}, "
                            f"{out_high:.3g}]; for logits use --loss bce_with_logits")


def _like(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return targets.reshape(outputs.shape).to(outputs.dtype)


def _builtin(name: str, smoothing: float) -> LossFn:
    if name == "cross_entropy":
        return lambda o, t: F.cross_entropy(o, t, label_smoothing=smoothing)
    if name == "lm":
        return lambda o, t: F.cross_entropy(o.reshape(-1, o.shape[-1]), t.reshape(-1), label_smoothing=smoothing)
    if name == "nll":
        return lambda o, t: F.nll_loss(o, t)
    if name == "mse":
        return lambda o, t: F.mse_loss(o, _like(o, t))
    if name == "l1":
        return lambda o, t: F.l1_loss(o, _like(o, t))
    if name == "huber":
        return lambda o, t: F.huber_loss(o, _like(o, t))
    if name == "bce":
        return lambda o, t: F.binary_cross_entropy(o, _like(o, t))
    return lambda o, t: F.binary_cross_entropy_with_logits(o, _like(o, t))


def _auto(outputs: torch.Tensor, targets: torch.Tensor) -> str:
    """integer targets -> lm when they are (N, T) for logits (N, T, V), else cross_entropy;
    float targets with as many values per example as the outputs -> mse."""
    if not targets.is_floating_point() and targets.dtype != torch.bool:
        if outputs.dim() == targets.dim() + 1 and outputs.dim() >= 3 and outputs.shape[1:-1] == targets.shape[1:]:
            return "lm"
        return "cross_entropy"
    if targets.is_floating_point() and _per_example(targets.shape) == _per_example(outputs.shape):
        return "mse"
    raise DataError(
        f"cannot choose a loss: targets are {targets.dtype} of shape {_shape(targets)} per example, outputs are "
        f"{outputs.dtype} of shape {_shape(outputs)}; pass --loss (one of {', '.join(LOSS_NAMES[1:])}, or module:callable)")


def check_callable(name: str, fn: LossFn, outputs: torch.Tensor, targets: torch.Tensor) -> None:
    """A loss given as a function (`--loss module:callable`, or `thermocal.probe(..., loss_fn=)`)
    must return the mean loss: a scalar float tensor, on the first examples' outputs."""
    value = fn(outputs, targets[: outputs.shape[0]])
    if not isinstance(value, torch.Tensor) or value.dim() != 0 or not value.is_floating_point():
        shown = f"a tensor of shape {tuple(value.shape)} ({value.dtype})" if isinstance(value, torch.Tensor) \
            else f"a {type(value).__name__}"
        raise InputError(f"the loss {name}: must return a scalar float tensor (the mean loss), returned {shown}")


def resolve_loss(spec: str | LossSpec, outputs: torch.Tensor, targets: torch.Tensor) -> tuple[str, LossFn]:
    """The built-in loss's name and function, after checking it against `outputs` (the model's
    outputs on the first examples) and the whole sample's `targets`."""
    spec = spec if isinstance(spec, LossSpec) else LossSpec(spec)
    name = spec.name
    if not 0.0 <= spec.label_smoothing < 1.0:
        raise InputError(f"--label-smoothing must be in [0, 1), got {spec.label_smoothing}")
    if name == "auto":
        name = _auto(outputs, targets)
    if name not in LOSS_NAMES:
        raise InputError(f"unknown loss {name!r}; choose one of {', '.join(LOSS_NAMES)} or module:callable")
    if spec.label_smoothing and name not in ("cross_entropy", "lm"):
        raise InputError(f"--label-smoothing applies to cross_entropy and lm, not {name}")
    if name in ("cross_entropy", "nll"):
        _check_classes(name, outputs, targets)
    elif name == "lm":
        _check_lm(outputs, targets)
    elif name in ("bce", "bce_with_logits"):
        _check_binary(name, outputs, targets)
    else:
        _check_like_outputs(name, outputs, targets)
    return name, _builtin(name, spec.label_smoothing)
