"""Issue 8: a data-parallel probe under torchrun (2 CPU processes, gloo) equals one process's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import SAMPLES

DIGITS = SAMPLES / "digits_mlp"


def torchrun(*args: object, cwd: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone",
               "-m", "thermocal", *map(str, args)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def single(*args: object, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "thermocal", *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.slow
def test_two_processes_give_the_single_process_numbers(tmp_path: Path) -> None:
    common = [DIGITS / "model.pt", DIGITS / "data", "--steps", 2000, "--micro-batch", 200, "--per-layer", "--lambda-min",
              "--hessian-trace"]
    two = torchrun("probe", *common, "--out", tmp_path / "two.json", cwd=tmp_path)
    assert two.returncode == 0, two.stderr[-2000:]
    assert two.stderr.count("Diagnostics") == 1 and two.stderr.count("wrote ") == 1  # rank 0 alone speaks
    one = single("probe", *common, "--out", tmp_path / "one.json", "-q", cwd=tmp_path)
    assert one.returncode == 0, one.stderr
    a, b = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("two", "one"))
    for key in ("lambda_max", "lambda_min", "trace", "lambda_max_stderr"):
        assert a["measurements"]["hessian"][key] == pytest.approx(b["measurements"]["hessian"][key], rel=1e-6), key
    assert a["measurements"]["noise_curvature"]["trace_h_sigma"] == pytest.approx(
        b["measurements"]["noise_curvature"]["trace_h_sigma"], rel=1e-5)
    # The float32 products are summed in another order over two processes (~1e-7 relative); the
    # probe values' standard deviation (0.14 against values near 16) magnifies that ~40-fold.
    assert a["measurements"]["hessian"]["trace_stderr"] == pytest.approx(b["measurements"]["hessian"]["trace_stderr"], rel=1e-5)
    assert a["measurements"]["hessian"]["hvps"] == b["measurements"]["hessian"]["hvps"]
    # tr G ([H15], the default's d_eff): each process takes every other example, the same draws
    assert a["settings"]["d_eff"] == b["settings"]["d_eff"] == "gauss-newton"
    for key in ("trace", "stderr", "sampling_stderr"):
        assert a["measurements"]["gauss_newton"][key] == pytest.approx(b["measurements"]["gauss_newton"][key], rel=1e-6), key
    for key in ("grad_norm_mean", "grad_var", "grad_sq_mean", "loss"):
        assert a["measurements"]["gradient_noise"][key] == pytest.approx(b["measurements"]["gradient_noise"][key], rel=1e-9)
    assert a["schedule"]["kind"] == b["schedule"]["kind"] and (a["schedule"]["tau"] is None) == (b["schedule"]["tau"] is None)
    for key in ("T0", "Tf", "tau", "eta0"):
        if a["schedule"][key] is not None:
            assert a["schedule"][key] == pytest.approx(b["schedule"][key], rel=1e-6), key
    for block_a, block_b in zip(a["measurements"]["hessian"]["blocks"], b["measurements"]["hessian"]["blocks"]):
        assert block_a["lambda_max"] == pytest.approx(block_b["lambda_max"], rel=1e-6)
    assert a["inputs"]["processes"] == 2 and b["inputs"]["processes"] == 1


def test_errors_come_once_with_the_usual_exit_code(tmp_path: Path) -> None:
    (tmp_path / "taken.json").write_text("{}")
    result = torchrun("probe", DIGITS / "model.pt", DIGITS / "data", "--out", tmp_path / "taken.json", cwd=tmp_path)
    assert result.returncode != 0
    assert result.stderr.count("thermocal: error:") == 1 and "taken.json: already exists" in result.stderr
    assert (tmp_path / "taken.json").read_text() == "{}"
    pyhessian = torchrun("probe", DIGITS / "model.pt", DIGITS / "data", "--engine", "pyhessian", "--out",
                         tmp_path / "p.json", cwd=tmp_path)
    assert pyhessian.returncode != 0 and pyhessian.stderr.count("--engine pyhessian runs in one process") == 1
    assert not (tmp_path / "p.json").exists()
