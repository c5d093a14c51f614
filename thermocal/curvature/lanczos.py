"""Lanczos with full reorthogonalization, for both ends of a symmetric spectrum at once
(method.md §2, [H7]), with thick restarts when the basis must stay small ([H11]).

The rows of V are an orthonormal basis; the projected matrix T = V H Vᵀ is kept whole (it is
tridiagonal until a restart, an arrowhead plus a tridiagonal after). Each new column of T is
read off the Gram–Schmidt coefficients of H·v against all rows, so the decomposition
H Vᵀ = Vᵀ T + β·v_next·e_lastᵀ holds and a Ritz pair (θ_i, y_i = Vᵀ s_i) has the residual
‖H y_i − θ_i y_i‖ = β·|s_i[last]|, which is what the stopping test reads. Convergence is
judged on that residual, never on the change between iterations; the residuals finally
reported are recomputed with one product each.

Thick restart (Wu & Simon 2000): when the basis holds `max_basis` rows and the wanted pairs
have not converged, V is replaced by the Ritz vectors nearest both ends (half the basis),
T by their Ritz values on the diagonal with the coupling β·s_i[last] to v_next in the next
row, and the iteration continues from v_next. Memory is then max_basis·d numbers, whatever
the number of iterations.

The first cycle (up to the first restart) also gives, at no extra product, Gauss quadrature for
v̂₀ᵀ|H|v̂₀ = Σ_k s_k[0]²·|θ_k|, an unbiased-in-expectation one-probe estimate of tr|H|/d for the
Gaussian start v̂₀ (stochastic Lanczos quadrature with one probe): `abs_trace` is d times it,
the scale against which the trace's error is judged ([H3]).

The basis is stored in `dtype`: float64, or the model's float32, whose products are float32
anyway; the projected matrix and all scalars are float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from thermocal.curvature.operator import Operator
# Columns of the basis rebuilt at a time during a restart (bounds the temporary).
RESTART_CHUNK = 1 << 20


@dataclass(frozen=True)
class RitzPair:
    value: float
    vector: torch.Tensor  # unit norm, in the run's dtype
    residual: float
    converged: bool


@dataclass(frozen=True)
class LanczosResult:
    largest: list[RitzPair]  # descending
    smallest: list[RitzPair]  # ascending
    ritz_values: torch.Tensor  # all, ascending
    basis: torch.Tensor  # rows orthonormal, in the run's dtype
    alphas: torch.Tensor  # diagonal of the projected matrix T = V H Vᵀ (so tr(VHVᵀ) = Σ alphas)
    betas: torch.Tensor  # its first off-diagonal (T is tridiagonal when restarts == 0)
    iterations: int  # products, not counting the final residual checks
    converged: bool
    restarts: int = 0
    abs_trace: float = 0.0  # one-probe quadrature estimate of tr|H| = Σ|λ_i| (from the first cycle)


def tridiagonal(alphas: torch.Tensor, betas: torch.Tensor) -> torch.Tensor:
    return torch.diag(alphas) + torch.diag(betas, 1) + torch.diag(betas, -1)


class _Basis:
    """Orthonormal rows in a buffer of `capacity` rows.

    On the CPU the whole buffer is reserved at once: its pages become resident only when a
    row is written, so memory grows with the rows used and the buffer never moves. (Growing by
    copying held the old and the new buffer at once: on the 1M-parameter transformer the copy
    at row 65 was the probe's peak.) Where the reservation is refused (strict overcommit), and
    on CUDA, which allocates at once, the buffer starts at 64 rows and doubles as it fills."""

    def __init__(self, dim: int, capacity: int, dtype: torch.dtype, device: torch.device) -> None:
        self._rows = None
        if device.type == "cpu":
            try:
                self._rows = torch.empty(capacity, dim, dtype=dtype, device=device)
            except RuntimeError:  # refused: grow instead
                pass
        if self._rows is None:
            self._rows = torch.empty(min(64, capacity), dim, dtype=dtype, device=device)
        self.capacity = capacity
        self.size = 0

    def append(self, v: torch.Tensor) -> None:
        if self.size == self._rows.shape[0]:
            grown = torch.empty(min(2 * self.size, self.capacity), self._rows.shape[1], dtype=self._rows.dtype,
                                device=self._rows.device)
            grown[: self.size] = self._rows
            self._rows = grown
        self._rows[self.size] = v
        self.size += 1

    @property
    def rows(self) -> torch.Tensor:
        return self._rows[: self.size]

    @property
    def full(self) -> bool:
        return self.size == self.capacity

    def orthogonalize(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(w minus its projection on the rows, the projection's coefficients in float64):
        classical Gram–Schmidt with one repeat, in place on w (a product, in the rows' dtype)."""
        total = torch.zeros(self.size, dtype=torch.float64)
        for _ in range(2):
            c = self.rows @ w
            w.addmv_(self.rows.T, c, alpha=-1)
            total += c.to(torch.float64).cpu()
        return w, total

    def rotate(self, s: torch.Tensor) -> None:
        """Rows ← sᵀ·rows (s: size × k, orthonormal columns), in place, a block of columns at a time."""
        k = s.shape[1]
        s = s.to(self._rows.dtype).to(self._rows.device)
        for first in range(0, self._rows.shape[1], RESTART_CHUNK):
            block = self._rows[: self.size, first:first + RESTART_CHUNK]
            block[:k] = s.T @ block
        self.size = k


def _wanted(values: torch.Tensor, top_k: int, bottom_k: int) -> tuple[list[int], list[int]]:
    n = len(values)
    top = list(range(n - 1, max(n - 1 - top_k, -1), -1))
    bottom = [i for i in range(min(bottom_k, n))]
    return top, bottom


def _kept(n: int, top_k: int, bottom_k: int) -> list[int]:
    """Indices (into ascending Ritz values) kept at a restart: half the basis, shared between the
    ends that are wanted in proportion to how many pairs each wants, at least those pairs."""
    keep = max(n // 2, top_k + bottom_k)
    top = keep * top_k // (top_k + bottom_k)
    top = max(top, top_k) if top_k else 0
    bottom = max(keep - top, bottom_k) if bottom_k else 0
    return sorted(set(range(bottom)) | set(range(n - top, n)))


def lanczos(
    op: Operator,
    v0: torch.Tensor,
    *,
    rtol: float = 1e-3,
    floor_fraction: float = 1e-3,
    max_iter: int = 500,
    top_k: int = 1,
    bottom_k: int = 1,
    min_iter: int = 0,
    max_basis: int | None = None,
    dtype: torch.dtype = torch.float64,
) -> LanczosResult:
    """Lanczos on `op` (whose products are new tensors in the vectors' dtype: updated in place
    here). Run until the `top_k` largest and `bottom_k` smallest Ritz pairs pass
    ‖Hy − θy‖ ≤ rtol·max(|θ|, floor_fraction·max|θ|), or `max_iter` products (at least `min_iter`).
    With nothing wanted (top_k = bottom_k = 0) it runs `max_iter` steps, for quadrature.
    `max_basis` (at least top_k + bottom_k + 2) bounds the rows kept, by thick restarts.
    """
    dim = v0.numel()
    capacity = min(max_iter, dim) if max_basis is None else max(min(max_basis, dim), top_k + bottom_k + 2)
    if max_basis is not None and not (top_k or bottom_k):
        raise ValueError("a bounded basis needs wanted Ritz pairs (quadrature runs keep every row)")
    v = v0.to(dtype)
    v = v / torch.linalg.vector_norm(v)
    basis = _Basis(dim, capacity, dtype, v.device)
    projected = torch.zeros(capacity + 1, capacity + 1, dtype=torch.float64)
    values = torch.empty(0, dtype=torch.float64)
    vectors = torch.empty(0, 0, dtype=torch.float64)
    products = restarts = 0
    abs_trace: float | None = None
    while True:
        basis.append(v)
        j = basis.size - 1
        w, c = basis.orthogonalize(op.matvec(v))
        products += 1
        projected[: j + 1, j] = c
        projected[j, : j + 1] = c
        beta = float(torch.linalg.vector_norm(w))
        t = projected[: j + 1, : j + 1]
        check = products <= 100 or products % max(1, products // 20) == 0 or products == max_iter or basis.full
        scale = float(max(abs(float(c[j])), beta, 1e-300))
        exhausted = beta <= 1e-12 * scale or basis.size == dim
        done = products >= max_iter or exhausted
        if check or done:
            values, vectors = torch.linalg.eigh(t)
            floor = floor_fraction * float(values.abs().max())
            top, bottom = _wanted(values, top_k, bottom_k)
            estimates = beta * vectors[-1].abs()
            met = all(float(estimates[i]) <= rtol * max(abs(float(values[i])), floor) for i in top + bottom)
            if (met and (top or bottom) and products >= min_iter) or done:
                break
        v = w.div_(beta)  # w is ours: no second d-vector
        if basis.full:
            if abs_trace is None:
                abs_trace = _abs_quadrature(values, vectors, dim)
            keep = _kept(basis.size, top_k, bottom_k)
            s = vectors[:, keep]
            basis.rotate(s)
            k = len(keep)
            projected.zero_()
            projected[:k, :k] = torch.diag(values[keep])
            restarts += 1
        # The next column of T (and so the coupling β, or β·s_i[last] after a restart) is read
        # off the Gram–Schmidt coefficients of H·v on the next pass.
    del v, w  # two d-vectors the residual checks below need not hold beside theirs
    rows = basis.rows
    floor = floor_fraction * float(values.abs().max())
    top, bottom = _wanted(values, top_k, bottom_k)

    def pair(i: int) -> RitzPair:
        """The Ritz vector in the basis's dtype and its residual recomputed with one product, in
        place: at 26M float32 parameters the float64 copies this once made were the probe's peak."""
        y = rows.T @ vectors[:, i].to(rows.dtype).to(rows.device)
        y /= torch.linalg.vector_norm(y)
        theta = float(values[i])
        hy = op.matvec(y)
        residual = float(torch.linalg.vector_norm(hy.sub_(y, alpha=theta)))
        return RitzPair(theta, y, residual, residual <= rtol * max(abs(theta), floor))

    largest = [pair(i) for i in top]
    smallest = [pair(i) for i in bottom]
    t = projected[: basis.size, : basis.size]
    return LanczosResult(
        largest=largest,
        smallest=smallest,
        ritz_values=values,
        basis=rows,
        alphas=torch.diagonal(t).clone(),
        betas=torch.diagonal(t, 1).clone(),
        iterations=products,
        converged=all(p.converged for p in largest + smallest),
        restarts=restarts,
        abs_trace=abs_trace if abs_trace is not None else _abs_quadrature(values, vectors, dim),
    )


def _abs_quadrature(values: torch.Tensor, vectors: torch.Tensor, dim: int) -> float:
    """d · Σ_k s_k[0]²·|θ_k|: Gauss quadrature of v̂₀ᵀ|H|v̂₀ from a cycle that began at v̂₀."""
    return dim * float((vectors[0] ** 2 * values.abs()).sum())
