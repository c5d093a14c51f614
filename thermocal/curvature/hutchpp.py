"""Hutch++'s sketch (method.md [H8]; Meyer, Musco, Musco & Woodruff 2021).

tr H = tr(QHQᵀ) + tr(PHP) for orthonormal rows Q and P = I − QᵀQ: the first term is computed
exactly, the second by Hutchinson on deflated probes (curvature/hutchinson.py). The sketch Q is
either the Lanczos basis (its products are already paid for; tr(QHQᵀ) = Σ alpha) or, as in
Hutch++, an orthonormal basis of H·S for a Rademacher S.
"""

from __future__ import annotations

import torch

from thermocal.curvature.hutchinson import rademacher
from thermocal.curvature.operator import Operator


def sketch_trace(op: Operator, sketch: torch.Tensor) -> float:
    """tr(Q H Qᵀ) for orthonormal rows Q."""
    return float((sketch * op.matmat(sketch)).sum())


def hutchpp_sketch(op: Operator, size: int, generator: torch.Generator) -> torch.Tensor:
    """Hutch++'s sketch: orthonormal rows spanning H·S for a Rademacher S with `size` columns."""
    hs = op.matmat(rademacher(size, op.dim, generator, op.device))
    q, _ = torch.linalg.qr(hs.T)
    return q.T.contiguous()
