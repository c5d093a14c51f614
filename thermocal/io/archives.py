"""Inspect torch's zip archives before torch reads them (README "Security").

torch writes the tensors and pickles of its archives (torch.save, TorchScript, torch.export)
stored, never compressed, so a compressed entry there is refused: it could only make a small file
expand in memory (a 1 MB entry decompressing to 1.3 GB). TorchScript deflates its `code/` entries
(Python source, 2–5× smaller); those may decompress to at most MAX_CODE_RATIO times their size.

A torch.export archive (`.pt2`) is read only when every entry is one that holds no code:
- `models/<name>.json` (the program, as JSON) and the archive's version and byte-order stamps;
- raw tensor storage, `data/weights/weight_<n>` and `data/constants/tensor_<n>`, described by
  `data/{weights,constants}/<name>_{weights,constants}_config.json` with `use_pickle: false`;
- `data/sample_inputs/<name>.pt`, which must load with `torch.load(weights_only=True)`: torch
  tries exactly that first and falls back to a full unpickle only when it fails;
- `extra/…` files, which torch reads as text.
Anything else is refused, naming the entry: pickled constants (`opaque_obj_*` go through plain
`pickle.loads`, `custom_obj_*` through TorchScript's unpickler), pickled tensor subclasses
(`use_pickle: true`), legacy pickled weight files, and compiled AOTInductor code
(`data/aotinductor/`), which torch.export.load would load as a shared library.
"""

from __future__ import annotations

import io
import json
import pickle
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from thermocal.errors import CheckpointError, ThermocalError
from thermocal.text import first_line

MAX_CODE_RATIO = 100
# What zipfile raises on a damaged archive: BadZipFile, but also UnicodeDecodeError (a ValueError)
# on an entry name that says it is UTF-8 and is not, NotImplementedError on an unknown zip version
# or compression method, OSError/EOFError on a truncated entry.
ZIP_ERRORS = (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError)
RESAVE = "re-save it with torch.export.save from a model whose weights and constants are plain tensors"
# Entries of a torch.export archive (below its top folder) that hold no pickle and no code.
_STAMPS = {"archive_format", "archive_version", "byteorder", ".data/version", ".data/serialization_id"}
_RAW = re.compile(r"data/(weights/weight|constants/tensor)_\d+")
_CONFIG = re.compile(r"data/(weights|constants)/[^/]+_(weights|constants)_config\.json")
_MODEL = re.compile(r"models/[^/]+\.json")
_SAMPLE_INPUTS = re.compile(r"data/sample_inputs/[^/]+\.pt")


def load_weights_only(source: Path | io.BytesIO) -> Any:
    """`torch.load` with `weights_only=True`, always passed explicitly (so no environment variable
    can turn it off), to the CPU; torch's warnings (pickle protocols, weights_only) are for torch's
    users, not thermocal's. Raises pickle.UnpicklingError for anything but tensors and plain data."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.load(source, map_location="cpu", weights_only=True)


def refuse_compressed(archive: zipfile.ZipFile, path: Path, error: type[ThermocalError] = CheckpointError,
                      code: bool = False) -> None:
    """Refuse, by name, a compressed entry where torch writes none (with `code`, TorchScript's
    `code/` entries may be compressed up to MAX_CODE_RATIO)."""
    for info in archive.infolist():
        if info.compress_type == zipfile.ZIP_STORED:
            continue
        if not (code and _entry_of(info.filename).startswith("code/")):
            raise error(f"entry {info.filename!r} is compressed, which torch never writes; refused, since "
                        "decompressing it could take any amount of memory (re-save the file with torch)", path)
        if info.file_size > MAX_CODE_RATIO * info.compress_size + (1 << 16):
            raise error(f"entry {info.filename!r} would decompress {info.file_size / max(info.compress_size, 1):.0f} "
                        f"times its size (source code compresses a few times); refused", path)


def check_torch_zip(path: Path, error: type[ThermocalError] = CheckpointError, code: bool = False) -> None:
    """A torch.save (or, with `code`, TorchScript) zip archive: refuse compressed entries as above."""
    try:
        with zipfile.ZipFile(path) as archive:
            refuse_compressed(archive, path, error, code)
    except ZIP_ERRORS as exc:
        raise error(f"is a damaged zip archive ({first_line(exc)})", path) from exc


def _entry_of(name: str) -> str:
    """The entry's name below the archive's top folder (torch names that folder after the file)."""
    return name.split("/", 1)[1] if "/" in name else name


def _check_config(archive: zipfile.ZipFile, name: str, path: Path) -> None:
    try:
        config: Any = json.loads(archive.read(name))["config"]
        items = config.items()
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"entry {name!r} is not a torch.export payload config ({first_line(exc)})", path) from exc
    folder = _entry_of(name).rsplit("/", 1)[0]  # data/weights or data/constants
    for fqn, meta in items:
        stored = f"{folder}/{meta.get('path_name')}" if isinstance(meta, dict) else ""
        if not isinstance(meta, dict) or meta.get("use_pickle") is not False or not _RAW.fullmatch(stored):
            raise CheckpointError(f"entry {name!r} stores {fqn!r} as a pickled object, not plain tensor storage; "
                                  f"thermocal does not unpickle it (unpickling can run any code); {RESAVE}", path)


def _check_sample_inputs(archive: zipfile.ZipFile, name: str, path: Path) -> None:
    try:
        load_weights_only(io.BytesIO(archive.read(name)))
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"entry {name!r} holds pickled Python objects, which thermocal does not unpickle "
                              f"(unpickling can run any code); {RESAVE}", path) from exc
    except Exception as exc:
        raise CheckpointError(f"entry {name!r} cannot be read ({first_line(exc)})", path) from exc


def check_export_archive(path: Path) -> None:
    """Refuse a `.pt2` archive with any entry other than those listed in the module docstring."""
    try:
        with zipfile.ZipFile(path) as archive:
            refuse_compressed(archive, path)
            for name in archive.namelist():
                entry = _entry_of(name)
                if entry in _STAMPS or _MODEL.fullmatch(entry) or _RAW.fullmatch(entry) or entry.startswith("extra/") \
                        or name.endswith("/"):
                    continue
                if _CONFIG.fullmatch(entry):
                    _check_config(archive, name, path)
                elif _SAMPLE_INPUTS.fullmatch(entry):
                    _check_sample_inputs(archive, name, path)
                elif entry.rsplit("/", 1)[-1].startswith(("opaque_obj_", "custom_obj_")):
                    raise CheckpointError(f"entry {name!r} is a pickled Python object (a constant that torch.export.load "
                                          "unpickles, which can run any code); thermocal refuses it; " + RESAVE, path)
                elif entry.startswith("data/aotinductor/"):
                    raise CheckpointError(f"entry {name!r} is compiled AOTInductor code, which torch.export.load "
                                          "would load and run as a native library; thermocal refuses it "
                                          "(save the program without AOTInductor)", path)
                else:
                    raise CheckpointError(f"entry {name!r} is not plain tensor storage or the program's JSON "
                                          f"(a pickled object, or an archive from another torch release); {RESAVE}",
                                          path)
    except ZIP_ERRORS as exc:
        raise CheckpointError(f"is a damaged zip archive ({first_line(exc)})", path) from exc
