"""Should I use this schedule? Training evidence a sceptical reviewer can check (issue 16).

    python bench/evidence.py                 # every task and method, and the calibration candidates on the tuning
                                             # tasks; 5 seeds -> bench/evidence.json, bench/EVIDENCE.md
    python bench/evidence.py --set tuning --candidates [NAME ...]   # only candidates, on the tuning tasks (exploring)
    python bench/evidence.py --report        # EVIDENCE.md again from the JSON (never edited by hand)
    python bench/evidence.py --quick         # tiny budgets, two seeds, one task per set (a test runs it)

A run of a clean commit keeps every finished piece (a tuning grid, one method's seed) under
bench/.evidence_runs/<commit>/ and a rerun of the same commit resumes from them (`--fresh`
recomputes), so a run longer than a session finishes in the next one, still one run of one commit.

Tasks (bench/tasks.py) are fixed in two sets before any tuning: TUNING tasks choose thermocal's
rules and constants, HELD_OUT tasks only report. Each belongs to one of evidence v3's regimes:
"small data" (the first eight: many epochs over a few thousand examples) or "single pass"
(stdlib_lm tunes, copyright_lm is held out: a character transformer for 0.36 of an epoch of a
corpus); the other regimes (few epochs with augmentation, fine-tuning) are not built yet. Every method trains the same initialisation on
the same batch sequence for each seed, with plain SGD unless named, for the task's S steps, and
is scored by the loss on the test split; everything that tunes, tunes on the validation split:
- thermocal: `thermocal.probe` of the initial model on (at most 1024 of) the training split,
  with --batch-size B --steps S, then the file's lr(t); its literal v1 rules likewise; each
  record keeps the trace d_eff reads (tr G by default, [H15]), its standard error and draws or
  probes, and `trace_shift` (method.md [C15]);
- grid: SGD at 7 half-decade learning rates x {constant, cosine, step (x0.1 at S/2, 3S/4)},
  extended by half-decades while the best is at an edge, chosen on validation loss with seed 0;
- range test: the lr of steepest descent of the smoothed loss over a 100-step exponential sweep
  (1e-5 to 10, fast.ai style) from the seed's initialisation, then cosine from it;
- thermocal with `--optimizer momentum` and `--optimizer adamw` (each trained with that optimizer,
  as the file says), and each of the three with its constant-at-eta0 (`_constant`) and
  linear-to-zero-from-eta0 (`_linear0`) variants, so that the peak and the shape are judged
  apart (evidence v3);
- adamw: AdamW (weight decay 0.01) with linear warmup over 5% of S and cosine, at lr 1e-3
  (`adamw_1e-3`; `adamw_1e-3_linear` decays linearly to zero instead), and tuned: 7 half-decade
  lrs x {cosine, linear to zero, constant}, each with the warmup, extended while the best is at an
  edge, chosen on validation (seed 0);
- momentum_tuned: SGD with momentum 0.9, tuned the same way as AdamW;
- stability: constant lr f·2/lambda_max with thermocal's own f and lambda_max (what the noise
  measurement must beat);
- reprobed: thermocal's schedule for S/10 steps, then a probe of that checkpoint with --steps
  9S/10 and its schedule for the rest.
A refusal (no schedule) or a divergence (a non-finite loss) is a result: its test loss is
infinite, never replaced. Cost is in example-gradients (a forward and backward of one example):
training S·B; a probe what its file's `measurements.cost` says (method.md [S9]: K·B minibatch
gradients plus 2 per Hessian example and Hessian-vector product, an HVP measured 1.5–1.7
gradients in bench/RESULTS.md; the default --probe-budget 0.25 of S·B sizes its Hessian sample);
the sweep 100·B; the grid all its runs.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import multiprocessing
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import tasks as task_sets  # noqa: E402
from provenance import stamp  # noqa: E402
import thermocal  # noqa: E402
from thermocal.config import Config  # noqa: E402
from thermocal.errors import ThermocalError  # noqa: E402
from thermocal.schedule.functions import learning_rate  # noqa: E402
from thermocal.schedule.optimizer import OptimizerSpec, optimizer_of  # noqa: E402

SEEDS = 5
GRID = [10 ** (e / 2) for e in range(-6, 1)]  # 1e-3 .. 1, half-decades
ADAM_GRID = [10 ** (e / 2) for e in range(-8, -1)]  # 1e-4 .. 0.1
SWEEP_STEPS = 100
PROBE_EXAMPLES = 1024
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}
DEFAULT = "thermocal"
BASELINES = ("grid", "range_test", "adamw_1e-3", "adamw_1e-3_linear", "adamw_tuned", "momentum_tuned", "stability",
             "literal", "reprobed")
# The optimizers people train with, as torch.optim builds them (evidence v3): thermocal's rows are
# calibrated for each, and the tuned baselines use them.
SGD, MOMENTUM, ADAMW = OptimizerSpec(), OptimizerSpec("momentum", momentum=0.9), OptimizerSpec("adamw", weight_decay=0.01)
# thermocal's rows per optimizer (the default's name is DEFAULT), and their variants on the same eta0.
OPTIMIZER_ROWS = {DEFAULT: "sgd", f"{DEFAULT}_momentum": "momentum", f"{DEFAULT}_adamw": "adamw"}
VARIANTS = ("constant", "linear0")
# Calibration v2 candidates (issue 15), judged on the tuning tasks only: name -> settings. The
# reference is the derivation's plain reading: epsilon one standard error of the mean loss.
REFERENCE = "v2_eps1se_linear"
# Each keeps the d_eff it was judged with: tr H's (the default until the Gauss-Newton candidate tied
# it, method.md [C12]), and the Gauss-Newton trace's (the default now, [H15]).
CANDIDATES: dict[str, dict] = {
    REFERENCE: {"epsilon_stderrs": 1.0, "d_eff": "hessian"},
    "v2_eps1se_f0.5": {"epsilon_stderrs": 1.0, "stability_fraction": 0.5, "d_eff": "hessian"},
    "v2_eps1se_f0.1": {"epsilon_stderrs": 1.0, "stability_fraction": 0.1, "d_eff": "hessian"},
    "v2_eps1se_min": {"epsilon_stderrs": 1.0, "eta0_rule": "min", "d_eff": "hessian"},
    "v2_eps1se_optimal": {"epsilon_stderrs": 1.0, "eta0_rule": "optimal", "d_eff": "hessian"},
    "v2_eps1se_sqrt": {"epsilon_stderrs": 1.0, "lr_law": "sqrt", "d_eff": "hessian"},
    "v2_eps1se_p0.5": {"epsilon_stderrs": 1.0, "probability": 0.5, "d_eff": "hessian"},
    "v2_eps2se_linear": {"epsilon_stderrs": 2.0, "d_eff": "hessian"},
    "v2_eps4se_linear": {"epsilon_stderrs": 4.0, "d_eff": "hessian"},
    "v2_eps8se_linear": {"epsilon_stderrs": 8.0, "d_eff": "hessian"},
    "v2_eps16se_linear": {"epsilon_stderrs": 16.0, "d_eff": "hessian"},
    # 16 standard errors with d_eff from the Gauss-Newton trace: the default's settings
    "v2_eps16se_gauss_newton": {"epsilon_stderrs": 16.0, "d_eff": "gauss-newton"},
}
# Calibration v3 candidates (issue 40), stage 1 of method.md [V1]: the peak, judged on the tuning
# tasks only against the tuned baseline of the candidate's own optimizer. A fraction f of the
# optimizer's stability limit c/λ_max ([O2], [O3]); for momentum also the fraction that gives SGD's
# default effective step, 0.25·2·(1 − β)/c ≈ 0.013 at β = 0.9. Stage 2 (the shape) runs after
# stage 1's choice is committed.
# The end ([V1] item 4): ε from the run's own resolution of its loss (--epsilon-from run, [C12]) at
# c standard errors, against plain SGD's tuned grid, beside the sample rule it would replace.
V3_BASELINE = {"sgd": "grid", "momentum": "momentum_tuned", "adamw": "adamw_tuned"}
V3_CANDIDATES: dict[str, dict] = {
    **{f"v3_momentum_f{f:g}": {"optimizer": "momentum", "stability_fraction": f} for f in (0.25, 0.1, 0.05, 0.025, 0.013)},
    **{f"v3_adamw_f{f:g}": {"optimizer": "adamw", "stability_fraction": f} for f in (0.25, 0.1, 0.03, 0.01, 0.003)},
    "v3_sgd_end_sample": {"optimizer": "sgd"},
    **{f"v3_sgd_end_run_c{c:g}": {"optimizer": "sgd", "epsilon_from": "run", "epsilon_stderrs": c} for c in (16, 64, 256)},
}
CANDIDATES.update(V3_CANDIDATES)

Schedule = Callable[[int], float]


@dataclass
class Run:
    train: float
    val: float
    test: float
    diverged: bool
    seconds: float
    lr_start: float
    lr_end: float


# ----------------------------------------------------------------------------- training


def batches(task: task_sets.Task, seed: int, steps: int) -> torch.Tensor:
    """The seed's sequence of minibatch indices: shuffled epochs, the same for every method."""
    generator = torch.Generator().manual_seed(1000 + seed)
    n = len(task.train[0])
    epochs = -(-steps * task.batch // n)
    order = torch.cat([torch.randperm(n, generator=generator) for _ in range(epochs)])
    return order[: steps * task.batch].reshape(steps, task.batch)


def evaluate(model: torch.nn.Module, split: tuple[torch.Tensor, torch.Tensor], loss_fn) -> float:
    model.eval()
    with torch.no_grad():
        total, count = 0.0, 0
        for x, y in zip(split[0].split(512), split[1].split(512)):
            total += float(loss_fn(model(x), y)) * len(x)
            count += len(x)
    return total / count


def initial(task: task_sets.Task, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return task.build()


def make_optimizer(params, spec: OptimizerSpec, lr: float) -> torch.optim.Optimizer:
    """torch.optim's SGD (with the spec's momentum) or AdamW, as the exports build them."""
    if spec.name == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=(spec.beta1, spec.beta2), eps=spec.eps, weight_decay=spec.weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=spec.momentum, nesterov=spec.nesterov, weight_decay=spec.weight_decay)


def train(task: task_sets.Task, model: torch.nn.Module, lr: Schedule, seed: int, *, optimizer: OptimizerSpec = SGD,
          start: int = 0, stop: int | None = None) -> Run:
    """Train `model` in place with `optimizer` over steps [start, stop) of the seed's batch sequence."""
    stop = task.steps if stop is None else stop
    order = batches(task, seed, task.steps)
    step_with = make_optimizer(model.parameters(), optimizer, lr(start))
    x, y = task.train
    clock = time.perf_counter()
    diverged = False
    model.train()
    for step in range(start, stop):
        rate = lr(step)
        for group in step_with.param_groups:
            group["lr"] = rate
        step_with.zero_grad(set_to_none=True)
        loss = task.loss_fn(model(x[order[step]]), y[order[step]])
        if not torch.isfinite(loss) or float(loss) > 1e6:
            diverged = True
            break
        loss.backward()
        step_with.step()
    seconds = time.perf_counter() - clock
    if diverged:
        return Run(math.inf, math.inf, math.inf, True, seconds, lr(start), lr(stop - 1))
    values = [evaluate(model, split, task.loss_fn) for split in (task.train, task.val, task.test)]
    bad = not all(math.isfinite(v) for v in values)
    return Run(*(math.inf if bad else v for v in values), bad, seconds, lr(start), lr(stop - 1))


def constant(value: float) -> Schedule:
    return lambda t: value


def cosine(peak: float, steps: int, warmup: int = 0) -> Schedule:
    def lr(t: int) -> float:
        if t < warmup:
            return peak * (t + 1) / warmup
        return 0.5 * peak * (1 + math.cos(math.pi * (t - warmup) / max(steps - warmup, 1)))
    return lr


def step_decay(peak: float, steps: int) -> Schedule:
    return lambda t: peak * (0.1 if t >= steps // 2 else 1.0) * (0.1 if t >= 3 * steps // 4 else 1.0)


def linear_to_zero(peak: float, steps: int, warmup: int = 0) -> Schedule:
    """Linear warmup, then linear decay to zero at step S ("Straight to Zero", Bergsma et al. 2025)."""
    def lr(t: int) -> float:
        if t < warmup:
            return peak * (t + 1) / warmup
        return peak * max(0.0, 1.0 - (t - warmup) / max(steps - warmup, 1))
    return lr


def warmed_constant(peak: float, steps: int, warmup: int = 0) -> Schedule:
    return lambda t: peak * (t + 1) / warmup if t < warmup else peak


SHAPES: dict[str, Callable[[float, int], Schedule]] = {"constant": lambda lr, s: constant(lr), "cosine": cosine,
                                                       "step": step_decay}
# The shapes the AdamW and momentum baselines choose among, each after a 5% linear warmup (evidence v3).
WARMED_SHAPES: dict[str, Callable[[float, int, int], Schedule]] = {"cosine": cosine, "linear": linear_to_zero,
                                                                   "constant": warmed_constant}


def warmup_of(task: task_sets.Task) -> int:
    return max(1, task.steps // 20)


def range_test(task: task_sets.Task, model: torch.nn.Module, seed: int) -> float:
    """The lr of steepest descent of the smoothed loss along an exponential sweep (fast.ai style)."""
    model = copy.deepcopy(model).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-5)
    order = batches(task, seed, SWEEP_STEPS)
    x, y = task.train
    lrs, losses, smooth, best = [], [], None, math.inf
    for i in range(SWEEP_STEPS):
        rate = 1e-5 * (10 / 1e-5) ** (i / (SWEEP_STEPS - 1))
        for group in optimizer.param_groups:
            group["lr"] = rate
        optimizer.zero_grad()
        loss = task.loss_fn(model(x[order[i]]), y[order[i]])
        if not torch.isfinite(loss):
            break
        smooth = float(loss) if smooth is None else 0.9 * smooth + 0.1 * float(loss)
        lrs.append(rate)
        losses.append(smooth)
        best = min(best, smooth)
        if smooth > 4 * best:
            break
        loss.backward()
        optimizer.step()
    slopes = [(losses[i + 1] - losses[i - 1]) / (math.log(lrs[i + 1]) - math.log(lrs[i - 1])) for i in range(1, len(lrs) - 1)]
    return lrs[1 + min(range(len(slopes)), key=slopes.__getitem__)] if slopes else 1e-3


# ----------------------------------------------------------------------------- thermocal


def probe(task: task_sets.Task, model: torch.nn.Module, steps: int, **settings: object):
    """`thermocal.probe` of `model` on the training split's first examples; (file, cost) or (None, cost, why)."""
    x, y = task.train[0][:PROBE_EXAMPLES], task.train[1][:PROBE_EXAMPLES]
    config = Config(batch_size=task.batch, steps=steps, threads=torch.get_num_threads(), **settings)
    model = copy.deepcopy(model).eval()
    try:
        doc = thermocal.probe(model, (x, y), config, loss_fn=task.loss_fn)
    except ThermocalError as exc:
        return None, 0.0, str(exc)
    return doc, float(doc.measurements.cost.example_gradients), None


def thermocal_run(task: task_sets.Task, seed: int, variant: str | None = None, **settings: object) -> dict:
    """thermocal's schedule, trained with the optimizer its file names; `variant` keeps its eta0
    and replaces the shape: `constant` at eta0, or `linear0` (linear to zero from eta0)."""
    model = initial(task, seed)
    clock = time.perf_counter()
    doc, cost, why = probe(task, model, task.steps, **settings)
    probe_seconds = time.perf_counter() - clock
    if doc is None:
        return _refused(why, cost, probe_seconds)
    schedule = {None: learning_rate(doc.schedule), "constant": constant(doc.schedule.eta0),
                "linear0": linear_to_zero(doc.schedule.eta0, task.steps)}[variant]
    run = train(task, model, schedule, seed, optimizer=optimizer_of(doc))
    hessian, g, pc = doc.measurements.hessian, doc.measurements.gauss_newton, doc.measurements.preconditioned
    if pc is not None:  # AdamW: d_eff read off tr(P⁻¹H) ([O3])
        trace = {"d_eff_from": "preconditioned", "trace": pc.trace, "trace_stderr": pc.trace_stderr,
                 "lambda_max_preconditioned": pc.lambda_max}
    elif g is not None:  # d_eff read off tr G ([H15]): its draws, their error and its sampling error
        trace = {"d_eff_from": "gauss-newton", "trace": g.trace, "trace_stderr": g.stderr, "trace_draws": g.draws,
                 "trace_sampling_stderr": g.sampling_stderr}
    else:
        trace = {"d_eff_from": "hessian", "trace": hessian.trace, "trace_stderr": hessian.trace_stderr,
                 "trace_probes": hessian.details["trace"].iterations, "trace_sampling_stderr": hessian.trace_sampling_stderr}
    return _record(run, task, cost, probe_seconds, kind=doc.schedule.kind, eta0=doc.schedule.eta0,
                   optimizer=doc.settings.optimizer, variant=variant,
                   lambda_max=hessian.lambda_max, hessian_examples=doc.inputs.hessian_samples,
                   stability_fraction=doc.settings.stability_fraction,
                   trace_shift=getattr(doc.calibration, "trace_shift", None), **trace)


def reprobed_run(task: task_sets.Task, seed: int) -> dict:
    model = initial(task, seed)
    switch = task.steps // 10
    clock = time.perf_counter()
    first, cost, why = probe(task, model, task.steps)
    if first is None:
        return _refused(why, cost, time.perf_counter() - clock)
    early = train(task, model, learning_rate(first.schedule), seed, stop=switch)
    if early.diverged:
        return _record(early, task, cost, time.perf_counter() - clock)
    second, more, why = probe(task, model, task.steps - switch)
    if second is None:
        return _refused(why, cost + more, time.perf_counter() - clock)
    later = learning_rate(second.schedule)
    rest = train(task, model, lambda t: later(t - switch), seed, start=switch)
    rest.lr_start = early.lr_start
    return _record(rest, task, cost + more, time.perf_counter() - clock - rest.seconds - early.seconds,
                   eta0_reprobed=second.schedule.eta0, kind=second.schedule.kind)


def _refused(why: str, probe_cost: float, seconds: float) -> dict:
    """A probe that refused: no training ran, so the probe is the whole cost."""
    return {"refused": why, "test": None, "val": None, "train": None, "diverged": False, "cost": probe_cost,
            "probe_cost": probe_cost, "seconds": seconds}


def _record(run: Run, task: task_sets.Task, probe_cost: float = 0.0, probe_seconds: float = 0.0, **extra: object) -> dict:
    finite = lambda v: None if not math.isfinite(v) else v  # noqa: E731 (JSON has no infinity)
    return {"train": finite(run.train), "val": finite(run.val), "test": finite(run.test), "diverged": run.diverged,
            "cost": task.steps * task.batch + probe_cost, "probe_cost": probe_cost, "seconds": run.seconds + probe_seconds,
            "lr_start": run.lr_start, "lr_end": run.lr_end, **extra}


# ----------------------------------------------------------------------------- baselines


def tune(task: task_sets.Task, values: list[float], shapes: list[str], optimizer: OptimizerSpec = SGD) -> dict:
    """Validation loss of every (lr, shape) with seed 0, extending the lr grid by half-decades while
    the best lr is at an edge (at most 4 times); returns the choice and every cell. Plain SGD takes
    SHAPES as they are; momentum and AdamW take WARMED_SHAPES, after a 5% warmup."""
    cells: dict[tuple[float, str], float] = {}
    grid = list(values)

    def run_cell(lr: float, shape: str) -> float:
        if optimizer.name == "sgd":
            schedule = SHAPES[shape](lr, task.steps)
        else:
            schedule = WARMED_SHAPES[shape](lr, task.steps, warmup_of(task))
        return train(task, initial(task, 0), schedule, 0, optimizer=optimizer).val

    for _ in range(5):
        for lr in grid:
            for shape in shapes:
                if (lr, shape) not in cells:
                    cells[(lr, shape)] = run_cell(lr, shape)
        best = min(cells, key=cells.__getitem__)
        if best[0] == min(grid) and not math.isinf(cells[best]):
            grid.insert(0, min(grid) / math.sqrt(10))
        elif best[0] == max(grid):
            grid.append(max(grid) * math.sqrt(10))
        else:
            break
    return {"lr": best[0], "shape": best[1], "runs": len(cells),
            "cells": [{"lr": lr, "shape": shape, "val": None if math.isinf(v) else v} for (lr, shape), v in sorted(cells.items())]}


# Where a run keeps each finished piece (a tuning grid, one method's seed) so that a run stopped
# part-way (a session's end) resumes where it stopped: a folder per clean commit, never for a tree
# with uncommitted changes, whose code the pieces might not be of (evidence v3 item 5).
RUNS = HERE / ".evidence_runs"
CACHE: Path | None = None


def cached(key: str, compute: Callable[[], dict]) -> dict:
    """compute(), or what an earlier run of the same commit stored under `key` (JSON)."""
    if CACHE is None:
        return compute()
    path = CACHE / f"{key}.json"
    if path.exists():
        return json.loads(path.read_text())
    value = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".tmp")
    partial.write_text(json.dumps(value))
    partial.replace(path)  # whole or absent: a run killed mid-write leaves no half piece
    return value


def run_task(name: str, candidates: list[str] | None, only_candidates: bool, seeds: int) -> dict:
    task = {**task_sets.TUNING, **task_sets.HELD_OUT}[name]()
    if QUICK:
        task = task_sets.Task(task.name, task.kind, task.build, task.train, task.val, task.test, task.loss_fn,
                              max(20, task.steps // 20), task.batch)
    torch.set_num_threads(1)
    clock = time.perf_counter()
    grid = cached(f"{name}/tune-sgd", lambda: tune(task, GRID if not QUICK else GRID[2:5],
                                                   list(SHAPES) if not QUICK else ["constant"]))
    warmed = list(WARMED_SHAPES) if not QUICK else ["cosine"]
    adam = cached(f"{name}/tune-adamw", lambda: tune(task, ADAM_GRID if not QUICK else ADAM_GRID[2:5], warmed, ADAMW))
    heavy = cached(f"{name}/tune-momentum", lambda: tune(task, GRID if not QUICK else GRID[2:5], warmed, MOMENTUM))
    tuning_seconds = time.perf_counter() - clock
    out: dict = {"task": name, "kind": task.kind, "regime": task.regime, "epochs": task.epochs, "params": task.params,
                 "steps": task.steps, "batch": task.batch, "train_examples": len(task.train[0]), "grid": grid, "adamw_grid": adam, "momentum_grid": heavy,
                 "tuning_seconds": tuning_seconds, "methods": {}}
    methods: dict[str, Callable[[int], dict]] = {}
    for cand in candidates or []:
        methods[cand] = lambda seed, s=CANDIDATES[cand]: thermocal_run(task, seed, **dict(s))
    if not only_candidates:
        for row, name_of_optimizer in OPTIMIZER_ROWS.items():
            methods[row] = lambda seed, o=name_of_optimizer: thermocal_run(task, seed, optimizer=o)
            for variant in VARIANTS:
                methods[f"{row}_{variant}"] = lambda seed, o=name_of_optimizer, v=variant: \
                    thermocal_run(task, seed, variant=v, optimizer=o)
        methods["literal"] = lambda seed: thermocal_run(task, seed, rules="literal")
        methods["reprobed"] = lambda seed: reprobed_run(task, seed)

        def grid_best(seed: int) -> dict:
            run = train(task, initial(task, seed), SHAPES[grid["shape"]](grid["lr"], task.steps), seed)
            return _record(run, task, lr=grid["lr"], shape=grid["shape"])

        def range_cosine(seed: int) -> dict:
            model = initial(task, seed)
            peak = range_test(task, model, seed)
            run = train(task, model, cosine(peak, task.steps), seed)
            return _record(run, task, SWEEP_STEPS * task.batch, peak=peak)

        def tuned(choice: dict, optimizer: OptimizerSpec) -> Callable[[int], dict]:
            shape = WARMED_SHAPES[choice["shape"]]
            return lambda seed: _record(train(task, initial(task, seed), shape(choice["lr"], task.steps, warmup_of(task)),
                                              seed, optimizer=optimizer), task, lr=choice["lr"], shape=choice["shape"])

        def stability(seed: int) -> dict:
            model = initial(task, seed)
            doc, cost, why = probe(task, model, task.steps)
            if doc is None:
                return _refused(why, cost, 0.0)
            lr = doc.settings.stability_fraction * 2.0 / doc.measurements.hessian.lambda_max
            return _record(train(task, model, constant(lr), seed), task, cost, lr=lr)

        methods.update({"grid": grid_best, "range_test": range_cosine,
                        "adamw_1e-3": tuned({"lr": 1e-3, "shape": "cosine"}, ADAMW),
                        "adamw_1e-3_linear": tuned({"lr": 1e-3, "shape": "linear"}, ADAMW),
                        "adamw_tuned": tuned(adam, ADAMW), "momentum_tuned": tuned(heavy, MOMENTUM),
                        "stability": stability})
    for number, (method, run) in enumerate(methods.items(), start=1):
        out["methods"][method] = [cached(f"{name}/{method}/{seed}", lambda s=seed: run(s)) for seed in range(seeds)]
        print(f"  {name}: {method} done ({number} of {len(methods)} methods)", file=sys.stderr, flush=True)
    return out


# ----------------------------------------------------------------------------- statistics and report


def _loss(record: dict) -> float:
    return math.inf if record.get("test") is None else record["test"]


def paired(a: list[dict], b: list[dict]) -> tuple[float, float, float]:
    """Mean paired difference a − b of test loss over seeds, with its 95% t-interval (inf when a
    run of `a` failed, −inf when only `b`'s did)."""
    diffs = [_loss(x) - _loss(y) for x, y in zip(a, b)]
    if any(math.isnan(d) for d in diffs) or any(math.isinf(d) for d in diffs):
        worst = max(diffs) if any(d == math.inf or math.isnan(d) for d in diffs) else min(diffs)
        value = math.inf if (worst == math.inf or math.isnan(worst)) else -math.inf
        return value, value, value
    mean = statistics.fmean(diffs)
    half = T_975.get(len(diffs) - 1, 1.96) * statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else math.inf
    return mean, mean - half, mean + half


def provenance(argv: list[str]) -> dict:
    return stamp(argv, seeds=SEEDS if not QUICK else 2, quick=QUICK, grid=GRID, adamw_grid=ADAM_GRID,
                 sweep_steps=SWEEP_STEPS, probe_examples=PROBE_EXAMPLES, defaults=Config().model_dump(mode="json"),
                 candidates=CANDIDATES)


def _summary(records: list[dict]) -> str:
    losses = [_loss(r) for r in records]
    failed = sum(1 for v in losses if math.isinf(v))
    good = [v for v in losses if not math.isinf(v)]
    text = f"{statistics.fmean(good):.4g} ± {statistics.stdev(good):.2g}" if len(good) > 1 else (f"{good[0]:.4g}" if good else "—")
    return text + (f" ({failed} of {len(losses)} failed)" if failed else "")


def _interval(mean: float, low: float, high: float) -> str:
    if math.isinf(mean):
        return "thermocal failed" if mean > 0 else "the baseline failed"
    return f"{mean:+.3g} [{low:+.3g}, {high:+.3g}]"


def report(results: dict) -> str:
    p = results["provenance"]
    argv = p["argv"]
    data = argv[argv.index("--out") + 1] if "--out" in argv[:-1] else "bench/evidence.json"  # the JSON it came from
    lines = [
        "# Training evidence (generated by `python bench/evidence.py`; never edit by hand)",
        "",
        f"One run of commit `{p['commit'][:12]}`{' with uncommitted changes' if p['dirty'] else ''}, thermocal "
        f"{p['thermocal']}, torch {p['torch']}, Python {p['python']}, {p['created']}; command `{' '.join(p['argv'])}`; "
        f"{p['seeds']} seeds{' (QUICK: tiny budgets, not evidence)' if p['quick'] else ''}. Every task and seed is in "
        f"`{data}`. How each method runs, and what is counted, is the docstring of bench/evidence.py.",
        "",
    ]
    if results.get("candidates"):
        lines += _candidates_section(results) + _v3_candidates_section(results)
    held = [t for t in results["tasks"] if t["task"] in task_sets.HELD_OUT and DEFAULT in t["methods"]]
    tuning = [t for t in results["tasks"] if t["task"] in task_sets.TUNING and DEFAULT in t["methods"]]
    for regime, group in _by_regime(held):
        lines += _targets_section(group, regime)
    if held or tuning:
        lines += _trace_section(held + tuning)
    for title, group in (("Held-out tasks (never used to choose anything)", held), ("Tuning tasks", tuning)):
        if group:
            lines += [f"## {title}", ""]
            for t in group:
                lines += _task_section(t)
    return "\n".join(lines) + "\n"


def _task_section(t: dict) -> list[str]:
    regime = f" ({t['regime']}, {t['epochs']:.2g} epochs)" if t.get("regime") else ""
    lines = [f"### {t['task']}: {t['kind']}{regime}", "",
             f"{t['params']:,} parameters, {t['train_examples']} training examples, S = {t['steps']} steps of B = "
             f"{t['batch']}. Grid choice (validation, seed 0): lr {t['grid']['lr']:.3g} {t['grid']['shape']} "
             f"({t['grid']['runs']} runs); AdamW choice: lr {t['adamw_grid']['lr']:.3g} ({t['adamw_grid']['runs']} runs).", "",
             "| method | test loss (mean ± sd) | thermocal − method, 95% paired interval | example-gradients | seconds |",
             "| --- | --- | --- | --- | --- |"]
    ours = t["methods"][DEFAULT]
    for method, records in t["methods"].items():
        cost = statistics.fmean(r["cost"] for r in records)
        if method == "grid":
            cost_text = f"{cost:,.0f} (+ {t['grid']['runs'] * t['steps'] * t['batch']:,} for the search)"
        elif method in ("adamw_tuned", "momentum_tuned") and method.replace("tuned", "grid") in t:
            search = t[method.replace("tuned", "grid")]["runs"] * t["steps"] * t["batch"]
            cost_text = f"{cost:,.0f} (+ {search:,} for the search)"
        else:
            cost_text = f"{cost:,.0f}"
        diff = "—" if method == DEFAULT else _interval(*paired(ours, records))
        seconds = statistics.fmean(r["seconds"] for r in records)
        lines.append(f"| {method} | {_summary(records)} | {diff} | {cost_text} | {seconds:.1f} |")
    refusals = [r["refused"] for r in ours if r.get("refused")]
    lines += [""] + ([f"thermocal refused on {len(refusals)} seed(s): {refusals[0]}", ""] if refusals else [])
    return lines


def _by_regime(tasks: list[dict]) -> list[tuple[str | None, list[dict]]]:
    """The tasks by evidence v3's regime (one group, None, for a run made before tasks had one)."""
    regimes = list(dict.fromkeys(t.get("regime") for t in tasks))
    return [(regime, [t for t in tasks if t.get("regime") == regime]) for regime in regimes]


def _verdict(tasks: list[dict], row: str, baseline: str, better: bool) -> tuple[int, list[str]]:
    """On how many tasks `row` meets the target against `baseline`, and each task's cell. better: the
    mean paired difference is below 0; else (within or better): the 95% interval does not lie
    wholly above 0."""
    count, cells = 0, []
    for t in tasks:
        mean, low, high = paired(t["methods"][row], t["methods"][baseline])
        ok = mean < 0 if better else not low > 0
        count += ok
        cells.append(f"{t['task']} {'met' if ok else 'missed'} ({_interval(mean, low, high)})")
    return count, cells


def _targets_section(held: list[dict], regime: str | None = None) -> list[str]:
    def verdict(baseline: str, better: bool) -> tuple[int, list[str]]:
        return _verdict(held, DEFAULT, baseline, better)

    lines = ["## Targets on the held-out tasks" + (f" ({regime})" if regime else ""), "",
             "| target | result | per task (thermocal − baseline, 95% interval) |", "| --- | --- | --- |"]
    n = len(held)
    for text, baseline, better, need in (
        ("within the 95% paired interval of the validation-tuned SGD grid, or better, on ≥ 3 of 4", "grid", False, 3),
        ("better than LR range test + cosine on ≥ 3 of 4", "range_test", True, 3),
        ("better than constant f·2/λ_max on at least half", "stability", True, (n + 1) // 2),
    ):
        count, cells = verdict(baseline, better)
        lines.append(f"| {text} | {'met' if count >= need else 'missed'}: {count} of {n} | {'; '.join(cells)} |")
    ratios = []
    for t in held:
        probe_cost = statistics.fmean(r["probe_cost"] for r in t["methods"][DEFAULT])
        ratios.append((t["task"], probe_cost / (t["steps"] * t["batch"])))
    worst = max(r for _, r in ratios)
    lines.append(f"| probe ≤ 0.25 of a training run (example-gradients) | {'met' if worst <= 0.25 else 'missed'}: "
                 f"largest {worst:.2f} | {'; '.join(f'{name} {r:.2f}' for name, r in ratios)} |")
    return lines + [""] + _v3_targets(held, regime)


def _v3_targets(held: list[dict], regime: str | None = None) -> list[str]:
    """Calibration v3's targets (issue 40), where the run has its rows: each of thermocal's optimizer
    rows against the baselines people run, and the probe against the tuned grids' compute."""
    rows = [t for t in held if all(m in t["methods"] for m in ("adamw_tuned", "momentum_tuned", f"{DEFAULT}_momentum"))]
    if not rows:
        return []
    n = len(rows)
    lines = ["## Calibration v3 targets on the held-out tasks" + (f" ({regime})" if regime else ""), "",
             "| thermocal row | target | result | per task (thermocal − baseline, 95% interval) |",
             "| --- | --- | --- | --- |"]
    for row in OPTIMIZER_ROWS:
        for text, baseline, better, need in (
            ("within the interval of a validation-tuned AdamW grid, or better, on ≥ 3 of 4", "adamw_tuned", False, 3),
            ("better than AdamW 1e-3 + 5% warmup + cosine on ≥ 3 of 4", "adamw_1e-3", True, 3),
            ("within the interval of a validation-tuned momentum grid, or better, on ≥ 2 of 4", "momentum_tuned", False, 2),
        ):
            count, cells = _verdict(rows, row, baseline, better)
            lines.append(f"| {row} | {text} | {'met' if count >= min(need, n) else 'missed'}: {count} of {n} | "
                         f"{'; '.join(cells)} |")
    shares = []
    for t in rows:
        probe_cost = statistics.fmean(r["probe_cost"] for r in t["methods"][DEFAULT])
        search = sum(t[g]["runs"] for g in ("grid", "adamw_grid", "momentum_grid")) * t["steps"] * t["batch"]
        shares.append((t["task"], probe_cost / search))
    worst = max(r for _, r in shares)
    lines.append(f"| {DEFAULT} | probe ≤ 5% of the tuned grids' compute | {'met' if worst <= 0.05 else 'missed'}: largest "
                 f"{worst:.1%} | {'; '.join(f'{name} {r:.1%}' for name, r in shares)} |")
    return lines + [""]


def _trace_section(tasks: list[dict]) -> list[str]:
    """How far one standard error of the default's trace moves lr(S)/eta0 (method.md [C15], [H12])."""
    lines = ["## The trace's effect on the schedule (the default, at initialisation)", "",
             "d_eff reads the trace of the Gauss-Newton matrix G from a fixed number of draws (method.md [H15]), or, in "
             "runs of a commit whose default read tr H, the Hessian's trace, resolved to `--trace-rtol` of "
             "max(|trace|, tr|H|) ([H3]); `trace_shift` is the largest relative change of lr(S)/eta0 when that trace "
             "moves by one standard error of its draws or probes ([C15]); the sampling error over examples ([H14], "
             "[H15]; — in runs before it was recorded) is not in it. Per seed of the default:", "",
             "| task | schedule kinds | trace | draws (G) or probes (H) | trace standard error / trace | "
             "sampling error / trace | trace_shift, median (largest) | seeds above 1% |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for t in tasks:
        runs = [r for r in t["methods"][DEFAULT] if r.get("trace_shift") is not None]
        if not runs:
            continue
        kinds = ", ".join(f"{k} {sum(r['kind'] == k for r in runs)}" for k in sorted({r["kind"] for r in runs}))
        read = ", ".join(sorted({"tr G" if r.get("d_eff_from") == "gauss-newton" else "tr H" for r in runs}))
        probes = sorted({r.get("trace_draws") or r["trace_probes"] for r in runs})
        relative = [r["trace_stderr"] / abs(r["trace"]) for r in runs]
        shifts = [r["trace_shift"] for r in runs]
        sampled = [r["trace_sampling_stderr"] / abs(r["trace"]) for r in runs if r.get("trace_sampling_stderr") is not None]
        sampling = f"{min(sampled):.3f}–{max(sampled):.3f}" if sampled else "—"
        lines.append(f"| {t['task']} | {kinds} | {read} | {', '.join(map(str, probes))} | {min(relative):.3f}–{max(relative):.3f} | "
                     f"{sampling} | {statistics.median(shifts):.2%} ({max(shifts):.2%}) | "
                     f"{sum(x > 0.01 for x in shifts)} of {len(runs)} |")
    return lines + [""]


def _v3_candidates_section(results: dict) -> list[str]:
    """[V1]: each v3 candidate's test loss over its optimizer's tuned baseline, per tuning task, and
    the geometric mean the rule reads."""
    chosen = [c for c in results["candidates"] if c in V3_CANDIDATES]
    rows = [t for t in results["tasks"] if set(chosen) <= set(t["methods"]) and set(V3_BASELINE.values()) <= set(t["methods"])]
    if not chosen or not rows:
        return []
    lines = ["## Calibration v3 candidates on the tuning tasks (issue 40; the rule is method.md [V1])", "",
             "Test loss relative to the validation-tuned grid of the candidate's own optimizer (grid, momentum_tuned or "
             "adamw_tuned), mean over seeds of the paired ratio; < 1 is better; a divergence or refusal fails.", "",
             "| candidate | " + " | ".join(t["task"] for t in rows) + " | geometric mean |",
             "| --- | " + " | ".join("---" for _ in rows) + " | --- |"]
    return lines + [_ratio_row(cand, rows, V3_BASELINE[V3_CANDIDATES[cand]["optimizer"]]) for cand in chosen] + [""]


def _ratio_row(cand: str, rows: list[dict], reference: str) -> str:
    """`| cand | ratio per task | geometric mean |`: the mean over seeds of the paired test-loss ratio
    cand/reference on each task ("failed" where either run failed)."""
    ratios = []
    for t in rows:
        a = [_loss(r) for r in t["methods"][cand]]
        b = [_loss(r) for r in t["methods"][reference]]
        ratios.append(statistics.fmean(x / y for x, y in zip(a, b)) if all(math.isfinite(v) for v in a + b) else math.inf)
    geo = math.exp(statistics.fmean(math.log(r) for r in ratios)) if all(math.isfinite(r) for r in ratios) else math.inf
    return (f"| {cand} | " + " | ".join("failed" if math.isinf(r) else f"{r:.3f}" for r in ratios)
            + f" | {'failed' if math.isinf(geo) else f'{geo:.3f}'} |")


def _candidates_section(results: dict) -> list[str]:
    chosen = [c for c in results["candidates"] if c not in V3_CANDIDATES]
    rows = [t for t in results["tasks"] if set(chosen) <= set(t["methods"])]
    lines = ["## Calibration v2 candidates on the tuning tasks (issue 15: the default is chosen here)", "",
             f"Test loss relative to `{REFERENCE}` (ε one standard error of the sample's mean loss, the derivation's "
             "plain reading), mean over seeds of the paired ratio; < 1 is better. The default is the candidate with the "
             "lowest geometric mean, decided as the rule before the run; candidates whose geometric means differ by "
             "under 0.005 tie, and a tie goes to the one whose schedule moves least with its trace's error (issue 15 "
             "item 5; added when v2_eps16se_gauss_newton tied the default to three decimals, method.md [C12]).", "",
             "| candidate | " + " | ".join(t["task"] for t in rows) + " | geometric mean |",
             "| --- | " + " | ".join("---" for _ in rows) + " | --- |"]
    return lines + [_ratio_row(cand, rows, REFERENCE) for cand in chosen] + [""]


QUICK = False


def main() -> None:
    global QUICK
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", choices=("tuning", "held-out", "all"), default="all")
    parser.add_argument("--tasks", nargs="*", help="only these tasks")
    parser.add_argument("--candidates", nargs="*", default=None, help="run the calibration candidates (all, or those "
                        "named), on the tuning tasks only")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--report", action="store_true", help="regenerate EVIDENCE.md from the JSON")
    parser.add_argument("--out", type=Path, default=HERE / "evidence.json")
    parser.add_argument("--markdown", type=Path, default=HERE / "EVIDENCE.md")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--fresh", action="store_true", help="recompute every piece (by default a run of a clean "
                        "commit resumes from the pieces an earlier run of it stored under bench/.evidence_runs/)")
    args = parser.parse_args()
    QUICK = args.quick
    if args.report:
        args.markdown.write_text(report(json.loads(args.out.read_text())))
        return
    if args.candidates is not None and args.set != "tuning":
        parser.error("--candidates runs on the tuning tasks only: pass --set tuning")
    names = {"tuning": list(task_sets.TUNING), "held-out": list(task_sets.HELD_OUT),
             "all": [*task_sets.TUNING, *task_sets.HELD_OUT]}[args.set]
    if args.tasks:
        names = [n for n in names if n in args.tasks]
    if QUICK and not args.tasks:
        names = names[:1] if args.set != "all" else [names[0], next(iter(task_sets.HELD_OUT))]
    seeds = 2 if QUICK else SEEDS
    only = args.candidates is not None
    chosen = (args.candidates or list(CANDIDATES)) if only else \
        (list(CANDIDATES) if not QUICK else [REFERENCE, "v3_momentum_f0.013", "v3_adamw_f0.01"])
    jobs = [(name, chosen if name in task_sets.TUNING else None, only, seeds) for name in names]
    stamped = provenance(sys.argv)
    cache = None if QUICK or stamped["dirty"] or args.fresh else RUNS / stamped["commit"]
    if cache is not None:
        print(f"pieces kept in {cache} (a rerun of this commit resumes from them)", file=sys.stderr, flush=True)
    with multiprocessing.get_context("spawn").Pool(max(1, min(args.jobs, len(jobs))), initializer=_child,
                                                   initargs=(QUICK, cache)) as pool:
        done = pool.starmap(run_task, jobs)
    results = {"provenance": stamped, "candidates": chosen if any(n in task_sets.TUNING for n in names) else [],
               "tasks": done}
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    args.markdown.write_text(report(results))
    print(report(results))


def _child(quick: bool, cache: Path | None = None) -> None:
    global QUICK, CACHE
    QUICK, CACHE = quick, cache
    torch.set_num_threads(1)


if __name__ == "__main__":
    main()
