"""Do the default probe's error bars cover the whole sample's values, subsample included? (method.md [H13], [H14])

    python bench/subsample_coverage.py              # the digits MLP, 100 seeds -> bench/subsample_coverage.json
    python bench/subsample_coverage.py --quick      # 3 seeds: keeps the script from rotting (a test runs it)

A probe with `--hessian-samples 512` (the default until 2026-12-07; the default now takes the
whole sample) takes the Hessian of the first 512 of the sample's shuffled examples, so its
lambda_max and trace differ from the whole sample's by the probe's
own error and by the subsample's. It reports the first as `trace_stderr` (the probes, [H3]) and
the second as the sampling errors s (`trace_sampling_stderr` [H14], `lambda_max_stderr` [H13]),
each the spread of the value over samples of n examples: a subsample of n of the N examples
differs from the whole by s·√(1 − n/N). bench/RESULTS.md had one draw of this (one seed, in the
run of daf3f39), where the digits trace was 3.0 of these standard errors off; one draw cannot tell
a bad draw from an error bar that is too short. This script reruns that probe (`measure.probe`,
as the benchmark's thermocal_default cell then ran) with `--seeds` probe seeds on the benchmark's digits MLP
(2.4k parameters, 1,024 examples): each seed shuffles the sample differently (another
subsample) and draws other probes and another Lanczos start. For each seed it computes the
dense Hessian (torch.autograd.functional.hessian, float64) of the subsample the probe used, and
once that of the whole sample, and reports per quantity:
  - z_total = (probe − whole) / √(se² + s²·(1 − n/N)), what bench/RESULTS.md's "trace z" is;
  - z_probes = (probe − subsample) / se: the probes' error bar alone (trace only; Lanczos's
    error on lambda_max is far below its sampling error);
  - z_sampling = (subsample − whole) / (s·√(1 − n/N)): the sampling error bar alone;
with the fraction within 2, its Wilson 95% interval, and the mean and spread of each z (about
0 and 1 when the bars are honest; with s from G = 8 groups and se from 10 probes, t-tails put
about 92% within 2). Measured, never a timed test.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.func import functional_call

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import curvature  # noqa: E402  (the benchmark's models and criteria)
from provenance import stamp  # noqa: E402
from trace_coverage import wilson  # noqa: E402

from thermocal.config import Config  # noqa: E402
from thermocal.measure import probe  # noqa: E402

MODEL = "digits"  # the one benchmark model whose dense Hessian is cheap enough to compute per seed
SUBSAMPLE = 512  # the Hessian's examples of each draw: half the model's 1,024


def dense_hessian(model: torch.nn.Module, loss_fn, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The float64 Hessian of loss_fn(model(x), y) over the flattened trainable parameters."""
    model = copy.deepcopy(model).double()
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    flat = torch.cat([p.detach().reshape(-1) for _, p in named])

    def loss(v: torch.Tensor) -> torch.Tensor:
        pieces = torch.split(v, [p.numel() for _, p in named])
        params = {name: piece.reshape(p.shape) for (name, p), piece in zip(named, pieces)}
        return loss_fn(functional_call(model, params, (x.double(),)), y)

    return torch.autograd.functional.hessian(loss, flat)


def used_examples(n: int, settings: Config) -> torch.Tensor:
    """The probe's K·B examples in its order (method.md §0): a seeded permutation, cut to whole minibatches."""
    k = n // settings.batch_size
    return torch.randperm(n, generator=torch.Generator().manual_seed(settings.seed))[: k * settings.batch_size]


def truth(model, loss_fn, x, y) -> dict:
    hessian = dense_hessian(model, loss_fn, x, y)
    return {"lambda_max": float(torch.linalg.eigvalsh(hessian)[-1]), "trace": float(torch.diagonal(hessian).sum())}


def draw(model, loss_fn, x, y, seed: int, whole: dict) -> dict:
    # the thermocal_default cell's settings, with the Hessian's trace measured (the default reads tr G, [H15]),
    # on a subsample of SUBSAMPLE examples (the default's Hessian is the whole sample's)
    settings = Config(batch_size=min(32, len(x) // 4), loss="bench", seed=seed, hessian_trace=True,
                      hessian_samples=SUBSAMPLE)
    result = probe(model, x, y, settings, torch.device("cpu"), loss_fn=loss_fn)
    h, n, total = result.measurements.hessian, result.hessian_samples, len(x)
    index = used_examples(total, settings)[:n]
    sub = truth(model, loss_fn, x[index], y[index])
    shrink = math.sqrt(1 - n / total)  # a subsample of n of the N examples, against the whole
    out = {"seed": seed, "hessian_examples": n, "subsample": sub}
    for name, se, s in (("trace", h.trace_stderr, h.trace_sampling_stderr), ("lambda_max", 0.0, h.lambda_max_stderr)):
        value = getattr(h, name)
        s = s if s is not None else math.nan
        out[name] = {
            "value": value, "stderr": se, "sampling_stderr": s,
            "z_total": (value - whole[name]) / math.sqrt(se ** 2 + (s * shrink) ** 2),
            "z_probes": (value - sub[name]) / se if se > 0 else None,
            "z_sampling": (sub[name] - whole[name]) / (s * shrink) if s > 0 else None,
        }
    return out


def summarize(zs: list[float]) -> dict:
    zs = [z for z in zs if z is not None and math.isfinite(z)]
    if not zs:
        return {"n": 0}
    within = sum(abs(z) <= 2 for z in zs)
    return {"n": len(zs), "within_2": within, "within_2_wilson95": wilson(within, len(zs)),
            "mean": statistics.fmean(zs), "sd": statistics.stdev(zs) if len(zs) > 1 else 0.0,
            "largest": max(zs, key=abs)}


def coverage_columns(r: dict) -> str:
    """`|z| ≤ 2 (Wilson 95%) | mean | sd` of a `summarize` row, as markdown table cells."""
    low, high = r["within_2_wilson95"]
    return f"{r['within_2'] / r['n']:.0%} ({low:.0%}–{high:.0%}) | {r['mean']:+.2f} | {r['sd']:.2f}"


def table(results: dict) -> str:
    lines = ["| quantity | z | draws | |z| ≤ 2 (Wilson 95%) | mean | sd | largest |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, rows in results["summary"].items():
        for kind, r in rows.items():
            if r["n"]:
                lines.append(f"| {name} | {kind} | {r['n']} | {coverage_columns(r)} | {r['largest']:+.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=100, help="probe seeds (default 100)")
    parser.add_argument("--quick", action="store_true", help="3 seeds")
    parser.add_argument("--out", type=Path, default=HERE / "subsample_coverage.json")
    args = parser.parse_args()
    seeds = 3 if args.quick else args.seeds
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    model, x, y, _ = curvature.build(MODEL, args.quick)
    loss_fn = curvature._criterion(MODEL)
    start = time.perf_counter()
    whole = truth(model, loss_fn, x, y)
    draws = []
    for seed in range(seeds):
        draws.append(draw(model, loss_fn, x, y, seed, whole))
        t, lam = draws[-1]["trace"], draws[-1]["lambda_max"]
        print(f"seed {seed:3d}  trace z {t['z_total']:+.2f}  lambda_max z {lam['z_total']:+.2f}", flush=True)
    summary = {name: {kind: summarize([d[name][kind] for d in draws]) for kind in ("z_total", "z_probes", "z_sampling")}
               for name in ("trace", "lambda_max")}
    results = {"provenance": stamp(sys.argv, quick=args.quick, model=MODEL, seeds=seeds,
                                   hessian_samples=SUBSAMPLE),
               "examples": len(x), "whole": whole, "seconds": time.perf_counter() - start, "summary": summary,
               "draws": draws}
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))


if __name__ == "__main__":
    main()
