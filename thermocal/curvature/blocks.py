"""Per-block curvature (method.md §2, [H10]): lambda_max and trace of each diagonal block H_bb
of the Hessian, for a partition of the parameters into blocks.

The blocks partition θ, so Σ_b tr(H_bb) = tr(H). H_bb is `op.restrict(block.index)`
(curvature/operator.py): the b-part of H·(u embedded with zeros elsewhere), one full product each.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import torch

from thermocal.errors import InputError

REST = "(rest)"


@dataclass(frozen=True)
class Block:
    name: str
    parameters: tuple[str, ...]
    index: torch.Tensor  # positions in the flat parameter vector


def _layer_of(name: str) -> str:
    return name.rsplit(".", 1)[0] if "." in name else name


def partition(names: Sequence[str], sizes: Sequence[int], *, per_layer: bool, patterns: Sequence[str]) -> list[Block]:
    """Blocks by layer (the parameter name without its last part), or by the first matching
    regex of `patterns` (parameters matching none form the block "(rest)")."""
    starts = [0]
    for size in sizes:
        starts.append(starts[-1] + size)
    groups: dict[str, list[int]] = {}
    if patterns:
        compiled = []
        for pattern in patterns:
            try:
                compiled.append(re.compile(pattern))
            except re.error as exc:
                raise InputError(f"--blocks {pattern!r} is not a regular expression ({exc})") from exc
        for i, name in enumerate(names):
            key = next((p.pattern for p in compiled if p.search(name)), REST)
            groups.setdefault(key, []).append(i)
        empty = [p.pattern for p in compiled if p.pattern not in groups]
        if empty:
            raise InputError(f"--blocks {empty[0]!r} matches no trainable parameter; names look like {names[0]!r}")
    elif per_layer:
        for i, name in enumerate(names):
            groups.setdefault(_layer_of(name), []).append(i)
    blocks = []
    for key, members in groups.items():
        index = torch.cat([torch.arange(starts[i], starts[i + 1]) for i in members])
        blocks.append(Block(name=key, parameters=tuple(names[i] for i in members), index=index))
    return blocks

