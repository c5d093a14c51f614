"""The curvature engine of version 0.1, built on pyhessian (method.md §2).

pyhessian's `hessian` object supplies the Hessian-vector products of the mean loss over the
sample: when the sample is one micro-batch, from one retained double-backward graph (its
single-batch mode); otherwise accumulated over micro-batches weighted by their sizes, with a
forward and double backward per micro-batch per product (its dataloader mode). Its power
iteration finds the eigenvalue of largest magnitude, and its Hutchinson loop supplies the
trace probes.
The other end of the spectrum comes from `power.power_iteration` on the shifted operator
H − σI, built on the same products. pyhessian draws its random vectors from torch's global
generator, so every call here runs inside `seeded_global_rng`.
"""

from __future__ import annotations

import contextlib
import importlib
import warnings
from typing import Callable, Iterator, Sequence

import torch
from pyhessian import hessian as PyHessian

from thermocal.errors import InputError
from thermocal.noise import Batch
from thermocal.losses import LossFn

NAME = "pyhessian"
# `pyhessian.hessian` is shadowed by the class of that name in the package namespace.
_PYHESSIAN_MODULE = importlib.import_module("pyhessian.hessian")
_CYCLE_WARNING = "Using backward\\(\\) with create_graph=True"


@contextlib.contextmanager
def seeded_global_rng(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch's global generator(s) for the duration, then restore the caller's state."""
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


class _CountingHessian(PyHessian):
    """pyhessian's Hessian, counting every Hessian-vector product it computes."""

    def __init__(self, *args: object, on_hvp: Callable[[], None], **kwargs: object) -> None:
        self.hvps = 0
        self._on_hvp = on_hvp
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_CYCLE_WARNING)
            super().__init__(*args, **kwargs)

    def counted(self) -> None:
        self.hvps += 1
        self._on_hvp()

    def dataloader_hv_product(self, v: list[torch.Tensor]) -> tuple[float, list[torch.Tensor]]:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_CYCLE_WARNING)
            result = super().dataloader_hv_product(v)
        self.counted()
        return result

    def single_batch_hv_product(self, v: list[torch.Tensor]) -> list[torch.Tensor]:
        self.counted()
        return _ORIGINAL_HVP(self.gradsH, self.params, v)

    @contextlib.contextmanager
    def counting(self) -> Iterator[None]:
        """In single-batch mode pyhessian's loops call a module-level product: count those calls."""
        def counted_hvp(grads: object, params: object, v: list[torch.Tensor]) -> list[torch.Tensor]:
            self.counted()
            return _ORIGINAL_HVP(grads, params, v)

        _PYHESSIAN_MODULE.hessian_vector_product = counted_hvp
        try:
            yield
        finally:
            _PYHESSIAN_MODULE.hessian_vector_product = _ORIGINAL_HVP


_ORIGINAL_HVP = _PYHESSIAN_MODULE.hessian_vector_product


class PyHessianEngine:
    """Matrix-free Hessian of the mean loss over `batches`, with pyhessian's estimators."""

    name = NAME

    def __init__(
        self,
        model: torch.nn.Module,
        loss_fn: LossFn,
        batches: Sequence[Batch],
        device: torch.device,
        on_hvp: Callable[[], None] = lambda: None,
    ) -> None:
        cuda = device.type == "cuda"
        try:
            model.eval()  # pyhessian calls it too
        except NotImplementedError as exc:
            raise InputError("--engine pyhessian cannot run a torch.export program (pyhessian calls model.eval(), "
                             "which exported programs refuse); use --engine native") from exc
        if len(batches) == 1:
            self._hessian = _CountingHessian(model, loss_fn, data=tuple(batches[0]), cuda=cuda, on_hvp=on_hvp)
        else:
            self._hessian = _CountingHessian(model, loss_fn, dataloader=list(batches), cuda=cuda, on_hvp=on_hvp)
        self.params: list[torch.Tensor] = list(self._hessian.params)
        self.dim = sum(p.numel() for p in self.params)

    @property
    def hvps(self) -> int:
        return self._hessian.hvps

    def _unflatten(self, v: torch.Tensor) -> list[torch.Tensor]:
        pieces = torch.split(v, [p.numel() for p in self.params])
        return [piece.view_as(p).to(p.dtype) for piece, p in zip(pieces, self.params)]

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """H v for a flat vector v of length d."""
        pieces = self._unflatten(v)
        if self._hessian.full_dataset:
            _, hv = self._hessian.dataloader_hv_product(pieces)
        else:
            hv = self._hessian.single_batch_hv_product(pieces)
        return torch.cat([h.reshape(-1) for h in hv]).to(v.dtype)

    def dominant_eigenvector(self, *, tol: float, max_iter: int) -> torch.Tensor:
        """pyhessian's power iteration (relative-change stopping rule); returns the flat vector."""
        with self._hessian.counting():
            _, vectors = self._hessian.eigenvalues(maxIter=max_iter, tol=tol, top_n=1)
        return torch.cat([piece.reshape(-1) for piece in vectors[0]]).detach()

    def trace_probes(self, count: int) -> list[float]:
        """`count` Hutchinson probe values zᵀHz from pyhessian's trace loop."""
        with self._hessian.counting():
            return [float(s) for s in self._hessian.trace(maxIter=count, tol=float("-inf"))]

    def release(self) -> None:
        """Drop the retained graph and the gradients pyhessian left on the parameters."""
        self._hessian.gradsH = []
        for p in self.params:
            p.grad = None
