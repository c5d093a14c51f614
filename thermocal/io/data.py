"""Load the DATA argument: a `.pt` file, or a folder of them, each a dict of tensors.

Keys: `inputs`/`targets` (or `x`/`y`). Files load with `weights_only=True`, always passed
explicitly, and are concatenated in sorted file-name order.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch

from thermocal.errors import DataError
from thermocal.io.files import sha256_file

_KEY_PAIRS = (("inputs", "targets"), ("x", "y"))


@dataclass(frozen=True)
class Sample:
    """The data sample, on the CPU, with the identity of the files it came from."""

    inputs: torch.Tensor
    targets: torch.Tensor
    path: Path
    files: tuple[Path, ...]
    sha256: str
    total_samples: int

    def __len__(self) -> int:
        return int(self.inputs.shape[0])


def _data_files(path: Path) -> list[Path]:
    if not path.exists():
        raise DataError("no such file or directory", path)
    if path.is_file():
        return [path]
    files = sorted(p for p in path.iterdir() if p.suffix == ".pt" and p.is_file())
    if not files:
        raise DataError("directory holds no .pt files", path)
    return files


def _read_pair(file: Path) -> tuple[torch.Tensor, torch.Tensor]:
    try:
        content = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types, with multi-line texts
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"cannot be read as a tensor file ({first_line[:200]})", file) from exc
    if not isinstance(content, dict):
        raise DataError(
            f"holds a {type(content).__name__}; expected a dict with keys inputs/targets (or x/y)", file
        )
    for input_key, target_key in _KEY_PAIRS:
        if input_key in content and target_key in content:
            inputs, targets = content[input_key], content[target_key]
            break
    else:
        keys = ", ".join(sorted(map(str, content))) or "none"
        raise DataError(f"has keys [{keys}]; expected inputs/targets (or x/y)", file)
    for key, value in ((input_key, inputs), (target_key, targets)):
        if not isinstance(value, torch.Tensor):
            raise DataError(f"{key!r} is a {type(value).__name__}, expected a tensor", file)
        if value.dim() == 0:
            raise DataError(f"{key!r} is a scalar, expected a batch of examples", file)
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise DataError(f"{key!r} holds NaN or Inf values", file)
    if inputs.shape[0] != targets.shape[0]:
        raise DataError(
            f"{input_key!r} has {inputs.shape[0]} examples but {target_key!r} has {targets.shape[0]}", file
        )
    return inputs, targets


def _concatenate(parts: list[tuple[Path, torch.Tensor]], what: str) -> torch.Tensor:
    first_file, first = parts[0]
    for file, tensor in parts[1:]:
        if tensor.shape[1:] != first.shape[1:] or tensor.dtype != first.dtype:
            raise DataError(
                f"{what} of shape {tuple(tensor.shape[1:])} ({tensor.dtype}) per example do not match "
                f"{first_file.name}'s {tuple(first.shape[1:])} ({first.dtype})",
                file,
            )
    return torch.cat([tensor for _, tensor in parts])


def _combined_sha256(files: list[Path]) -> str:
    """One file: its sha256. Several: sha256 of the lines `<sha256>  <name>` in load order."""
    if len(files) == 1:
        return sha256_file(files[0])
    lines = "".join(f"{sha256_file(f)}  {f.name}\n" for f in files)
    return hashlib.sha256(lines.encode()).hexdigest()


def load_sample(path: Path, *, max_samples: int | None = None, seed: int = 0) -> Sample:
    """Load and concatenate the sample; `max_samples` keeps a seeded random subset (in order)."""
    files = _data_files(path)
    pairs = [(file, _read_pair(file)) for file in files]
    inputs = _concatenate([(f, pair[0]) for f, pair in pairs], "inputs")
    targets = _concatenate([(f, pair[1]) for f, pair in pairs], "targets")
    total = int(inputs.shape[0])
    if total == 0:
        raise DataError("holds no examples", path)
    if max_samples is not None and max_samples < total:
        generator = torch.Generator().manual_seed(seed)
        keep = torch.randperm(total, generator=generator)[:max_samples].sort().values
        inputs, targets = inputs[keep], targets[keep]
    return Sample(
        inputs=inputs,
        targets=targets,
        path=path,
        files=tuple(files),
        sha256=_combined_sha256(files),
        total_samples=total,
    )
