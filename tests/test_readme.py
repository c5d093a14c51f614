"""The README's promises that a test can hold: CI runs its test command, and its flags exist."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from typer.testing import CliRunner

from conftest import ROOT, SAMPLES
from thermocal.cli import app

README = (ROOT / "README.md").read_text()


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()
    assert ci[-1] in README
    assert "pytest" in ci[-1]


def test_every_documented_flag_exists() -> None:
    for command in ("probe", "export", "check"):
        help_text = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200"}).stdout
        section = README.split(f"### `thermocal {command}")[1].split("\n## ")[0].split("\n### ")[0]
        for flag in set(re.findall(r"(--[a-z][a-z-]+)", section)):
            assert flag in help_text, f"{command} {flag}"


def fenced(language: str, after: str) -> str:
    """The first ```language block after the heading `after`."""
    return README.split(after, 1)[1].split(f"```{language}\n", 1)[1].split("```", 1)[0]


def test_use_the_schedule_pytorch_block_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["probe", str(SAMPLES / "digits_mlp" / "model.pt"), str(SAMPLES / "digits_mlp" / "data"),
                                      "--steps", "300", "--warmup-steps", "10", "-q"])
    assert result.exit_code == 0, result.output
    model = torch.nn.Linear(64, 10)
    namespace = {"model": model}
    exec(fenced("python", "PyTorch, reading the file at run time"), namespace)
    optimizer, scheduler, schedule = namespace["optimizer"], namespace["scheduler"], namespace["schedule"]
    seen = []
    for _ in range(40):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert seen == pytest.approx([schedule.lr(t) for t in range(40)], rel=1e-12)


def test_use_in_ci_shell_block_passes_and_then_catches_drift(tmp_path: Path) -> None:
    """The plain-shell CI recipe, run as written on the digits sample standing in for model.pt/data/."""
    shutil.copy(SAMPLES / "digits_mlp" / "model.pt", tmp_path / "model.pt")
    shutil.copytree(SAMPLES / "digits_mlp" / "data", tmp_path / "data")
    script = fenced("bash", "The same as plain shell")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    first = subprocess.run(["bash", "-c", script.replace("--batch-size 64", "--batch-size 32")], cwd=tmp_path, env=env,
                           capture_output=True, text=True)
    assert first.returncode == 2 and "calibration/thermocal.json: no such file" in first.stderr  # nothing committed yet
    (tmp_path / "calibration").mkdir()
    shutil.move(tmp_path / "thermocal.new.json", tmp_path / "calibration" / "thermocal.json")
    same = subprocess.run(["bash", "-c", script.replace("--batch-size 64", "--batch-size 32")], cwd=tmp_path, env=env,
                          capture_output=True, text=True)
    assert same.returncode == 0, same.stdout + same.stderr
    assert (tmp_path / "artifacts" / "thermocal.new.json").exists()
    (tmp_path / "thermocal.new.json").unlink()
    drifted = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert drifted.returncode == 1 and "drift:" in drifted.stdout
