"""The Hessian of the mean loss over the sample as a matrix-free operator (method.md §2, [H6]).

An `Operator` (curvature/operator.py): vectors are flat tensors of length d on the model's
device; products are computed in the model's dtype and returned in the vectors' dtype (Lanczos
keeps a float32 model's basis in float32, which saves two float64 copies of d numbers per
product; method.md [H6]). Counting is the caller's (`op.counted()`). Two ways to get H·v:

- reverse-over-reverse (`rev-rev`): differentiate the gradient's dot product with v. When the
  sample is one micro-batch, the gradient graph is built once and reused for every product;
  with several, each micro-batch's graph is kept for reuse while the tensors the kept graphs
  save add up to at most `graph_memory` bytes (measured as each is first built), and the rest
  are rebuilt for every product.
- forward-over-reverse (`fwd-rev`): `torch.func.jvp` of `torch.func.grad`; needs an eager
  module (not TorchScript), rebuilds the graph on every product.

Scaled-dot-product attention runs on its math backend here, the one with double backward.

While `forms` is a list, every product also appends each micro-batch's quadratic form
vᵀ·H_b·v (float64, one per micro-batch, H_b the Hessian of the mean loss over micro-batch b; one
row per vector of a matmat): with several micro-batches these give the trace's sampling error
over examples at no extra product (curvature/sampling.py, method.md [H14]).
"""

from __future__ import annotations

from typing import Callable, Literal, Sequence

import torch
from torch.func import functional_call, grad, jvp, vmap
from torch.nn.attention import SDPBackend, sdpa_kernel

from thermocal.curvature.operator import Operator
from thermocal.losses import LossFn
from thermocal.noise import Batch

Mode = Literal["rev-rev", "fwd-rev"]
MODES: tuple[Mode, ...] = ("rev-rev", "fwd-rev")


def supports_forward_mode(model: torch.nn.Module) -> bool:
    """torch.func needs an eager module; TorchScript modules take reverse-over-reverse only."""
    return not isinstance(model, torch.jit.ScriptModule)


class HessianOperator(Operator):
    """v ↦ H v for H the Hessian of the mean loss over `batches` (weighted by batch size)."""

    def __init__(
        self,
        model: torch.nn.Module,
        loss_fn: LossFn,
        batches: Sequence[Batch],
        params: Sequence[torch.nn.Parameter],
        *,
        mode: Mode = "rev-rev",
        vmap: bool = True,
        total_examples: int | None = None,
        reduce: Callable[[torch.Tensor], torch.Tensor] = lambda t: t,
        graph_memory: int | None = 0,
    ) -> None:
        """`batches` may be this process's share of the sample: then `total_examples` is the whole
        sample's size (the mean's denominator) and `reduce` sums the partial products over
        processes (thermocal.distributed). `graph_memory`: bytes of saved tensors that the kept
        gradient graphs of several micro-batches may hold (a lone micro-batch's is always kept;
        None keeps every micro-batch's, as the one graph of their union would be)."""
        if mode == "fwd-rev" and not supports_forward_mode(model):
            raise ValueError("forward-over-reverse needs an eager module, not TorchScript")
        self.model, self.loss_fn, self.mode, self.vmap = model, loss_fn, mode, vmap
        self.batches = list(batches)
        self.params = list(params)
        self.sizes = [p.numel() for p in self.params]
        self.dim = sum(self.sizes)
        self.dtype = self.params[0].dtype
        self.device = self.params[0].device
        total = total_examples if total_examples is not None else sum(int(x.shape[0]) for x, _ in self.batches)
        self.weights = [int(x.shape[0]) / total for x, _ in self.batches]
        self._reduce = reduce
        self.graph_memory = graph_memory
        self._graphs: dict[int, list[torch.Tensor]] = {}  # micro-batch index → its kept gradient graph
        self._rebuilt: set[int] = set()  # micro-batches whose graph did not fit
        self.graph_bytes = 0  # saved-tensor bytes of the kept graphs
        self.graphs_built = 0
        self.forms: list[torch.Tensor] | None = None  # each product's per-micro-batch vᵀH_b v, while a list
        if mode == "fwd-rev":
            ids = {id(p) for p in self.params}
            self._names = [name for name, p in model.named_parameters() if id(p) in ids]

    def _unflatten(self, v: torch.Tensor) -> list[torch.Tensor]:
        """(..., d) → per-parameter pieces of shape (..., *p.shape), in the model's dtype."""
        lead = v.shape[:-1]
        pieces = torch.split(v.to(self.dtype), self.sizes, dim=-1)
        return [piece.reshape(*lead, *p.shape) for piece, p in zip(pieces, self.params)]

    def _flatten(self, pieces: Sequence[torch.Tensor], lead: torch.Size, dtype: torch.dtype) -> torch.Tensor:
        """A new (lead, d) tensor in `dtype` (torch.cat always copies, so the caller owns it)."""
        return torch.cat([h.reshape(*lead, -1) for h in pieces], dim=-1).to(dtype)

    def _gradient_graph(self, inputs: torch.Tensor, targets: torch.Tensor) -> list[torch.Tensor]:
        self.graphs_built += 1
        loss = self.loss_fn(self.model(inputs), targets)
        grads = torch.autograd.grad(loss, self.params, create_graph=True, allow_unused=True, materialize_grads=True)
        return list(grads)

    def _measured_graph(self, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[list[torch.Tensor], int]:
        """The gradient graph and the bytes of the tensors it saves that are not the parameters',
        the inputs' or the targets' own (those exist anyway), counted once per tensor."""
        own = {t.untyped_storage().data_ptr() for t in (*self.params, inputs, targets)}
        saved: dict[tuple[int, int], int] = {}

        def pack(t: torch.Tensor) -> torch.Tensor:
            if t.untyped_storage().data_ptr() not in own:
                saved[(t.data_ptr(), t.nbytes)] = t.nbytes
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            grads = self._gradient_graph(inputs, targets)
        return grads, sum(saved.values())

    def _graph_for(self, index: int, batch: Batch) -> tuple[list[torch.Tensor], bool]:
        """Micro-batch `index`'s gradient graph and whether it is kept (so products must retain it)."""
        if index in self._graphs:
            return self._graphs[index], True
        if index in self._rebuilt:
            return self._gradient_graph(*batch), False
        if len(self.batches) == 1 or self.graph_memory is None:
            self._graphs[index] = self._gradient_graph(*batch)
            return self._graphs[index], True
        grads, size = self._measured_graph(*batch)
        if self.graph_bytes + size > self.graph_memory:
            self._rebuilt.add(index)
            return grads, False
        self._graphs[index] = grads
        self.graph_bytes += size
        return grads, True

    def _rev_rev(self, index: int, batch: Batch, pieces: list[torch.Tensor], batched: bool) -> list[torch.Tensor]:
        grads, reuse = self._graph_for(index, batch)
        live = [i for i, g in enumerate(grads) if g.requires_grad]  # a constant gradient has zero Hessian rows
        if not live:
            return [torch.zeros_like(piece) for piece in pieces]
        if batched:
            products = torch.autograd.grad(
                [grads[i] for i in live], self.params, grad_outputs=[pieces[i] for i in live],
                retain_graph=reuse, allow_unused=True, materialize_grads=True, is_grads_batched=True,
            )
        else:  # d(∇L·v)/dθ: a scalar output, so autograd needs no grad_outputs (and no shape machinery)
            dot = sum((grads[i] * pieces[i]).sum() for i in live)
            products = torch.autograd.grad(dot, self.params, retain_graph=reuse, allow_unused=True, materialize_grads=True)
        return list(products)

    def _fwd_rev(self, batch: Batch, pieces: list[torch.Tensor], batched: bool) -> list[torch.Tensor]:
        inputs, targets = batch
        primals = tuple(p.detach() for p in self.params)

        def loss_of(values: tuple[torch.Tensor, ...]) -> torch.Tensor:
            return self.loss_fn(functional_call(self.model, dict(zip(self._names, values)), (inputs,)), targets)

        gradient = grad(loss_of)

        def product(tangents: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
            return jvp(gradient, (primals,), (tangents,))[1]

        tangents = tuple(pieces)
        return list(vmap(product)(tangents) if batched else product(tangents))

    def _apply(self, v: torch.Tensor, batched: bool) -> torch.Tensor:
        lead, dtype = v.shape[:-1], v.dtype
        pieces = self._unflatten(v)
        total: torch.Tensor | None = None
        forms: list[torch.Tensor] = []
        with sdpa_kernel([SDPBackend.MATH]):
            for index, (weight, batch) in enumerate(zip(self.weights, self.batches)):
                if self.mode == "rev-rev":
                    part = self._rev_rev(index, batch, pieces, batched)
                else:
                    part = self._fwd_rev(batch, pieces, batched)
                flat = self._flatten([h.detach() for h in part], lead, dtype)
                if self.forms is not None:  # a 1-D dot makes no d-length temporary
                    forms.append(torch.dot(flat, v).double() if flat.dim() == 1
                                 else flat.mul(v).sum(dim=-1, dtype=torch.float64))
                total = flat.mul_(weight) if total is None else total.add_(flat, alpha=weight)
        if total is None:  # a process whose share of the sample is empty
            total = torch.zeros((*lead, self.dim), dtype=dtype, device=self.device)
        if self.forms is not None:
            self.forms.append(torch.stack(forms, dim=-1).cpu())  # never on a process with no share (NativeEngine)
        return self._reduce(total)

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """H v for one flat vector v (length d), accumulated over micro-batches, in v's dtype."""
        return self._apply(v, batched=False)

    def matmat(self, vectors: torch.Tensor) -> torch.Tensor:
        """H vᵢ for each row of `vectors` (m × d), in their dtype: batched through vmap, or one by
        one when the operator was made with vmap=False."""
        if self.vmap:
            return self._apply(vectors, batched=True)
        if len(vectors) == 1:  # the trace's default, one probe at a time: no stacked copy
            return self._apply(vectors[0], batched=False).unsqueeze(0)
        return torch.stack([self._apply(v, batched=False) for v in vectors])

    def release(self) -> None:
        """Drop the kept gradient graphs."""
        self._graphs.clear()
        self._rebuilt.clear()
        self.graph_bytes = 0
