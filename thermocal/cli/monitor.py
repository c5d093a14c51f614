"""`thermocal monitor LOG.csv`: replay the run-time cooling check over a training log (method.md §7)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from thermocal.cli.main import DEFAULT_RESULT, command, emit
from thermocal.errors import InputError
from thermocal.io.log import read_log
from thermocal.monitor import DEFAULT_EPSILON, DEFAULT_WINDOW, relaxation_curvature, replay
from thermocal.schedule.runtime import load_schedule
from thermocal.text import printable


@command
def monitor(
    log: Path = typer.Argument(..., help="A CSV log with columns step, loss, grad_norm, lr."),
    schedule: Path = typer.Option(DEFAULT_RESULT, "--schedule", help="The schedule file the run was probed into (its "
                                  "curvature sets how fast the noise relaxes)."),
    epsilon: float = typer.Option(DEFAULT_EPSILON, min=0.0, help="Fire when the lr cools faster than this many times the "
                                  "noise's relaxation rate."),
    window: int = typer.Option(DEFAULT_WINDOW, min=2, help="Steps over which the cooling rate is measured, and steps it "
                               "must last."),
    as_json: bool = typer.Option(False, "--json", help="Print the firings as JSON on stdout."),
) -> None:
    """Replay the cooling check (seed §6.2) over a training log and report where the lr cooled faster than the run relaxes."""
    rows = read_log(log)
    loaded = load_schedule(schedule)
    try:
        lam = relaxation_curvature(loaded.document)
    except ValueError as exc:
        raise InputError(str(exc), schedule) from exc
    readings, firings = replay(rows, loaded, epsilon=epsilon, window=window)
    if as_json:
        payload = {"log": str(log), "schedule": str(schedule), "epsilon": epsilon, "window": window,
                   "relaxation_curvature": lam, "steps": len(readings), "firings": [f.__dict__ for f in firings]}
        emit([json.dumps(payload, indent=2) + "\n"])
        return
    ratios = [r.ratio for r in readings if r.ratio is not None]
    where = printable(str(log))
    if ratios:
        lines = [f"{where}: {len(readings)} steps; cooling rate over relaxation rate (2·lr·{lam:.3g}) median "
                 f"{sorted(ratios)[len(ratios) // 2]:.3g}, max {max(ratios):.3g} (epsilon {epsilon:g}, window {window})\n"]
    else:
        lines = [f"{where}: {len(readings)} steps, fewer than the window of {window}: no rate yet\n"]
    lines += [f"fired at step {f.first_step} (held to {f.last_step}, peak ratio {f.peak_ratio:.3g}): cooling faster than "
              f"the noise relaxes; stretch tau by {f.stretch:.3g} from step {f.first_step} "
              f"({'the loss lag was resolved there' if f.lag_resolved else 'the loss lag stayed within its noise'})\n"
              for f in firings]
    emit(lines if firings else [*lines, "the check did not fire\n"])
