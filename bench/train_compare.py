"""Does a calibrated schedule train as well as what users do today? (issue 7)

    pip install -e ".[test]"                      # scikit-learn for the digits and diabetes data
    python bench/train_compare.py                 # writes bench/train_compare.json, prints tables
    python bench/train_compare.py --quick         # tiny budgets, one seed (the test runs this)

Every method trains the same freshly initialised model (per seed) with plain SGD, batch B,
for S steps, and is scored by the final loss on the whole training set and on held-out data:
- thermocal: probe at initialisation with --steps S, then eta(t) = eta0·exp(−t/(2·tau));
- constant at thermocal's eta0; cosine from eta0; step decay from eta0 (×0.1 at S/2 and 3S/4);
- LR range test: an exponential sweep from 1e-5 to 10 over 100 steps, the lr of steepest
  descent of the smoothed loss, then cosine from it;
- grid: constant and cosine at 0.01, 0.03, 0.1, 0.3, 1 (ten runs), the best held-out loss
  per seed (the expensive upper reference).
Cost is counted in example-gradients (one forward and backward of one example): training is
S·B; the probe is its K·B minibatch gradients plus 2·N per Hessian-vector product (an HVP
measured 1.65–2.15 gradients in bench/RESULTS.md); the sweep is 100·B.
Sensitivity: thermocal with other stability_fraction, tf_floor, Tf rule and probe sample size
(defaults: stability_fraction 0.25, tf_floor 1e-3, the abs Tf rule; method.md [C2], [C4]), and
thermocal re-probed in training: its schedule from initialisation for S/10 steps, then a probe
of that checkpoint with --steps 9S/10 and its schedule for the rest ("lr at t=0" is the
re-probed eta0, "lr at the last step" the schedule's at step S − 1; cost counts both probes).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from models import TinyLM, _text, lm_loss  # noqa: E402
from thermocal.calibrate import CalibrationSettings, calibrate  # noqa: E402
from thermocal.errors import DegenerateError  # noqa: E402
from thermocal.probe.measure import ProbeSettings, probe  # noqa: E402
from thermocal.schedule.functions import learning_rate  # noqa: E402

GRID = (0.01, 0.03, 0.1, 0.3, 1.0)
SWEEP_STEPS = 100


@dataclass
class Task:
    name: str
    build: Callable[[], torch.nn.Module]
    train: tuple[torch.Tensor, torch.Tensor]
    held_out: tuple[torch.Tensor, torch.Tensor]
    loss_fn: Callable
    steps: int
    batch: int


def _mlp(sizes: list[int]) -> torch.nn.Sequential:
    layers: list[torch.nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        layers.append(torch.nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(torch.nn.Tanh())
    return torch.nn.Sequential(*layers)


def _digits() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32) / 16.0
    return x, torch.tensor(data.target, dtype=torch.int64)


def tasks(quick: bool) -> list[Task]:
    from sklearn.datasets import load_diabetes

    scale = 0.1 if quick else 1.0
    order = torch.randperm(1797, generator=torch.Generator().manual_seed(0))
    x, y = _digits()
    x, y = x[order], y[order]
    digits_train, digits_test = (x[:1024], y[:1024]), (x[1024:], y[1024:])
    raw = load_diabetes()
    dx = torch.tensor(raw.data, dtype=torch.float32)
    dx = (dx - dx.mean(0)) / dx.std(0)
    dy = torch.tensor(raw.target, dtype=torch.float32)
    dy = ((dy - dy.mean()) / dy.std()).unsqueeze(1)
    d_order = torch.randperm(442, generator=torch.Generator().manual_seed(0))
    dx, dy = dx[d_order], dy[d_order]

    def cnn() -> torch.nn.Module:
        return torch.nn.Sequential(torch.nn.Unflatten(1, (1, 8, 8)), torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.Tanh(),
                                   torch.nn.Conv2d(8, 16, 3, padding=1, stride=2), torch.nn.Tanh(), torch.nn.Flatten(),
                                   torch.nn.Linear(16 * 16, 10))

    vocab, context = 24, 32
    text = _text((512 + 128) * context, vocab, torch.Generator().manual_seed(5)).reshape(-1, context)

    def lm() -> torch.nn.Module:
        return TinyLM(vocab, 32, 1, 2, context)

    return [
        Task("digits_mlp", lambda: _mlp([64, 32, 10]), digits_train, digits_test, F.cross_entropy, int(2000 * scale), 32),
        Task("diabetes_mlp", lambda: _mlp([10, 16, 1]), (dx[:342], dy[:342]), (dx[342:], dy[342:]), F.mse_loss,
             int(1500 * scale), 32),
        Task("digits_cnn", cnn, digits_train, digits_test, F.cross_entropy, int(1500 * scale), 32),
        Task("char_lm", lm, (text[:512], text[:512]), (text[512:], text[512:]), lm_loss, int(600 * scale), 32),
    ]


def evaluate(model: torch.nn.Module, data: tuple[torch.Tensor, torch.Tensor], loss_fn) -> float:
    with torch.no_grad():
        value = float(loss_fn(model(data[0]), data[1]))
    return value if math.isfinite(value) else math.inf


def train(task: Task, init: torch.nn.Module, lr: Callable[[int], float], seed: int,
          reschedule: tuple[int, Callable[[torch.nn.Module], Callable[[int], float]]] | None = None) -> tuple[float, float]:
    """Train a copy of `init` for S steps; `reschedule` = (W, fn): at step W, fn(the model as it is
    then) gives the learning rate of the remaining steps, counted from 0 at W."""
    model = copy.deepcopy(init).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr(0))
    generator = torch.Generator().manual_seed(1000 + seed)
    x, y = task.train
    for step in range(task.steps):
        if reschedule is not None and step == reschedule[0]:
            later, start = reschedule[1](model), step
            lr = lambda t: later(t - start)  # noqa: E731 (assigned once, at step W)
        for group in optimizer.param_groups:
            group["lr"] = lr(step)
        batch = torch.randint(0, len(x), (task.batch,), generator=generator)
        optimizer.zero_grad()
        loss = task.loss_fn(model(x[batch]), y[batch])
        if not torch.isfinite(loss):
            return math.inf, math.inf
        loss.backward()
        optimizer.step()
    model.eval()
    return evaluate(model, task.train, task.loss_fn), evaluate(model, task.held_out, task.loss_fn)


def thermocal_schedule(task: Task, init: torch.nn.Module, seed: int, *, probe_fraction: float = 1.0,
                       steps: int | None = None, **calibration: object) -> tuple[Callable[[int], float], float, int]:
    """(lr(t), eta0, probe cost in example-gradients) from a probe of `init` (a copy of it) with
    --steps `steps` (default S)."""
    x, y = task.train
    n = max(2 * task.batch, int(len(x) * probe_fraction))
    model = copy.deepcopy(init)
    result = probe(model, x[:n], y[:n], ProbeSettings(batch_size=task.batch, seed=seed), torch.device("cpu"),
                   loss_fn=task.loss_fn)
    noise, spectrum = result.measurements.gradient_noise, result.measurements.hessian
    try:
        cal = calibrate(noise, spectrum, result.num_params, CalibrationSettings(steps=steps or task.steps, **calibration))
    except DegenerateError:
        cal = calibrate(noise, spectrum, result.num_params,
                        CalibrationSettings(steps=steps or task.steps, flat_if_cold=True, **calibration))
    cost = noise.samples_used + 2 * noise.samples_used * spectrum.hvps
    return learning_rate(cal.schedule), cal.schedule.eta0, cost


def range_test(task: Task, init: torch.nn.Module, seed: int) -> float:
    """The lr of steepest descent of the smoothed loss along an exponential sweep (fast.ai style)."""
    model = copy.deepcopy(init).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-5)
    generator = torch.Generator().manual_seed(2000 + seed)
    x, y = task.train
    lrs, losses, smooth, best = [], [], None, math.inf
    for i in range(SWEEP_STEPS):
        lr = 1e-5 * (10 / 1e-5) ** (i / (SWEEP_STEPS - 1))
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch = torch.randint(0, len(x), (task.batch,), generator=generator)
        optimizer.zero_grad()
        loss = task.loss_fn(model(x[batch]), y[batch])
        if not torch.isfinite(loss):
            break
        smooth = loss.item() if smooth is None else 0.9 * smooth + 0.1 * loss.item()
        lrs.append(lr)
        losses.append(smooth)
        best = min(best, smooth)
        if smooth > 4 * best:
            break
        loss.backward()
        optimizer.step()
    slopes = [(losses[i + 1] - losses[i - 1]) / (math.log(lrs[i + 1]) - math.log(lrs[i - 1])) for i in range(1, len(lrs) - 1)]
    return lrs[1 + min(range(len(slopes)), key=slopes.__getitem__)] if slopes else 1e-3


def cosine(peak: float, steps: int) -> Callable[[int], float]:
    return lambda t: peak * 0.5 * (1 + math.cos(math.pi * t / steps))


def run_task(task: Task, seeds: list[int]) -> dict:
    run_cost = task.steps * task.batch
    rows: dict[str, list[dict]] = {}

    def record(method: str, train_loss: float, held: float, cost: float, wall: float, **extra: object) -> None:
        rows.setdefault(method, []).append({"train": train_loss, "held_out": held, "cost_runs": cost / run_cost,
                                            "wall": wall, **extra})

    for seed in seeds:
        torch.manual_seed(seed)
        init = task.build().eval()
        start = time.perf_counter()
        lr, eta0, probe_cost = thermocal_schedule(task, init, seed)
        probe_wall = time.perf_counter() - start
        for method, fn in (("thermocal", lr), ("constant@eta0", lambda t: eta0), ("cosine@eta0", cosine(eta0, task.steps)),
                           ("step@eta0", lambda t: eta0 * 0.1 ** ((t >= task.steps // 2) + (t >= 3 * task.steps // 4)))):
            start = time.perf_counter()
            tr, ho = train(task, init, fn, seed)
            extra_cost = probe_cost if method == "thermocal" else 0
            record(method, tr, ho, run_cost + extra_cost, time.perf_counter() - start + (probe_wall if method == "thermocal" else 0),
                   lr0=fn(0), lr_end=fn(task.steps - 1))
        start = time.perf_counter()
        found = range_test(task, init, seed)
        tr, ho = train(task, init, cosine(found, task.steps), seed)
        record("range_test+cosine", tr, ho, run_cost + SWEEP_STEPS * task.batch, time.perf_counter() - start, lr0=found,
               lr_end=cosine(found, task.steps)(task.steps - 1))
        start = time.perf_counter()
        grid = []
        for peak in GRID:
            for shape, fn in (("constant", lambda t, p=peak: p), ("cosine", cosine(peak, task.steps))):
                tr, ho = train(task, init, fn, seed)
                grid.append((ho, tr, f"{shape}@{peak:g}"))
        ho, tr, best = min(grid)
        record("grid_best", tr, ho, run_cost * len(grid), time.perf_counter() - start, choice=best)
        for name, options in (("stability_fraction=0.5 (METHOD.md's)", {"stability_fraction": 0.5}),
                              ("stability_fraction=1.0", {"stability_fraction": 1.0}),
                              ("tf_floor=1e-4", {"tf_floor": 1e-4}), ("tf_floor=1e-2", {"tf_floor": 1e-2}),
                              ("tf_rule=floor", {"tf_rule": "floor"}),
                              ("tf_rule=floor, stability_fraction=0.5", {"tf_rule": "floor", "stability_fraction": 0.5}),
                              ("probe on N/4", {"probe_fraction": 0.25})):
            fraction = options.pop("probe_fraction", 1.0)
            lr_v, eta_v, cost_v = thermocal_schedule(task, init, seed, probe_fraction=fraction, **options)
            tr, ho = train(task, init, lr_v, seed)
            record(f"thermocal {name}", tr, ho, run_cost + cost_v, 0.0, lr0=eta_v, lr_end=lr_v(task.steps - 1))
        # The README's main use: probe a checkpoint in training. Train on thermocal's schedule from
        # initialisation for W = S/10 steps, re-probe the model there with --steps S − W, and
        # follow the new schedule for the rest; both probes are counted.
        warm = task.steps // 10
        reprobed: list[tuple[Callable[[int], float], float, int]] = []

        def reprobe(model: torch.nn.Module) -> Callable[[int], float]:
            reprobed.append(thermocal_schedule(task, model, seed, steps=task.steps - warm))
            return reprobed[0][0]

        tr, ho = train(task, init, lr, seed, reschedule=(warm, reprobe))
        (lr_r, eta_r, cost_r), = reprobed
        record("thermocal re-probed at S/10", tr, ho, run_cost + probe_cost + cost_r, 0.0, lr0=eta_r,
               lr_end=lr_r(task.steps - 1 - warm))
    return {"steps": task.steps, "batch": task.batch, "methods": rows}


def summarise(values: list[float]) -> tuple[float, float]:
    finite = [v for v in values if math.isfinite(v)]
    if len(finite) < len(values):
        return math.inf, math.inf
    return statistics.fmean(finite), (statistics.stdev(finite) if len(finite) > 1 else 0.0)


def tables(results: dict) -> str:
    lines = [f"Machine: {results['machine']}; seeds {results['seeds']}", ""]
    verdicts = []
    for name, task in results["tasks"].items():
        lines += [f"### {name} (S = {task['steps']}, B = {task['batch']})", "",
                  "| method | train loss | held-out loss | cost (runs) | wall s | lr at t=0 | lr at the last step |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        stats = {}
        for method, runs in task["methods"].items():
            tr, tr_sd = summarise([r["train"] for r in runs])
            ho, ho_sd = summarise([r["held_out"] for r in runs])
            stats[method] = (ho, ho_sd)
            cost = statistics.fmean(r["cost_runs"] for r in runs)
            lr0 = ", ".join(f"{r['lr0']:.3g}" for r in runs if "lr0" in r) or ", ".join(r.get("choice", "") for r in runs)
            lr_end = ", ".join(f"{r['lr_end']:.3g}" for r in runs if "lr_end" in r) or "—"
            lines.append(f"| {method} | {tr:.4f} ± {tr_sd:.4f} | {ho:.4f} ± {ho_sd:.4f} | {cost:.2f} | "
                         f"{statistics.fmean(r['wall'] for r in runs):.1f} | {lr0} | {lr_end} |")
        ours, spread = stats["thermocal"]
        grid, grid_sd = stats["grid_best"]
        rng, _ = stats["range_test+cosine"]
        cost = statistics.fmean(r["cost_runs"] for r in task["methods"]["thermocal"])
        verdicts.append(f"| {name} | {'yes' if ours <= grid + max(spread, grid_sd) else 'no'} | "
                        f"{'yes' if ours <= rng else 'no'} | {'yes' if cost <= 1.2 else 'no'} ({cost:.2f}) |")
        lines.append("")
    lines += ["### Targets", "", "| task | held-out within one spread of grid best | no worse than range test + cosine | "
              "cost ≤ 1.2 runs |", "| --- | --- | --- | --- |", *verdicts, ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--tasks", default=None, help="comma-separated task names (default: all)")
    parser.add_argument("--out", type=Path, default=HERE / "train_compare.json")
    args = parser.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    seeds = list(range(1 if args.quick else args.seeds))
    results = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}", "seeds": seeds,
               "quick": args.quick, "tasks": {}}
    chosen = set(args.tasks.split(",")) if args.tasks else None
    for task in tasks(args.quick):
        if chosen is not None and task.name not in chosen:
            continue
        results["tasks"][task.name] = run_task(task, seeds)
        print(f"{task.name} done", file=sys.stderr)
    args.out.write_text(json.dumps(results, indent=2))
    print(tables(results))


if __name__ == "__main__":
    main()
