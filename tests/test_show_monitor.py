"""Issue 6: show, plot, probe --json, and the example that trains with the monitor (tests/test_monitor.py: the check)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import thermocal
from conftest import ROOT, SAMPLES, run

GOLDEN = ROOT / "tests" / "golden" / "v1"


# ----------------------------------------------------------------------------- show, plot, --json


def test_show_matches_its_snapshot_on_80_columns() -> None:
    result = run("show", GOLDEN / "digits_plain.json", env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    snapshot = (ROOT / "tests" / "snapshots" / "show_digits_plain.txt").read_text(encoding="utf-8")
    assert result.stdout == snapshot, "thermocal show changed: regenerate tests/snapshots/ if intended"
    assert "\x1b" not in result.stdout and max(len(line) for line in result.stdout.splitlines()) <= 80
    for needle in ("lambda_max", "± 0.14", "exploration", "§5.1", "warn", "learning rate eta(t)", "temperature T(t)",
                   "T0 0.405 -> Tf 0.0119; tau 567.4; 2000 steps in all"):
        assert needle in result.stdout
    no_color = run("show", GOLDEN / "digits_blocks_density_nosteps.json", "--no-color", env={"COLUMNS": "80"})
    assert no_color.exit_code == 0 and "\x1b" not in no_color.stdout and "Spectral density" in no_color.stdout


def test_plot_writes_a_png_and_keeps_existing_files(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "schedule.png"
    result = run("plot", GOLDEN / "diabetes_warmup_floor.json", "-o", out)
    assert result.exit_code == 0, result.output
    data = out.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000
    again = run("plot", GOLDEN / "digits_blocks_density_nosteps.json", "-o", out)
    assert again.exit_code == 2 and "--force" in again.stderr and out.read_bytes() == data
    assert run("plot", GOLDEN / "digits_blocks_density_nosteps.json", "-o", out, "--force").exit_code == 0


def test_probe_json_prints_the_file(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    result = run("probe", SAMPLES / "diabetes_mlp" / "model.pt", SAMPLES / "diabetes_mlp" / "data", "--json", "--out", out)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == json.loads(out.read_text())


# ----------------------------------------------------------------------------- the example


def test_example_trains_with_thermocal_lr_and_the_monitor(tmp_path: Path) -> None:
    schedule = tmp_path / "thermocal.json"
    probe = run("probe", SAMPLES / "digits_mlp" / "model.pt", SAMPLES / "digits_mlp" / "data", "--steps", 300,
                "--out", schedule, "-q")
    assert probe.exit_code == 0, probe.output
    log = tmp_path / "log.csv"
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "train_with_monitor.py"), "--schedule", str(schedule),
                           "--log", str(log)], capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "PYTHONWARNINGS": "error::UserWarning"})
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(open(log)))
    loaded = thermocal.load_schedule(schedule)
    assert len(rows) == 300
    assert [float(r["lr"]) for r in rows] == pytest.approx([loaded.lr(t) for t in range(300)], rel=1e-12)
    first, last = (sum(float(r["loss"]) for r in part) / 20 for part in (rows[:20], rows[-20:]))
    assert last < 0.8 * first  # it trained
    assert run("monitor", log, "--schedule", schedule).exit_code == 0
