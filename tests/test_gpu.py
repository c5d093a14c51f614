"""Issue 8: `--device cuda` gives the CPU's numbers with everything on the GPU.

Skipped without a CUDA device (this project's CI has none). Where one is lent, run
`bash bench/gpu_check.sh`: it runs these tests and times the engine on the GPU.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import engine_config, SAMPLES, mlp
from thermocal.curvature.hvp import HessianOperator
from thermocal.curvature.lanczos import lanczos
from thermocal.measure import probe

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]
CPU, CUDA = torch.device("cpu"), torch.device("cuda")
DIGITS = SAMPLES / "digits_mlp"


def sample(n: int = 120) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(n, 5, generator=generator), torch.randint(0, 3, (n,), generator=generator)


@pytest.mark.parametrize("options", [
    {},
    {"vmap_probes": True},  # the batched probes of issue 8 point 3
    {"hvp": "fwd-rev", "vmap_probes": True},
    {"top_k": 3, "density": True, "per_layer": True},
    {"lanczos_memory": 10 * 147 * 8 / 2**30},  # 10 rows of the 147 parameters: thick restarts
    {"method": "power", "trace_method": "hutchinson"},
    {"d_eff": "gauss-newton"},  # the Gauss-Newton trace (method.md [H15]): its signs are drawn on the CPU
])
def test_the_probe_on_the_gpu_gives_the_cpu_numbers(options: dict) -> None:
    x, y = sample()
    model = mlp([5, 16, 3], seed=2)  # 147 parameters
    settings = engine_config(batch_size=30, dtype="float64", eig_rtol=1e-8, micro_batch=50, **options)
    on_cpu = probe(copy.deepcopy(model), x, y, settings, CPU).measurements
    torch.cuda.reset_peak_memory_stats()
    on_gpu = probe(copy.deepcopy(model), x, y, settings, CUDA).measurements
    assert torch.cuda.max_memory_allocated() > 0
    a, b = on_cpu.hessian, on_gpu.hessian
    assert a.converged and b.converged
    assert b.lambda_max == pytest.approx(a.lambda_max, rel=1e-7)
    assert b.lambda_min == pytest.approx(a.lambda_min, rel=1e-6, abs=1e-9 * abs(a.lambda_max))
    assert abs(b.trace - a.trace) <= 2 * max(a.trace_stderr, b.trace_stderr) + 1e-9 * abs(a.trace)
    assert on_gpu.gradient_noise.grad_var == pytest.approx(on_cpu.gradient_noise.grad_var, rel=1e-9)
    if options.get("d_eff"):
        assert on_gpu.gauss_newton.trace == pytest.approx(on_cpu.gauss_newton.trace, rel=1e-7)
        assert on_gpu.gauss_newton.stderr == pytest.approx(on_cpu.gauss_newton.stderr, rel=1e-6)
    if options.get("per_layer"):
        for p, q in zip(a.blocks, b.blocks):
            assert q.lambda_max == pytest.approx(p.lambda_max, rel=1e-7)
        assert b.top_eigenvalues == pytest.approx(a.top_eigenvalues, rel=1e-7)


def test_the_engine_keeps_its_vectors_on_the_gpu() -> None:
    x, y = (t.to(CUDA) for t in sample())
    model = mlp([5, 16, 3], seed=2).to(CUDA)
    op = HessianOperator(model, torch.nn.functional.cross_entropy, [(x, y)], list(model.parameters()))
    run = lanczos(op, torch.randn(op.dim, dtype=torch.float64, device=CUDA), max_iter=50, max_basis=12,
                  dtype=torch.float32)
    assert run.basis.device.type == "cuda" and run.largest[0].vector.device.type == "cuda"
    assert op.matmat(torch.ones(4, op.dim, dtype=torch.float64, device=CUDA)).device.type == "cuda"


def test_the_cli_on_cuda_writes_the_cpu_numbers(tmp_path: Path) -> None:
    files = {}
    for device in ("cpu", "cuda"):
        out = tmp_path / f"{device}.json"
        done = subprocess.run([sys.executable, "-m", "thermocal", "probe", DIGITS / "model.pt", DIGITS / "data",
                               "--device", device, "--dtype", "float64", "--out", out, "-q"],
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        files[device] = json.loads(out.read_text())
    assert files["cuda"]["inputs"]["device"].startswith("cuda")
    a, b = (files[d]["measurements"]["hessian"] for d in ("cpu", "cuda"))
    assert b["lambda_max"] == pytest.approx(a["lambda_max"], rel=1e-6)
    assert abs(b["trace"] - a["trace"]) <= 2 * max(a["trace_stderr"], b["trace_stderr"])


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="nccl needs two GPUs")
def test_two_gpu_processes_with_nccl_give_the_single_process_numbers(tmp_path: Path) -> None:
    common = [DIGITS / "model.pt", DIGITS / "data", "--device", "cuda", "--dtype", "float64"]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone", "-m",
                          "thermocal", "probe", *map(str, common), "--out", str(tmp_path / "two.json"), "-q"],
                         capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-2000:]
    one = subprocess.run([sys.executable, "-m", "thermocal", "probe", *map(str, common), "--out", str(tmp_path / "one.json"),
                          "-q"], capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-2000:]
    a, b = (json.loads((tmp_path / f"{n}.json").read_text())["measurements"]["hessian"] for n in ("two", "one"))
    assert a["lambda_max"] == pytest.approx(b["lambda_max"], rel=1e-6)
