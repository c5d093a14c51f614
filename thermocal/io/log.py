"""Read a training log for `thermocal monitor`: a CSV with columns step, loss, grad_norm, lr."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from thermocal.errors import InputError
from thermocal.io.files import require_file_or_folder
from thermocal.text import printable

COLUMNS = ("step", "loss", "grad_norm", "lr")


def read_log(path: Path) -> list[tuple[int, float, float, float]]:
    """(step, loss, grad_norm, lr) rows in file order; a one-line InputError naming the file otherwise."""
    require_file_or_folder(path)
    if not path.is_file():
        raise InputError("is a folder; give the CSV log", path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:  # -sig: a byte-order mark is not part of a name
            reader = csv.reader(handle)
            header = [name.strip() for name in next(reader, [])]
            missing = [c for c in COLUMNS if c not in header]
            if missing:
                raise InputError(f"lacks column(s) {', '.join(missing)} (needs {', '.join(COLUMNS)}; "
                                 f"has {', '.join(printable(h) for h in header[:8]) or 'none'})", path)
            where = [header.index(c) for c in COLUMNS]
            rows = []
            for line, fields in enumerate(reader, start=2):
                if not fields:
                    continue
                if len(fields) != len(header):
                    raise InputError(f"line {line} has {len(fields)} fields, the header {len(header)}", path)
                try:
                    step_value, loss, grad, lr = (float(fields[i]) for i in where)
                except ValueError as exc:
                    raise InputError(f"line {line}: {printable(str(exc))[:120]}", path) from exc
                if not all(math.isfinite(v) for v in (step_value, loss, grad, lr)):
                    raise InputError(f"line {line}: step, loss, grad_norm and lr must be finite", path)
                if lr < 0 or grad < 0:
                    raise InputError(f"line {line}: lr and grad_norm cannot be negative (got {lr:g}, {grad:g})", path)
                if step_value != int(step_value):
                    raise InputError(f"line {line}: step {step_value:g} is not a whole number", path)
                rows.append((int(step_value), loss, grad, lr))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"cannot be read as CSV ({exc})", path) from exc
    if not rows:
        raise InputError("holds no rows", path)
    return rows
