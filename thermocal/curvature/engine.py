"""The engines' one protocol (method.md §2): an engine holds the Hessian of the mean loss over
the Hessian's examples as an `Operator`, counts every product it computes, and measures the
spectrum with its own estimators. The native engine (curvature/native.py) is the default;
pyhessian's (curvature/pyhessian_engine.py) is imported only when asked for.

The curvature along the gradient noise, a step every engine shares, uses `operator`, and
`hvps` counts its products too. (lambda_max's sampling error, curvature/sampling.py, takes one
native product per group of examples, whichever engine ran, and adds one to the count, unless
the native engine already read it off its micro-batches: NativeEngine._lambda_max_sampling.)
"""

from __future__ import annotations

from typing import Protocol, Sequence

import torch

from thermocal.config import Config
from thermocal.curvature.operator import Operator
from thermocal.distributed import SINGLE, Group
from thermocal.losses import LossFn
from thermocal.noise import Batch
from thermocal.progress import Progress, Timer
from thermocal.records import HessianSpectrum


class Engine(Protocol):
    name: str
    operator: Operator

    @property
    def hvps(self) -> int: ...

    def spectrum(self, generator: torch.Generator, progress: Progress,
                 timer: Timer) -> tuple[HessianSpectrum, torch.Tensor | None]:
        """The spectrum, and lambda_max's unit eigenvector when the run resolved it (else None)."""
        ...

    def release(self) -> None:
        """Drop what the products kept (gradient graphs)."""
        ...


def open_engine(model: torch.nn.Module, loss_fn: LossFn, batches: Sequence[Batch], params: Sequence[torch.nn.Parameter],
                names: Sequence[str], s: Config, device: torch.device, progress: Progress,
                group: Group = SINGLE, keep_graphs: bool = False) -> Engine:
    """The engine `s.engine` names over the micro-batches `batches` (the Hessian's examples);
    `keep_graphs`: the native engine keeps every micro-batch's gradient graph (NativeEngine)."""
    if s.engine == "pyhessian":  # one process (measure.probe refuses it under torchrun before any work)
        from thermocal.curvature.pyhessian_engine import PyHessianEngine  # only where it is used

        return PyHessianEngine(model, loss_fn, batches, device, s, on_hvp=progress.advance)
    from thermocal.curvature.native import NativeEngine

    return NativeEngine(model, loss_fn, batches, params, names, s, on_products=progress.advance, group=group,
                        keep_graphs=keep_graphs)
