"""Rich rendering of a schedule file for the terminal (stderr). Reads records, computes nothing new."""

from __future__ import annotations

import math

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from thermocal.schedule.file import ScheduleFile

_STATUS_STYLE = {"pass": "green", "warn": "yellow", "fail": "red", "info": "dim"}


def _row(table: Table, *cells: str | Text) -> None:
    """A table row whose strings are shown as they are: never parsed as rich markup."""
    table.add_row(*(cell if isinstance(cell, Text) else Text(cell) for cell in cells))


def _num(value: float | None) -> str:
    return "—" if value is None else f"{value:.4g}"


def _pm(value: float, stderr: float | None) -> str:
    return _num(value) if stderr is None else f"{value:.4g} ± {stderr:.2g}"


def summary(doc: ScheduleFile) -> Group:
    """Measurements with their errors, the schedule, and the diagnostics."""
    noise, hess, s, cal = doc.measurements.gradient_noise, doc.measurements.hessian, doc.schedule, doc.calibration

    measured = Table(title="Measurements", title_justify="left", show_header=True, header_style="bold")
    measured.add_column("quantity")
    measured.add_column("value", justify="right")
    measured.add_column("how", overflow="fold")
    how_noise = f"K={noise.num_batches} minibatches of B={noise.batch_size}, bootstrap ±"
    used = f"mean over the {noise.samples_used} examples of K·B = {noise.num_batches}·{noise.batch_size}"
    if noise.samples_dropped:
        used += f" ({noise.samples_dropped} of {noise.samples_used + noise.samples_dropped} left over, dropped)"
    _row(measured, "loss L(θ)", _num(noise.loss), used)
    _row(measured, "grad_norm_mean", _pm(noise.grad_norm_mean, noise.grad_norm_mean_stderr), how_noise)
    _row(measured, "grad_var", _pm(noise.grad_var, noise.grad_var_stderr), how_noise)
    _row(measured, "grad_sq_mean", _pm(noise.grad_sq_mean, noise.grad_sq_mean_stderr), how_noise)
    if noise.noise_scale is not None:
        _row(measured, "noise_scale", _pm(noise.noise_scale, noise.noise_scale_stderr), "B·grad_var/full_grad_sq")
    else:
        _row(measured, "noise_scale", "—", "none: the mean gradient cannot be told from the noise (full_grad_sq = 0)")
    for name, value in (("lambda_max", hess.lambda_max), ("lambda_min", hess.lambda_min)):
        rec = hess.details[name]
        state = "converged" if rec.converged else "NOT converged"
        _row(measured, name, _num(value), f"{rec.hvps} HVPs, residual {_num(rec.residual)}, {state}")
    rec = hess.details["trace"]
    if rec.converged:
        scale = "" if rec.scale is None else f" of max(|trace|, curvature scale {rec.scale:.3g})"
        state = f"converged: ± ≤ {rec.tolerance:g}{scale}"
    else:
        state = "NOT converged"
    _row(measured, "trace", _pm(hess.trace, hess.trace_stderr), f"{rec.iterations} probes, {state}")

    if hess.top_eigenvalues:
        _row(measured, f"top {len(hess.top_eigenvalues)}", ", ".join(f"{v:.4g}" for v in hess.top_eigenvalues), "Lanczos Ritz values")
    timing = ", ".join(f"{phase} {seconds:.2f}s" for phase, seconds in doc.timings.items())
    _row(measured, "engine", f"{hess.engine}", f"{hess.hvp_mode or ''} {hess.hvps} HVPs in all; {timing}".strip())

    sched = Table(title=f"Schedule ({s.kind})", title_justify="left", show_header=True, header_style="bold")
    sched.add_column("constant")
    sched.add_column("value", justify="right")
    sched.add_column("rule", overflow="fold")
    _row(sched, "T0", _pm(s.T0, cal.T0_stderr), "grad_var / grad_norm_mean")
    _row(sched, "Tf", _num(s.Tf), f"{s.rules.tf_rule} rule (raw lambda_min {_num(cal.lambda_min_raw)})")
    _row(sched, "tau", _num(s.tau), f"{s.rules.tau_rule}; budget {_num(cal.tau_budget)}, §6.1 relaxation {_num(cal.tau_relaxation)}")
    _row(sched, "steps", "—" if s.steps is None else str(s.steps), s.rules.steps_source)
    _row(sched, "eta0", _num(s.eta0), f"{s.rules.eta0_bound} bound active (balance {_num(cal.eta_balance)}, stable {_num(cal.eta_stable)})")
    _row(sched, "gamma", f"{s.gamma:.10g}", "per-step lr factor exp(-1/(2 tau))")
    _row(sched, "lr(t)", s.lr_expression, "")

    diag = Table(title="Diagnostics", title_justify="left", show_header=True, header_style="bold")
    for column in ("check", "§", "value", "threshold", "status"):
        diag.add_column(column, justify="right" if column in ("value", "threshold") else "left")
    for d in doc.diagnostics:
        _row(diag, d.name, d.section, _num(d.value), _num(d.threshold), Text(d.status, style=_STATUS_STYLE[d.status]))
    parts = [measured]
    if hess.blocks:
        blocks = Table(title="Per-block curvature", title_justify="left", show_header=True, header_style="bold")
        for column in ("block", "params", "lambda_max", "trace"):
            blocks.add_column(column, justify="left" if column == "block" else "right")
        for b in hess.blocks:
            _row(blocks, b.name, str(b.num_params), _num(b.lambda_max), _pm(b.trace, b.trace_stderr))
        parts.append(blocks)
    if hess.density is not None:
        parts.append(density_plot(hess.density.grid, hess.density.density))
    return Group(*parts, sched, diag)


_BARS = " ▁▂▃▄▅▆▇█"


def _bars(levels: list[float], height: int) -> list[str]:
    """Rows (top first) of a filled bar chart; each level in [0, height] rows, eighths drawn."""
    return ["".join(_BARS[min(8, max(0, int(round((level - row) * 8))))] for level in levels)
            for row in range(height - 1, -1, -1)]


def density_plot(grid: list[float], density: list[float], width: int = 64, height: int = 8) -> Text:
    """The spectral density as a terminal bar chart, log scale over four decades."""
    columns = [max(density[i * len(density) // width:(i + 1) * len(density) // width] or [0.0]) for i in range(width)]
    top = max(columns) or 1.0
    levels = [max(0.0, 1.0 + math.log10(max(c, 1e-300) / top) / 4.0) * height for c in columns]
    text = Text("Spectral density (SLQ, log scale, 4 decades)\n", style="bold")
    text.append("\n".join(_bars(levels, height)) + "\n")
    left, right = f"{grid[0]:.3g}", f"{grid[-1]:.3g}"
    text.append(left + " " * max(1, width - len(left) - len(right)) + right + "\n")
    return text


def curve_plot(title: str, fn, total: int, width: int = 60, height: int = 6) -> Text:
    """f(t) for t in [0, total] as a terminal bar chart on a linear scale from 0 to its maximum,
    one column per total/width steps (the column's value at its first step)."""
    steps = [round(i * total / (width - 1)) for i in range(width)]
    values = [fn(t) for t in steps]
    top = max(values) or 1.0
    levels = [height * (v / top) if math.isfinite(v / top) else 0.0 for v in values]  # v/top first: v·height can overflow
    label = f"{top:.3g}"
    pad = " " * len(label)
    rows = _bars(levels, height)
    text = Text(title + "\n", style="bold")
    for i, row in enumerate(rows):
        text.append((label if i == 0 else pad) + " ┤" + row + "\n")
    text.append(" " * (len(label) - 1) + "0 └" + "─" * width + "\n")
    right = f"{total} steps"
    text.append(pad + "  0" + " " * max(1, width - 1 - len(right)) + right + "\n")
    return text


def schedule_plots(doc: ScheduleFile) -> list[Text]:
    """lr(t) and T(t) over warmup + budget (none for a flat schedule without a budget)."""
    from thermocal.schedule.functions import learning_rate, temperature, total_steps

    total = total_steps(doc.schedule)
    if not total:
        return []
    s = doc.schedule
    marks = (f"T0 {s.T0:.3g} -> Tf {s.Tf:.3g}" + (f"; tau {s.tau:.4g}" if s.tau else "")
             + (f"; warmup {s.warmup_steps}" if s.warmup_steps else "") + f"; {total} steps in all\n")
    return [curve_plot("learning rate eta(t)", learning_rate(s), total),
            curve_plot("temperature T(t)", temperature(s), total), Text(marks)]


def show(doc: ScheduleFile) -> Group:
    """`thermocal show`: the summary, then the schedule's curves."""
    return Group(summary(doc), *schedule_plots(doc))


def render(doc: ScheduleFile, console: Console) -> None:
    console.print(summary(doc))


class RichProgress:
    """The probe's progress sink (probe.measure.Progress) drawn as a rich progress bar.

    A phase of known length (the minibatch gradients, the density's Lanczos steps) shows done/total
    and the time left; an iterative solver, which stops when converged, shows its products so
    far and the time spent, and no estimate (its budget is a bound, far from what it takes)."""

    def __init__(self, console: Console) -> None:
        from rich.progress import BarColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        class Count(ProgressColumn):
            def render(self, task) -> Text:  # type: ignore[no-untyped-def]
                done = int(task.completed)
                return Text(f"{done}/{int(task.total)}" if task.total is not None else f"{done} products")

        class Left(TimeRemainingColumn):
            def render(self, task) -> Text:  # type: ignore[no-untyped-def]
                return Text("left ") + super().render(task) if task.total is not None else Text("")

        self._bar = Progress(
            TextColumn("{task.description}"), BarColumn(), Count(), TimeElapsedColumn(), Left(),
            console=console, transient=True,
        )
        self._task: int | None = None

    def __enter__(self) -> "RichProgress":
        self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._bar.stop()

    def phase(self, name: str, total: int | None) -> None:
        if self._task is not None:
            self._bar.remove_task(self._task)
        self._task = self._bar.add_task(name, total=total)

    def advance(self, amount: int = 1) -> None:
        if self._task is not None:
            self._bar.advance(self._task, amount)
