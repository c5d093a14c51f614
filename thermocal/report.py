"""Rich rendering of a schedule file for the terminal (stderr). Reads records, computes nothing new."""

from __future__ import annotations

import math

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from thermocal.budget import budget_examples, example_gradients
from thermocal.records import EIG_FLOOR_FRACTION, HessianSpectrum, ProbeCost
from thermocal.schedule.file import ScheduleFile

_STATUS_STYLE = {"pass": "green", "warn": "yellow", "fail": "red", "info": "dim"}


def _row(table: Table, *cells: str | Text) -> None:
    """A table row whose strings are shown as they are: never parsed as rich markup."""
    table.add_row(*(cell if isinstance(cell, Text) else Text(cell) for cell in cells))


def _num(value: float | None) -> str:
    return "—" if value is None else f"{value:.4g}"


def _pm(value: float, stderr: float | None) -> str:
    return _num(value) if stderr is None else f"{value:.4g} ± {stderr:.2g}"


def _table(title: str, *columns: str) -> Table:
    table = Table(title=title, title_justify="left", show_header=True, header_style="bold")
    for column in columns:
        table.add_column(column, justify="right" if column in ("value", "threshold") else "left",
                         overflow="fold" if column in ("how", "rule") else "ellipsis")
    return table


def _unsampled(doc: ScheduleFile, quantity: str) -> str:
    """Why a v2 file's `quantity` ("lambda_max" or "trace") has no sampling error over examples
    (method.md [H13], [H14]), in words for its row; the commonest first."""
    hess, inputs, cost = doc.measurements.hessian, doc.inputs, doc.measurements.cost
    batch = doc.measurements.gradient_noise.batch_size
    if inputs.hessian_samples is not None and inputs.hessian_samples < 2 * batch:
        more = "; a larger --probe-budget takes more" if cost is not None and cost.budget is not None else ""
        return f"not measured: its {inputs.hessian_samples} Hessian examples are under two minibatches of {batch}{more}"
    rec = hess.details["lambda_max"]
    power = hess.engine != "native" or rec.estimator == "power"
    if quantity == "lambda_max":
        return "not measured: the power iteration's dominant end was lambda_min" if power else "not measured"
    if (inputs.processes or 1) > 1:
        return "not measured under torchrun: each process's products see only its share of the groups"
    if power:
        return "not measured on the power route"
    if rec.restarts:
        return "not measured after a Lanczos restart"
    return "not measured"


def _measurements(doc: ScheduleFile) -> Table:
    noise, hess, extra = doc.measurements.gradient_noise, doc.measurements.hessian, doc.measurements.noise_curvature
    measured = _table("Measurements", "quantity", "value", "how")
    how_noise = f"K={noise.num_batches} minibatches of B={noise.batch_size}, bootstrap ±"
    used = f"mean over the {noise.samples_used} examples of K·B = {noise.num_batches}·{noise.batch_size}"
    if noise.samples_dropped:
        used += f" ({noise.samples_dropped} of {noise.samples_used + noise.samples_dropped} left over, dropped)"
    _row(measured, "loss L(θ)", _pm(noise.loss, noise.loss_stderr), used + ("; ± its standard error" if noise.loss_stderr
                                                                             is not None else ""))
    _row(measured, "grad_norm_mean", _pm(noise.grad_norm_mean, noise.grad_norm_mean_stderr), how_noise)
    _row(measured, "grad_var", _pm(noise.grad_var, noise.grad_var_stderr), "tr Σ_B: " + how_noise)
    _row(measured, "grad_sq_mean", _pm(noise.grad_sq_mean, noise.grad_sq_mean_stderr), how_noise)
    if noise.noise_scale is not None:
        _row(measured, "noise_scale", _pm(noise.noise_scale, noise.noise_scale_stderr), "B·grad_var/full_grad_sq")
    else:
        _row(measured, "noise_scale", "—", "none: the mean gradient cannot be told from the noise (full_grad_sq = 0)")
    where = f" (Hessian of {doc.inputs.hessian_samples} examples)" if doc.inputs.hessian_samples else ""
    v2 = getattr(doc, "settings", None) is not None  # v1 files measured no sampling error
    for name, value in (("lambda_max", hess.lambda_max), ("lambda_min", hess.lambda_min)):
        if value is None:
            _row(measured, name, "—", "not resolved: the loss-units calibration does not need it (--lambda-min resolves it)")
            continue
        rec = hess.details[name]  # [H1]: what converged means, in the row
        bound = "|lambda_max|" if name == "lambda_max" else f"max(|lambda_min|, {EIG_FLOOR_FRACTION:g}·lambda_max)"
        state = f"converged (≤ {rec.tolerance:g}·{bound})" if rec.converged else "NOT converged"
        heldout = ""
        if name == "lambda_max" and getattr(hess, "lambda_max_heldout", None) is not None:
            used = hess.debiased()
            heldout = (f"; on {hess.heldout_examples} examples it did not see, its vector gives "
                       f"{_pm(hess.lambda_max_heldout, hess.lambda_max_heldout_stderr)}: the calibration reads their "
                       f"midpoint {_pm(used.lambda_max, used.lambda_max_stderr)} ([H16])")
        if name == "lambda_max" and hess.lambda_max_stderr is not None:
            _row(measured, name, _pm(value, hess.lambda_max_stderr),
                 f"{rec.hvps} HVPs, residual {_num(rec.residual)}, {state}{where}; ± its sampling error "
                 f"({hess.sampling_groups} groups){heldout}")
            continue
        unsampled = f"; its sampling error over examples is {_unsampled(doc, name)}" \
            if name == "lambda_max" and v2 else ""
        _row(measured, name, _num(value), f"{rec.hvps} HVPs, residual {_num(rec.residual)}, {state}{where}{unsampled}"
                                          f"{heldout}")
    if hess.trace is None:
        reads = "tr(P⁻¹H)" if getattr(doc.measurements, "preconditioned", None) is not None else "tr G"
        _row(measured, "trace", "—", f"not measured: d_eff reads {reads} below; --hessian-trace measures it")
    else:
        _trace_row(measured, doc, hess, where, v2)
    gn = getattr(doc.measurements, "gauss_newton", None)
    if gn is not None:
        sampling = "" if gn.sampling_stderr is None else f"; its sampling error over examples ± {gn.sampling_stderr:.2g}"
        _row(measured, "tr G", _pm(gn.trace, gn.stderr),
             f"Gauss-Newton trace on the {gn.examples} Hessian examples, {gn.draws} draws of each one's outputs; "
             f"± the draws' error{sampling}")
    pc = getattr(doc.measurements, "preconditioned", None)
    if pc is not None:
        rec = pc.details["lambda_max"]
        _row(measured, "Adam's P", f"{_num(pc.preconditioner_min)} … {_num(pc.preconditioner_max)}",
             f"√v + eps (eps {pc.eps:g}), v = mean of g_k² per coordinate (K = {noise.num_batches}); median "
             f"{_num(pc.preconditioner_median)}")
        _row(measured, "lambda_max(P⁻¹H)", _num(pc.lambda_max),
             f"{rec.hvps} HVPs, residual {_num(rec.residual)}, {'converged' if rec.converged else 'NOT converged'}; "
             f"lambda_min(P⁻¹H) {_num(pc.lambda_min)}")
        _row(measured, "tr(P⁻¹H)", _pm(pc.trace, pc.trace_stderr), "Hutch++ on P^(-1/2)·H·P^(-1/2)")
        _row(measured, "tr(P⁻¹Σ_B)", _pm(pc.grad_var, pc.grad_var_stderr), "the noise in Adam's metric; ± over "
                                                                            "minibatches, P held")
    if extra is not None:
        _row(measured, "tr(H·Σ_B)", _pm(extra.trace_h_sigma, extra.trace_h_sigma_stderr),
             f"curvature along the noise: {extra.minibatches} deviations g_k − ḡ, {extra.hvps} HVPs with ∇LᵀH∇L")
        _row(measured, "∇LᵀH∇L", _num(extra.grad_h_grad), "curvature along the mean gradient (corrected for its noise)")
    if hess.top_eigenvalues:
        _row(measured, f"top {len(hess.top_eigenvalues)}", ", ".join(f"{v:.4g}" for v in hess.top_eigenvalues), "Lanczos Ritz values")
    timing = ", ".join(f"{phase} {seconds:.2f}s" for phase, seconds in doc.timings.items())
    _row(measured, "engine", f"{hess.engine}", f"{hess.hvp_mode or ''} {hess.hvps} HVPs in all; {timing}".strip())
    if doc.measurements.cost is not None:
        cost = doc.measurements.cost
        settings = getattr(doc, "settings", None)  # v1 files record none
        asked = min(settings.hessian_samples or cost.gradient_examples, cost.gradient_examples) if settings else 0
        _row(measured, "probe cost", f"{cost.example_gradients:,}", _cost(cost, noise.batch_size, asked))
    return measured


def _trace_row(measured: Table, doc: ScheduleFile, hess: HessianSpectrum, where: str, v2: bool) -> None:
    """The Hessian trace's row: its probes, their tolerance, and its sampling error where measured."""
    rec = hess.details["trace"]
    if rec.converged:
        scale = "" if rec.scale is None else f" of max(|trace|, curvature scale {rec.scale:.3g})"
        state = f"converged: ± ≤ {rec.tolerance:g}{scale}"
    else:
        state = "NOT converged"
    if hess.trace_sampling_stderr is not None:
        sampling = (f"; ± the probes' error; its sampling error over examples ± {hess.trace_sampling_stderr:.2g} "
                    f"({hess.trace_sampling_groups} groups)")
    else:
        why = _unsampled(doc, "trace") if v2 else "not measured"
        sampling = f"; ± the probes' error only (its sampling error over examples is {why})"
    _row(measured, "trace", _pm(hess.trace, hess.trace_stderr), f"{rec.iterations} probes, {state}{where}{sampling}")


def _cost(cost: ProbeCost, batch_size: int, asked: int) -> str:
    """How the probe's example-gradients compare with the training run's, and with the budget; and
    where the budget took fewer Hessian examples than `asked` ([S8]'s), how many it allows ([S9])."""
    how = (f"example-gradients: {cost.gradient_examples:,} for the gradients, {cost.hvps} HVPs (the noise "
           f"curvature's too) on {cost.hessian_examples:,} Hessian examples")
    if cost.gauss_newton_example_gradients:
        how += f", {cost.gauss_newton_example_gradients:,} for tr G"
    if cost.fraction is None:
        return how
    how += f"; {cost.fraction:.2f} of the training run's {cost.training_example_gradients:,}"
    if cost.budget is None:
        return how
    if cost.fraction <= cost.budget:
        allowed = budget_examples(cost.budget, cost.training_example_gradients // batch_size, batch_size,
                                  cost.gradient_examples, cost.planned_hvps)
        if allowed >= asked:
            return how + f" (budget {cost.budget:g})"
        return how + (f" (budget {cost.budget:g}: it allows {allowed:,} Hessian examples of the {asked:,} "
                      "asked for; a larger --probe-budget takes more)")
    planned = example_gradients(cost.gradient_examples, cost.hessian_examples, cost.planned_hvps)
    why = (f"{cost.hvps} HVPs where {cost.planned_hvps} were planned"
           if planned <= cost.budget * cost.training_example_gradients else
           "even one minibatch of Hessian examples does not fit beside the gradients")
    return how + f", OVER the budget of {cost.budget:g} ({why})"


SCHEDULE_TOLERANCE = 0.01  # what the probe's tolerances aim for on lr(t)/eta0 (method.md [H12])


def _modes_matrix(doc: ScheduleFile) -> str:
    """Whose trace d_eff counts: G with --d-eff gauss-newton ([H15]), P⁻¹H for AdamW ([O3]), else H."""
    settings = getattr(doc, "settings", None)
    if settings is not None and settings.optimizer == "adamw":
        return "(P⁻¹H)"
    return "G" if settings is not None and settings.d_eff == "gauss-newton" else "H"


def optimizer_text(settings) -> str:
    """`sgd`, `momentum 0.9 (nesterov)`, `adamw betas (0.9, 0.999), eps 1e-08, weight decay 0.01`."""
    if settings is None or settings.optimizer == "sgd":
        decay = "" if settings is None or not settings.decay else f", weight decay {settings.decay:g}"
        return "sgd (plain, no momentum)" + decay
    if settings.optimizer == "momentum":
        decay = f", weight decay {settings.decay:g}" if settings.decay else ""
        return f"momentum {settings.momentum:g}" + (" (nesterov)" if settings.nesterov else "") + decay
    return (f"adamw betas ({settings.beta1:g}, {settings.beta2:g}), eps {settings.adam_eps:g}, "
            f"weight decay {settings.decay:g}")


def _trace_shift(shift: float, matrix: str = "H") -> str:
    if matrix == "G":
        how = "change of lr(S)/eta0 when tr G moves by one standard error of its draws (d_eff's uncertainty)"
        if shift <= SCHEDULE_TOLERANCE:
            return how
        return (how + f": more than {SCHEDULE_TOLERANCE:.0%}; more Hessian examples (a larger --probe-budget) "
                "narrow it, the shift falling as 1/√examples")
    how = "change of lr(S)/eta0 when the trace moves by one standard error of its probes (d_eff's uncertainty)"
    if shift <= SCHEDULE_TOLERANCE:
        return how
    return (how + f": more than {SCHEDULE_TOLERANCE:.0%}, as where curvature of both signs cancels (at "
            "initialisation); a smaller --trace-rtol narrows it, the shift falling as 1/√probes")


FLAT_REASONS = {
    "no_budget": "no --steps: the schedule stays at eta0 (pass --steps S, the training budget, to cool over it)",
    "noise_floor_below_target": "the noise floor at eta0 already meets the tolerance: cooling would not show on "
                                "this sample (a smaller --epsilon asks for more)",
}


def _loss_unit_schedule(doc: ScheduleFile) -> Table:
    s, cal, rules = doc.schedule, doc.calibration, doc.schedule.rules
    sched = _table(f"Schedule ({s.kind}; calibration in loss units)", "constant", "value", "rule")
    settings = getattr(doc, "settings", None)
    optimizer = settings.optimizer if settings is not None else "sgd"
    constant = cal.stability_constant if cal.stability_constant is not None else 2.0
    metric = "" if optimizer != "adamw" else " of P⁻¹H"
    bound = f"{rules.stability_fraction:g}·{constant:.4g}/lambda_max{metric} stability bound" \
        if rules.eta0_bound == "stability" else "noisy-quadratic optimum"
    _row(sched, "optimizer", optimizer_text(settings), "the optimizer eta0 and lr(t) are for; every export builds it")
    spread = ""  # lambda_max(P⁻¹H) has no sampling error of its own yet ([O3])
    if rules.eta0_bound == "stability" and doc.measurements.hessian.lambda_max_stderr is not None and optimizer != "adamw":
        hess = doc.measurements.hessian.debiased()
        spread = f"; ± {hess.lambda_max_stderr / hess.lambda_max:.1%} from lambda_max's sampling error"
    _row(sched, "eta0", _num(s.eta0), f"{bound} ({rules.eta0_rule} rule; stable {_num(cal.eta_stable)}, "
                                      f"optimal {_num(cal.eta_optimal)}){spread}")
    step = "" if cal.step_factor is None or cal.step_factor == 1.0 else f"{cal.step_factor:.4g}·"
    sigma = "tr Σ_B" if optimizer != "adamw" else "tr(P⁻¹Σ_B)"
    _row(sched, "noise floor", _num(cal.noise_floor), f"E(eta0) = {step}eta0·{sigma}/4: excess loss {optimizer} keeps "
                                                       f"at eta0, {cal.noise_floor / rules.epsilon:.3g}× epsilon")
    if cal.T0_stderr_total is None:  # a file written before it was recorded
        spread = "; ± grad_var's error alone"
    else:
        spread = f"; ± from every measured input (grad_var's alone: {cal.T0_stderr:.2g})"
    _row(sched, "T0", _pm(s.T0, cal.T0_stderr if cal.T0_stderr_total is None else cal.T0_stderr_total),
         f"{step}eta0·{sigma}/(2·d_eff), d_eff = tr {_modes_matrix(doc)}/lambda_max = {cal.d_eff:.4g}{spread}")
    if rules.epsilon_source == "user":
        source = "given"
    elif rules.epsilon_source == "run_loss_stderr":
        source = f"{rules.epsilon_stderrs:g} standard errors of the mean loss over the training run's {s.steps}·B examples"
    else:
        source = f"{rules.epsilon_stderrs:g} standard errors of the sample's mean loss"
    _row(sched, "epsilon", _num(rules.epsilon), f"loss tolerance: {source}")
    _row(sched, "Tf", _num(s.Tf), f"P(L − L* < epsilon) = {rules.probability:g} by the Gibbs law over d_eff modes")
    if s.kind in ("linear", "cosine"):
        _row(sched, "path", s.kind, f"T from T0 to Tf along a {s.kind} path over the budget of {s.steps} steps "
                                    f"(lr(S)/eta0 = Tf/T0 = {s.Tf / s.T0:.3g}; method.md [C16])")
    elif s.tau is None:
        _row(sched, "tau", "—", FLAT_REASONS.get(rules.flat_reason or "", "flat"))
    else:
        _row(sched, "tau", _num(s.tau), f"S/ln(T0/Tf) over the budget of {s.steps} steps")
    law = "lr ∝ T (T ∝ eta)" if s.lr_law == "linear" else "lr ∝ √T (the seed's)"
    _row(sched, "lr(t)", s.lr_expression, law if s.kind in ("linear", "cosine") else f"{law}; gamma = {s.gamma:.10g} per step")
    if cal.trace_shift is not None:
        _row(sched, "lr(S) vs trace", f"± {cal.trace_shift:.2%}", _trace_shift(cal.trace_shift, _modes_matrix(doc)))
    _row(sched, "P(L − L* < ε)", f"{cal.probability_start:.3g} → {cal.probability_end:.3g}", "at T0 → at the last temperature")
    return sched


def _literal_schedule(doc: ScheduleFile) -> Table:
    s, cal = doc.schedule, doc.calibration
    sched = _table(f"Schedule ({s.kind}; the seed's literal rules)", "constant", "value", "rule")
    _row(sched, "T0", _pm(s.T0, cal.T0_stderr), "grad_var / grad_norm_mean")
    _row(sched, "Tf", _num(s.Tf), f"{s.rules.tf_rule} rule (raw lambda_min {_num(cal.lambda_min_raw)})")
    _row(sched, "tau", _num(s.tau), f"{s.rules.tau_rule}; budget {_num(cal.tau_budget)}, §6.1 relaxation {_num(cal.tau_relaxation)}")
    _row(sched, "steps", "—" if s.steps is None else str(s.steps), s.rules.steps_source)
    _row(sched, "eta0", _num(s.eta0), f"{s.rules.eta0_bound} bound active (balance {_num(cal.eta_balance)}, stable {_num(cal.eta_stable)})")
    timescale = "tau" if s.lr_law == "linear" else "2 tau"
    _row(sched, "gamma", f"{s.gamma:.10g}", f"per-step lr factor exp(-1/({timescale}))")
    _row(sched, "lr(t)", s.lr_expression, "")
    return sched


def _diagnostics(doc: ScheduleFile) -> list[Table | Text]:
    diag = _table("Diagnostics", "check", "§", "value", "threshold", "status")
    for d in doc.diagnostics:
        _row(diag, d.name, d.section, _num(d.value), _num(d.threshold), Text(d.status, style=_STATUS_STYLE[d.status]))
    advice = [Text.assemble((f"{d.name}: ", "yellow"), d.advice) for d in doc.diagnostics if d.status == "warn" and d.advice]
    return [diag, *advice]


def summary(doc: ScheduleFile) -> Group:
    """Measurements with their errors, the schedule, and the diagnostics (with what to change)."""
    hess = doc.measurements.hessian
    parts: list[Table | Text] = [_measurements(doc)]
    if hess.blocks:
        blocks = _table("Per-block curvature", "block", "params", "lambda_max", "trace")
        for b in hess.blocks:
            _row(blocks, b.name, str(b.num_params), _num(b.lambda_max), _pm(b.trace, b.trace_stderr))
        parts.append(blocks)
    if hess.density is not None:
        parts.append(density_plot(hess.density.grid, hess.density.density))
    loss_units = getattr(doc.schedule.rules, "rule_set", "literal") == "loss-units"
    parts.append(_loss_unit_schedule(doc) if loss_units else _literal_schedule(doc))
    return Group(*parts, *_diagnostics(doc))


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
    """The probe's progress sink (thermocal.progress.Progress) drawn as a rich progress bar.

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
            disable=not console.is_terminal,  # a log file gets no bar (and no blank line where one stopped)
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
