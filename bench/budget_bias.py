"""Does a budgeted probe's lambda_max cover the whole sample's? (method.md [H16]; calibration v3 item 5)

    python bench/budget_bias.py            # digits MLP, 105k MLP, CNN; 20 seeds; B = 8, 32 -> bench/budget_bias.json
    python bench/budget_bias.py --quick    # 2 seeds, small models: keeps the script from rotting (a test runs it)

With `--steps`, the probe budget [S9] takes the Hessian of a subsample of the probe's examples.
λ_max of a subsample is biased upward (it is convex in the Hessian: Jensen), and a subsample too
small to resolve the top direction moves it either way; before [H16] the file's error bar was
the Rayleigh quotient's spread over the subsample's groups alone ([H13]), which did not cover
that. [H16] adds the Ritz vector's Rayleigh quotient on as many held-out examples (biased down:
the vector was not chosen on them) and calibrates with their midpoint, counting half their gap in
the error. For each model, batch size and seed this script runs the default probe with a budget
that takes a subsample (thermocal.probe, `--steps` chosen so that the Hessian gets a few
minibatches) and once per model the whole sample's λ_max (no budget, [H1] to 10⁻⁶), and reports
    z_old = (λ_max − whole) / lambda_max_stderr          (what the file said before [H16])
    z_new = (midpoint − whole) / its combined error      (what the calibration reads now)
with the fraction within 2 (target ≥ 90%) and its Wilson 95% interval, and eta0 by batch size
against the spread of its error. Measured, never a timed test; one stamped JSON per run.
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

import curvature  # noqa: E402  (the benchmark's models and criteria)
from provenance import stamp  # noqa: E402
from subsample_coverage import coverage_columns, summarize  # noqa: E402

import thermocal  # noqa: E402
from thermocal.config import Config  # noqa: E402

MODELS = ("digits", "mlp", "cnn")
BATCHES = (8, 32)
HESSIAN_MINIBATCHES = 4  # the subsample the budget should leave: a few minibatches, as on short runs


def steps_for(examples: int, batch: int) -> int:
    """A budget whose 0.25 leaves about HESSIAN_MINIBATCHES minibatches of Hessian examples after the
    gradient noise's `examples` (each Hessian example costs about 2 example-gradients per product, ~30 products)."""
    wanted = HESSIAN_MINIBATCHES * batch * 2 * 30 + examples
    return max(1, math.ceil(wanted / (0.25 * batch)))


def whole(model, x, y, loss_fn, batch: int) -> float:
    settings = Config(batch_size=batch, loss="bench", seed=0, eig_rtol=1e-6, max_iter=2000)
    return thermocal.probe(model, (x, y), settings, loss_fn=loss_fn).measurements.hessian.lambda_max


def draw(model, x, y, loss_fn, batch: int, seed: int, reference: float) -> dict:
    settings = Config(batch_size=batch, loss="bench", seed=seed, steps=steps_for(len(x), batch))
    doc = thermocal.probe(model, (x, y), settings, loss_fn=loss_fn)
    h = doc.measurements.hessian
    used = h.debiased()
    old_se, new_se = h.lambda_max_stderr, used.lambda_max_stderr
    return {"seed": seed, "hessian_examples": doc.inputs.hessian_samples, "heldout_examples": h.heldout_examples,
            "lambda_max": h.lambda_max, "stderr": old_se, "heldout": h.lambda_max_heldout, "midpoint": used.lambda_max,
            "combined_stderr": new_se, "eta0": doc.schedule.eta0,
            "z_old": (h.lambda_max - reference) / old_se if old_se else None,
            "z_new": (used.lambda_max - reference) / new_se if new_se else None}


def table(results: dict) -> str:
    lines = ["| model | B | Hessian examples | z | |z| ≤ 2 (Wilson 95%) | mean | sd |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for cell in results["cells"]:
        for kind in ("z_old", "z_new"):
            r = cell["summary"][kind]
            if r["n"]:
                lines.append(f"| {cell['model']} | {cell['batch']} | {cell['hessian_examples']} | {kind} | "
                             f"{coverage_columns(r)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="2 seeds, the benchmark's quick sizes")
    parser.add_argument("--out", type=Path, default=HERE / "budget_bias.json")
    args = parser.parse_args()
    seeds = 2 if args.quick else args.seeds
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    start = time.perf_counter()
    cells = []
    for name in MODELS:
        model, x, y, _ = curvature.build(name, args.quick)
        loss_fn = curvature._criterion(name)
        for batch in BATCHES:
            reference = whole(model, x, y, loss_fn, batch)
            draws = [draw(model, x, y, loss_fn, batch, seed, reference) for seed in range(seeds)]
            cell = {"model": name, "batch": batch, "examples": len(x), "whole_lambda_max": reference,
                    "hessian_examples": statistics.median(d["hessian_examples"] for d in draws),
                    "summary": {kind: summarize([d[kind] for d in draws]) for kind in ("z_old", "z_new")},
                    "eta0_median": statistics.median(d["eta0"] for d in draws), "draws": draws}
            cells.append(cell)
            print(f"{name} B={batch}: whole {reference:.4g}, z_old within 2 {cell['summary']['z_old'].get('within_2')}"
                  f"/{seeds}, z_new within 2 {cell['summary']['z_new'].get('within_2')}/{seeds}", flush=True)
    everything = {kind: summarize([d[kind] for c in cells for d in c["draws"]]) for kind in ("z_old", "z_new")}
    results = {"provenance": stamp(sys.argv, quick=args.quick, seeds=seeds, models=list(MODELS), batches=list(BATCHES)),
               "seconds": time.perf_counter() - start, "all": everything, "cells": cells}
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    for kind, r in everything.items():
        print(f"all: {kind} within 2 in {r['within_2']}/{r['n']}")


if __name__ == "__main__":
    main()
