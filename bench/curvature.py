"""Curvature benchmark: thermocal's native engine against pyhessian and curvlinops, same models, same run.

    pip install -e ".[test]" && pip install --no-deps curvlinops-for-pytorch einops einconv \
        linear_operator opt-einsum tqdm          # bench-only peer (see README "Benchmarks")
    python bench/curvature.py                    # all models; writes bench/results.json and bench/RESULTS.md
    python bench/curvature.py --quick            # tiny sizes, seconds: keeps the script from rotting
    python bench/curvature.py --rounds 1         # the wall-time target's pair (thermocal_default, pyhessian)
                                                 # once, not 5 times (their wall time is the median)
    python bench/curvature.py --report           # RESULTS.md again from results.json (never edit it by hand)
    python bench/curvature.py --references-from bench/results.json
                                                 # the same, reusing that run's reference cells (same weights
                                                 # and data, checked): about 15 minutes instead of 90

Each (model, contender) cell runs in its own child process, so that its peak resident memory
(ru_maxrss, minus the resident size once model and data are loaded) is its own. Models are
built once by the parent (on one thread, so the weights do not depend on the machine:
bench/models.py) and saved to a temporary folder; the JSON keeps each model's fingerprint, and
the scripts that reuse its reference cells (targets.py, trace_coverage.py) refuse them for any
other weights or data. Every timed cell runs first, the
(untimed, long) reference cells last. The JSON is stamped with commit, dirty flag, argv and
settings (bench/provenance.py), and RESULTS.md is generated from it. Reported per cell: wall time,
Hessian-vector products (HVPs), extra peak memory, and the relative error of lambda_max,
lambda_min and the trace against a reference:
  - `digits` (2.4k parameters): the dense Hessian (torch.autograd.functional.hessian + eigvalsh);
  - `mlp`, `cnn`, `transformer`: a float64 Lanczos run (thermocal's, no restarts) to residual
    rtol 1e-6 (its residual bounds the error by 1e-6 relative), and a float64 Hutch++ run to 0.2% for the trace; for mlp and cnn, ARPACK
    (scipy eigsh 'LA', tol 1e-10) on the same float64 products checks lambda_max independently.
    (ARPACK's smallest-algebraic search did not finish in 5 minutes on the 105k MLP: its
    restarts discard the Krylov space that resolves the cluster of small eigenvalues.)
Contenders:
  - thermocal_default: `thermocal probe` as it runs with no options, i.e. what calibration v2
    needs (gradient noise at B=32, lambda_max to the default rtol, the Gauss-Newton trace tr G
    of method.md [H15] for d_eff, no Hessian trace since 2026-12-06; the Hessian of the whole
    sample since 2026-12-07, of its first 512 examples before);
  - thermocal (full accuracy): gradient noise at B=32 + both extremes (Lanczos, rtol 1e-3) on
    the whole sample + trace (Hutch++ with the Lanczos basis) to 5% relative standard error
    (`--d-eff hessian`: no tr G);
  - pyhessian (defaults): `eigenvalues()` (power iteration, maxIter 100, tol 1e-3) and `trace()`
    (Hutchinson, maxIter 100, tol 1e-3); it has no lambda_min;
  - pyhessian_matched: pyhessian asked for thermocal's accuracy: power iteration at tol 1e-6
    (maxIter 1000) and its Hutchinson probes until the standard error is 5%;
  - curvlinops: `HessianLinearOperator` (forward-over-reverse, vmap) with scipy `eigsh`
    (which='LA' and 'SA', tol 1e-3, at most 60 restarts) and `hutchpp_trace` with 99 products.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import models as zoo  # noqa: E402
from provenance import stamp  # noqa: E402

MODELS = ["digits", "mlp", "cnn", "transformer"]
CONTENDERS = ["step", "timing", "thermocal_default", "thermocal", "pyhessian", "pyhessian_matched", "curvlinops", "reference"]
PAIR = ("thermocal_default", "pyhessian")  # the wall-time target's two contenders, repeated by --rounds
# Runs of the pair: with one run apiece the CNN's ratio was 0.66 in one run and 1.12 in the next, same probe code.
ROUNDS = 5
UNTIMED = {"reference"}  # run after every timed cell, so that other work during it cannot move a timing
QUICK_SIZES = {"digits": {}, "mlp": {"n": 256, "width": 32}, "cnn": {"n": 128},
               "transformer": {"n": 16, "context": 8, "width": 16, "layers": 1}}
TIMING_ROUNDS = 7  # interleaved rounds of the timing cell
CURVLINOPS_MAXITER = 60  # ARPACK restarts (about 18 products each at its default ncv = 20)
FULL_SIZES = {"digits": {}, "mlp": {}, "cnn": {"n": 1024}, "transformer": {"n": 128}}


def _rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class LMLoss(torch.nn.Module):
    """Next-token cross-entropy as a module with `reduction` (curvlinops reads it)."""

    reduction = "mean"

    def forward(self, logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return zoo.lm_loss(logits, tokens)


def build(name: str, quick: bool, train: bool = True):
    sizes = (QUICK_SIZES if quick else FULL_SIZES)[name]
    return zoo.BUILDERS[name](**sizes, train=train)


def _criterion(name: str):
    return LMLoss() if name == "transformer" else torch.nn.CrossEntropyLoss()


# ----------------------------------------------------------------------------- cells (children)


def cell_step(model, x, y, loss_fn):
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    start = time.perf_counter()
    opt.zero_grad()
    loss_fn(model(x), y).backward()
    opt.step()
    return {"time": time.perf_counter() - start}


def cell_timing(model, x, y, loss_fn):
    """One gradient against one HVP of each kind, on the whole sample as one micro-batch.

    Medians of TIMING_ROUNDS rounds; each round runs every kind in turn (interleaved, so that
    the machine's slow and fast spells fall on all kinds alike), twice, and times the second
    call: a kind's first call after another's pays for the allocator's page faults (on the
    transformer it took twice as long), which the probe's run of products of one kind, or a
    training loop's run of steps, does not. Three back-to-back repeats per kind, as before,
    moved the CNN's HVP/gradient ratio by 20% between runs."""
    from thermocal.curvature.hvp import HessianOperator

    params = list(model.parameters())
    dim = sum(p.numel() for p in params)
    vectors = torch.randn(8, dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    reuse = HessianOperator(model, loss_fn, [(x, y)], params, mode="rev-rev", vmap=True)
    half = len(x) // 2
    rebuild = HessianOperator(model, loss_fn, [(x[:half], y[:half]), (x[half:], y[half:])], params, mode="rev-rev")
    forward = HessianOperator(model, loss_fn, [(x, y)], params, mode="fwd-rev")
    kinds = {
        "gradient": (lambda: torch.autograd.grad(loss_fn(model(x), y), params), 1),
        "hvp_rev_rev_reused": (lambda: reuse.matvec(vectors[0]), 1),
        "hvp_rev_rev_batched8_per_vector": (lambda: reuse.matmat(vectors), 8),
        "hvp_rev_rev_rebuilt": (lambda: rebuild.matvec(vectors[0]), 1),
        "hvp_fwd_rev": (lambda: forward.matvec(vectors[0]), 1),
        "hvp_fwd_rev_batched8_per_vector": (lambda: forward.matmat(vectors), 8),
    }
    times: dict[str, list[float]] = {name: [] for name in kinds}
    for _ in range(TIMING_ROUNDS):
        for name, (fn, _) in kinds.items():
            fn()
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(times[name]) / per for name, (_, per) in kinds.items()} | {"rounds": TIMING_ROUNDS}


def cell_reference(model, x, y, loss_fn, name):
    from thermocal.curvature.hutchinson import deflated_probes, hutchinson
    from thermocal.curvature.hvp import HessianOperator
    from thermocal.curvature.lanczos import lanczos

    model = model.double()
    x = x.double() if x.is_floating_point() else x
    params = list(model.parameters())
    dim = sum(p.numel() for p in params)
    start = time.perf_counter()
    if name == "digits":
        flat = torch.cat([p.detach().reshape(-1) for p in params])
        names = [n for n, _ in model.named_parameters()]
        shapes = [p.shape for p in params]

        def loss_of(v):
            values, i = {}, 0
            for n, shape in zip(names, shapes):
                values[n] = v[i:i + shape.numel()].reshape(shape)
                i += shape.numel()
            return loss_fn(torch.func.functional_call(model, values, (x,)), y)

        h = torch.autograd.functional.hessian(loss_of, flat)
        eig = torch.linalg.eigvalsh(h)
        return {"time": time.perf_counter() - start, "method": "dense eigvalsh", "lambda_max": float(eig[-1]),
                "lambda_min": float(eig[0]), "trace": float(h.trace()), "trace_stderr": 0.0}
    op = HessianOperator(model, loss_fn, [(x, y)], params).counted()
    generator = torch.Generator().manual_seed(123)
    # The float64 basis costs 8·d bytes an iteration: 600 iterations of the 1M transformer are 4.8 GB.
    run = lanczos(op, torch.randn(dim, generator=generator, dtype=torch.float64), rtol=1e-6,
                  max_iter=600 if name == "transformer" else 2000)
    lam_max, lam_min = run.largest[0].value, run.smallest[0].value
    basis, offset = run.basis, float(run.alphas.sum())
    method = f"float64 Lanczos, rtol 1e-6 ({'converged' if run.converged else 'NOT converged'})"
    if name != "transformer":  # an independent check of the top end: ARPACK on the same float64 products
        from scipy.sparse.linalg import LinearOperator, eigsh

        linear = LinearOperator((dim, dim), matvec=lambda v: op.matvec(torch.from_numpy(v.reshape(-1))).numpy(), dtype="float64")
        arpack = float(eigsh(linear, k=1, which="LA", tol=1e-10, ncv=64, return_eigenvectors=False)[0])
        method += f"; ARPACK lambda_max differs by {abs(arpack - lam_max) / abs(arpack):.1e}"
    trace = hutchinson(deflated_probes(op, basis, generator), rtol=2e-3, max_probes=4000, chunk=20, offset=offset)
    return {"time": time.perf_counter() - start, "method": method, "hvps": op.products, "lambda_max": lam_max,
            "lambda_min": lam_min, "trace": trace.value, "trace_stderr": trace.stderr}


def _probe_cell(model, x, y, loss_fn, **settings) -> dict:
    """thermocal's probe (measure.probe, the library's) at B = min(32, N/4) with `settings`."""
    from thermocal.config import Config
    from thermocal.measure import probe

    start = time.perf_counter()
    result = probe(model, x, y, Config(batch_size=min(32, len(x) // 4), loss="bench", **settings), torch.device("cpu"),
                   loss_fn=loss_fn)
    elapsed = time.perf_counter() - start
    h = result.measurements.hessian
    t = result.timings
    g = result.measurements.gauss_newton
    return {"time": elapsed, "time_curvature": t.get("extremes", 0) + t.get("trace", 0) + t.get("gauss_newton", 0),
            "hvps": h.hvps, "lambda_max": h.lambda_max, "lambda_min": h.lambda_min, "trace": h.trace,
            "trace_stderr": h.trace_stderr, "converged": h.converged, "timings": t,
            "hessian_examples": result.hessian_samples, "trace_sampling_stderr": h.trace_sampling_stderr,
            "lambda_max_stderr": h.lambda_max_stderr,
            "gauss_newton": None if g is None else {"trace": g.trace, "stderr": g.stderr, "draws": g.draws}}


def cell_thermocal(model, x, y, loss_fn):
    return _probe_cell(model, x, y, loss_fn, lambda_min=True, hessian_samples=None, trace_rtol=0.05, d_eff="hessian")


def cell_thermocal_default(model, x, y, loss_fn):
    return _probe_cell(model, x, y, loss_fn)


def cell_pyhessian(model, x, y, loss_fn):
    from thermocal.curvature.pyhessian_engine import _CountingHessian

    torch.manual_seed(0)
    start = time.perf_counter()
    with sdpa_kernel([SDPBackend.MATH]):  # its flash kernel has no double backward
        h = _CountingHessian(model, loss_fn, data=(x, y), cuda=False, on_hvp=lambda: None)
        with h.counting():
            eig, _ = h.eigenvalues()
            samples = h.trace()
    elapsed = time.perf_counter() - start
    n = len(samples)
    mean = sum(samples) / n
    stderr = (sum((s - mean) ** 2 for s in samples) / (n - 1) / n) ** 0.5 if n > 1 else float("nan")
    return {"time": elapsed, "time_curvature": elapsed, "hvps": h.hvps, "lambda_max": float(eig[0]), "lambda_min": None,
            "trace": float(mean), "trace_stderr": stderr, "trace_probes": n}


def cell_pyhessian_matched(model, x, y, loss_fn):
    """pyhessian asked for the same accuracy as thermocal's default: its power iteration at
    tol 1e-6 (maxIter 1000), and its Hutchinson probes until the standard error is 5%."""
    from thermocal.curvature.pyhessian_engine import _CountingHessian
    from thermocal.curvature.hutchinson import hutchinson

    torch.manual_seed(0)
    start = time.perf_counter()
    with sdpa_kernel([SDPBackend.MATH]):
        h = _CountingHessian(model, loss_fn, data=(x, y), cuda=False, on_hvp=lambda: None)
        with h.counting():
            eig, _ = h.eigenvalues(maxIter=1000, tol=1e-6)
            trace = hutchinson(lambda n: [float(v) for v in h.trace(maxIter=n, tol=float("-inf"))], rtol=0.05, max_probes=1000)
    elapsed = time.perf_counter() - start
    return {"time": elapsed, "time_curvature": elapsed, "hvps": h.hvps, "lambda_max": float(eig[0]), "lambda_min": None,
            "trace": trace.value, "trace_stderr": trace.stderr, "trace_probes": trace.probes}


def cell_curvlinops(model, x, y, loss_fn, name):
    from curvlinops import HessianLinearOperator, hutchpp_trace
    from scipy.sparse.linalg import ArpackNoConvergence, eigsh

    def extreme(operator, which: str) -> tuple[float | None, bool]:
        try:
            return float(eigsh(operator, k=1, which=which, tol=1e-3, maxiter=CURVLINOPS_MAXITER, return_eigenvectors=False)[0]), True
        except ArpackNoConvergence as exc:
            return (float(exc.eigenvalues[0]) if len(exc.eigenvalues) else None), False

    params = [p for p in model.parameters() if p.requires_grad]
    start = time.perf_counter()
    op = HessianLinearOperator(model, _criterion(name), params, [(x, y)], check_deterministic=False)
    counter = {"n": 0}
    matmat = op._matmat

    def counted(m):
        counter["n"] += m[0].shape[-1]
        return matmat(m)

    op._matmat = counted
    scipy_op = op.to_scipy()
    with sdpa_kernel([SDPBackend.MATH]):  # its flash kernel has no forward-mode AD
        lam_max, max_ok = extreme(scipy_op, "LA")
        lam_min, min_ok = extreme(scipy_op, "SA")
        eig_time = time.perf_counter() - start
        torch.manual_seed(0)
        trace = float(hutchpp_trace(op, 99))
    elapsed = time.perf_counter() - start
    return {"time": elapsed, "time_curvature": elapsed, "time_eigs": eig_time, "hvps": counter["n"], "lambda_max": lam_max,
            "lambda_min": lam_min, "trace": trace, "trace_stderr": None, "converged": max_ok and min_ok}


def reference_for(results: dict, path: Path, name: str, model, x, y) -> dict:
    """The reference cell of `name` in another run's results (read from `path`), for a script that
    measures errors against it; refused unless that run built the very weights and data this one
    did (bench/models.py's fingerprint), since any other model has other eigenvalues."""
    made, ours = results.get("fingerprints", {}).get(name), zoo.fingerprint(model, x, y)
    if made is None:
        raise SystemExit(f"{path}: no fingerprint for {name} (a run older than fingerprints); rerun bench/curvature.py")
    if made != ours:
        raise SystemExit(f"{path}: its {name} was built with other weights or data (fingerprint {made}, this build {ours})")
    return results["models"][name]["reference"]


def load_saved(model_name: str, folder: Path, quick: bool):
    """In a child: the model, inputs, targets and loss the parent saved to `folder`."""
    model, _, _, loss_fn = build(model_name, quick, train=False)  # the architecture; weights and data come next
    saved = torch.load(folder / f"{model_name}.pt", weights_only=True)
    model.load_state_dict(saved["state"])
    return model.eval(), saved["x"], saved["y"], loss_fn


def run_cell(model_name: str, contender: str, folder: Path, quick: bool) -> dict:
    model, x, y, loss_fn = load_saved(model_name, folder, quick)
    baseline = _rss_mb()
    if contender in ("reference", "curvlinops"):
        out = globals()[f"cell_{contender}"](model, x, y, loss_fn, model_name)
    else:
        out = globals()[f"cell_{contender}"](model, x, y, loss_fn)
    out["peak_extra_mb"] = _peak_mb() - baseline
    return out


def emit(cell) -> None:
    """In a child: print the cell's result (or its error) as the RESULT line `child_result` reads."""
    try:
        print("RESULT " + json.dumps(cell()))
    except Exception as exc:  # reported in the table, not fatal to the benchmark
        print("RESULT " + json.dumps({"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"}))


# ----------------------------------------------------------------------------- parent


def child_result(script: str, flag: str, model_name: str, name: str, folder: str, quick: bool) -> dict:
    """Run `script flag model_name name` (one cell) in a child process, print its line and return
    what its RESULT line says (an error cell when there is none)."""
    command = [sys.executable, script, flag, model_name, name, "--folder", folder] + (["--quick"] if quick else [])
    proc = subprocess.run(command, capture_output=True, text=True)
    line = next((l for l in proc.stdout.splitlines() if l.startswith("RESULT ")), None)
    cell = json.loads(line[7:]) if line else {"error": (proc.stderr.strip().splitlines() or ["no output"])[-1][:160]}
    print(f"{model_name:12s} {name:20s} {json.dumps(cell)[:150]}", flush=True)
    return cell


def repeat_pair(models: dict, pair: list[str], rounds: int, folder: str, quick: bool) -> None:
    """Rounds 2..R of the pair's cells, back to back per model; each cell keeps every round's
    wall time under `rounds` (the first pass's included), or stops repeating at its first error."""
    for cells in models.values():
        for name in pair:
            if _ok(cells[name]):
                cells[name]["rounds"] = [cells[name]["time"]]
    for _ in range(rounds - 1):
        for model_name, cells in models.items():
            for name in pair:
                if not _ok(cells[name]):
                    continue
                again = child_result(__file__, "--cell", model_name, name, folder, quick)
                if not _ok(again):
                    cells[name] = again
                    continue
                cells[name]["rounds"].append(again["time"])


def relative_error(value, reference):
    if value is None or reference is None:
        return None
    return abs(value - reference) / abs(reference)


TABLED = ("thermocal_default", "thermocal", "pyhessian", "pyhessian_matched", "curvlinops")
HOW_TO_READ = """How to read it: each (model, contender) cell ran in its own process, one after another, on the
same models and data; every timed cell ran before the (untimed) reference cells. "extra peak MB"
is the cell's peak resident memory above its baseline after loading. Errors are relative to the
reference: dense `eigvalsh` for the 2.4k-parameter digits MLP, otherwise a float64 Lanczos run
to residual 1e-6 (checked against ARPACK on the MLP and CNN) and a 2e-3 Hutchinson trace
deflated by the Lanczos basis, all on the whole sample. "trace z" is (trace − reference) /
√(se² + s²·(1 − n/N) + se_ref²) where the contender reports a standard error se: s is the trace's
sampling error over examples where thermocal measured it (method.md [H14]) and the contender
probed n of the N examples, so that a subsample's own deviation from the whole sample's trace
counts (0 on the whole sample). A 2-se interval from 10 probes misses about 8% of the time by
design (bench/trace_coverage.py measures that rate).

Contenders (the docstring of bench/curvature.py says exactly what each runs):

- **thermocal_default**: `thermocal probe` with no options: what calibration v2 uses (gradient
  noise, lambda_max, the Gauss-Newton trace tr G for d_eff; no lambda_min and, since 2026-12-06,
  no Hessian trace, so its trace columns are empty and its wall time includes tr G where
  pyhessian's includes the Hessian's trace), the Hessian of the whole sample (since 2026-12-07;
  before, of its first 512 examples, whose sampling error then counted in its errors).
- **thermocal**: full accuracy, as before calibration v2: both extremes by Lanczos to rtol 1e-3 on
  the whole sample, Hutch++ trace to 5% (`--d-eff hessian`).
- **pyhessian**: pyhessian 0.1 with its defaults (power iteration tol 1e-3, Hutchinson tol 1e-3),
  lambda_max and trace only.
- **pyhessian_matched**: pyhessian at thermocal's full accuracy: power iteration tol 1e-6
  (maxIter 1000), Hutchinson until the standard error is 5%.
- **curvlinops**: `HessianLinearOperator` + scipy `eigsh` at tol 1e-3 for each end + `hutchpp_trace`
  with 99 products."""


def _fmt(value, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def _trace_z(cell: dict, ref: dict, examples: int) -> float | None:
    """(trace − reference) over the standard error of their difference: the contender's probes',
    the reference's, and, where the contender probed n of the N examples and measured the trace's
    sampling error s over examples (method.md [H14], s² estimating σ²/n), a subsample's
    deviation from the whole sample's trace, s²·(1 − n/N)."""
    if not cell.get("trace_stderr") or ref.get("trace") is None:
        return None
    subsample = (cell.get("trace_sampling_stderr") or 0.0) ** 2 * (1.0 - cell.get("hessian_examples", examples) / examples)
    return (cell["trace"] - ref["trace"]) / math.sqrt(cell["trace_stderr"] ** 2 + subsample
                                                       + (ref.get("trace_stderr") or 0.0) ** 2)


def _ok(cell: dict | None) -> bool:
    return bool(cell) and "error" not in cell


def wall(cell: dict) -> float:
    """A cell's wall time: the median of its rounds where --rounds repeated it, else its one run."""
    return statistics.median(cell["rounds"]) if cell.get("rounds") else cell["time"]


def paired_ratios(cells: dict) -> list[float]:
    """thermocal_default's wall time over pyhessian's, round by round (empty without --rounds)."""
    a, b = (cells.get(name) for name in PAIR)
    if not (_ok(a) and _ok(b) and a.get("rounds") and b.get("rounds")):
        return []
    return [x / y for x, y in zip(a["rounds"], b["rounds"])]


def table(results: dict) -> str:
    lines = ["| model | contender | wall s | curvature s | HVPs | Hessian examples | extra peak MB | lambda_max err | "
             "lambda_min err | trace err | trace z |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for model_name, cells in results["models"].items():
        ref, examples = cells.get("reference", {}), results["sizes"][model_name]["examples"]
        for contender in TABLED:
            c = cells.get(contender)
            if c is None:
                continue
            if not _ok(c):
                lines.append(f"| {model_name} | {contender} | failed: {c['error']} |||||||||")
                continue
            lines.append(
                f"| {model_name} | {contender} | {wall(c):.2f} | {c['time_curvature']:.2f} | {c['hvps']} | "
                f"{c.get('hessian_examples', examples):,} | {c['peak_extra_mb']:.0f} | "
                f"{_fmt(relative_error(c['lambda_max'], ref.get('lambda_max')), '.1e')} | "
                f"{_fmt(relative_error(c['lambda_min'], ref.get('lambda_min')), '.1e')} | "
                f"{_fmt(relative_error(c['trace'], ref.get('trace')), '.1e')} | {_fmt(_trace_z(c, ref, examples), '+.1f')} |"
            )
    lines += ["", "| model | params | examples | reference | gradient s | HVP rev-rev reused | rev-rev rebuilt | fwd-rev | "
              "rev-rev vmap×8 per vector | fwd-rev vmap×8 per vector | HVP/gradient, rev-rev (default) | HVP/gradient, faster mode "
              "| step extra peak MB |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for model_name, cells in results["models"].items():
        t, step, info = cells.get("timing", {}), cells.get("step", {}), results["sizes"][model_name]
        default = t["hvp_rev_rev_reused"] / t["gradient"] if "gradient" in t else None
        ratio = min(t.get("hvp_rev_rev_reused", math.inf), t.get("hvp_fwd_rev", math.inf)) / t["gradient"] if "gradient" in t else None
        lines.append(
            f"| {model_name} | {info['params']:,} | {info['examples']:,} | {cells.get('reference', {}).get('method', '—')} | "
            + " | ".join(_fmt(t.get(k), ".4f") for k in ("gradient", "hvp_rev_rev_reused", "hvp_rev_rev_rebuilt", "hvp_fwd_rev",
                                                          "hvp_rev_rev_batched8_per_vector", "hvp_fwd_rev_batched8_per_vector"))
            + f" | {_fmt(default, '.2f')} | {_fmt(ratio, '.2f')} | {_fmt(step.get('peak_extra_mb'), '.0f')} |"
        )
    return "\n".join(lines)


def _ratio(cells: dict, a: str, b: str, key: str) -> float | None:
    if not (_ok(cells.get(a)) and _ok(cells.get(b))) or not cells[b].get(key):
        return None
    if key == "time":
        return wall(cells[a]) / wall(cells[b])
    return cells[a][key] / cells[b][key]


def gauss_newton_error(cells: dict) -> float | None:
    """thermocal_default's Gauss-Newton trace: its draws' standard error relative to itself."""
    g = cells["thermocal_default"].get("gauss_newton") if _ok(cells.get("thermocal_default")) else None
    return g["stderr"] / abs(g["trace"]) if g and g["trace"] else None


def targets(results: dict) -> str:
    """Each target's value per model, computed from the cells, and whether it holds on every model."""
    models = results["models"]

    def lam_err(contender: str, which: str):
        return lambda cells: relative_error(cells[contender][which], cells.get("reference", {}).get(which)) \
            if _ok(cells.get(contender)) else None

    def hvp_ratio(cells: dict) -> float | None:
        t = cells.get("timing", {})
        return t["hvp_rev_rev_reused"] / t["gradient"] if "gradient" in t else None

    rounds = results["provenance"].get("rounds", 1)
    median = f", medians of {rounds} rounds" if rounds > 1 else ""
    rows = [
        (f"thermocal_default wall time / pyhessian default{median} (issue 15: ≤ 1)",
         lambda c: _ratio(c, "thermocal_default", "pyhessian", "time"), 1.0, ".2f"),
        ("the same, lowest paired round", lambda c: min(paired_ratios(c), default=None), None, ".2f"),
        ("the same, highest paired round", lambda c: max(paired_ratios(c), default=None), None, ".2f"),
        ("thermocal_default lambda_max error (moves eta0 by it; issue 15: ≤ 1%)", lam_err("thermocal_default", "lambda_max"), 1e-2, ".1e"),
        ("thermocal_default products / pyhessian default's", lambda c: _ratio(c, "thermocal_default", "pyhessian", "hvps"), None, ".2f"),
        ("thermocal_default tr G draws' error / tr G (d_eff's; method.md [H15])", gauss_newton_error, None, ".1e"),
        ("thermocal (full accuracy) lambda_max error (≤ 0.1%)", lam_err("thermocal", "lambda_max"), 1e-3, ".1e"),
        ("thermocal (full accuracy) lambda_min error (≤ 0.1%)", lam_err("thermocal", "lambda_min"), 1e-3, ".1e"),
        ("thermocal (full accuracy) wall time / pyhessian matched", lambda c: _ratio(c, "thermocal", "pyhessian_matched", "time"), None, ".2f"),
        ("thermocal (full accuracy) wall time / curvlinops (< 1)", lambda c: _ratio(c, "thermocal", "curvlinops", "time"), 1.0, ".2f"),
        ("one HVP / one gradient, default rev-rev (≤ 2.5)", hvp_ratio, 2.5, ".2f"),
        ("thermocal_default peak / step peak (≤ 3)", lambda c: _ratio(c, "thermocal_default", "step", "peak_extra_mb"), 3.0, ".2f"),
        ("thermocal (full accuracy) peak / step peak (≤ 3)", lambda c: _ratio(c, "thermocal", "step", "peak_extra_mb"), 3.0, ".2f"),
        ("pyhessian default peak / step peak", lambda c: _ratio(c, "pyhessian", "step", "peak_extra_mb"), None, ".2f"),
    ]
    lines = ["| target | " + " | ".join(models) + " | holds? |", "| --- |" + " --- |" * (len(models) + 1)]
    for label, value, bound, spec in rows:
        values = [value(cells) for cells in models.values()]
        if all(v is None for v in values):
            continue
        known = [v for v in values if v is not None]
        verdict = "—" if bound is None else ("yes" if all(v <= bound for v in known) and len(known) == len(values)
                                             else f"{sum(v <= bound for v in known)} of {len(values)}")
        lines.append(f"| {label} | " + " | ".join(_fmt(v, spec) for v in values) + f" | {verdict} |")
    return "\n".join(lines)


def _reused_text(reused: dict | None) -> list[str]:
    if not reused:
        return []
    return ["", f"The reference cells are those of the run of commit `{reused['commit'][:12]}` ({reused['created']}, "
            f"`{reused['path']}`), reused with `--references-from` because this run built the same weights and data "
            "(the same fingerprints); they are untimed, so nothing timed here depends on them."]


def _rounds_text(rounds: int) -> list[str]:
    if rounds <= 1:
        return []
    return ["", f"With `--rounds {rounds}`: after the first pass of timed cells, {' and '.join(PAIR)} ran "
            f"{rounds - 1} more times, the two back to back for each model; their wall time is the median of "
            f"the {rounds} runs, and a paired round's ratio is thermocal_default's time over pyhessian's in that "
            "round (the first round's two ran apart, in the first pass)."]


def markdown(results: dict) -> str:
    p = results["provenance"]
    tree = "dirty tree" if p["dirty"] else "clean tree"
    return "\n".join([
        "# Curvature benchmark (generated by `python bench/curvature.py`; never edit by hand)", "",
        f"One run of commit `{p['commit'][:12]}` ({tree}), thermocal {p['thermocal']}, torch {p['torch']}, Python "
        f"{p['python']}, {p['created']}; command `{' '.join(p['argv'])}`; machine {p['machine']}"
        + (" (quick sizes)" if p["quick"] else "") + ". Every cell is in `bench/results.json`.", "",
        HOW_TO_READ, *_rounds_text(p.get("rounds", 1)), *_reused_text(p.get("references_from")), "",
        "## Against the targets", "", targets(results), "",
        "## Accuracy, time and products", "", table(results), "",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--contenders", default=",".join(CONTENDERS))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=ROUNDS,
                        help=f"run {' and '.join(PAIR)} this many times (wall time: the median)")
    parser.add_argument("--out", type=Path, default=HERE / "results.json")
    parser.add_argument("--markdown", type=Path, default=HERE / "RESULTS.md")
    parser.add_argument("--report", action="store_true", help="regenerate the markdown from --out's JSON")
    parser.add_argument("--references-from", type=Path, help="reuse the reference cells of an earlier run's JSON "
                        "(refused unless it built the same weights and data: they are untimed, depend on nothing else, "
                        "and take most of a full run)")
    parser.add_argument("--cell", nargs=2, metavar=("MODEL", "CONTENDER"), help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    if args.cell:
        emit(lambda: run_cell(args.cell[0], args.cell[1], args.folder, args.quick))
        return
    if args.report:
        args.markdown.write_text(markdown(json.loads(args.out.read_text())))
        return
    names, contenders = args.models.split(","), args.contenders.split(",")
    earlier = json.loads(args.references_from.read_text()) if args.references_from else None
    reused = None if earlier is None else {"path": str(args.references_from), "commit": earlier["provenance"]["commit"],
                                           "created": earlier["provenance"]["created"]}
    results = {"provenance": stamp(sys.argv, quick=args.quick, rounds=args.rounds, models=names, contenders=contenders,
                                   sizes=QUICK_SIZES if args.quick else FULL_SIZES, references_from=reused),
               "models": {name: {} for name in names}, "sizes": {}, "fingerprints": {}}
    with tempfile.TemporaryDirectory() as folder:
        for model_name in names:
            model, x, y, _ = build(model_name, args.quick)
            torch.save({"state": model.state_dict(), "x": x, "y": y}, Path(folder) / f"{model_name}.pt")
            results["sizes"][model_name] = {"params": zoo.num_params(model), "examples": len(x)}
            results["fingerprints"][model_name] = zoo.fingerprint(model, x, y)
            if earlier is not None and "reference" in contenders:
                results["models"][model_name]["reference"] = reference_for(earlier, args.references_from, model_name,
                                                                           model, x, y)

        def run_pass(names_of_contenders: list[str]) -> None:
            for contender in names_of_contenders:
                for model_name in names:
                    results["models"][model_name][contender] = child_result(__file__, "--cell", model_name, contender,
                                                                            folder, args.quick)

        run_pass([c for c in contenders if c not in UNTIMED])
        if args.rounds > 1:
            repeat_pair(results["models"], [c for c in PAIR if c in contenders], args.rounds, folder, args.quick)
        run_pass([c for c in contenders if c in UNTIMED and earlier is None])
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    args.markdown.write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
