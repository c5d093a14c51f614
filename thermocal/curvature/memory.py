"""The memory policy of the estimators (method.md [H11]): how many vectors of d numbers each
may exist at once. Every bound is a function of d, the dtype and a budget in bytes, so that
a probe's peak grows with the model by a known number of copies of the parameters.
"""

from __future__ import annotations

import torch

GIB = 1 << 30
# At most this many bytes of trace probe vectors (and their products) exist at once.
PROBE_MEMORY = GIB
# Columns of Meyer et al.'s Hutch++ sketch H·S, when no Lanczos basis serves as the sketch.
HUTCHPP_SKETCH = 20


def basis_dtype(model_dtype: torch.dtype) -> torch.dtype:
    """The Lanczos basis's dtype: float64 for a float64 model, else float32 (the products are
    computed in the model's dtype anyway, [H6])."""
    return torch.float64 if model_dtype == torch.float64 else torch.float32


def basis_rows(size: int, dtype: torch.dtype, budget_bytes: int, iterations: int) -> int | None:
    """The Lanczos basis's row limit within `budget_bytes` (--lanczos-memory), or None when the
    whole run (`iterations` rows, at most `size`) fits."""
    rows = budget_bytes // (size * dtype.itemsize)
    return rows if rows < min(iterations, size) else None


def probe_rows(dim: int, batched: bool) -> int:
    """Trace probe vectors alive at once: one when products are taken one at a time (a chunk of
    probes would only hold memory), else float64 probes and their products within PROBE_MEMORY."""
    return max(1, PROBE_MEMORY // (2 * 8 * dim)) if batched else 1


def sketch_rows(dim: int) -> int:
    """Columns of the Hutch++ sketch H·S: HUTCHPP_SKETCH, or fewer where the float64 probes, their
    products and the products' QR factor, all alive at once, would pass PROBE_MEMORY."""
    return min(HUTCHPP_SKETCH, dim, PROBE_MEMORY // (3 * 8 * dim))


def deviation_rows(dim: int, itemsize: int, wanted: int, available: int) -> int:
    """Deviations g_k − ḡ kept for tr(H·Σ_B) ([N8]): `wanted`, at most the `available` minibatches,
    fewer when d numbers each would pass PROBE_MEMORY, and never under two."""
    fit = PROBE_MEMORY // max(dim * itemsize, 1)
    return max(2, min(available, wanted, fit))
