"""The one MLP builder used by the bundled samples, the tests and the benchmarks."""

from __future__ import annotations

import torch


def mlp(sizes: list[int], activation: type[torch.nn.Module] = torch.nn.Tanh, seed: int | None = None) -> torch.nn.Sequential:
    """Linear layers of `sizes` with `activation` between them (none after the last); with `seed`,
    torch's global generator is seeded first, so the initial weights are those of that seed."""
    if seed is not None:
        torch.manual_seed(seed)
    layers: list[torch.nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        layers.append(torch.nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(activation())
    return torch.nn.Sequential(*layers)
