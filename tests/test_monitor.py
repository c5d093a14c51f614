"""Issue 15 item 4: the §6.2 check measures cooling speed. SGD on linear regression, from
equilibrium, with controlled learning-rate schedules: quiet on any constant lr and on a slow
decay, firing on a too-fast one (method.md [M1]–[M5])."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch

from conftest import run
import thermocal
from thermocal.config import Config
from thermocal.monitor import CoolingMonitor, replay
from thermocal.schedule.file import dumps
from thermocal.schedule.runtime import LoadedSchedule

STEPS = 3000
BATCH = 8


@pytest.fixture(scope="module")
def world() -> dict:
    """A linear regression (d = 10, MSE), SGD run to equilibrium at eta0 = 0.25·2/λ_max, then probed."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4096, 10, generator=g) * torch.linspace(0.3, 2.0, 10)
    y = (x @ torch.randn(10, generator=g) + 0.5 * torch.randn(4096, generator=g)).unsqueeze(1)
    model = torch.nn.Linear(10, 1, bias=False)
    lam = 2 * float(torch.linalg.eigvalsh(x.T @ x / len(x)).max())  # mean squared error: H = 2·XᵀX/N
    eta0 = 0.25 * 2 / lam
    optimizer = torch.optim.SGD(model.parameters(), lr=eta0)
    for _ in range(3000):
        batch = torch.randint(0, len(x), (BATCH,), generator=g)
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(model(x[batch]), y[batch]).backward()
        optimizer.step()
    doc = thermocal.probe(model, (x, y), Config(batch_size=BATCH, steps=STEPS, hessian_samples=None))
    return {"x": x, "y": y, "model": model, "doc": doc, "eta0": eta0}


def train(world: dict, lr_at, steps: int = STEPS) -> tuple[list, list]:
    """SGD from the equilibrium state under lr_at(t, eta0); the monitor's readings and the log rows."""
    x, y, eta0 = world["x"], world["y"], world["eta0"]
    model = torch.nn.Linear(10, 1, bias=False)
    model.load_state_dict(world["model"].state_dict())
    monitor = CoolingMonitor(LoadedSchedule(world["doc"]))
    g = torch.Generator().manual_seed(1)
    readings, rows = [], []
    for t in range(steps):
        lr = lr_at(t, eta0)
        batch = torch.randint(0, len(x), (BATCH,), generator=g)
        model.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x[batch]), y[batch])
        loss.backward()
        grad_sq = float(model.weight.grad.pow(2).sum())
        readings.append(monitor.update(t, float(loss), grad_sq, lr=lr))
        rows.append((t, float(loss), grad_sq ** 0.5, lr))
        with torch.no_grad():
            model.weight -= lr * model.weight.grad
    return readings, rows


@pytest.mark.parametrize("name, lr_at", [
    ("tiny constant", lambda t, e: 1e-5),
    ("constant eta0/10", lambda t, e: e / 10),
    ("constant eta0", lambda t, e: e),
    ("slow decay to eta0/100 over the run", lambda t, e: e * math.exp(-t * math.log(100) / STEPS)),
])
def test_quiet_on_any_constant_lr_and_a_slow_decay(world, name, lr_at) -> None:
    readings, _ = train(world, lr_at)
    assert not any(r.fired for r in readings), name
    assert max(r.ratio for r in readings if r.ratio is not None) < 0.5


@pytest.mark.parametrize("name, lr_at, stretch", [
    ("eta0/100 within 200 steps", lambda t, e: e * math.exp(-min(max(t - 1000, 0), 200) * math.log(100) / 200), 2.0),
    ("eta0/1000 within 100 steps", lambda t, e: e * math.exp(-min(max(t - 1000, 0), 100) * math.log(1000) / 100), 10.0),
])
def test_fires_on_a_too_fast_decay_with_the_stretch_it_needs(world, name, lr_at, stretch) -> None:
    readings, _ = train(world, lr_at)
    fired = [r for r in readings if r.fired]
    assert fired, name
    assert 1000 < fired[0].step < 1400  # during the fall, a window after it starts
    assert max(r.stretch for r in fired) >= stretch


def test_the_command_replays_a_log_as_the_monitor_saw_it(world, tmp_path: Path) -> None:
    readings, rows = train(world, lambda t, e: e * math.exp(-min(max(t - 1000, 0), 200) * math.log(100) / 200), 1600)
    log = tmp_path / "log.csv"
    with open(log, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["step", "loss", "grad_norm", "lr"])
        writer.writerows(rows)
    schedule = tmp_path / "thermocal.json"
    schedule.write_text(dumps(world["doc"], "json"))
    again, firings = replay(rows, thermocal.load_schedule(schedule))
    assert [r.fired for r in again] == [r.fired for r in readings]
    result = run("monitor", log, "--schedule", schedule)
    assert result.exit_code == 0, result.output
    assert f"fired at step {firings[0].first_step}" in result.stdout and "stretch tau by" in result.stdout
    payload = json.loads(run("monitor", log, "--schedule", schedule, "--json").stdout)
    assert payload["firings"][0]["first_step"] == firings[0].first_step
    quiet = tmp_path / "quiet.csv"
    quiet.write_text("step,loss,grad_norm,lr\n" + "".join(f"{t},1.0,1.0,0.1\n" for t in range(120)))
    assert "the check did not fire" in run("monitor", quiet, "--schedule", schedule).stdout
    missing = run("monitor", quiet, "--schedule", tmp_path / "none.json")
    assert missing.exit_code == 2 and "none.json: no such file" in missing.stderr


def test_the_monitor_reads_the_lr_from_its_schedule(world) -> None:
    monitor = CoolingMonitor(LoadedSchedule(world["doc"]), window=10)
    readings = [monitor.update(t, 1.0, 1.0) for t in range(30)]
    schedule = LoadedSchedule(world["doc"])
    expected = math.log(schedule.lr(19) / schedule.lr(29)) / 10 / (2 * schedule.lr(29) * monitor.curvature)
    assert readings[29].ratio == pytest.approx(expected, rel=1e-9)
    with pytest.raises(ValueError, match="must be finite"):
        monitor.update(30, float("nan"), 1.0)
