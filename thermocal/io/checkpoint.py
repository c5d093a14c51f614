"""Load the MODEL argument.

Formats are recognised by content, not by extension, so that new loaders slot in beside
`_load_torchscript`. Version 0.1 loads TorchScript (`torch.jit.save`): a program archive that
loads without the user's Python code. TorchScript archives are loaded with torch's own
restricted unpickler; no pickled Python object in a checkpoint is ever executed.
"""

from __future__ import annotations

import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from thermocal.errors import CheckpointError
from thermocal.io.files import sha256_file

TORCHSCRIPT = "torchscript"


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to probe, with the identity of the file it came from."""

    module: torch.nn.Module
    path: Path
    sha256: str
    format: str


def detect_format(path: Path) -> str:
    """Name the checkpoint format of `path` from its bytes, or raise CheckpointError."""
    if not path.exists():
        raise CheckpointError("no such file", path)
    if path.is_dir():
        raise CheckpointError("is a directory; MODEL must be a TorchScript file", path)
    if not zipfile.is_zipfile(path):
        raise CheckpointError(
            "is not a TorchScript archive (not a zip file); save the model with "
            "torch.jit.save(torch.jit.script(model), path)",
            path,
        )
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise CheckpointError(f"is a corrupted zip archive ({exc})", path) from exc
    if any("/code/" in name for name in names) and any(n.endswith("constants.pkl") for n in names):
        return TORCHSCRIPT
    raise CheckpointError(
        "is a torch.save archive (a state dict or pickled module), not TorchScript; this "
        "version loads TorchScript only: torch.jit.save(torch.jit.script(model), path)",
        path,
    )


def _load_torchscript(path: Path) -> torch.nn.Module:
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*torch\.jit.* is deprecated", category=DeprecationWarning)
            return torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # torch raises RuntimeError and friends with multi-line texts
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"cannot be loaded as TorchScript ({first_line})", path) from exc


_LOADERS = {TORCHSCRIPT: _load_torchscript}


def trainable_parameters(module: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The parameters the probe differentiates: floating point and `requires_grad=True`."""
    return [p for p in module.parameters() if p.requires_grad and p.is_floating_point()]


def load_model(path: Path) -> LoadedModel:
    """Load a checkpoint on the CPU in eval mode and check that it can be probed."""
    fmt = detect_format(path)
    module = _LOADERS[fmt](path)
    module.eval()
    params = trainable_parameters(module)
    if not params:
        raise CheckpointError("has no trainable floating-point parameters to probe", path)
    for name, param in module.named_parameters():
        if param.is_floating_point() and not bool(torch.isfinite(param).all()):
            raise CheckpointError(f"parameter {name!r} holds NaN or Inf values", path)
    return LoadedModel(module=module, path=path, sha256=sha256_file(path), format=fmt)


def count_parameters(module: torch.nn.Module) -> int:
    """d: the number of trainable scalars."""
    return sum(p.numel() for p in trainable_parameters(module))
