"""Make a model and its sample ready to probe (method.md §0, [S1]): eval mode, device and dtype,
the loss resolved and checked on the first minibatch, parameters the loss ignores set aside, and
the sample shuffled with the seeded generator and cut to K whole minibatches.

`prepare` changes the module it is given (mode, device, dtype, requires_grad): thermocal.probe
hands it a copy, never the caller's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from thermocal.config import Config
from thermocal.errors import DataError
from thermocal.losses import LossFn, LossSpec, check_callable, resolve_loss

# Words in torch's messages for inputs of the wrong shape or type.
_SHAPE_WORDS = ("shape", "size", "mat1", "mat2", "dimension", "dim ", "expected input", "Expected input", "channels")


@dataclass(frozen=True)
class Prepared:
    model: torch.nn.Module
    loss_name: str
    loss_fn: LossFn
    names: list[str]  # the probed parameters, in the flat vector's order
    params: list[torch.nn.Parameter]
    unused: list[str]  # trainable parameters the loss does not depend on
    inputs: torch.Tensor  # shuffled, K·B examples, on the device
    targets: torch.Tensor
    minibatches: int  # K
    dropped: int  # examples left over after K whole minibatches

    @property
    def dtype(self) -> torch.dtype:
        return self.params[0].dtype


def set_eval(module: torch.nn.Module) -> None:
    """Eval mode ([S1]). A torch.export program keeps the mode it was exported in and refuses eval()."""
    try:
        module.eval()
    except NotImplementedError:
        pass


def first_outputs(model: torch.nn.Module, inputs: torch.Tensor) -> torch.Tensor:
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


def unused_parameters(model: torch.nn.Module, loss_fn: LossFn, inputs: torch.Tensor, targets: torch.Tensor,
                      named: list[tuple[str, torch.nn.Parameter]]) -> list[str]:
    """Trainable parameters the loss does not depend on: left out of d and the Hessian (a
    warning names them), since they would only add exact zero rows."""
    grads = torch.autograd.grad(loss_fn(model(inputs), targets), [p for _, p in named], allow_unused=True)
    return [n for (n, _), g in zip(named, grads) if g is None]


def prepare(model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor, s: Config, device: torch.device,
            generator: torch.Generator, loss_fn: LossFn | None = None) -> Prepared:
    """The model in eval mode on `device` in the asked dtype, and the sample shuffled by `generator`
    and cut into K = ⌊N/B⌋ minibatches of the training batch size B (a short last batch is
    dropped). `loss_fn` (a mean over examples), when given, replaces the loss `s.loss` names."""
    set_eval(model)
    model.to(device)
    if s.dtype != "model":
        model.to(getattr(torch, s.dtype))
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad and p.is_floating_point()]
    if not named:
        raise DataError("the model has no trainable floating-point parameters to probe")
    dtype = named[0][1].dtype
    n, b = int(inputs.shape[0]), s.batch_size
    k = n // b
    if k < 2:
        remedy = f"lower --batch-size to {n // 2} or less, or add data" if n >= 2 else "add data"
        raise DataError(f"N = {n} examples at --batch-size {b} give {k} minibatch(es); at least 2 are needed: {remedy}")
    order = torch.randperm(n, generator=generator)[: k * b]
    if inputs.is_floating_point():
        inputs = inputs.to(dtype)
    inputs, targets = inputs[order].to(device), targets[order].to(device)

    outputs = first_outputs(model, inputs[:b])
    if loss_fn is None:
        loss_name, loss_fn = resolve_loss(LossSpec(s.loss, s.label_smoothing), outputs, targets)
    else:
        loss_name = s.loss
        check_callable(loss_name, loss_fn, outputs, targets)
    unused = unused_parameters(model, loss_fn, inputs[:b], targets[:b], named)
    if unused:
        for name, param in named:
            if name in unused:
                param.requires_grad_(False)  # so that every engine leaves them out
        named = [(n, p) for n, p in named if n not in unused]
        if not named:
            raise DataError("the loss depends on none of the model's trainable parameters")
    return Prepared(model=model, loss_name=loss_name, loss_fn=loss_fn, names=[n for n, _ in named],
                    params=[p for _, p in named], unused=unused, inputs=inputs, targets=targets, minibatches=k,
                    dropped=n - k * b)
