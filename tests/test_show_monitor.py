"""Issue 6: show, plot, probe --json, the §6.2 monitor (online and offline) and the example."""

from __future__ import annotations

import csv
import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import thermocal
from conftest import ROOT, SAMPLES
from thermocal.cli import app
from thermocal.monitor import CoolingMonitor, replay

runner = CliRunner()
GOLDEN = ROOT / "tests" / "golden" / "v1"


def run(*args: object, **kwargs):
    return runner.invoke(app, [str(a) for a in args], **kwargs)


# ----------------------------------------------------------------------------- the rule on synthetic curves


def test_pure_descent_fires_after_a_sustained_window_with_the_stated_stretch() -> None:
    """L_t = 5 − 0.01·t with eta·|g|² = 0.01: all of the gradient's work goes into descent, so
    r = |L̇| / (eta·|g|²) → 1 > epsilon = 0.5, and the suggested stretch is r/epsilon = 2."""
    monitor = CoolingMonitor(epsilon=0.5, window=50)
    readings = [monitor.update(t, 5 - 0.01 * t, 0.1, lr=0.1) for t in range(400)]
    assert all(r.ratio is None for r in readings[:49]) and readings[49].ratio is not None
    first = next(r.step for r in readings if r.fired)
    above_from = next(r.step for r in readings if r.ratio is not None and r.ratio > 0.5)
    assert first == above_from + 49  # fires on the 50th consecutive step above epsilon, not before
    assert readings[-1].ratio == pytest.approx(1.0, rel=1e-3)
    assert readings[-1].stretch == pytest.approx(2.0, rel=1e-2)


def test_equilibrium_noise_never_fires() -> None:
    """Loss fluctuating about a constant (σ = 0.01) with eta·|g|² = 0.1: the EMA's slope is
    noise of order σ/window², far below epsilon·0.1, on every step."""
    rng = random.Random(0)
    monitor = CoolingMonitor(epsilon=0.5, window=50)
    readings = [monitor.update(t, 1.0 + 0.01 * rng.gauss(0, 1), 1.0, lr=0.1) for t in range(2000)]
    assert not any(r.fired for r in readings)
    assert max(r.ratio for r in readings if r.ratio is not None) < 0.05


def test_a_burst_shorter_than_the_window_does_not_fire_and_rising_loss_does() -> None:
    monitor = CoolingMonitor(epsilon=0.5, window=20)
    # r alternates above and below epsilon: never 20 consecutive steps above.
    readings = [monitor.update(t, 5 - 0.01 * t, 0.1 if (t // 10) % 2 else 0.5, lr=0.1) for t in range(300)]
    assert any(r.ratio is not None and r.ratio > 0.5 for r in readings) and not any(r.fired for r in readings)
    rising = CoolingMonitor(epsilon=0.5, window=20)
    assert any(rising.update(t, 1 + 0.02 * t, 0.1, lr=0.1).fired for t in range(200))  # |∂t s|: either sign


def test_monitor_reads_eta_from_the_schedule() -> None:
    schedule = thermocal.load_schedule(GOLDEN / "digits_plain.json")
    monitor = thermocal.CoolingMonitor(schedule, window=10)
    for t in range(30):
        reading = monitor.update(t, 1 - 1e-3 * t, 1.0)
    assert reading.ratio == pytest.approx(1e-3 / schedule.lr(29), rel=1e-2)
    with pytest.raises(ValueError, match="pass lr="):
        CoolingMonitor().update(0, 1.0, 1.0)


# ----------------------------------------------------------------------------- thermocal monitor LOG.csv


def write_log(path: Path, rows) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["step", "loss", "grad_norm", "lr"])
        writer.writerows(rows)
    return path


def test_monitor_command_reports_where_the_rule_fires(tmp_path: Path) -> None:
    # flat for 200 steps, then a steep fall (r = 1) for 200, then flat again
    loss = [2.0] * 200 + [2.0 - 0.005 * i for i in range(200)] + [1.0] * 200
    rows = [(t, loss[t], math.sqrt(0.05), 0.1) for t in range(600)]
    log = write_log(tmp_path / "log.csv", rows)
    readings, firings = replay(rows, epsilon=0.5, window=50)
    assert len(firings) == 1 and 200 < firings[0].first_step < 350 and firings[0].last_step < 600
    result = run("monitor", log)
    assert result.exit_code == 0, result.output
    assert f"fired at step {firings[0].first_step}" in result.stdout and "stretch tau by" in result.stdout
    payload = json.loads(run("monitor", log, "--json").stdout)
    assert payload["firings"][0]["first_step"] == firings[0].first_step
    quiet = write_log(tmp_path / "quiet.csv", [(t, 2.0, 1.0, 0.1) for t in range(100)])
    assert "the rule did not fire" in run("monitor", quiet).stdout
    (tmp_path / "bad.csv").write_text("step,loss\n1,2\n")
    bad = run("monitor", tmp_path / "bad.csv")
    assert bad.exit_code == 2 and "bad.csv: lacks column(s) grad_norm, lr" in bad.stderr


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
    assert run("monitor", log).exit_code == 0
