"""Shared helpers: tiny TorchScript models and data files written to a temporary folder."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_models"


def save_script(model: torch.nn.Module, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(model.eval()), str(path))
    return path


def load_script(path: Path) -> torch.nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.load(str(path))


def save_data(path: Path, **tensors: object) -> Path:
    torch.save(tensors, path)
    return path


def mlp(sizes: list[int], seed: int = 0) -> torch.nn.Sequential:
    torch.manual_seed(seed)
    layers: list[torch.nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        layers.append(torch.nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(torch.nn.Tanh())
    return torch.nn.Sequential(*layers)


@pytest.fixture
def classifier(tmp_path: Path) -> tuple[Path, Path]:
    """A 6-8-3 MLP and 96 examples with integer labels."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(96, 6, generator=generator)
    y = torch.randint(0, 3, (96,), generator=generator)
    return save_script(mlp([6, 8, 3]), tmp_path / "model.pt"), save_data(tmp_path / "data.pt", inputs=x, targets=y)
