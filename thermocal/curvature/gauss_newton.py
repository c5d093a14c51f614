"""The trace of the generalized Gauss-Newton matrix, example by example (method.md [H15]).

G = Σ_i J_iᵀ·H_i·J_i, with J_i the Jacobian of example i's outputs in the parameters and H_i the
Hessian of the (mean) loss in example i's outputs: the part of the Hessian that the loss's
curvature makes, positive semi-definite for a convex loss, and the Hessian itself where the
outputs are linear in the parameters. For each example and draw, with u_i a Rademacher vector
over its outputs and w_i = H_i·u_i (one double backward through the loss alone, in output
space), `(J_iᵀw_i)·(J_iᵀu_i)` has expectation tr(J_iᵀH_iJ_i): two vector-Jacobian products of
the example. Any loss that is a mean over examples works, so H_i is block-diagonal; no
parameter-space probe is drawn, so the estimate's error is the draws' over a few output values
per example, averaged over every example (it is exact for one output per example, where u_i = ±1).
Examples go `chunk` at a time (one by default; a program exported for a fixed batch takes that
batch): a chunk's cross terms between its examples have mean 0, as the u_i are independent. A
Sequential of Linear and row-wise layers (eager or TorchScript) needs no per-example gradients
at all (_dense: a Linear layer's are outer products g·aᵀ, and (g·aᵀ)·(h·aᵀ) = (g·h)(a·a));
another eager module's examples are batched (one forward of per-example parameter copies under
torch.func.vmap, then ordinary backwards); other TorchScript, a chunk, or an op vmap cannot batch
take a loop over them, with the same numbers. Under torchrun each process takes every world-th
chunk and the per-example estimates are summed over processes (the others' rows are zero), so
every process holds a single process's numbers.
"""

from __future__ import annotations

import math
import re
from typing import Sequence

import torch
from torch.func import functional_call, vmap
from torch.nn.attention import SDPBackend, sdpa_kernel

from thermocal.curvature.hvp import supports_forward_mode
from thermocal.curvature.sampling import mean_stderr
from thermocal.distributed import SINGLE, Group
from thermocal.losses import LossFn
from thermocal.progress import NoProgress, Progress
from thermocal.records import GaussNewtonTrace

# Draws per example: 4 left the draws' error at most 3.2% of tr(G), moving lr(S)/eta0 by at most 0.8%, on
# the evidence tasks at initialisation (bench/ggn_trace.json, one run of 4a37bc6).
GAUSS_NEWTON_DRAWS = 4
# Example-gradients per example and draw: two vector-Jacobian products (the forward is shared).
EXAMPLE_GRADIENTS_PER_DRAW = 2
# An eager module's examples go in chunks (_batched): of CHUNK_EXAMPLES, or more while their per-example
# gradients (two live) fit in CHUNK_BYTES, and never past MAX_CHUNK_BYTES (_dense: the same rule, with its
# layers' inputs and outputs in place of the gradients). On the benchmark's models
# (unstamped, 2026-12-06) 16 MB was the fastest size on its 105k MLP and CNN (0.8 s and 0.32 s for 512
# examples; 1.4 and 0.55 at 64 MB), while its 1M transformer wanted larger chunks (128 sequences: 8.1 s
# at 2 per chunk, 4.5 at 8, 3.6 at 33).
CHUNK_EXAMPLES, CHUNK_BYTES, MAX_CHUNK_BYTES = 32, 2**24, 2**28


def gauss_newton_trace(model: torch.nn.Module, loss_fn: LossFn, inputs: torch.Tensor, targets: torch.Tensor,
                       params: Sequence[torch.nn.Parameter], *, draws: int = GAUSS_NEWTON_DRAWS, chunk: int = 1,
                       generator: torch.Generator, progress: Progress = NoProgress(),
                       group: Group = SINGLE) -> GaussNewtonTrace:
    """tr(G) of the mean loss over (`inputs`, `targets`) in `params`, with its errors (`draws` ≥ 2)."""
    params = list(params)
    n = int(inputs.shape[0])
    with torch.no_grad():
        outputs = model(inputs)
    signs, curved = [], []  # per draw: u over every output, and H·u (block-diagonal over examples)
    for _ in range(draws):
        u = torch.randint(0, 2, outputs.shape, generator=generator).to(outputs.device, outputs.dtype) * 2 - 1
        leaf = outputs.detach().requires_grad_()
        (slope,) = torch.autograd.grad(loss_fn(leaf, targets), leaf, create_graph=True)
        hu = torch.autograd.grad(_dot(slope, u), leaf, allow_unused=True, materialize_grads=True)[0] \
            if slope.requires_grad else torch.zeros_like(u)  # a loss linear in its outputs (l1) has H = 0
        signs.append(u)
        curved.append(hu.detach())
    starts = group.shard(range(0, n, chunk))  # this process's chunks, each an independent unit
    estimates = None
    chain = _dense_chain(model, params) if chunk == 1 else None
    if chain is not None:
        estimates = _dense(chain, inputs, signs, curved, params, starts)
    if estimates is None and chunk == 1 and supports_forward_mode(model):
        try:
            estimates = _batched(model, inputs, signs, curved, params, starts)
        except (RuntimeError, NotImplementedError):  # an op torch.func cannot batch: the loop gives the same numbers
            estimates = None
    if estimates is None:
        estimates = _looped(model, inputs, signs, curved, params, chunk, starts)
    if group.distributed:  # every process's rows, the others' zero (on the device its backend reduces)
        estimates = group.sum(estimates.to(inputs.device)).cpu()
    progress.advance(n)
    units = estimates[::chunk]  # one row per chunk: the independent units
    count = units.shape[0]
    value = float(units.mean(dim=1).sum())
    stderr = math.sqrt(float(units.var(dim=1).sum()) / draws)
    sampling = count * mean_stderr(units.mean(dim=1)) if count > 1 else None  # tr G sums the units
    return GaussNewtonTrace(trace=value, stderr=stderr, sampling_stderr=sampling, examples=n, draws=draws)


def _dot(outputs: torch.Tensor, vector: torch.Tensor) -> torch.Tensor:
    """vector·outputs, a scalar whose gradient is the vector-Jacobian product. Passed as grad_outputs
    instead, torch 2.13's first autograd.grad call imports sympy to compare the shapes (0.7 s)."""
    return (outputs * vector).sum()


# Layers that treat every example on its own and hold no parameters: with Linear layers, the whole of a
# model that _dense computes without per-example gradients.
ROW_WISE = (torch.nn.Identity, torch.nn.Flatten, torch.nn.Dropout, torch.nn.ReLU, torch.nn.ReLU6, torch.nn.LeakyReLU,
            torch.nn.ELU, torch.nn.CELU, torch.nn.SELU, torch.nn.GELU, torch.nn.SiLU, torch.nn.Mish, torch.nn.Tanh,
            torch.nn.Sigmoid, torch.nn.Softplus, torch.nn.Softsign, torch.nn.Hardtanh, torch.nn.Hardswish,
            torch.nn.Hardsigmoid, torch.nn.LogSigmoid, torch.nn.Tanhshrink)
_KNOWN = (torch.nn.Sequential, torch.nn.Linear, *ROW_WISE)
# the names TorchScript gives a module compiled from each (a numbered `___torch_mangle_N` may follow the module path)
_COMPILED = {f"__torch__.{c.__module__}.{c.__qualname__}": c for c in _KNOWN}


def _torch_class(module: torch.nn.Module) -> type | None:
    """The class of _KNOWN that `module` is: an eager instance of exactly it (a subclass may change the
    forward), or a TorchScript module compiled from it; None for any other."""
    if isinstance(module, torch.jit.ScriptModule):
        return _COMPILED.get(re.sub(r"\.___torch_mangle_\d+", "", module._c._type().qualified_name()))
    return type(module) if type(module) in _KNOWN else None


def _hooked(module: torch.nn.Module) -> bool:
    """Whether `module` runs forward hooks (eager or compiled into TorchScript): they may change its output."""
    if isinstance(module, torch.jit.ScriptModule):
        return bool(module._c._get_forward_hooks() or module._c._get_forward_pre_hooks())
    return bool(module._forward_hooks or module._forward_pre_hooks)


def _dense_chain(model: torch.nn.Module, params: list[torch.nn.Parameter]) -> list[torch.nn.Module] | None:
    """The layers `model` runs, in order, where it is a Sequential (nested or not, eager or TorchScript)
    of Linear and ROW_WISE layers, or one Linear layer: each used once and without hooks, whose
    Linear layers' weights and biases are every parameter in `params`, none shared. None otherwise
    (_dense does not apply)."""
    modules = [m for _, m in model.named_modules(remove_duplicate=False)]
    kinds = [_torch_class(m) for m in modules]
    if kinds[0] not in (torch.nn.Sequential, torch.nn.Linear) or None in kinds or any(_hooked(m) for m in modules):
        return None
    chain = [m for m, kind in zip(modules, kinds) if kind is not torch.nn.Sequential]  # a Sequential's order
    if len({id(m) for m in chain}) != len(chain):  # a layer used twice
        return None
    if any(kind is torch.nn.Flatten and getattr(m, "start_dim", None) != 1 for m, kind in zip(modules, kinds)) \
            or any(kind is torch.nn.Dropout and m.training for m, kind in zip(modules, kinds)):
        return None
    ids = {id(p) for p in params}
    held = [id(p) for m in chain for _, p in m.named_parameters(recurse=False) if id(p) in ids]
    if len(held) != len(set(held)) or set(held) != ids or not all(p.requires_grad for p in params):
        return None
    return chain


def _chunk_size(per_example: int) -> int:
    """Examples per chunk where each holds `per_example` bytes: CHUNK_EXAMPLES, or more while they fit in
    CHUNK_BYTES, never past MAX_CHUNK_BYTES, at least one."""
    return max(1, min(MAX_CHUNK_BYTES // per_example, max(CHUNK_EXAMPLES, CHUNK_BYTES // per_example)))


def _selected(inputs: torch.Tensor, signs: list[torch.Tensor], curved: list[torch.Tensor], rows: list[int]):
    """The examples `rows`: their indices, inputs, and sign and curved vectors as (rows, draws, *outputs)."""
    index = torch.tensor(rows, dtype=torch.long, device=inputs.device)
    return index, inputs[index], torch.stack(signs, dim=1)[index], torch.stack(curved, dim=1)[index]


def _placed(part: torch.Tensor, index: torch.Tensor, n: int) -> torch.Tensor:
    """(n × draws) estimates with the computed rows `part` at `index` and the others 0."""
    estimates = torch.zeros(n, part.shape[1], dtype=torch.float64)
    estimates[index.cpu()] = part
    return estimates


def _dense(chain: list[torch.nn.Module], inputs: torch.Tensor, signs: list[torch.Tensor], curved: list[torch.Tensor],
           params: list[torch.nn.Parameter], rows: list[int]) -> torch.Tensor | None:
    """The same per-example estimates for a model of Linear and row-wise layers (_dense_chain), without
    per-example gradients: example i's gradient in a Linear layer's weight is g_i·a_iᵀ (g_i the
    vector-Jacobian product in the layer's output, a_i its input), so two of them have the dot
    product (g_i·h_i)|a_i|², and in its bias g_i·h_i. One batched pass through the chain per chunk
    keeps every measured layer's input and output, and one backward per vector, to those outputs
    only, gives every g_i. On the benchmark's 105k MLP (512 examples) this took 0.02 s, against
    1.2 s for _batched's per-example gradients (unstamped, 2026-12-06). None where a layer sees
    more than one dimension besides the examples' (its per-example gradient is then a sum over
    positions): the caller goes on to the per-example paths."""
    ids = {id(p) for p in params}
    measured = [m for m in chain if any(id(p) in ids for p in m.parameters(recurse=False))]
    measuring = {id(m) for m in measured}
    draws = len(signs)
    index, x, u, w = _selected(inputs, signs, curved, rows)
    size = _chunk_size(3 * params[0].element_size() * sum(m.weight.shape[0] + m.weight.shape[1] for m in measured))
    part = torch.zeros(len(rows), draws, dtype=torch.float64)
    with torch.enable_grad():
        for start in range(0, len(rows), size):
            span = slice(start, start + size)
            out, kept = x[span], []
            for layer in chain:  # what the Sequential's forward does, keeping the measured layers' ends
                given, out = out, layer(out)
                if id(layer) in measuring:
                    if given.dim() != 2:
                        return None
                    weight, bias = layer.weight, layer.bias
                    # per example: |a_i|² where the weight is measured, + 1 where the bias is
                    scale = given.detach().square().sum(dim=1) if id(weight) in ids else torch.zeros_like(given[:, 0])
                    kept.append((out, scale + (1.0 if bias is not None and id(bias) in ids else 0.0)))
            ends = [z for z, _ in kept]
            for r in range(draws):
                left = torch.autograd.grad(_dot(out, w[span, r]), ends, retain_graph=True, allow_unused=True,
                                           materialize_grads=True)
                right = torch.autograd.grad(_dot(out, u[span, r]), ends, retain_graph=r + 1 < draws,
                                            allow_unused=True, materialize_grads=True)
                part[span, r] = sum(torch.linalg.vecdot(g, h).double() * scale.double()
                                    for g, h, (_, scale) in zip(left, right, kept)).cpu()
    return _placed(part, index, int(inputs.shape[0]))


def _looped(model: torch.nn.Module, inputs: torch.Tensor, signs: list[torch.Tensor], curved: list[torch.Tensor],
            params: list[torch.nn.Parameter], chunk: int, starts: list[int]) -> torch.Tensor:
    """(examples × draws) estimates of the chunks at `starts`, `chunk` examples per forward (a chunk's on
    its first row; the other rows 0)."""
    n, draws = int(inputs.shape[0]), len(signs)
    estimates = torch.zeros(n, draws, dtype=torch.float64)
    for start in starts:
        part = slice(start, min(start + chunk, n))
        out = model(inputs[part])  # one forward for the chunk, two vector-Jacobian products per draw
        for r in range(draws):
            left = torch.autograd.grad(_dot(out, curved[r][part]), params, retain_graph=True, allow_unused=True,
                                       materialize_grads=True)
            right = torch.autograd.grad(_dot(out, signs[r][part]), params, retain_graph=r + 1 < draws, allow_unused=True,
                                        materialize_grads=True)
            estimates[start, r] = sum(float(torch.dot(a.reshape(-1).double(), b.reshape(-1).double()))
                                      for a, b in zip(left, right))
    return estimates


def _batched(model: torch.nn.Module, inputs: torch.Tensor, signs: list[torch.Tensor], curved: list[torch.Tensor],
             params: list[torch.nn.Parameter], rows: list[int]) -> torch.Tensor:
    """The same per-example estimates with one forward per chunk of examples (an eager module): each
    example gets its own copy of the parameters (an expanded view, no copy), the chunk's forward is
    vmapped over examples and copies, and one ordinary backward per vector gives every example's
    vector-Jacobian product at once, as the gradient in its own copy (chunks as CHUNK_EXAMPLES
    says). torch.func's vjp, which this replaced, imports torch._dynamo on its first call (1.3 s)
    and took 1.4 s on the benchmark's digits MLP and 3.1 s on its 105k MLP (512 examples each),
    against 0.07 s and 1.4 s here, first call included; 0.34 s on its CNN, 3.7 s on its 1M
    transformer (128 sequences; unstamped, 2026-12-06). Only the examples `rows` are computed;
    the others' rows are 0."""
    ids = {id(p) for p in params}
    values = {name: p.detach() for name, p in model.named_parameters() if id(p) in ids}
    draws, dim = len(signs), sum(p.numel() for p in params)
    index, x, u, w = _selected(inputs, signs, curved, rows)
    size = _chunk_size(2 * dim * params[0].element_size())
    part = torch.zeros(len(rows), draws, dtype=torch.float64)

    def forward(copies: dict[str, torch.Tensor], example: torch.Tensor) -> torch.Tensor:
        return functional_call(model, copies, (example.unsqueeze(0),)).squeeze(0)

    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)  # nn.Transformer's inference kernels have no derivative
    try:
        with torch.enable_grad(), sdpa_kernel([SDPBackend.MATH]):  # attention's math backend, which vmap batches
            for start in range(0, len(rows), size):
                span = slice(start, start + size)
                m = int(x[span].shape[0])
                copies = {name: v.unsqueeze(0).expand(m, *v.shape).requires_grad_() for name, v in values.items()}
                out = vmap(forward)(copies, x[span])
                leaves = list(copies.values())
                for r in range(draws):
                    left = torch.autograd.grad(_dot(out, w[span, r]), leaves, retain_graph=True, allow_unused=True,
                                               materialize_grads=True)
                    right = torch.autograd.grad(_dot(out, u[span, r]), leaves, retain_graph=r + 1 < draws, allow_unused=True,
                                                materialize_grads=True)
                    part[span, r] = sum(torch.linalg.vecdot(a.reshape(m, -1), b.reshape(m, -1)).double()
                                        for a, b in zip(left, right)).cpu()
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    return _placed(part, index, int(inputs.shape[0]))
