"""What issue 3's two unmet targets would cost: probe time ≤ 1/3 of pyhessian's defaults, and
probe peak memory ≤ 3× one training step.

    python bench/targets.py            # full sizes; references from bench/results.json; writes bench/targets.json
    python bench/targets.py --quick    # tiny sizes, seconds, no references: keeps the script from rotting

Same models and data as bench/curvature.py. Every row is its own child process (so its peak
resident memory is its own), and each model's rows run one after another in the same run as
the two yardsticks, so the ratios compare like with like:
  - `pyhessian`: pyhessian 0.1's defaults, lambda_max and trace (the time target's yardstick);
  - `step`: one SGD step on the whole sample (the memory target's yardstick);
  - `full accuracy`: bench/curvature.py's `thermocal` contender, what `--lambda-min` and the
    literal rules run (gradient noise, Lanczos for both ends to --eig-rtol 1e-3 on the whole
    sample, Hutch++ trace to 5%); not the v2 default probe, which resolves lambda_max alone on
    a Hessian subsample (bench/curvature.py's `thermocal_default`). The rows below vary it;
  - `eig-rtol 3e-3`, `eig-rtol 1e-2`: the same with a looser residual test: fewer products, and
    what that does to the error;
  - `lambda_max + trace`: thermocal's engine on pyhessian's own task: Lanczos for the top end
    alone (rtol 1e-3) and the same Hutch++ trace, no lambda_min, no gradient noise;
  - `basis N rows` (transformer): --lanczos-memory set to N rows of the basis, so Lanczos
    restarts thickly: less memory, more products;
  - `fwd-rev` (transformer): --hvp fwd-rev, the other product;
  - `live tensors`: the peak of live tensor bytes (torch.profiler's memory timeline, which
    sees no allocator) of one training step, and of the full-accuracy operator building its
    gradient graph and taking two products: resident-memory peaks include what the C
    allocator keeps, this does not.
Errors are relative to the reference cells of bench/results.json (none with --quick).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import curvature  # noqa: E402  (the benchmark's models, sizes, cells and memory readings)
import models as zoo  # noqa: E402
from provenance import stamp  # noqa: E402

from thermocal import measure  # noqa: E402
from thermocal.config import Config  # noqa: E402
from thermocal.curvature.memory import GIB  # noqa: E402
from thermocal.curvature.native import NativeEngine  # noqa: E402
from thermocal.noise import split_batches  # noqa: E402

TRACE_RTOL = 0.05  # the benchmark's full-accuracy probe (bench/curvature.py cell_thermocal)
COMMON = ["pyhessian", "step", "full accuracy", "eig-rtol 3e-3", "eig-rtol 1e-2", "lambda_max + trace", "live tensors"]
MEMORY_ROWS = ["basis 24 rows", "basis 12 rows", "fwd-rev"]
ROWS = {name: COMMON + (MEMORY_ROWS if name == "transformer" else []) for name in curvature.MODELS}


def _settings(row: str, dim: int, examples: int) -> Config:
    extra: dict = {}
    if row.startswith("eig-rtol"):
        extra["eig_rtol"] = float(row.split()[1])
    elif row.startswith("basis"):
        extra["lanczos_memory"] = int(row.split()[1]) * dim * 4 / GIB  # float32 rows
    elif row == "fwd-rev":
        extra["hvp"] = "fwd-rev"
    return Config(lambda_min=True, hessian_samples=None, batch_size=min(32, examples // 4), loss="bench", trace_rtol=TRACE_RTOL,
                  d_eff="hessian", **extra)  # the full-accuracy probe reads tr(H) (curvature.py's thermocal cell)


def _full_engine(model, x, y, loss_fn) -> NativeEngine:
    """The full-accuracy probe's native engine (micro-batches, product mode) on the whole sample."""
    settings = Config(lambda_min=True, hessian_samples=None, loss="bench", trace_rtol=TRACE_RTOL, d_eff="hessian")
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return NativeEngine(model, loss_fn, split_batches(x, y, settings.micro_batch), [p for _, p in named],
                        [n for n, _ in named], settings)


def _top_and_trace(model, x, y, loss_fn) -> dict:
    """Lanczos for lambda_max alone, then the same Hutch++ trace with its basis (method.md
    [H7], [H8]): the full-accuracy probe's machinery on pyhessian's task."""
    engine = _full_engine(model, x, y, loss_fn)
    generator = torch.Generator().manual_seed(engine.settings.seed)
    start = time.perf_counter()
    run = engine.krylov(generator, top_k=1, bottom_k=0)
    lanczos_time, lanczos_hvps = time.perf_counter() - start, engine.hvps
    top = run.largest[0]
    trace, _ = engine.trace((run.basis, float(run.alphas.sum())), max(abs(top.value), run.abs_trace), generator)
    engine.release()
    return {"time": time.perf_counter() - start, "hvps": engine.hvps, "lambda_max": top.value, "lambda_min": None,
            "trace": trace.value, "converged": top.converged and trace.converged,
            "timings": {"extremes": lanczos_time, "trace": time.perf_counter() - start - lanczos_time},
            "hvps_extremes": lanczos_hvps}


def _live_peak_mb(fn) -> float:
    """The most tensor bytes alive at once on the CPU while `fn` runs, from torch.profiler's memory timeline."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True) as prof:
        fn()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "timeline.json"
        prof.export_memory_timeline(str(path), device="cpu")
        _, sizes = json.loads(path.read_text())
    return max(sum(row) for row in sizes) / 2**20


def _live_tensors(model, x, y, loss_fn) -> dict:
    """Live tensor peaks of one training step and of the operator's graph and two products."""
    step = _live_peak_mb(lambda: loss_fn(model(x), y).backward())
    model.zero_grad(set_to_none=True)
    op = _full_engine(model, x, y, loss_fn).operator
    v = torch.randn(op.dim, generator=torch.Generator().manual_seed(0))  # float32: products in float32
    product = _live_peak_mb(lambda: [op.matvec(v) for _ in range(2)])
    return {"time": 0.0, "live_step_mb": step, "live_product_mb": product}


def run_row(model_name: str, row: str, folder: Path, quick: bool) -> dict:
    model, x, y, loss_fn = curvature.load_saved(model_name, folder, quick)
    baseline = curvature._rss_mb()
    if row in ("pyhessian", "step"):
        out = getattr(curvature, f"cell_{row}")(model, x, y, loss_fn)
    elif row == "lambda_max + trace":
        out = _top_and_trace(model, x, y, loss_fn)
    elif row == "live tensors":
        out = _live_tensors(model, x, y, loss_fn)
    else:
        start = time.perf_counter()
        settings = _settings(row, zoo.num_params(model), len(x))
        result = measure.probe(model, x, y, settings, torch.device("cpu"), loss_fn=loss_fn)
        h = result.measurements.hessian
        out = {"time": time.perf_counter() - start, "hvps": h.hvps, "lambda_max": h.lambda_max, "lambda_min": h.lambda_min,
               "trace": h.trace, "converged": h.converged, "timings": result.timings,
               "hvps_extremes": h.details["lambda_max"].hvps}
    out["peak_extra_mb"] = curvature._peak_mb() - baseline
    return out


def table(results: dict) -> str:
    lines = ["| model | row | wall s | / pyhessian | HVPs | Lanczos HVPs | trace s | extra peak MB | / step | "
             "lambda_max err | lambda_min err | converged |", "| --- |" * 1 + " --- |" * 11]
    fmt = lambda v, spec: "—" if v is None else format(v, spec)  # noqa: E731
    for model_name, rows in results["models"].items():
        ref = results["references"].get(model_name, {})
        yard_time = rows.get("pyhessian", {}).get("time")
        yard_peak = rows.get("step", {}).get("peak_extra_mb")
        for row, c in rows.items():
            if "error" in c:
                lines.append(f"| {model_name} | {row} | failed: {c['error']} |||||||||||")
                continue
            if row == "step":
                lines.append(f"| {model_name} | step | {c['time']:.2f} | | | | | {c['peak_extra_mb']:.0f} | 1 | | | |")
                continue
            if row == "live tensors":
                continue  # the second table
            lines.append(
                f"| {model_name} | {row} | {c['time']:.2f} | {fmt(c['time'] / yard_time if yard_time else None, '.2f')} "
                f"| {c['hvps']} | {fmt(c.get('hvps_extremes'), 'd')} | {fmt(c.get('timings', {}).get('trace'), '.2f')} "
                f"| {c['peak_extra_mb']:.0f} | {fmt(c['peak_extra_mb'] / yard_peak if yard_peak else None, '.2f')} "
                f"| {fmt(curvature.relative_error(c['lambda_max'], ref.get('lambda_max')), '.1e')} "
                f"| {fmt(curvature.relative_error(c['lambda_min'], ref.get('lambda_min')), '.1e')} "
                f"| {fmt(c.get('converged'), '')} |")
    lines += ["", "| model | live tensors, one step MB | live tensors, gradient graph + two products MB | ratio |",
              "| --- | --- | --- | --- |"]
    for model_name, rows in results["models"].items():
        c = rows.get("live tensors", {})
        if "live_step_mb" in c:
            lines.append(f"| {model_name} | {c['live_step_mb']:.1f} | {c['live_product_mb']:.1f} | "
                         f"{c['live_product_mb'] / c['live_step_mb']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(curvature.MODELS))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=HERE / "targets.json")
    parser.add_argument("--references", type=Path, default=HERE / "results.json")
    parser.add_argument("--row", nargs=2, metavar=("MODEL", "ROW"), help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    if args.row:
        curvature.emit(lambda: run_row(args.row[0], args.row[1], args.folder, args.quick))
        return
    earlier = None if args.quick else json.loads(args.references.read_text())
    results = {"provenance": stamp(sys.argv, quick=args.quick, references_from=_commit_of(earlier)),
               "models": {}, "sizes": {}, "references": {}}
    with tempfile.TemporaryDirectory() as folder:
        for model_name in args.models.split(","):
            model, x, y, _ = curvature.build(model_name, args.quick)
            torch.save({"state": model.state_dict(), "x": x, "y": y}, Path(folder) / f"{model_name}.pt")
            results["sizes"][model_name] = {"params": zoo.num_params(model), "examples": len(x)}
            if earlier is not None:
                results["references"][model_name] = curvature.reference_for(earlier, args.references, model_name, model,
                                                                             x, y)
            results["models"].setdefault(model_name, {})
            for row in ROWS[model_name]:
                results["models"][model_name][row] = curvature.child_result(__file__, "--row", model_name, row, folder,
                                                                            args.quick)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))


def _commit_of(results: dict | None) -> str | None:
    """The commit the reference cells were computed by (None for --quick, "unstamped" for an old file)."""
    return None if results is None else results.get("provenance", {}).get("commit", "unstamped")


if __name__ == "__main__":
    main()
