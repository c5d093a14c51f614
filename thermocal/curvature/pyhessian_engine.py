"""The curvature engine of version 0.1, built on pyhessian (method.md §2).

pyhessian's `hessian` object supplies the Hessian-vector products of the mean loss over the
sample: when the sample is one micro-batch, from one retained double-backward graph (its
single-batch mode); otherwise accumulated over micro-batches weighted by their sizes, with a
forward and double backward per micro-batch per product (its dataloader mode). Its power
iteration finds the eigenvalue of largest magnitude, and its Hutchinson loop supplies the
trace probes.
The other end of the spectrum comes from `power.power_iteration` on the shifted operator
H − σI, built on the same products (`operator`, which counts through pyhessian's own counter,
since its loops call its products directly). pyhessian draws its random vectors from torch's
global generator, so its loops run inside `seeded_global_rng`.
"""

from __future__ import annotations

import contextlib
import importlib
import warnings
from typing import Callable, Iterator, Sequence

import torch
from pyhessian import hessian as PyHessian

from thermocal.config import Config
from thermocal.curvature.hutchinson import hutchinson
from thermocal.curvature.operator import Operator
from thermocal.curvature.power import power_iteration
from thermocal.curvature.spectrum import both_ends, check_finite, record, trace_record
from thermocal.errors import InputError
from thermocal.losses import LossFn
from thermocal.noise import Batch
from thermocal.progress import Progress, Timer
from thermocal.records import HessianSpectrum

NAME = "pyhessian"
# `pyhessian.hessian` is shadowed by the class of that name in the package namespace.
_PYHESSIAN_MODULE = importlib.import_module("pyhessian.hessian")
_CYCLE_WARNING = "Using backward\\(\\) with create_graph=True"
# pyhessian's own stopping rule (relative change between iterations) for its power iteration;
# tight, because the residual test that follows is what decides "converged".
PYHESSIAN_POWER_TOL = 1e-7


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


class _Products(Operator):
    """pyhessian's Hessian-vector products as an `Operator` on flat vectors (counted by pyhessian's counter)."""

    def __init__(self, hessian: _CountingHessian, params: list[torch.Tensor]) -> None:
        self._hessian, self.params = hessian, params
        self.dim = sum(p.numel() for p in params)
        self.device = params[0].device

    def _unflatten(self, v: torch.Tensor) -> list[torch.Tensor]:
        pieces = torch.split(v, [p.numel() for p in self.params])
        return [piece.view_as(p).to(p.dtype) for piece, p in zip(pieces, self.params)]

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        pieces = self._unflatten(v)
        if self._hessian.full_dataset:
            _, hv = self._hessian.dataloader_hv_product(pieces)
        else:
            hv = self._hessian.single_batch_hv_product(pieces)
        return torch.cat([h.reshape(-1) for h in hv]).to(v.dtype)

    def matmat(self, rows: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.matvec(v) for v in rows])


class PyHessianEngine:
    """Matrix-free Hessian of the mean loss over `batches`, with pyhessian's estimators."""

    name = NAME

    def __init__(
        self,
        model: torch.nn.Module,
        loss_fn: LossFn,
        batches: Sequence[Batch],
        device: torch.device,
        settings: Config,
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
        self.operator = _Products(self._hessian, self.params)
        self.settings, self.device = settings, device

    @property
    def hvps(self) -> int:
        return self._hessian.hvps

    def dominant_eigenvector(self, *, tol: float, max_iter: int) -> torch.Tensor:
        """pyhessian's power iteration (relative-change stopping rule); returns the flat vector."""
        with self._hessian.counting():
            _, vectors = self._hessian.eigenvalues(maxIter=max_iter, tol=tol, top_n=1)
        return torch.cat([piece.reshape(-1) for piece in vectors[0]]).detach()

    def trace_probes(self, count: int) -> list[float]:
        """`count` Hutchinson probe values zᵀHz from pyhessian's trace loop."""
        with self._hessian.counting():
            return [float(s) for s in self._hessian.trace(maxIter=count, tol=float("-inf"))]

    def spectrum(self, generator: torch.Generator, progress: Progress,
                 timer: Timer) -> tuple[HessianSpectrum, torch.Tensor | None]:
        """pyhessian's power iteration (continued to the residual test) and Hutchinson trace, then
        the far end by shifted power iteration; lambda_max's eigenvector when the power iteration's
        end is lambda_max."""
        s = self.settings
        rtol = s.eigen_rtol
        with seeded_global_rng(s.seed, self.device):
            with timer("extremes"):
                progress.phase("Hessian: power iteration (pyhessian)", None)
                start = self.hvps
                vector = self.dominant_eigenvector(tol=PYHESSIAN_POWER_TOL, max_iter=s.iterations)
                # pyhessian stops when the Rayleigh quotient stops changing, which can be well before the
                # eigenvector is resolved; continue the same iteration until the residual test passes.
                top = power_iteration(self.operator, vector, rtol=rtol, max_iter=s.iterations)
                first = record("pyhessian_power", "power iteration (pyhessian), continued until the residual test passed",
                               self.hvps - start, self.hvps - start, top.residual, rtol, top.converged)
            with timer("trace"):
                progress.phase("Hessian: Hutchinson trace (pyhessian)", None)
                start = self.hvps
                trace = hutchinson(self.trace_probes, rtol=s.trace_rtol, max_probes=s.max_probes, scale=abs(top.value))
                trace_rec = trace_record("pyhessian_hutchinson", "Hutchinson, Rademacher probes (pyhessian)",
                                         self.hvps - start, trace, s.trace_rtol, abs(top.value))
        with timer("extremes"):
            progress.phase("Hessian: shifted power iteration", None)
            (lam_max, max_rec), (lam_min, min_rec) = both_ends(self.operator, (top.value, first), trace, s, generator)
        check_finite(lambda_max=lam_max, lambda_min=lam_min, trace=trace.value)
        return HessianSpectrum(
            engine=self.name, hvp_mode="rev-rev", lambda_max=lam_max, lambda_min=lam_min, trace=trace.value,
            trace_stderr=trace.stderr, hvps=self.hvps,
            converged=max_rec.converged and min_rec.converged and trace.converged,
            details={"lambda_max": max_rec, "lambda_min": min_rec, "trace": trace_rec},
        ), (top.vector if lam_max == top.value else None)

    def release(self) -> None:
        """Drop the retained graph and the gradients pyhessian left on the parameters."""
        self._hessian.gradsH = []
        for p in self.params:
            p.grad = None
