"""Import the user's own code named on the command line (`--arch`, `--loss`, `--dataset`).

`module:callable` imports that module, with the current directory importable for that import
alone (as under `python -m`; `sys.path` is restored after it, so that a stray `statistics.py`
there cannot stand in for a module imported later); `path/to/file.py:callable` runs that file.
Either runs the user's code, which naming it on the command line asks for. An exception or a
`sys.exit()` in that code is an error of that code: one line naming the flag, exit 2.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any, Callable

from thermocal.errors import InputError
from thermocal.text import first_line


def _module_from_file(file: Path) -> Any:
    name = "thermocal_user_" + hashlib.sha256(str(file.resolve()).encode()).hexdigest()[:12]
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise InputError(f"{file} cannot be imported as Python")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _import_from_cwd(name: str) -> Any:
    """Import module `name` with the working directory first on sys.path for this import only."""
    saved = list(sys.path)
    sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(name)
    finally:
        sys.path[:] = saved


def _raised(exc: BaseException) -> str:
    """`Type: first line`, and for sys.exit() what it was called with."""
    if isinstance(exc, SystemExit):
        return f"it called sys.exit({exc.code!r})"
    return f"{type(exc).__name__}: {first_line(exc)}"


def import_callable(spec: str, flag: str) -> Callable[..., Any]:
    """The callable `spec` names; an InputError naming `flag` when it cannot be had."""
    where, _, attribute = spec.rpartition(":")
    if not where or not attribute:
        raise InputError(f"{flag} {spec!r}: expected module:callable or path/to/file.py:callable")
    try:
        if where.endswith(".py") or "/" in where or os.sep in where:
            file = Path(where)
            if not file.is_file():
                raise InputError(f"{flag} {spec!r}: no such file {where}")
            target: Any = _module_from_file(file)
        else:
            target = _import_from_cwd(where)
        for part in attribute.split("."):
            target = getattr(target, part)
    except InputError:
        raise
    except (Exception, SystemExit) as exc:
        raise InputError(f"{flag} {spec!r}: cannot import it ({_raised(exc)})") from exc
    if not callable(target):
        raise InputError(f"{flag} {spec!r}: {attribute} is a {type(target).__name__}, not a callable")
    return target


def call_user(fn: Callable[..., Any], spec: str, flag: str, *args: Any) -> Any:
    """Call user code; its exceptions become one line naming the flag."""
    try:
        return fn(*args)
    except (Exception, SystemExit) as exc:
        raise InputError(f"{flag} {spec!r}: calling it raised {_raised(exc)}") from exc
