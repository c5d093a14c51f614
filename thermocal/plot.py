"""`thermocal plot`: the schedule as a PNG (matplotlib, the optional `plot` extra).

lr(t) and T(t) over warmup + budget with T0, Tf, tau and the budget marked, and the spectral
density when the probe measured one. Computes nothing new: every curve is the file's own
closed form (method.md [C5], [C8]) or its stored density ([H9]).
"""

from __future__ import annotations

import io

from thermocal.errors import InputError
from thermocal.schedule.file import ScheduleFile
from thermocal.schedule.functions import learning_rate, temperature, total_steps

POINTS = 400


def render_png(doc: ScheduleFile) -> bytes:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise InputError("thermocal plot needs matplotlib: pip install matplotlib (or, from a clone of thermocal, "
                         "pip install '.[plot]')") from exc
    s = doc.schedule
    total = total_steps(s)
    if not total:
        raise InputError("the schedule is flat and has no budget: probe with --steps to plot it")
    steps = [round(i * total / (POINTS - 1)) for i in range(POINTS)]
    lr, temp = learning_rate(s), temperature(s)
    density = doc.measurements.hessian.density
    rows = 3 if density is not None else 2
    figure, axes = plt.subplots(rows, 1, figsize=(8, 2.8 * rows), constrained_layout=True)
    ax = axes[0]
    ax.plot(steps, [lr(t) for t in steps], color="tab:blue")
    ax.set(xlabel="optimizer step t", ylabel="learning rate eta(t)", title=f"eta(t) = {s.lr_expression}")
    ax.axhline(s.eta0, color="tab:blue", linestyle=":", linewidth=1)
    ax.annotate(f"eta0 = {s.eta0:.3g}", (0, s.eta0), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax = axes[1]
    ax.plot(steps, [temp(t) for t in steps], color="tab:red")
    ax.set(xlabel="optimizer step t", ylabel="temperature T(t)", title=f"T(t) = {s.temperature_expression}")
    for value, name in ((s.T0, "T0"), (s.Tf, "Tf")):
        ax.axhline(value, color="grey", linestyle=":", linewidth=1)
        ax.annotate(f"{name} = {value:.3g}", (0, value), textcoords="offset points", xytext=(4, 4), fontsize=8)
    marks = [(total, f"budget {total}")]
    if s.tau is not None:
        marks.append((s.warmup_steps + s.tau, f"tau = {s.tau:.4g}"))
    if s.warmup_steps:
        marks.append((s.warmup_steps, f"warmup {s.warmup_steps}"))
    for ax in axes[:2]:
        for x, name in marks:
            if x <= total:
                ax.axvline(x, color="grey", linestyle="--", linewidth=1)
                ax.annotate(name, (x, ax.get_ylim()[1]), textcoords="offset points", xytext=(-4, -12), ha="right", fontsize=8)
    if density is not None:
        ax = axes[2]
        ax.semilogy(density.grid, [max(d, 1e-12) for d in density.density], color="tab:green")
        ax.set(xlabel="eigenvalue of the Hessian", ylabel="density", title=f"spectral density (SLQ, {density.probes} probes)")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    return buffer.getvalue()
