"""Import the user's own code named on the command line (`--arch`, `--loss`, `--dataset`).

`module:callable` imports a module (the current directory is importable, as under
`python -m`); `path/to/file.py:callable` runs that file. Either runs the user's code, which
naming it on the command line asks for.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import re
import sys
from pathlib import Path
from typing import Any, Callable

from thermocal.errors import InputError


def first_line(exc: BaseException) -> str:
    """The first line of an exception's text, without terminal escape codes, at most 300 characters."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]


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
            if os.getcwd() not in sys.path:
                sys.path.insert(0, os.getcwd())
            target = importlib.import_module(where)
        for part in attribute.split("."):
            target = getattr(target, part)
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"{flag} {spec!r}: cannot import it ({type(exc).__name__}: {first_line(exc)})") from exc
    if not callable(target):
        raise InputError(f"{flag} {spec!r}: {attribute} is a {type(target).__name__}, not a callable")
    return target


def call_user(fn: Callable[..., Any], spec: str, flag: str, *args: Any) -> Any:
    """Call user code; its exceptions become one line naming the flag."""
    try:
        return fn(*args)
    except Exception as exc:
        raise InputError(f"{flag} {spec!r}: calling it raised {type(exc).__name__}: {first_line(exc)}") from exc
