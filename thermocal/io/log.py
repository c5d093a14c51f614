"""Read a training log for `thermocal monitor`: a CSV with columns step, loss, grad_norm, lr."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from thermocal.errors import InputError

COLUMNS = ("step", "loss", "grad_norm", "lr")


def read_log(path: Path) -> list[tuple[int, float, float, float]]:
    """(step, loss, grad_norm, lr) rows in file order; a one-line InputError naming the file otherwise."""
    if not path.is_file():
        raise InputError("no such file", path)
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise InputError(f"lacks column(s) {', '.join(missing)} (needs {', '.join(COLUMNS)})", path)
            rows = []
            for line, row in enumerate(reader, start=2):
                try:
                    step, loss, grad, lr = int(float(row["step"])), float(row["loss"]), float(row["grad_norm"]), float(row["lr"])
                except (TypeError, ValueError) as exc:
                    raise InputError(f"line {line}: {exc}", path) from exc
                if not all(math.isfinite(v) for v in (loss, grad, lr)):
                    raise InputError(f"line {line}: loss, grad_norm and lr must be finite", path)
                rows.append((step, loss, grad, lr))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"cannot be read as CSV ({exc})", path) from exc
    if not rows:
        raise InputError("holds no rows", path)
    return rows
