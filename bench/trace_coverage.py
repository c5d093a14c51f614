"""How often does the default probe's trace interval cover the true trace? (issue 3's trace target)

    python bench/trace_coverage.py                  # bench models at full size, references from bench/results.json
    python bench/trace_coverage.py --quick          # tiny sizes, exact references: keeps the script from rotting

The default probe reports `trace ± stderr` from Hutch++ with the Lanczos basis as its sketch
(Lanczos for lambda_max alone, at least 20 steps, [H7], [H12]), stopping once the standard
error is --trace-rtol (default 0.035) of the spectral scale after at least 10 probes (method.md
[H3]). This script runs that estimator with the default settings on the whole sample: the
reference is the whole sample's trace, so it measures the probes' error, not the subsample's
(which the default's Hessian subsample adds, and which the probe does not report). One run's
z = (trace − reference) / √(se² + se_ref²) says little: a 2-se interval misses about one run
in twenty by design. This script measures
the miss rate. Per model it runs the default probe's Lanczos once (the basis is a fixed part of
the estimator: its tr(QHQᵀ) is exact) and then the trace estimator with `--seeds` independent
probe generators, and reports the fraction of seeds with |z| ≤ 1 and |z| ≤ 2 (a Wilson 95%
interval beside it), the mean error over the median se (a bias would show there), the error's
spread over the median se (near 1 when the reported se is the real spread) and the probes used.
With 10 probes the se comes from 10 samples: a t-distribution with 9 degrees of freedom puts
92.3% within 2 and 65.7% within 1, so that is what an honest interval covers.

References: full size, the reference cells of bench/results.json (dense trace for `digits`,
a 0.2% float64 Hutch++ run otherwise: its se enters z); --quick, the exact trace Σ e_iᵀHe_i
from d unit-vector products.
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

import curvature  # noqa: E402  (the benchmark's models, sizes and criteria)
from provenance import stamp  # noqa: E402

from thermocal.config import Config  # noqa: E402
from thermocal.curvature.native import NativeEngine  # noqa: E402
from thermocal.noise import split_batches  # noqa: E402


def exact_trace(op) -> float:
    """Σ e_iᵀ H e_i in chunks of unit vectors: d products, exact up to rounding."""
    total, chunk = 0.0, 256
    for start in range(0, op.dim, chunk):
        rows = torch.arange(start, min(start + chunk, op.dim))
        units = torch.zeros(len(rows), op.dim, dtype=torch.float64, device=op.device)
        units[torch.arange(len(rows)), rows] = 1.0
        total += float(op.matmat(units)[torch.arange(len(rows)), rows].sum())
    return total


def wilson(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion."""
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def coverage(name: str, quick: bool, seeds: int, reference: dict | None) -> dict:
    model, x, y, _ = curvature.build(name, quick)
    loss_fn = curvature._criterion(name)
    settings = Config(hessian_samples=None, batch_size=min(32, len(x) // 4), loss="bench")  # the default's estimator
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    engine = NativeEngine(model, loss_fn, split_batches(x, y, settings.micro_batch), [p for _, p in named],
                          [n for n, _ in named], settings)
    op = engine.operator
    try:
        if reference is None:
            reference = {"trace": exact_trace(op), "trace_stderr": 0.0, "method": "exact, d unit-vector products"}
        generator = torch.Generator().manual_seed(0)
        start = time.perf_counter()
        run = engine.krylov(generator, top_k=1, bottom_k=0)  # lambda_max alone, as the default
        scale = max(abs(run.largest[0].value), run.abs_trace)
        krylov = (run.basis, float(run.alphas.sum()))
        draws = []
        for seed in range(1, seeds + 1):
            estimate, _ = engine.trace(krylov, scale, torch.Generator().manual_seed(seed))
            z = (estimate.value - reference["trace"]) / math.hypot(estimate.stderr, reference["trace_stderr"])
            draws.append({"seed": seed, "trace": estimate.value, "stderr": estimate.stderr, "probes": estimate.probes,
                          "converged": estimate.converged, "z": z})
        elapsed = time.perf_counter() - start
    finally:
        engine.release()
    return {"params": op.dim, "examples": len(x), "reference": reference["trace"], "reference_stderr": reference["trace_stderr"],
            "reference_method": reference["method"], "lanczos_iterations": run.iterations, "seconds": elapsed,
            **summarize(draws, reference["trace"]), "draws": draws}


def summarize(draws: list[dict], reference: float) -> dict:
    """Coverage of |z| ≤ 1 and ≤ 2, and two checks of the error bar itself: the mean error over
    the median se (a bias shows there) and the error's spread over the median se (≈ 1 when
    the reported se is the estimator's real spread)."""
    zs = [d["z"] for d in draws]
    errors = [d["trace"] - reference for d in draws]
    se = statistics.median(d["stderr"] for d in draws)
    within = {k: sum(abs(z) <= k for z in zs) for k in (1, 2)}
    probes = [d["probes"] for d in draws]
    n = len(draws)
    return {
        "seeds": n, "within_1": within[1], "within_2": within[2], "within_2_wilson95": wilson(within[2], n),
        "mean_z": statistics.fmean(zs), "sd_z": statistics.stdev(zs) if n > 1 else 0.0,
        "mean_error_over_se": statistics.fmean(errors) / se,
        "mean_error_over_se_sem": (statistics.stdev(errors) / math.sqrt(n) / se) if n > 1 else math.inf,
        "sd_error_over_se": statistics.stdev(errors) / se if n > 1 else 0.0,
        "probes_median": statistics.median(probes), "probes_min": min(probes), "probes_max": max(probes),
        "relative_stderr_median": se / abs(reference),
    }


def table(results: dict) -> str:
    head = ("| model | params | seeds | probes (median, range) | |z| ≤ 1 | |z| ≤ 2 (Wilson 95%) | mean z "
            "| mean error / se | sd of error / se | median se / trace | reference se / se |")
    lines = [head, "| " + " | ".join(["---"] * 11) + " |"]
    for name, r in results["models"].items():
        low, high = r["within_2_wilson95"]
        se = r["relative_stderr_median"] * abs(r["reference"])
        lines.append(
            f"| {name} | {r['params']:,} | {r['seeds']} | {r['probes_median']:g} ({r['probes_min']}–{r['probes_max']}) "
            f"| {r['within_1'] / r['seeds']:.0%} | {r['within_2'] / r['seeds']:.0%} ({low:.0%}–{high:.0%}) "
            f"| {r['mean_z']:+.2f} | {r['mean_error_over_se']:+.2f} ± {r['mean_error_over_se_sem']:.2f} "
            f"| {r['sd_error_over_se']:.2f} | {r['relative_stderr_median']:.1e} | {r['reference_stderr'] / se:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(curvature.MODELS))
    parser.add_argument("--seeds", type=int, default=200, help="Probe generators per model (default 200).")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--reference-from", type=Path, default=HERE / "results.json",
                        help="Full size: the results file whose reference cells give the true trace.")
    parser.add_argument("--out", type=Path, default=HERE / "trace_coverage.json")
    args = parser.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    earlier = None if args.quick else json.loads(args.reference_from.read_text())
    references_from = None if earlier is None else earlier.get("provenance", {}).get("commit", "unstamped")
    results = {"provenance": stamp(sys.argv, quick=args.quick, trace_rtol=Config().trace_rtol, references_from=references_from),
               "models": {}}
    for name in args.models.split(","):
        reference = None
        if earlier is not None:
            model, x, y, _ = curvature.build(name, False)
            reference = curvature.reference_for(earlier, args.reference_from, name, model, x, y)
        results["models"][name] = coverage(name, args.quick, args.seeds, reference)
        r = results["models"][name]
        print(f"{name:12s} |z|<=2 {r['within_2']}/{r['seeds']}  mean z {r['mean_z']:+.2f}  "
              f"probes {r['probes_median']:g}  {r['seconds']:.0f} s", flush=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))


if __name__ == "__main__":
    main()
