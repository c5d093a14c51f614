"""How the probe's cost grows: with the sample size N, the parameter count d, and processes.

    python bench/scaling.py                # writes bench/scaling.json and bench/SCALING.md (generated from it)
    python bench/scaling.py --quick        # a fast smoke run (used by the tests)
    python bench/scaling.py --report       # SCALING.md again from scaling.json (never edit it by hand)

Each cell runs in its own child process so that its peak resident memory is its own. Cells:
- N: the 64-w-256-10 MLP of bench/models.py at w = 320 (105k parameters), N examples;
- d: the same MLP at N = 512 with growing width w;
- processes: the CLI on one process, and under torchrun on two (gloo), on the same files;
- memory: the same MLP, untrained (memory does not depend on the weights' values), at N = 128
  and widths up to about 100M parameters, with the default settings but at most 150 Lanczos
  products: peak resident memory against d, with the Lanczos basis bounded by
  --lanczos-memory (4 GiB; float32 rows past which Lanczos restarts).
The expected growth is linear in N and about linear in d (a Hessian-vector product costs a
few gradients, and the Lanczos reorthogonalisation adds k·d per step); the script fits the
log-log slope of the time per HVP and says whether it is within [0.7, 1.3].
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from provenance import stamp  # noqa: E402

FULL = {"n": [512, 1024, 2048, 4096], "widths": [80, 320, 1280, 5120, 20480], "processes_n": 4096,
        "memory_widths": [20480, 81920, 327680]}
QUICK = {"n": [128, 256], "widths": [16, 64], "processes_n": 256, "memory_widths": [64]}
MEMORY_N, MEMORY_MAX_ITER = 128, 150


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cell(n: int, width: int, memory: bool = False) -> dict:
    """One probe through the library (the default settings), in this process. A memory cell
    uses the untrained model and caps the Lanczos products at MEMORY_MAX_ITER."""
    from models import mlp, num_params
    from thermocal.config import Config
    from thermocal.measure import probe

    model, x, y, _ = mlp(n=n, width=width, train=not memory)
    base = _peak_mb()
    settings = Config(lambda_min=True, hessian_samples=None, batch_size=32, max_iter=MEMORY_MAX_ITER if memory else None,
                      d_eff="hessian")  # the full-accuracy probe: both ends and tr(H), no tr G
    start = time.perf_counter()
    result = probe(model, x, y, settings, torch.device("cpu"))
    elapsed = time.perf_counter() - start
    h = result.measurements.hessian
    curvature = sum(v for k, v in result.timings.items() if k != "gradient_noise")
    d = num_params(model)
    return {"n": n, "width": width, "d": d, "time": elapsed, "hvps": h.hvps, "timings": result.timings,
            "time_per_hvp": curvature / max(h.hvps, 1), "peak_mb": _peak_mb(), "extra_peak_mb": _peak_mb() - base,
            "base_mb": base, "model_mb": 4 * d / 2**20, "converged": h.converged,
            "lanczos": h.details["lambda_max"].method, "lanczos_iterations": h.details["lambda_max"].iterations,
            "unconverged": h.unconverged(result.num_params)}


def run_child(n: int, width: int, memory: bool = False) -> dict:
    command = [sys.executable, __file__, "--cell", str(n), str(width)] + (["--memory"] if memory else [])
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        return {"n": n, "width": width, "error": (done.stderr.strip().splitlines() or ["?"])[-1][:200]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def processes(n: int, folder: Path) -> list[dict]:
    """The CLI on 1 and 2 processes, same files; wall time includes start-up."""
    from models import mlp

    model, x, y, _ = mlp(n=n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(model), str(folder / "model.pt"))
    torch.save({"inputs": x, "targets": y}, folder / "data.pt")
    out = []
    for count in (1, 2):
        result = folder / f"p{count}.json"
        prefix = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(count), "--standalone", "-m"] if count > 1 else [sys.executable, "-m"]
        command = prefix + ["thermocal", "probe", str(folder / "model.pt"), str(folder / "data.pt"), "--micro-batch", "512",
                            "--out", str(result), "-q"]
        env = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 2) // count))}
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, env=env)
        wall = time.perf_counter() - start
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        if done.returncode != 0:
            out.append({"processes": count, "error": done.stderr.strip()[-200:]})
            continue
        doc = json.loads(result.read_text())
        out.append({"processes": count, "wall": wall, "timings": doc["timings"], "hvps": doc["measurements"]["hessian"]["hvps"],
                    "lambda_max": doc["measurements"]["hessian"]["lambda_max"], "children_peak_mb": peak})
    return out


def slope(points: list[tuple[float, float]]) -> float | None:
    pts = [(math.log(a), math.log(b)) for a, b in points if a > 0 and b > 0]
    if len(pts) < 2:
        return None
    mx, my = sum(p[0] for p in pts) / len(pts), sum(p[1] for p in pts) / len(pts)
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    return sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx


def markdown(results: dict) -> str:
    p = results["provenance"]
    return "\n".join([
        "# Probe cost against N, d and processes (generated by `python bench/scaling.py`; never edit by hand)", "",
        f"One run of commit `{p['commit'][:12]}` ({'dirty' if p['dirty'] else 'clean'} tree), thermocal {p['thermocal']}, "
        f"torch {p['torch']}, Python {p['python']}, {p['created']}; command `{' '.join(p['argv'])}`; machine {p['machine']}"
        + (" (quick sizes)" if p["quick"] else "") + ". Every cell is in `bench/scaling.json`; what each cell runs is "
        "the docstring of bench/scaling.py. The N and d cells probe both ends of the spectrum on the whole sample "
        "(`--lambda-min`, no Hessian subsample), so that every size does the same work; \"s per HVP\" is the "
        "curvature phases' time over their Hessian-vector products, Lanczos reorthogonalisation included.", "",
        tables(results)])


def tables(results: dict) -> str:
    lines = []
    fixed_d = {c["d"] for c in results["by_n"] if "d" in c}
    fixed_n = {c["n"] for c in results["by_d"]}
    for key, label in (("by_n", f"N (d = {', '.join(f'{d:,}' for d in fixed_d)})"),
                       ("by_d", f"d (N = {', '.join(map(str, fixed_n))})")):
        lines += [f"### Growth with {label}", "",
                  "| N | d | wall s | HVPs | s per HVP | extra peak MB | converged |", "| --- | --- | --- | --- | --- | --- | --- |"]
        for c in results[key]:
            if "error" in c:
                lines.append(f"| {c['n']} | w={c['width']} | error: {c['error']} | | | | |")
                continue
            lines.append(f"| {c['n']} | {c['d']:,} | {c['time']:.2f} | {c['hvps']} | {c['time_per_hvp']:.4f} | "
                         f"{c['extra_peak_mb']:.0f} | {c['converged']} |")
        axis = "n" if key == "by_n" else "d"
        fitted = slope([(c[axis], c["time_per_hvp"]) for c in results[key] if "error" not in c])
        verdict = "—" if fitted is None else ("within" if 0.7 <= fitted <= 1.3 else "OUTSIDE")
        lines += ["", f"log-log slope of s per HVP against {axis}: "
                  f"{'—' if fitted is None else f'{fitted:.2f}'} ({verdict} the expected [0.7, 1.3])", ""]
    lines += ["### Processes (CLI, gloo on CPU, same files; wall includes start-up)", "",
              "| processes | wall s | gradient_noise s | extremes s | trace s | HVPs | lambda_max |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for c in results["processes"]:
        if "error" in c:
            lines.append(f"| {c['processes']} | error: {c['error']} | | | | | |")
            continue
        t = c["timings"]
        lines.append(f"| {c['processes']} | {c['wall']:.2f} | {t.get('gradient_noise', 0):.2f} | {t.get('extremes', 0):.2f} | "
                     f"{t.get('trace', 0):.2f} | {c['hvps']} | {c['lambda_max']:.10g} |")
    lines += ["", f"### Peak memory against d (N = {MEMORY_N}, untrained, at most {MEMORY_MAX_ITER} Lanczos products)", "",
              "| d | model MB (float32) | peak RSS MB | extra peak MB | basis MB (rows) | Lanczos products | HVPs | "
              "s per HVP | converged |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for c in results.get("memory", []):
        if "error" in c:
            lines.append(f"| w={c['width']} | error: {c['error']} | | | | | | | |")
            continue
        restarts = c["lanczos"].split(", ")[-1].replace(" within --lanczos-memory", "") if "restart" in c["lanczos"] else "no restart"
        rows = min(c["lanczos_iterations"], (4 << 30) // (4 * c["d"]))  # the default 4 GiB of float32 rows
        lines.append(f"| {c['d']:,} | {c['model_mb']:.0f} | {c['peak_mb']:.0f} | {c['extra_peak_mb']:.0f} | "
                     f"{rows * 4 * c['d'] / 2**20:.0f} ({rows}) | {c['lanczos_iterations']}, {restarts} | {c['hvps']} | "
                     f"{c['time_per_hvp']:.3f} | {c['converged']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=HERE / "scaling.json")
    parser.add_argument("--cell", nargs=2, type=int, help=argparse.SUPPRESS)
    parser.add_argument("--memory", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--markdown", type=Path, default=HERE / "SCALING.md")
    parser.add_argument("--report", action="store_true", help="regenerate the markdown from --out's JSON")
    args = parser.parse_args()
    if args.cell:
        print(json.dumps(cell(*args.cell, memory=args.memory)))
        return
    if args.report:
        args.markdown.write_text(markdown(json.loads(args.out.read_text())))
        return
    sizes = QUICK if args.quick else FULL
    results = {"provenance": stamp(sys.argv, quick=args.quick, sizes=sizes, memory_n=MEMORY_N,
                                   memory_max_iter=MEMORY_MAX_ITER)}
    results["memory"] = [run_child(MEMORY_N, w, memory=True) for w in sizes["memory_widths"]]
    results["by_n"] = [run_child(n, 320 if not args.quick else 64) for n in sizes["n"]]
    results["by_d"] = [run_child(512 if not args.quick else 128, w) for w in sizes["widths"]]
    with tempfile.TemporaryDirectory() as folder:
        results["processes"] = processes(sizes["processes_n"], Path(folder))
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    args.markdown.write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
