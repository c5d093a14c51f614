"""The engine on a GPU against the same engine on the CPU and pyhessian on the GPU (issue 8).

    bash bench/gpu_check.sh           # on a machine with CUDA: tests/test_gpu.py, then this
    python bench/gpu.py --out gpu.json

For each benchmark model of bench/curvature.py (full sizes): one gradient and one Hessian-vector
product on the GPU (median of 5, synchronised); thermocal's default probe (the settings of
curvature.py's thermocal cell) on the GPU, with and without --vmap-probes, and on the CPU;
pyhessian's defaults (lambda_max + trace, cuda=True) on the GPU. Reported: wall time, HVPs and
the relative difference of lambda_max, lambda_min and the trace from the CPU run. Writes the
cells, stamped (bench/provenance.py), to --out and prints their markdown table. Exits 2 without
a CUDA device.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import curvature  # noqa: E402
from provenance import stamp  # noqa: E402

MODELS = ["mlp", "cnn", "transformer"]


def _synchronized(fn, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def _median(fn, device: torch.device, repeats: int = 5) -> float:
    fn()
    return sorted(_synchronized(fn, device) for _ in range(repeats))[repeats // 2]


def unit_costs(model, x, y, loss_fn, device: torch.device) -> dict:
    from thermocal.curvature.hvp import HessianOperator

    params = list(model.parameters())
    op = HessianOperator(model, loss_fn, [(x, y)], params)
    v = torch.randn(op.dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64).to(device)
    with sdpa_kernel([SDPBackend.MATH]):
        gradient = _median(lambda: torch.autograd.grad(loss_fn(model(x), y), params), device)
    hvp = _median(lambda: op.matvec(v), device)
    op.release()
    return {"gradient": gradient, "hvp": hvp, "hvp_per_gradient": hvp / gradient}


def thermocal_probe(model, x, y, loss_fn, device: torch.device, vmap: bool) -> dict:
    from thermocal.config import Config
    from thermocal.measure import probe

    settings = Config(lambda_min=True, hessian_samples=None, batch_size=min(32, len(x) // 4), loss="bench", trace_rtol=0.05, vmap_probes=vmap,
                      d_eff="hessian")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    done = []
    seconds = _synchronized(lambda: done.append(probe(model, x, y, settings, device, loss_fn=loss_fn)), device)
    result = done[0]
    h = result.measurements.hessian
    out = {"time": seconds, "hvps": h.hvps, "lambda_max": h.lambda_max, "lambda_min": h.lambda_min, "trace": h.trace,
           "trace_stderr": h.trace_stderr, "converged": h.converged, "timings": result.timings}
    if device.type == "cuda":
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def pyhessian_defaults(model, x, y, loss_fn) -> dict:
    from thermocal.curvature.pyhessian_engine import _CountingHessian

    torch.manual_seed(0)
    result = {}

    def run():
        with sdpa_kernel([SDPBackend.MATH]):
            h = _CountingHessian(model, loss_fn, data=(x, y), cuda=True, on_hvp=lambda: None)
            with h.counting():
                eig, _ = h.eigenvalues()
                samples = h.trace()
            result.update(hvps=h.hvps, lambda_max=float(eig[0]), trace=float(sum(samples) / len(samples)))

    result["time"] = _synchronized(run, torch.device("cuda"))
    return result


def relative(a: float | None, b: float | None) -> str:
    return "—" if a is None or b is None else f"{abs(a - b) / abs(b):.1e}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--quick", action="store_true", help="The tiny sizes of curvature.py --quick.")
    parser.add_argument("--out", type=Path, default=HERE / "gpu.json")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("bench/gpu.py: no CUDA device here", file=sys.stderr)
        raise SystemExit(2)
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    results = {"provenance": stamp(sys.argv, quick=args.quick, device=torch.cuda.get_device_name(0)), "models": {}}
    rows = ["| model | gradient ms | HVP ms | HVP/gradient | probe GPU s | HVPs | GPU peak MB | + vmap-probes s | "
            "probe CPU s | pyhessian GPU s (λmax+trace) | λmax diff | λmin diff | trace diff |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name in args.models.split(","):
        model, x, y, loss_fn = curvature.build(name, args.quick)
        cells = {}
        on_cpu = thermocal_probe(model, x, y, loss_fn, cpu, vmap=False)  # the probe moves model and sample itself
        model = model.to(cuda)
        cells["unit"] = unit_costs(model, x.to(cuda), y.to(cuda), loss_fn, cuda)
        cells["gpu"] = thermocal_probe(model, x, y, loss_fn, cuda, vmap=False)
        cells["gpu_vmap"] = thermocal_probe(model, x, y, loss_fn, cuda, vmap=True)
        cells["cpu"] = on_cpu
        cells["pyhessian_gpu"] = pyhessian_defaults(model, x, y, loss_fn)
        results["models"][name] = cells
        g, c, u = cells["gpu"], cells["cpu"], cells["unit"]
        rows.append(f"| {name} | {1e3 * u['gradient']:.2f} | {1e3 * u['hvp']:.2f} | {u['hvp_per_gradient']:.2f} | "
                    f"{g['time']:.2f} | {g['hvps']} | {g['peak_gpu_mb']:.0f} | {cells['gpu_vmap']['time']:.2f} | "
                    f"{c['time']:.2f} | {cells['pyhessian_gpu']['time']:.2f} | {relative(g['lambda_max'], c['lambda_max'])} | "
                    f"{relative(g['lambda_min'], c['lambda_min'])} | {relative(g['trace'], c['trace'])} |")
        print(rows[-1], flush=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nDevice: {results['provenance']['device']}, torch {results['provenance']['torch']}\n")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
