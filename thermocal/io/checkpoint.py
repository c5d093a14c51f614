"""Load the MODEL argument, recognised by its bytes, not its extension.

Formats:
- TorchScript (`torch.jit.save`) and torch.export programs (`torch.export.save`, `.pt2`):
  programs that load without the user's Python code. Probing runs them by nature.
- A state dict: a `torch.save` file read with `weights_only=True`, or `.safetensors`, plus
  `--arch` naming the code that builds the module. A training checkpoint holding the state
  dict under a common key is unwrapped, and DDP's `module.` prefix removed; the choice is
  reported in `LoadedModel.note`.
- A whole pickled `nn.Module`: only with `--trust-checkpoint`, since unpickling runs code.
- A Hugging Face `save_pretrained` directory (thermocal.io.huggingface).

Each format has one loader in LOADERS, `(path, ModelOptions) -> Loaded` (thermocal.io.loaders);
load_model then applies what every format shares (eval mode, --params, the finite check, the
digest).

`weights_only=True` is always passed explicitly (an environment variable cannot turn it off),
and a refused pickle is never retried without it. Zip archives are inspected before torch reads
them (thermocal.io.archives): compressed tensor entries and, in a `.pt2`, anything but plain
tensor storage and the program's JSON are refused.
"""

from __future__ import annotations

import pickle
import re
import struct
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from thermocal.errors import CheckpointError, DataError, InputError
from thermocal.io.archives import ZIP_ERRORS, check_export_archive, check_torch_zip, load_weights_only
from thermocal.io.files import require_file_or_folder, sha256_file, sha256_listing
from thermocal.io.huggingface import HUGGINGFACE, load_huggingface
from thermocal.io.loaders import Loaded, Loader, ModelOptions
from thermocal.io.user_code import call_user, import_callable
from thermocal.prepare import set_eval
from thermocal.text import first_line as _first_line

TORCHSCRIPT = "torchscript"
TORCH_EXPORT = "torch.export"
TORCH_SAVE = "torch.save"
SAFETENSORS = "safetensors"
PICKLED_MODULE = "pickled-module"

STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model", "module", "net")
PREFIXES = ("module.", "_orig_mod.")  # DDP, torch.compile
SAVE_ADVICE = ("save model.state_dict() (safetensors or torch.save) and pass --arch, or save "
               "torch.jit.script(model) / torch.export.export(model, ...)")


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to probe, with the identity of the file it came from."""

    module: torch.nn.Module
    path: Path
    sha256: str
    format: str
    note: str | None = None
    default_loss: str | None = None  # the loss the model's own library uses (Hugging Face)
    fixed_batch: int | None = None  # a torch.export program's fixed batch size: batches must be multiples of it


def _is_safetensors(path: Path) -> bool:
    """8-byte little-endian header length, then a JSON object of that length within the file."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(9)
    if len(head) < 9:
        return False
    (length,) = struct.unpack("<Q", head[:8])
    return head[8:9] == b"{" and 8 + length <= size


def detect_format(path: Path) -> str:
    """Name the checkpoint format of `path` from its content, or raise CheckpointError."""
    require_file_or_folder(path, CheckpointError)
    if path.is_dir():
        if (path / "config.json").is_file():
            return HUGGINGFACE
        if (path / ".metadata").is_file():
            raise CheckpointError("is a sharded torch.distributed.checkpoint (FSDP/DCP) directory; consolidate it into "
                                  "one state dict first (torch.distributed.checkpoint.format_utils.dcp_to_torch_save) "
                                  "and pass --arch", path)
        raise CheckpointError("is a directory without config.json; MODEL is a checkpoint file or a "
                              "Hugging Face save_pretrained directory", path)
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
            if any("/code/" in n for n in names) and any(n.endswith("constants.pkl") for n in names):
                return TORCHSCRIPT
            if any(n.endswith("/archive_format") for n in names) or any("/models/" in n and n.endswith(".json") for n in names):
                return TORCH_EXPORT
            if any(n.endswith("data.pkl") for n in names):
                return TORCH_SAVE
            raise CheckpointError("is a zip archive but not a TorchScript, torch.export or torch.save file", path)
        if _is_safetensors(path):
            return SAFETENSORS
        with open(path, "rb") as handle:
            first = handle.read(1)
    except ZIP_ERRORS as exc:
        raise CheckpointError(f"cannot be read ({_first_line(exc)})", path) from exc
    if first == b"\x80":  # a pickle protocol marker: torch.save's legacy (pre-zip) format
        return TORCH_SAVE
    raise CheckpointError("is not a model checkpoint (neither TorchScript, torch.export, torch.save nor "
                          "safetensors)", path)


def _load_torchscript(path: Path, options: ModelOptions) -> Loaded:
    check_torch_zip(path, code=True)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*torch\.jit.* is deprecated", category=DeprecationWarning)
            return Loaded(torch.jit.load(str(path), map_location="cpu"), TORCHSCRIPT)
    except Exception as exc:  # torch raises RuntimeError and friends with multi-line texts
        raise CheckpointError(f"cannot be loaded as TorchScript ({_first_line(exc)})", path) from exc


class FixedBatch(torch.nn.Module):
    """A torch.export program exported for batches of exactly `size` examples, called on chunks of
    that size and its outputs concatenated (exact in eval mode, where examples do not interact).

    It is a view of the program: the same submodule, parameter and buffer dictionaries, so
    names, devices, dtypes and `functional_call` reach the program's own tensors."""

    def __init__(self, program: torch.nn.Module, size: int) -> None:
        super().__init__()
        self._modules, self._parameters, self._buffers = program._modules, program._parameters, program._buffers
        object.__setattr__(self, "program", program)  # not a child: its tensors are already ours
        self.size = size

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if inputs.shape[0] % self.size:
            raise DataError(f"a batch of {inputs.shape[0]} examples for a program exported for batches of {self.size}")
        return torch.cat([self.program(chunk) for chunk in inputs.split(self.size)])


def fixed_batch(program: torch.export.ExportedProgram) -> int | None:
    """The batch size a program was exported for, when its first input's batch dimension is a
    constant rather than a symbol (exported without `dynamic_shapes`)."""
    user_inputs = set(program.graph_signature.user_inputs)
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name in user_inputs:
            value = node.meta.get("val")
            shape = getattr(value, "shape", None)
            return shape[0] if shape and isinstance(shape[0], int) else None
    return None


def _load_export(path: Path, options: ModelOptions) -> Loaded:
    """The program as a module (fed in chunks when exported with a fixed batch size), a note, and that size."""
    check_export_archive(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.export.load(str(path))
        module = program.module()
    except Exception as exc:
        raise CheckpointError(f"cannot be loaded as a torch.export program ({_first_line(exc)})", path) from exc
    note = "a torch.export program runs in the mode it was exported in"
    size = fixed_batch(program)
    if size is None:
        return Loaded(module, TORCH_EXPORT, note)
    return Loaded(FixedBatch(module, size), TORCH_EXPORT, f"{note}; exported for batches of {size}, so fed {size} "
                  "examples at a time", fixed_batch=size)


def build_arch(spec: str) -> torch.nn.Module:
    """Call `--arch` (no arguments) to build the module a state dict is loaded into."""
    module = call_user(import_callable(spec, "--arch"), spec, "--arch")
    if not isinstance(module, torch.nn.Module):
        raise InputError(f"--arch {spec!r}: returned a {type(module).__name__}, not a torch.nn.Module")
    return module


def _is_tensor_mapping(value: Any) -> bool:
    return isinstance(value, Mapping) and len(value) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items())


def find_state_dict(content: Any, path: Path) -> tuple[dict[str, torch.Tensor], str | None]:
    """The state dict in `content` (itself, or under a common key), with DDP/compile prefixes removed."""
    notes = []
    if _is_tensor_mapping(content):
        state = dict(content)
    elif isinstance(content, Mapping):
        key = next((k for k in STATE_DICT_KEYS if _is_tensor_mapping(content.get(k))), None)
        if key is None:
            keys = ", ".join(sorted(map(str, content))[:12]) or "none"
            raise CheckpointError(f"holds a dict with keys [{keys}] and no state dict (a dict of tensors, itself "
                                  f"or under {'/'.join(STATE_DICT_KEYS)})", path)
        state = dict(content[key])
        notes.append(f"state dict under {key!r}")
    else:
        raise CheckpointError(f"holds a {type(content).__name__}, not a state dict; {SAVE_ADVICE}", path)
    for prefix in PREFIXES:
        if all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
            notes.append(f"{prefix!r} prefix removed")
    return state, "; ".join(notes) or None


def _load_into_arch(state: dict[str, torch.Tensor], note: str | None, options: ModelOptions, path: Path,
                    ) -> tuple[torch.nn.Module, str | None]:
    if options.arch is None:
        where = f" ({note})" if note else ""
        raise CheckpointError(f"is a state dict of {len(state)} tensors{where}: pass --arch module:callable or "
                              "--arch path/to/file.py:callable that builds the model", path)
    module = build_arch(options.arch)
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        def listed(what: str, keys: list[str]) -> str:
            return f"{what} keys [" + ", ".join(keys[:6]) + (f", … {len(keys) - 6} more" if len(keys) > 6 else "") + "]"
        found = [listed(what, keys) for what, keys in (("missing", missing), ("unexpected", unexpected)) if keys]
        raise CheckpointError(f"does not match --arch {options.arch}: {', '.join(found)}", path)
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items() if state[k].shape != v.shape]
    if wrong:
        raise CheckpointError(f"does not match --arch {options.arch}: shapes differ (file vs arch) for "
                              + "; ".join(wrong[:4]), path)
    module.load_state_dict(state, strict=True)
    return module, "; ".join(filter(None, [note, f"built by --arch {options.arch}"]))


def _built(state: dict[str, torch.Tensor], note: str | None, options: ModelOptions, path: Path, fmt: str) -> Loaded:
    """A state dict loaded into the module --arch builds."""
    module, note = _load_into_arch(state, note, options, path)
    return Loaded(module, fmt, note)


def _load_torch_save(path: Path, options: ModelOptions) -> Loaded:
    if zipfile.is_zipfile(path):
        check_torch_zip(path)
    try:
        content = load_weights_only(path)
    except pickle.UnpicklingError as exc:
        if not options.trust_checkpoint:
            raise CheckpointError(
                "holds pickled Python objects (a whole nn.Module?), which thermocal unpickles only with "
                f"--trust-checkpoint because unpickling can run any code; {SAVE_ADVICE}", path) from exc
        return _load_trusted_pickle(path)
    except Exception as exc:
        raise CheckpointError(f"cannot be read as a torch.save file ({_first_line(exc)})", path) from exc
    state, note = find_state_dict(content, path)
    return _built(state, note, options, path, TORCH_SAVE)


def _load_trusted_pickle(path: Path) -> Loaded:
    try:
        content = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise CheckpointError(f"cannot be unpickled ({type(exc).__name__}: {_first_line(exc)})", path) from exc
    if isinstance(content, Mapping):
        key = next((k for k in STATE_DICT_KEYS if isinstance(content.get(k), torch.nn.Module)), None)
        if key is not None:
            return Loaded(content[key], PICKLED_MODULE, f"pickled nn.Module under {key!r} (--trust-checkpoint)")
    if not isinstance(content, torch.nn.Module):
        raise CheckpointError(f"unpickled to a {type(content).__name__}, not an nn.Module", path)
    return Loaded(content, PICKLED_MODULE, "pickled nn.Module (--trust-checkpoint)")


def _load_safetensors(path: Path, options: ModelOptions) -> Loaded:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        content = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"is a corrupted safetensors file ({_first_line(exc)})", path) from exc
    if not content:
        raise CheckpointError("is a safetensors file with no tensors", path)
    state, note = find_state_dict(content, path)
    return _built(state, note, options, path, SAFETENSORS)


def trainable_parameters(module: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The parameters the probe differentiates: floating point and `requires_grad=True`."""
    return [p for p in module.parameters() if p.requires_grad and p.is_floating_point()]


def restrict_parameters(module: torch.nn.Module, pattern: str, path: Path) -> list[str]:
    """`--params REGEX`: keep requires_grad only on the trainable parameters whose name matches."""
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise InputError(f"--params {pattern!r}: not a regular expression ({exc})") from exc
    kept = []
    for name, param in module.named_parameters():
        if param.requires_grad and param.is_floating_point():
            if regex.search(name):
                kept.append(name)
            else:
                param.requires_grad_(False)
    if not kept:
        names = ", ".join(n for n, _ in list(module.named_parameters())[:8])
        raise CheckpointError(f"no trainable parameter matches --params {pattern!r} (names: {names})", path)
    return kept


# One loader per format detect_format names; each takes (path, options) and returns a Loaded.
LOADERS: dict[str, Loader] = {
    TORCHSCRIPT: _load_torchscript, TORCH_EXPORT: _load_export, TORCH_SAVE: _load_torch_save,
    SAFETENSORS: _load_safetensors, HUGGINGFACE: load_huggingface,
}
SELF_BUILDING = (TORCHSCRIPT, TORCH_EXPORT, HUGGINGFACE)  # formats that need no --arch


def load_model(path: Path, options: ModelOptions | None = None) -> LoadedModel:
    """Load a checkpoint on the CPU in eval mode and check that it can be probed."""
    options = options or ModelOptions()
    fmt = detect_format(path)
    if options.arch is not None and fmt in SELF_BUILDING:
        raise InputError(f"--arch is for state dicts; {path} is a {fmt} checkpoint that builds itself")
    loaded = LOADERS[fmt](path, options)
    module = loaded.module
    set_eval(module)
    if options.params is not None:
        restrict_parameters(module, options.params, path)
    if not trainable_parameters(module):
        raise CheckpointError("has no trainable floating-point parameters to probe", path)
    for name, param in module.named_parameters():
        if param.is_floating_point() and not bool(torch.isfinite(param).all()):
            raise CheckpointError(f"parameter {name!r} holds NaN or Inf values", path)
    digest = sha256_file(path) if path.is_file() else sha256_listing(
        (f, str(f.relative_to(path))) for f in sorted(path.rglob("*")) if f.is_file())
    return LoadedModel(module=module, path=path, sha256=digest, format=loaded.format, note=loaded.note,
                       default_loss=loaded.default_loss, fixed_batch=loaded.fixed_batch)


def count_parameters(module: torch.nn.Module) -> int:
    """d: the number of trainable scalars."""
    return sum(p.numel() for p in trainable_parameters(module))

