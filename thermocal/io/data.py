"""Load the DATA argument: a file or a folder of files, or `--dataset module:callable`.

Files, by suffix:
- `.pt`/`.pth`: a dict of tensors (keys `--inputs`/`--targets`, by default inputs/targets or
  x/y) or an `(inputs, targets)` tuple, read with `weights_only=True` (always explicit);
- `.npz`: named arrays (same keys), read with `allow_pickle=False`;
- `.npy`: one array per file, named by its stem (`inputs.npy` + `targets.npy`), read with
  `allow_pickle=False`;
- `.safetensors`: named tensors (same keys);
- `.csv`: a header row and numeric columns; `--target-column` names the target (default: a
  column called target, label or y), the rest are the inputs. Integer-valued targets are
  class indices.
With `--task lm` each file holds token ids (N, T+1) under `--inputs` (default tokens,
input_ids or inputs, or the only array): inputs are tokens[:, :-1], targets tokens[:, 1:].

A folder's files are concatenated in sorted name order after checking that their shapes and
dtypes agree. A symlink in the folder that points outside it is refused. Files that cannot be
read, hold NaN/Inf, or disagree give one-line errors naming the file.
"""

from __future__ import annotations

import csv
import hashlib
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch

from thermocal.errors import DataError, InputError
from thermocal.io.archives import check_torch_zip, load_weights_only
from thermocal.io.files import memory_budget, require_file_or_folder, sha256_file, sha256_listing
from thermocal.io.user_code import call_user, import_callable
from thermocal.text import first_line

SUFFIXES = (".pt", ".pth", ".npz", ".npy", ".safetensors", ".csv")
_KEY_PAIRS = (("inputs", "targets"), ("x", "y"))
_TOKEN_KEYS = ("tokens", "input_ids", "inputs", "x")
_TARGET_COLUMNS = ("target", "label", "y")


@dataclass(frozen=True)
class DataOptions:
    inputs_key: str | None = None
    targets_key: str | None = None
    target_column: str | None = None
    task: str = "supervised"  # or "lm"
    dataset: str | None = None


@dataclass(frozen=True)
class Sample:
    """The data sample, on the CPU, with the identity of the files it came from."""

    inputs: torch.Tensor
    targets: torch.Tensor
    path: Path
    files: tuple[Path, ...]
    sha256: str
    total_samples: int
    format: str = "pt"

    def __len__(self) -> int:
        return int(self.inputs.shape[0])


# ----------------------------------------------------------------------------- finding files


def _data_files(path: Path) -> list[Path]:
    require_file_or_folder(path, DataError)
    if path.is_file():
        if path.suffix.lower() not in SUFFIXES:
            raise DataError(f"has an unknown data suffix; use one of {', '.join(SUFFIXES)}", path)
        return [path]
    root = path.resolve()
    files = []
    for entry in sorted(path.iterdir()):
        if entry.suffix.lower() not in SUFFIXES:
            continue
        if entry.is_symlink() and root not in entry.resolve().parents:
            raise DataError(f"is a symlink to {entry.resolve()}, outside the data folder; copy the file in instead", entry)
        if entry.is_file():
            files.append(entry)
    if not files:
        raise DataError(f"directory holds no data files ({', '.join(SUFFIXES)})", path)
    kinds = {_kind(f) for f in files}
    if len(kinds) > 1:
        raise DataError(f"mixes data formats ({', '.join(sorted(kinds))}); keep one kind per folder", path)
    return files


def _kind(file: Path) -> str:
    suffix = file.suffix.lower()
    return "pt" if suffix in (".pt", ".pth") else suffix[1:]


# ----------------------------------------------------------------------------- reading one source


def _tensor(value: Any, key: str, file: Path) -> torch.Tensor:
    if isinstance(value, np.ndarray):
        if value.dtype == object or not (np.issubdtype(value.dtype, np.number) or value.dtype == bool):
            raise DataError(f"{key!r} holds {value.dtype} values, expected numbers", file)
        value = torch.from_numpy(np.ascontiguousarray(value))
    if not isinstance(value, torch.Tensor):
        raise DataError(f"{key!r} is a {type(value).__name__}, expected a tensor", file)
    if value.dim() == 0:
        raise DataError(f"{key!r} is a scalar, expected a batch of examples", file)
    stored = value.untyped_storage().nbytes() // max(value.element_size(), 1)
    if value.numel() > stored:  # a view repeating its storage (stride 0): check what is stored, not its copies
        values = value.new_empty(0).set_(value.untyped_storage())
    else:
        values = value
    if value.is_floating_point() and not bool(torch.isfinite(values).all()):
        raise DataError(f"{key!r} holds NaN or Inf values", file)
    return value


def _pick(content: Mapping[str, Any], options: DataOptions, file: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """inputs and targets from named arrays, or token ids for --task lm."""
    keys = ", ".join(sorted(map(str, content))) or "none"
    if options.task == "lm":
        wanted = (options.inputs_key,) if options.inputs_key else _TOKEN_KEYS
        key = next((k for k in wanted if k in content), None)
        if key is None and not options.inputs_key and len(content) == 1:
            key = next(iter(content))
        if key is None:
            raise DataError(f"has keys [{keys}]; --task lm expects token ids under {'/'.join(wanted)} (or --inputs)", file)
        return _lm_pair(_tensor(content[key], key, file), file)
    if options.inputs_key or options.targets_key:
        pairs = ((options.inputs_key or "inputs", options.targets_key or "targets"),)
    else:
        pairs = _KEY_PAIRS
    for input_key, target_key in pairs:
        if input_key in content and target_key in content:
            break
    else:
        wanted = " or ".join(f"{a}/{b}" for a, b in pairs)
        raise DataError(f"has keys [{keys}]; expected {wanted} (name them with --inputs/--targets)", file)
    inputs, targets = _tensor(content[input_key], input_key, file), _tensor(content[target_key], target_key, file)
    if inputs.shape[0] != targets.shape[0]:
        raise DataError(f"{input_key!r} has {inputs.shape[0]} examples but {target_key!r} has {targets.shape[0]}", file)
    return inputs, targets


def _lm_pair(tokens: torch.Tensor, file: Path | str) -> tuple[torch.Tensor, torch.Tensor]:
    if tokens.is_floating_point() or tokens.dtype == torch.bool or tokens.dim() != 2 or tokens.shape[1] < 2:
        raise DataError(f"--task lm needs integer token ids of shape (N, T+1) with T >= 1, got {tuple(tokens.shape)} "
                        f"{tokens.dtype}", file)
    if int(tokens.min()) < 0:
        raise DataError("token ids must be non-negative", file)
    tokens = tokens.long()
    return tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()


def _read_pt(file: Path, options: DataOptions) -> tuple[torch.Tensor, torch.Tensor]:
    if zipfile.is_zipfile(file):
        check_torch_zip(file, DataError)
    try:
        content = load_weights_only(file)
    except pickle.UnpicklingError as exc:
        raise DataError("holds pickled Python objects, which thermocal does not unpickle (unpickling can run any "
                        "code); save tensors only: torch.save({'inputs': x, 'targets': y}, path)", file) from exc
    except Exception as exc:  # torch raises several types, with multi-line texts
        raise DataError(f"cannot be read as a tensor file ({first_line(exc)[:200]})", file) from exc
    if isinstance(content, (tuple, list)):
        if options.task == "lm" and len(content) == 1:
            content = content[0]
        elif len(content) == 2 and options.task != "lm":
            return _pick({"inputs": content[0], "targets": content[1]}, DataOptions(), file)
        else:
            raise DataError(f"holds a {type(content).__name__} of {len(content)} items; expected (inputs, targets)", file)
    if isinstance(content, torch.Tensor):
        if options.task != "lm":
            raise DataError("holds a single tensor; expected a dict with inputs/targets, an (inputs, targets) tuple, "
                            "or --task lm for token ids", file)
        return _lm_pair(_tensor(content, "tensor", file), file)
    if not isinstance(content, dict):
        raise DataError(f"holds a {type(content).__name__}; expected a dict with keys inputs/targets (or x/y)", file)
    return _pick(content, options, file)


class _NpzArrays(Mapping):
    """The arrays of an open .npz, read only when asked for (a key nobody uses is never
    decompressed), each after checking that its declared size fits the memory budget."""

    def __init__(self, archive: Any, file: Path) -> None:
        self.archive, self.file = archive, file

    def __getitem__(self, key: str) -> np.ndarray:
        info = self.archive.zip.getinfo(f"{key}.npy")
        if info.file_size > memory_budget():
            raise DataError(f"{key!r} would take {info.file_size / 2**30:.1f} GB once decompressed, more than this "
                            f"machine can spare ({memory_budget() / 2**30:.1f} GB)", self.file)
        try:
            return self.archive[key]
        except Exception as exc:  # ValueError (a pickled array), zlib and zipfile errors
            raise DataError(f"{key!r} cannot be read ({first_line(exc)[:200]})", self.file) from exc

    def __contains__(self, key: object) -> bool:
        return key in self.archive.files

    def __iter__(self) -> Iterator[str]:
        return iter(self.archive.files)

    def __len__(self) -> int:
        return len(self.archive.files)


def _read_npz(file: Path, options: DataOptions) -> tuple[torch.Tensor, torch.Tensor]:
    try:
        archive = np.load(file, allow_pickle=False)
    except Exception as exc:  # zipfile, EOFError, ValueError, OSError: not an npz at all
        raise DataError(f"cannot be read as .npz ({first_line(exc)[:200]})", file) from exc
    if not hasattr(archive, "zip"):
        raise DataError("holds a single array, not named arrays (an .npy file?); save with np.savez", file)
    with archive:
        return _pick(_NpzArrays(archive, file), options, file)


def _read_npy(file: Path) -> np.ndarray:
    try:
        return np.load(file, allow_pickle=False)
    except Exception as exc:
        raise DataError(f"cannot be read as .npy ({first_line(exc)[:200]})", file) from exc


def _read_safetensors(file: Path, options: DataOptions) -> tuple[torch.Tensor, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        content = load_file(str(file), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise DataError(f"cannot be read as safetensors ({first_line(exc)[:200]})", file) from exc
    return _pick(content, options, file)


def _read_csv(file: Path, options: DataOptions) -> tuple[torch.Tensor, torch.Tensor]:
    try:
        with open(file, newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"cannot be read as CSV ({first_line(exc)[:200]})", file) from exc
    rows = [r for r in rows if r]
    if len(rows) < 2:
        raise DataError("needs a header row and at least one data row", file)
    header, body = [h.strip() for h in rows[0]], rows[1:]
    if options.target_column is not None:
        if options.target_column not in header:
            raise DataError(f"has no column {options.target_column!r} (columns: {', '.join(header)})", file)
        target = header.index(options.target_column)
    else:
        target = next((header.index(c) for c in _TARGET_COLUMNS if c in header), None)
        if target is None:
            raise DataError(f"name the target with --target-column (columns: {', '.join(header)})", file)
    values = np.empty((len(body), len(header)), dtype=np.float64)
    for i, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise DataError(f"line {i} has {len(row)} fields, the header {len(header)}", file)
        try:
            values[i - 2] = [float(v) for v in row]
        except ValueError as exc:
            raise DataError(f"line {i}: {first_line(exc)} (every column must be numeric)", file) from exc
    if not np.isfinite(values).all():
        raise DataError("holds NaN or Inf values", file)
    y = values[:, target]
    x = np.delete(values, target, axis=1)
    if x.shape[1] == 0:
        raise DataError("has only the target column; no inputs", file)
    is_integer = bool(np.all(y == np.round(y)))
    targets = torch.from_numpy(y.astype(np.int64)) if is_integer else torch.from_numpy(y.astype(np.float32))
    return torch.from_numpy(x.astype(np.float32)), targets


def _read(file: Path, options: DataOptions) -> tuple[torch.Tensor, torch.Tensor]:
    kind = _kind(file)
    if kind == "pt":
        return _read_pt(file, options)
    if kind == "npz":
        return _read_npz(file, options)
    if kind == "safetensors":
        return _read_safetensors(file, options)
    if kind == "csv":
        return _read_csv(file, options)
    raise AssertionError(kind)


def _read_npy_set(files: list[Path], options: DataOptions) -> tuple[torch.Tensor, torch.Tensor]:
    """.npy files are one array each, named by their stem: inputs.npy and targets.npy (or x/y)."""
    content = {f.stem: _read_npy(f) for f in files}
    return _pick(content, options, files[0].parent if len(files) > 1 else files[0])


# ----------------------------------------------------------------------------- --dataset


def _from_dataset(spec: str, options: DataOptions) -> tuple[torch.Tensor, torch.Tensor]:
    """`--dataset module:callable` returns tensors (inputs, targets), a dict of them, or a Dataset."""
    made = call_user(import_callable(spec, "--dataset"), spec, "--dataset")
    where = f"--dataset {spec}"
    if isinstance(made, Mapping):
        return _pick(made, options, where)
    if isinstance(made, torch.Tensor) and options.task == "lm":
        return _lm_pair(made, where)
    if isinstance(made, tuple) and len(made) == 2 and all(isinstance(t, (torch.Tensor, np.ndarray)) for t in made):
        return _pick({"inputs": made[0], "targets": made[1]}, DataOptions(), where)
    if hasattr(made, "__getitem__") and hasattr(made, "__len__"):
        try:
            items = [made[i] for i in range(len(made))]
        except Exception as exc:
            raise InputError(f"{where}: reading item raised {type(exc).__name__}: {first_line(exc)}") from exc
        if not items:
            raise DataError("the dataset is empty", where)
        if options.task == "lm":
            tokens = torch.stack([torch.as_tensor(item) for item in items])
            return _lm_pair(tokens, where)
        if not all(isinstance(item, (tuple, list)) and len(item) == 2 for item in items):
            raise DataError(f"items must be (input, target) pairs, item 0 is a {type(items[0]).__name__}", where)
        try:
            inputs = torch.stack([torch.as_tensor(item[0]) for item in items])
            targets = torch.stack([torch.as_tensor(item[1]) for item in items])
        except (RuntimeError, TypeError, ValueError) as exc:
            raise DataError(f"items cannot be stacked into tensors ({first_line(exc)})", where) from exc
        return _pick({"inputs": inputs, "targets": targets}, DataOptions(), where)
    raise DataError(f"returned a {type(made).__name__}; expected (inputs, targets) tensors, a dict, or a Dataset", where)


# ----------------------------------------------------------------------------- the sample


def _check_alike(parts: list[tuple[Path, torch.Tensor]], what: str) -> None:
    first_file, first = parts[0]
    for file, tensor in parts[1:]:
        if tensor.shape[1:] != first.shape[1:] or tensor.dtype != first.dtype:
            raise DataError(
                f"{what} of shape {tuple(tensor.shape[1:])} ({tensor.dtype}) per example do not match "
                f"{first_file.name}'s {tuple(first.shape[1:])} ({first.dtype})",
                file,
            )


def _gather(parts: list[torch.Tensor], keep: torch.Tensor | None) -> torch.Tensor:
    """The files' examples concatenated, or only those at the sorted indices `keep`: only the
    kept rows are copied (a view repeating a small storage is never materialised whole)."""
    if keep is None:
        return torch.cat(parts)
    pieces, start = [], 0
    for part in parts:
        stop = start + int(part.shape[0])
        local = keep[(keep >= start) & (keep < stop)] - start
        pieces.append(part.index_select(0, local))
        start = stop
    return torch.cat(pieces)


def _fits(inputs: list[torch.Tensor], targets: list[torch.Tensor], kept: int, where: Path | str, total: int) -> None:
    """Refuse, before any copy, a sample whose kept examples would not fit the memory budget."""
    per_example = sum(t[0].numel() * t.element_size() for t in (inputs[0], targets[0]))
    need = per_example * kept
    if need > memory_budget():
        fewer = max(1, memory_budget() // max(per_example, 1))
        raise DataError(f"{kept} examples of {per_example} bytes take {need / 2**30:.1f} GB, more than this machine "
                        f"can spare for the sample ({memory_budget() / 2**30:.1f} GB); probe a subset with "
                        f"--max-samples {min(fewer, total)}", where)


def _combined_sha256(files: list[Path]) -> str:
    """One file: its sha256. Several: sha256 of the lines `<sha256>  <name>` in load order."""
    if len(files) == 1:
        return sha256_file(files[0])
    return sha256_listing((f, f.name) for f in files)


def subsample(total: int, max_samples: int | None, seed: int) -> torch.Tensor | None:
    """The sorted indices of `max_samples` of `total` examples drawn without replacement by `seed`
    (the same draw for files and for tensors passed to thermocal.probe); None keeps them all."""
    if max_samples is None or max_samples >= total:
        return None
    return torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:max_samples].sort().values


def load_sample(path: Path | None, *, max_samples: int | None = None, seed: int = 0,
                options: DataOptions | None = None) -> Sample:
    """Load and concatenate the sample; `max_samples` keeps a seeded random subset (in order)."""
    options = options or DataOptions()
    if options.task not in ("supervised", "lm"):
        raise InputError(f"--task must be supervised or lm, got {options.task!r}")
    if (path is None) == (options.dataset is None):
        raise InputError("give DATA or --dataset module:callable (exactly one)")
    if options.dataset is not None:
        pairs = [(Path(options.dataset), _from_dataset(options.dataset, options))]
        files: list[Path] = []
        fmt, digest, where = "dataset", hashlib.sha256(options.dataset.encode()).hexdigest(), Path(options.dataset)
    else:
        files = _data_files(path)
        fmt, where = _kind(files[0]), path
        if fmt == "npy":
            pairs = [(files[0], _read_npy_set(files, options))]
        else:
            pairs = [(file, _read(file, options)) for file in files]
        digest = _combined_sha256(files)
    _check_alike([(f, pair[0]) for f, pair in pairs], "inputs")
    _check_alike([(f, pair[1]) for f, pair in pairs], "targets")
    total = sum(int(pair[0].shape[0]) for _, pair in pairs)
    if total == 0:
        raise DataError("holds no examples", where)
    keep = subsample(total, max_samples, seed)
    _fits([pair[0] for _, pair in pairs], [pair[1] for _, pair in pairs], total if keep is None else len(keep), where, total)
    inputs = _gather([pair[0] for _, pair in pairs], keep)
    targets = _gather([pair[1] for _, pair in pairs], keep)
    if not targets.is_floating_point() and targets.dtype not in (torch.int64, torch.bool):
        targets = targets.long()  # integer labels of any width (int32 from numpy, uint8) are class indices
    return Sample(inputs=inputs, targets=targets, path=where, files=tuple(files), sha256=digest,
                  total_samples=total, format=fmt)
