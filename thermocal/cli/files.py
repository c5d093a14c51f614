"""The commands that read a schedule file: export, check, show, plot, schema. None imports torch."""

from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path
from typing import Literal, Optional

import typer
from rich.console import Console

from thermocal.check import check as run_check
from thermocal.cli.main import DEFAULT_RESULT, command, emit, line, stderr_console
from thermocal.errors import EXIT_DEGENERATE, InputError
from thermocal.io.files import ensure_writable, read_text, write_bytes_atomic, write_text_atomic
from thermocal.report import show as show_group
from thermocal.schedule.export import render as render_export
from thermocal.schedule.file import ScheduleFile, loads, schema_text
from thermocal.schedule.functions import total_steps
from thermocal.text import printable

Format = Literal["yaml", "json", "csv", "torch", "hf", "lightning", "optax", "keras", "env"]


def read_schedule(path: Path) -> ScheduleFile:
    return loads(read_text(path), str(path))


@command
def export(
    file: Path = typer.Argument(DEFAULT_RESULT, help="A probe result (JSON or YAML)."),
    format: Format = typer.Option("yaml", "--format", "-f", help="yaml/json: the file; csv: step,lr,temperature,optimizer; a "
                                  "framework's snippet; env: shell lines."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write here instead of stdout."),
    force: bool = typer.Option(False, "--force", help="Replace --out if it exists."),
    every: int = typer.Option(1, min=1, help="csv: one row every N steps (the last step always)."),
) -> None:
    """Write the schedule (validated) as a file, a table or a framework snippet, to stdout by default."""
    document = read_schedule(file)
    if format == "csv" and total_steps(document.schedule) is None:
        raise InputError("holds a flat schedule without a budget: probe with --steps to tabulate it", file)
    rendered = render_export(document, format, every)
    if out is None:
        emit(rendered)
    else:
        write_text_atomic(out, rendered, force=force)


@command
def check(
    file: Path = typer.Argument(DEFAULT_RESULT, help="The schedule file to check."),
    strict: bool = typer.Option(False, "--strict", help="Diagnostic warnings fail too."),
    against: Optional[Path] = typer.Option(None, "--against", help="A previous schedule file to compare with."),
    max_drift: float = typer.Option(0.25, min=0.0, help="With --against: the largest relative change of eta0, tau, T0, Tf."),
    as_json: bool = typer.Option(False, "--json", help="Print the findings as JSON on stdout."),
) -> None:
    """Validate a schedule file, re-derive it from its measurements, and compare it with a previous one.

    Exit 0: every check passed; 1: a check failed; 2: a file is unusable.
    """
    document = read_schedule(file)
    previous = read_schedule(against) if against is not None else None
    report = run_check(document, strict=strict, previous=previous, max_drift=max_drift)
    if as_json:
        payload = {"file": str(file), "passed": report.passed,
                   "findings": [{"check": f.check, "status": f.status, "message": f.message} for f in report.findings]}
        emit([json.dumps(payload, indent=2) + "\n"])
    else:
        emit([printable(f"{f.status:4s}  {f.check}: {f.message}") + "\n" for f in report.findings]
             + [printable(f"{file}: {'passed' if report.passed else 'FAILED'}") + "\n"])
    if not report.passed:
        raise typer.Exit(EXIT_DEGENERATE)


@command
def show(
    file: Path = typer.Argument(DEFAULT_RESULT, help="A probe result (JSON or YAML)."),
    no_color: bool = typer.Option(False, "--no-color", help="Plain text, no colour codes (also when stdout is not a terminal)."),
) -> None:
    """Show the measurements with their errors, the schedule, the diagnostics and the curves."""
    document = read_schedule(file)
    # rendered into a string, then written by emit: a stdout that cannot be written is one line, exit 2
    console = Console(file=io.StringIO(), no_color=no_color or "NO_COLOR" in os.environ, highlight=False,
                      soft_wrap=False, force_terminal=sys.stdout.isatty(),
                      width=None if sys.stdout.isatty() else int(os.environ.get("COLUMNS", "80")))
    console.print(show_group(document))
    emit([console.file.getvalue()])


@command
def plot(
    file: Path = typer.Argument(DEFAULT_RESULT, help="A probe result (JSON or YAML)."),
    out: Path = typer.Option(Path("schedule.png"), "--out", "-o", help="The PNG to write."),
    force: bool = typer.Option(False, "--force", help="Replace --out if it exists."),
) -> None:
    """Draw lr(t), T(t) (and the spectral density) as a PNG; needs matplotlib (the plot extra)."""
    from thermocal.plot import render_png

    document = read_schedule(file)
    ensure_writable(out, force=force)
    write_bytes_atomic(out, render_png(document), force=force)
    stderr_console().print(line(None, f"wrote {out}"), soft_wrap=True)


@command
def schema() -> None:
    """Print the JSON Schema of the schedule file (thermocal.schedule/v2)."""
    emit([schema_text()])
