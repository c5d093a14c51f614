"""Issue 19: the newcomer's path. The README's two commands in order in one folder, labels of
any integer width, one-line usage errors, --version, and what the summary says."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from rich.console import Console

from conftest import ROOT, SAMPLES, mlp, run, save_data, save_script
from thermocal import __version__

ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
README = (ROOT / "README.md").read_text()


def quick_start_commands() -> str:
    """The Quick start's first command, without its install step (the tests run installed)."""
    block = README.split("Probe the bundled digits classifier", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    return block.strip().split(" && ", 2)[2]


@pytest.mark.slow
def test_the_quick_start_and_then_the_tests_pass_in_one_folder(tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    shutil.copytree(ROOT, clone, ignore=shutil.ignore_patterns(".git", "__pycache__", ".hypothesis", ".pytest_cache",
                                                               "*.egg-info", "build", "dist", "/thermocal.json", "schedule.yaml"))
    (clone / "thermocal.json").unlink(missing_ok=True)
    first = subprocess.run(["bash", "-c", quick_start_commands()], cwd=clone, env=ENV, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    assert (clone / "thermocal.json").exists() and (clone / "schedule.yaml").exists()
    before = sorted(p.name for p in clone.iterdir())
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider"], cwd=clone, env=ENV,
                           capture_output=True, text=True)
    assert tests.returncode == 0, tests.stdout[-3000:]
    assert sorted(p.name for p in clone.iterdir()) == before  # the tests wrote nothing where they were started


@pytest.mark.parametrize("dtype", [np.int32, np.int16, np.uint8, np.int64])
def test_integer_labels_of_any_width_are_labels(tmp_path: Path, dtype) -> None:
    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 6, generator=generator), torch.randint(0, 3, (64,), generator=generator)
    model = save_script(mlp([6, 8, 3]), tmp_path / "m.ts")
    (tmp_path / "arrays").mkdir()
    np.save(tmp_path / "arrays" / "inputs.npy", x.numpy())
    np.save(tmp_path / "arrays" / "targets.npy", y.numpy().astype(dtype))
    result = run("probe", str(model), str(tmp_path / "arrays"), "--batch-size", "16", "-q",
                 "-o", str(tmp_path / "o.json"))
    assert result.exit_code == 0, result.output
    import json

    doc = json.loads((tmp_path / "o.json").read_text())
    assert doc["inputs"]["loss"] == "cross_entropy"
    assert doc["measurements"]["gradient_noise"]["loss"] > 0


def test_a_usage_error_is_one_line_with_exit_2() -> None:
    done = subprocess.run(["thermocal", "probe", "model.pt", "data", "--stepz", "3"], env=ENV, capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr == "thermocal: error: no such option --stepz (did you mean --steps or --seed?)\n"
    for args, needle in ((["probe"], "missing argument 'model'"), (["probe", "m", "--batch-size", "0"], "--batch-size"),
                         (["frobnicate"], "no such command 'frobnicate'"), (["export", "--format", "xml"], "--format")):
        result = run(*args)
        assert result.exit_code == 2, args
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("thermocal: error: ") and needle in lines[0], result.stderr


def test_version() -> None:
    result = run("--version")
    assert result.exit_code == 0 and result.stdout == f"thermocal {__version__}\n"


def test_help_shows_flags_without_a_type() -> None:
    text = run("probe", "--help", env={"COLUMNS": "200"}).stdout
    assert "<bool>" not in text and "--force" in text
    assert "(default: inputs or x; lm: tokens, input_ids)" in text  # not eaten as rich markup


def test_env_leaves_out_what_a_flat_schedule_lacks(tmp_path: Path) -> None:
    golden = ROOT / "tests" / "golden" / "v1" / "digits_flat_if_cold_warmup.json"
    text = run("export", str(golden), "--format", "env").stdout
    assert "THERMOCAL_SCHEDULE_TAU" not in text and "THERMOCAL_SCHEDULE_ETA0=" in text
    assert all(line.split("=", 1)[1] for line in text.splitlines())


def test_the_summary_explains_dropped_examples_and_what_converged_means(tmp_path: Path) -> None:
    result = run("probe", str(SAMPLES / "diabetes_mlp" / "model.pt"), str(SAMPLES / "diabetes_mlp" / "data"),
                 "--steps", "500", "-o", str(tmp_path / "o.json"), env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "13·32" in result.stderr and "26 of 442 left over, dropped" in result.stderr
    said = " ".join(result.stderr.replace("│", " ").split())  # rows wrap on 200 columns
    assert re.search(r"lambda_max .* residual [0-9.e-]+, converged \(≤ 0\.01·\|lambda_max\|\)", said), said


def test_threads_follow_the_idle_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    from thermocal.distributed import default_threads

    monkeypatch.setenv("OMP_NUM_THREADS", "5")
    assert default_threads() == 5
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    monkeypatch.setattr(os, "getloadavg", lambda: (6.2, 0.0, 0.0))
    assert default_threads() == 2
    monkeypatch.setattr(os, "getloadavg", lambda: (30.0, 0.0, 0.0))
    assert default_threads() == 1
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    assert default_threads() == 2


def test_probe_sets_the_threads_it_is_given(tmp_path: Path) -> None:
    model = save_script(mlp([6, 8, 3]), tmp_path / "m.ts")
    data = save_data(tmp_path / "d.pt", inputs=torch.randn(64, 6), targets=torch.randint(0, 3, (64,)))
    before = torch.get_num_threads()
    try:
        result = run("probe", str(model), str(data), "--batch-size", "16", "-q", "--threads", "3",
                     "-o", str(tmp_path / "o.json"))
        assert result.exit_code == 0, result.output
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


def test_progress_shows_no_estimate_for_solvers_that_stop_when_converged() -> None:
    from thermocal.report import RichProgress

    console = Console(record=True, width=120, force_terminal=True)
    with RichProgress(console) as progress:
        progress.phase("Hessian: Lanczos (both ends)", None)
        progress.advance(12)
        progress._bar.refresh()
        iterative = console.export_text()
        progress.phase("Gradient noise", 32)
        progress.advance(8)
        progress._bar.refresh()
        exact = console.export_text()
    assert "12 products" in iterative and "left" not in iterative
    assert "8/32" in exact and "left" in exact
