"""Would a Gauss-Newton d_eff resolve the schedule at initialisation? An exploration for issue 15's "under 1%".

    python bench/ggn_trace.py                 # every evidence task, 3 initialisations -> bench/ggn_trace.json
    python bench/ggn_trace.py --quick         # two small tasks, one initialisation (a test runs it)
    python bench/ggn_trace.py --midtraining --out bench/ggn_trace_midtraining.json   # after S/10 steps

Calibration v2 took d_eff = tr(H)/λ_max (method.md [C10]) until this script's runs made tr(G)
the default (eb5e805); it probes with `--d-eff hessian` to compare the two. At initialisation positive and
negative curvature cancel in tr(H), so the default's 10 Hutch++ probes leave its standard error
at up to 100% of itself, and one standard error moves lr(S)/eta0 by 5-18% on the tasks that
cool ([H12], [C15]); Lanczos keeps 20 steps only to deflate those probes. The Gibbs picture the
calibration comes from is about stiff modes of positive curvature, which is what the
generalized Gauss-Newton matrix G = Σ_i J_iᵀ·∂²ℓ/∂f²·J_i / n keeps (H = G at a minimum of zero
residual). This script measures, on the evidence tasks (bench/tasks.py) at initialisation with
the probe (`thermocal.probe`, --batch-size B --steps S --d-eff hessian, as bench/evidence.py ran it):
  - the probe's tr(H), its probes' standard error and its sampling error over examples ([H14]);
  - tr(G) on the same Hessian examples, as `--d-eff gauss-newton` measures it (method.md [H15],
    thermocal/curvature/gauss_newton.py: per example and draw, two vector-Jacobian products
    with a Rademacher vector over its outputs and the loss's output Hessian times it), with its
    draws' error (what a probe's error is to the trace) and its sampling error over examples;
  - lr(S)/eta0 of the default schedule with d_eff from tr(H) and from tr(G), and how far each
    one's own error moves it (the largest change at ± one standard error, as [C15] does);
  - what tr(G) costs, in example-gradients (two per example and draw).
With --midtraining each model first trains S/10 steps on the default's schedule (bench/evidence.py's
"reprobed" method) and is probed for the remaining 9S/10. An exploration for the planners (rule
changes are theirs): measured, never a timed test.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import evidence  # noqa: E402
import tasks as task_sets  # noqa: E402
from provenance import stamp  # noqa: E402

import thermocal  # noqa: E402
from thermocal.calibrate.loss_units import _calibrate, _end_ratio  # noqa: E402
from thermocal.config import Config  # noqa: E402
from thermocal.schedule.functions import learning_rate  # noqa: E402
from thermocal.curvature.gauss_newton import EXAMPLE_GRADIENTS_PER_DRAW, GAUSS_NEWTON_DRAWS, gauss_newton_trace  # noqa: E402

def used_examples(n: int, settings: Config) -> torch.Tensor:
    """The probe's K·B examples in its order (method.md §0): a seeded permutation, cut to whole minibatches."""
    k = n // settings.batch_size
    return torch.randperm(n, generator=torch.Generator().manual_seed(settings.seed))[: k * settings.batch_size]


def run(task: task_sets.Task, seed: int, draws: int, midtraining: bool = False) -> dict:
    model = evidence.initial(task, seed).eval()
    x, y = task.train[0][: evidence.PROBE_EXAMPLES], task.train[1][: evidence.PROBE_EXAMPLES]
    steps, trained = task.steps, 0
    if midtraining:  # as bench/evidence.py's reprobed method: S/10 steps of the default's schedule, then probe
        first = thermocal.probe(model, (x, y), Config(batch_size=task.batch, steps=task.steps,
                                                      threads=torch.get_num_threads()), loss_fn=task.loss_fn)
        trained = task.steps // 10
        evidence.train(task, model, learning_rate(first.schedule), seed, stop=trained)
        model.eval()
        steps = task.steps - trained
    # d_eff from tr(H), the default before eb5e805: this script sets tr G beside it
    config = Config(batch_size=task.batch, steps=steps, threads=torch.get_num_threads(), d_eff="hessian")
    doc = thermocal.probe(model, (x, y), config, loss_fn=task.loss_fn)
    m = doc.measurements
    h, n = m.hessian, doc.inputs.hessian_samples
    index = used_examples(len(x), config)[:n]
    start = time.perf_counter()
    g = gauss_newton_trace(model, task.loss_fn, x[index], y[index], [p for p in model.parameters() if p.requires_grad],
                           draws=draws, generator=torch.Generator().manual_seed(seed))
    seconds = time.perf_counter() - start
    trace_g, draws_se, sampling_se = g.trace, g.stderr, g.sampling_stderr

    def end_ratio(trace: float) -> float:
        return _end_ratio(_calibrate(m.gradient_noise, h.model_copy(update={"trace": trace}), m.noise_curvature, config))

    def shift(trace: float, se: float) -> float:
        base = end_ratio(trace)
        return max(abs(end_ratio(trace + sign * se) / base - 1.0) for sign in (-1.0, 1.0))

    return {"task": task.name, "seed": seed, "trained_steps": trained, "hessian_examples": n, "lambda_max": h.lambda_max, "kind": doc.schedule.kind,
            "trace_h": h.trace, "trace_h_stderr": h.trace_stderr, "trace_h_sampling_stderr": h.trace_sampling_stderr,
            "trace_g": trace_g, "trace_g_draws_stderr": draws_se, "trace_g_sampling_stderr": sampling_se,
            "d_eff_h": h.trace / h.lambda_max, "d_eff_g": trace_g / h.lambda_max,
            "end_ratio_h": end_ratio(h.trace), "end_ratio_g": end_ratio(trace_g),
            "shift_h": shift(h.trace, h.trace_stderr), "shift_g": shift(trace_g, draws_se),
            "hvps_h": h.hvps, "ggn_example_gradients": EXAMPLE_GRADIENTS_PER_DRAW * draws * n,
            "hvp_example_gradients": 2 * n,
            "ggn_seconds": seconds}


def table(results: dict) -> str:
    lines = ["| task | seed | n | tr H ± probes (sampling) | tr G ± draws (sampling) | d_eff H → G "
             "| lr(S)/eta0 H → G | shift H → G | tr G cost (HVPs) |", "| " + " | ".join(["---"] * 9) + " |"]
    for r in results["runs"]:
        sampling_h = "—" if r["trace_h_sampling_stderr"] is None else f"{r['trace_h_sampling_stderr']:.2g}"
        lines.append(
            f"| {r['task']} | {r['seed']} | {r['hessian_examples']} | {r['trace_h']:.4g} ± {r['trace_h_stderr']:.2g} "
            f"({sampling_h}) | {r['trace_g']:.4g} ± {r['trace_g_draws_stderr']:.2g} ({r['trace_g_sampling_stderr']:.2g}) "
            f"| {r['d_eff_h']:.3g} → {r['d_eff_g']:.3g} | {r['end_ratio_h']:.3g} → {r['end_ratio_g']:.3g} "
            f"| {r['shift_h']:.1%} → {r['shift_g']:.1%} | {r['ggn_example_gradients'] / r['hvp_example_gradients']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--draws", type=int, default=GAUSS_NEWTON_DRAWS)
    parser.add_argument("--quick", action="store_true", help="digits_mlp and diabetes_mlp, one initialisation")
    parser.add_argument("--midtraining", action="store_true", help="probe after S/10 steps of the default's schedule")
    parser.add_argument("--out", type=Path, default=HERE / "ggn_trace.json")
    args = parser.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    names = ["digits_mlp", "diabetes_mlp"] if args.quick else [*task_sets.TUNING, *task_sets.HELD_OUT]
    seeds = 1 if args.quick else args.seeds
    runs = []
    for name in names:
        task = {**task_sets.TUNING, **task_sets.HELD_OUT}[name]()
        for seed in range(seeds):
            runs.append(run(task, seed, args.draws, args.midtraining))
            r = runs[-1]
            print(f"{name:15s} seed {seed}: tr H {r['trace_h']:.4g} ± {r['trace_h_stderr']:.2g}, tr G {r['trace_g']:.4g} "
                  f"± {r['trace_g_draws_stderr']:.2g}; shift {r['shift_h']:.1%} -> {r['shift_g']:.1%}", flush=True)
    results = {"provenance": stamp(sys.argv, quick=args.quick, seeds=seeds, draws=args.draws, midtraining=args.midtraining,
                                   probe_examples=evidence.PROBE_EXAMPLES), "runs": runs,
               "median_abs_log_ratio": statistics.median(abs(math.log(r["trace_g"] / r["trace_h"])) for r in runs
                                                         if r["trace_h"] > 0)}
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))


if __name__ == "__main__":
    main()
