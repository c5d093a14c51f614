"""Symmetric linear operators on flat parameter vectors (method.md §2, [H6]).

Every estimator in this package takes an `Operator` and nothing else: the Hessian of the loss
(curvature/hvp.py, or pyhessian's products), a dense matrix in the tests, or what the algebra
below makes of them:

    op.shift(sigma)       H − σI        (the shifted power iteration's operator, [H4])
    op * c, op + other    cH, H + G
    op.restrict(index)    H_bb          (the diagonal block on a set of coordinates, [H10])
    op.congruent(s)       D·H·D         (D = diag(s): H in another metric, Adam's P^(-1/2)·H·P^(-1/2), [O3])
    op.counted(callback)  H, counting   (every vector it multiplies: a probe's cost in HVPs)

`matmat` is the one primitive: rows in, rows out, in the rows' dtype (a float32 basis gets
float32 products; no float64 copy is made unless the caller's vectors are float64). `matvec` is
one row; an operator may compute it more cheaply than a matmat of one row.
"""

from __future__ import annotations

from typing import Callable

import torch


class Operator:
    """A symmetric linear map on vectors of length `dim`, living on `device`."""

    dim: int
    device: torch.device

    def matmat(self, rows: torch.Tensor) -> torch.Tensor:
        """A·r for each row r of `rows` (m × dim), in `rows`' dtype."""
        raise NotImplementedError

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """A·v for one vector of length dim, in v's dtype."""
        return self.matmat(v.unsqueeze(0))[0]

    def shift(self, sigma: float) -> Operator:
        return self if sigma == 0 else Shifted(self, sigma)

    def restrict(self, index: torch.Tensor) -> Operator:
        return Restricted(self, index)

    def congruent(self, scale: torch.Tensor) -> Operator:
        return Congruent(self, scale)

    def counted(self, on_products: Callable[[int], None] = lambda count: None) -> Counted:
        return Counted(self, on_products)

    def __mul__(self, scale: float) -> Operator:
        return Scaled(self, float(scale))

    __rmul__ = __mul__

    def __add__(self, other: Operator) -> Operator:
        return Sum(self, other)

    def __sub__(self, other: Operator) -> Operator:
        return Sum(self, Scaled(other, -1.0))


class Dense(Operator):
    """A symmetric matrix held whole: the analytic and dense-truth cases."""

    def __init__(self, matrix: torch.Tensor) -> None:
        self.matrix = matrix
        self.dim = int(matrix.shape[0])
        self.device = matrix.device

    def matmat(self, rows: torch.Tensor) -> torch.Tensor:
        return rows @ self.matrix.to(rows.dtype)

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        return self.matrix.to(v.dtype) @ v


class Shifted(Operator):
    """A − σI."""

    def __init__(self, base: Operator, sigma: float) -> None:
        self.base, self.sigma = base, float(sigma)
        self.dim, self.device = base.dim, base.device

    def matmat(self, rows: torch.Tensor) -> torch.Tensor:
        return self.base.matmat(rows).sub_(rows, alpha=self.sigma)

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        return self.base.matvec(v).sub_(v, alpha=self.sigma)


class Scaled(Operator):
    """c·A."""

    def __init__(self, base: Operator, scale: float) -> None:
        self.base, self.scale = base, scale
        self.dim, self.device = base.dim, base.device

    def matmat(self, rows: torch.Tensor) -> torch.Tensor:
        return self.base.matmat(rows).mul_(self.scale)

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        return self.base.matvec(v).mul_(self.scale)


class Sum(Operator):
    """A + B (each product costs one of each)."""

    def __init__(self, first: Operator, second: Operator) -> None:
        if first.dim != second.dim:
            raise ValueError(f"cannot add operators of dimensions {first.dim} and {second.dim}")
        self.first, self.second = first, second
        self.dim, self.device = first.dim, first.device

    def matmat(self, rows: torch.Tensor) -> torch.Tensor:
        return self.first.matmat(rows).add_(self.second.matmat(rows))

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        return self.first.matvec(v).add_(self.second.matvec(v))


class Congruent(Operator):
    """D·A·D with D = diag(scale): symmetric when A is, and with the eigenvalues of D²·A. One
    product of A per vector; the scale is taken in each vector's dtype."""

    def __init__(self, base: Operator, scale: torch.Tensor) -> None:
        if scale.shape != (base.dim,):
            raise ValueError(f"a scale of shape {tuple(scale.shape)} for an operator of dimension {base.dim}")
        self.base, self.scale = base, scale.to(base.device)
        self.dim, self.device = base.dim, base.device

    def matmat(self, rows: torch.Tensor) -> torch.Tensor:
        scale = self.scale.to(rows.dtype)
        return self.base.matmat(rows * scale).mul_(scale)

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        scale = self.scale.to(v.dtype)
        return self.base.matvec(v * scale).mul_(scale)


class Restricted(Operator):
    """The diagonal block A_bb on the coordinates `index`: u ↦ (A·embed(u))[index]. Each product
    is one full product of A (the short vector is embedded with zeros)."""

    def __init__(self, base: Operator, index: torch.Tensor) -> None:
        self.base = base
        self.index = index.to(base.device)
        self.dim, self.device = int(index.numel()), base.device

    def matmat(self, rows: torch.Tensor) -> torch.Tensor:
        full = torch.zeros(*rows.shape[:-1], self.base.dim, dtype=rows.dtype, device=rows.device)
        full[..., self.index] = rows
        return self.base.matmat(full)[..., self.index]

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        full = torch.zeros(self.base.dim, dtype=v.dtype, device=v.device)
        full[self.index] = v
        return self.base.matvec(full)[self.index]


class Counted(Operator):
    """A, counting the vectors it multiplies (`products`) and telling `on_products` each time.
    Everything built on a counted operator (shifts, blocks) is counted through it."""

    def __init__(self, base: Operator, on_products: Callable[[int], None] = lambda count: None) -> None:
        self.base, self._on_products = base, on_products
        self.dim, self.device = base.dim, base.device
        self.products = 0

    def _count(self, count: int) -> None:
        self.products += count
        self._on_products(count)

    def matmat(self, rows: torch.Tensor) -> torch.Tensor:
        out = self.base.matmat(rows)
        self._count(int(rows.shape[0]))
        return out

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        out = self.base.matvec(v)
        self._count(1)
        return out
