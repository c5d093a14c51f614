"""What every checkpoint loader takes and returns, so that they can sit in one registry
(thermocal.io.checkpoint.LOADERS, one per detected format)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch


@dataclass(frozen=True)
class ModelOptions:
    """How to load: the code building the module for a state dict, and whether to unpickle."""

    arch: str | None = None
    trust_checkpoint: bool = False
    params: str | None = None


@dataclass(frozen=True)
class Loaded:
    """One loader's result: the module, the format it turned out to be (a torch.save file may
    hold a pickled module), what the user should know about how it was read, the loss the
    model's own library uses (Hugging Face), and a torch.export program's fixed batch size."""

    module: torch.nn.Module
    format: str
    note: str | None = None
    default_loss: str | None = None
    fixed_batch: int | None = None


Loader = Callable[[Path, ModelOptions], Loaded]
