"""Using the schedule: exports per framework, the runtime loader, ThermocalLR, check, schema."""

from __future__ import annotations

import ast
import json
import math
from pathlib import Path

import pytest
import torch
import yaml

import thermocal
from conftest import ROOT, mlp, run, save_data, save_script
from thermocal.schedule.file import schema_text

GOLDEN = ROOT / "tests" / "golden"


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Probe results: plain exponential, with warmup and floor, and a second seed for drift."""
    folder = tmp_path_factory.mktemp("schedules")
    generator = torch.Generator().manual_seed(0)
    model = save_script(mlp([6, 8, 3]), folder / "model.pt")
    data = save_data(folder / "data.pt", inputs=torch.randn(96, 6, generator=generator),
                     targets=torch.randint(0, 3, (96,), generator=generator))
    out = {}
    for name, extra in {"plain": [], "warm": ["--warmup-steps", 25, "--min-lr", 1e-3], "other": ["--batch-size", 8],
                        "flat": ["--epsilon", 1e3, "--warmup-steps", 10],
                        "linear": ["--shape", "linear", "--warmup-steps", 25, "--min-lr", 1e-3, "--optimizer", "momentum"],
                        "cosine": ["--shape", "cosine", "--warmup-steps", 10, "--optimizer", "adamw"]}.items():
        path = folder / f"{name}.json"
        result = run("probe", model, data, "--batch-size", 16, "--steps", 400, "--epsilon-stderrs", 1, "--out", path, "-q", *extra)
        assert result.exit_code == 0, result.output
        out[name] = path
    return out


def lrs_of_torch_snippet(text: str, steps: int) -> list[float]:
    namespace: dict = {}
    exec(compile(text, "<snippet>", "exec"), namespace)
    optimizer, scheduler = namespace["thermocal_optimizer"]([torch.nn.Parameter(torch.zeros(1))])
    out = []
    for _ in range(steps + 1):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


@pytest.mark.interop
@pytest.mark.parametrize("name", ["plain", "warm", "flat", "linear", "cosine"])
def test_torch_hf_and_lightning_snippets_reproduce_the_schedule(files, name: str) -> None:
    schedule = thermocal.load_schedule(files[name])
    total = schedule.total_steps
    expected = torch.tensor([schedule.lr(t) for t in range(total + 1)], dtype=torch.float64)
    for fmt in ("torch", "hf"):
        text = run("export", files[name], "--format", fmt).stdout
        assert ("ExponentialLR" in text) == (name == "plain")
        got = torch.tensor(lrs_of_torch_snippet(text, total), dtype=torch.float64)
        torch.testing.assert_close(got, expected, rtol=1e-9, atol=0)
    text = run("export", files[name], "--format", "lightning").stdout
    namespace: dict = {}
    exec(compile(text, "<lightning>", "exec"), namespace)

    class Module:
        def parameters(self):
            return [torch.nn.Parameter(torch.zeros(1))]

    config = namespace["configure_optimizers"](Module())
    assert config["lr_scheduler"]["interval"] == "step"
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    got = []
    for _ in range(total + 1):
        got.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    torch.testing.assert_close(torch.tensor(got, dtype=torch.float64), expected, rtol=1e-9, atol=0)


def test_warmup_floor_and_the_closed_form_expression(files) -> None:
    schedule = thermocal.load_schedule(files["warm"])
    s = schedule.document.schedule
    assert (s.warmup_steps, s.min_lr, schedule.total_steps) == (25, 1e-3, 425)
    assert schedule.lr(0) == pytest.approx(s.eta0 / 25) and schedule.lr(24) == pytest.approx(s.eta0)
    assert schedule.lr(25) == pytest.approx(s.eta0) and schedule.lr(10**7) == 1e-3
    assert schedule.temperature(10) == s.T0 and schedule.temperature(25 + s.tau) == pytest.approx(s.T0 / math.e)
    for t in (0, 7, 24, 25, 26, 200, 425, 10**6):
        names = {"eta0": s.eta0, "tau": s.tau, "warmup_steps": s.warmup_steps, "min_lr": s.min_lr, "T0": s.T0, "t": t, "exp": math.exp}
        assert eval(s.lr_expression, {}, names) == pytest.approx(schedule.lr(t), rel=1e-12)
        assert eval(s.temperature_expression, {}, names) == pytest.approx(schedule.temperature(t), rel=1e-12)


def test_csv_env_optax_and_keras(files) -> None:
    schedule = thermocal.load_schedule(files["warm"])
    rows = run("export", files["warm"], "--format", "csv", "--every", 100).stdout.strip().splitlines()
    assert rows[0] == "step,lr,temperature,optimizer"
    assert [int(r.split(",")[0]) for r in rows[1:]] == [0, 100, 200, 300, 400, 425]
    step, lr, temp, optimizer = rows[-1].split(",")
    assert optimizer == "sgd"  # a v1 file: plain SGD
    assert float(lr) == schedule.lr(425) and float(temp) == schedule.temperature(425)
    env = dict(line.split("=", 1) for line in run("export", files["warm"], "--format", "env").stdout.splitlines())
    assert float(env["THERMOCAL_SCHEDULE_ETA0"]) == schedule.document.schedule.eta0
    assert float(env["THERMOCAL_SCHEDULE_GAMMA"]) == schedule.document.schedule.gamma and env["THERMOCAL_SCHEDULE_WARMUP_STEPS"] == "25"
    for fmt, needle in (("optax", "optax.exponential_decay(init_value=ETA0, transition_steps=1, decay_rate=GAMMA)"),
                        ("keras", "class ThermocalSchedule")):
        text = run("export", files["warm"], "--format", fmt).stdout
        ast.parse(text)
        assert needle in text and f"ETA0 = {schedule.document.schedule.eta0!r}" in text
    plain_keras = run("export", files["plain"], "--format", "keras").stdout
    assert "ExponentialDecay(initial_learning_rate=ETA0, decay_steps=1, decay_rate=GAMMA)" in plain_keras


def expected_lrs(path: Path) -> tuple[int, list[float]]:
    schedule = thermocal.load_schedule(path)
    return schedule.total_steps, [schedule.lr(t) for t in range(schedule.total_steps + 1)]


@pytest.mark.interop
@pytest.mark.parametrize("name", ["plain", "warm", "flat", "linear", "cosine"])
def test_optax_snippet_runs_and_reproduces_the_schedule(files, name: str) -> None:
    jax = pytest.importorskip("jax")
    pytest.importorskip("optax")
    jax.config.update("jax_enable_x64", True)  # float32 cannot hold 1e-9; the snippet is dtype-agnostic
    total, expected = expected_lrs(files[name])
    namespace: dict = {}
    exec(compile(run("export", files[name], "--format", "optax").stdout, "<optax>", "exec"), namespace)
    got = namespace["schedule"](jax.numpy.arange(total + 1))
    assert got.dtype == jax.numpy.float64
    torch.testing.assert_close(torch.tensor(got.tolist(), dtype=torch.float64),
                               torch.tensor(expected, dtype=torch.float64), rtol=1e-9, atol=0)


@pytest.mark.interop
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # keras' torch backend vs numpy 2's copy keyword
@pytest.mark.parametrize("name", ["plain", "warm", "flat", "linear", "cosine"])
def test_keras_snippet_runs_and_reproduces_the_schedule(files, name: str, monkeypatch) -> None:
    monkeypatch.setenv("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    floatx = keras.config.floatx()
    keras.config.set_floatx("float64")  # as above: the schedule follows keras' float type
    try:
        total, expected = expected_lrs(files[name])
        namespace: dict = {}
        exec(compile(run("export", files[name], "--format", "keras").stdout, "<keras>", "exec"), namespace)
        schedule = namespace["schedule"] if "schedule" in namespace else namespace["ThermocalSchedule"]()
        got = [float(keras.ops.convert_to_numpy(schedule(t))) for t in range(total + 1)]
    finally:
        keras.config.set_floatx(floatx)
    torch.testing.assert_close(torch.tensor(got, dtype=torch.float64),
                               torch.tensor(expected, dtype=torch.float64), rtol=1e-9, atol=0)


def test_yaml_export_round_trips_through_load_schedule(files, tmp_path: Path) -> None:
    for name in ("plain", "warm"):
        yaml_path = tmp_path / f"{name}.yaml"
        assert run("export", files[name], "--format", "yaml", "--out", yaml_path).exit_code == 0
        json_path = tmp_path / f"{name}.json"
        assert run("export", yaml_path, "--format", "json", "--out", json_path).exit_code == 0
        original, from_yaml = thermocal.load_schedule(files[name]), thermocal.load_schedule(yaml_path)
        assert from_yaml.document == original.document == thermocal.load_schedule(json_path).document
        assert [from_yaml.lr(t) for t in range(0, 500, 7)] == [original.lr(t) for t in range(0, 500, 7)]


def test_thermocal_lr_state_dict_round_trips_and_resumes(files, tmp_path: Path) -> None:
    schedule = thermocal.load_schedule(files["warm"])
    eta0 = schedule.document.schedule.eta0

    def fresh():
        param = torch.nn.Parameter(torch.zeros(1))
        optimizer = torch.optim.SGD([param], lr=eta0)
        return optimizer, thermocal.ThermocalLR(optimizer, files["warm"])

    optimizer, scheduler = fresh()
    straight = []
    for _ in range(80):
        straight.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    optimizer, scheduler = fresh()
    resumed = []
    for _ in range(30):
        resumed.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, tmp_path / "ckpt.pt")
    optimizer, scheduler = fresh()
    state = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    for _ in range(50):
        resumed.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert resumed == straight
    assert straight == pytest.approx([schedule.lr(t) for t in range(80)], rel=1e-12)


def test_check_passes_good_files_and_catches_tampering(files, tmp_path: Path) -> None:
    good = run("check", files["plain"])
    assert good.exit_code == 0, good.output
    assert good.stdout.rstrip().endswith("passed")
    as_json = json.loads(run("check", files["plain"], "--json").stdout)
    assert as_json["passed"] is True and {f["check"] for f in as_json["findings"]} >= {"validate", "rederive"}

    data = json.loads(files["plain"].read_text())
    data["schedule"]["eta0"] *= 1.5
    tampered = tmp_path / "tampered.json"
    tampered.write_text(json.dumps(data))
    result = run("check", tampered)
    assert result.exit_code == 1 and "schedule.eta0 = " in result.stdout and "FAILED" in result.stdout

    data = json.loads(files["plain"].read_text())
    data["measurements"]["gradient_noise"]["grad_var"] = 1e-9  # the noise floor now meets the target: a flat schedule
    quiet = tmp_path / "quiet.json"
    quiet.write_text(json.dumps(data))
    result = run("check", quiet)
    assert result.exit_code == 1 and "schedule.kind differs from what its measurements give" in result.stdout

    data = json.loads(files["plain"].read_text())
    data["measurements"]["hessian"]["lambda_max"] = -1.0  # no positive curvature: no schedule follows
    if "lambda_max_heldout" in data["measurements"]["hessian"]:  # [H16]: nor on held-out examples
        data["measurements"]["hessian"]["lambda_max_heldout"] = -1.0
    concave = tmp_path / "concave.json"
    concave.write_text(json.dumps(data))
    result = run("check", concave)
    assert result.exit_code == 1 and "the file's measurements give no schedule: lambda_max = -1" in result.stdout

    data = json.loads(files["plain"].read_text())
    data["measurements"]["hessian"]["details"]["lambda_max"]["converged"] = False
    data["measurements"]["hessian"]["converged"] = False
    unconverged = tmp_path / "unconverged.json"
    unconverged.write_text(json.dumps(data))
    result = run("check", unconverged)
    assert result.exit_code == 1 and "estimates missed their tolerance: hessian.lambda_max" in result.stdout
    assert "looser --eig-rtol/--trace-rtol" in " ".join(result.stdout.split())

    (tmp_path / "junk.json").write_text("{not json")
    assert run("check", tmp_path / "junk.json").exit_code == 2
    assert run("check", tmp_path / "missing.json").exit_code == 2


def test_check_drift_and_strict(files) -> None:
    drifted = run("check", files["other"], "--against", files["plain"], "--max-drift", 0.01)
    assert drifted.exit_code == 1
    assert "drift:eta0" in drifted.stdout and "allowed 1%" in drifted.stdout
    same = run("check", files["plain"], "--against", files["plain"], "--max-drift", 0.0)
    assert same.exit_code == 0, same.stdout
    doc = thermocal.load_schedule(files["plain"]).document
    has_warning = any(d.status == "warn" for d in doc.diagnostics)
    strict = run("check", files["plain"], "--strict")
    assert strict.exit_code == (1 if has_warning else 0)


def test_schema_is_committed_and_current() -> None:
    committed = (ROOT / "schemas" / "thermocal.schedule.v2.json").read_text()
    printed = run("schema").stdout
    assert printed == schema_text() == committed, "schemas/ is stale: thermocal schema > schemas/thermocal.schedule.v2.json"
    assert '"const": "thermocal.schedule/v1"' in (ROOT / "schemas" / "thermocal.schedule.v1.json").read_text()


@pytest.mark.parametrize("golden", sorted(GOLDEN.glob("v*/*.json")), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_golden_files_of_every_version_keep_loading_and_checking(golden: Path) -> None:
    schedule = thermocal.load_schedule(golden)
    assert schedule.document.format == f"thermocal.schedule/{golden.parent.name}"
    assert run("check", golden).exit_code == 0
    assert yaml.safe_load(run("export", golden, "--format", "yaml").stdout) == json.loads(golden.read_text())
    for fmt in ("torch", "optax", "keras", "env"):
        assert run("export", golden, "--format", fmt).exit_code == 0, fmt
    if schedule.total_steps:
        assert schedule.lr(schedule.total_steps) == pytest.approx(schedule.document.table[-1].lr, rel=1e-12)


def test_golden_files_exist() -> None:
    assert len(list((GOLDEN / "v1").glob("*.json"))) >= 3 and len(list((GOLDEN / "v2").glob("*.json"))) >= 5


@pytest.mark.parametrize("kind", ["constant", "exponential"])
@pytest.mark.parametrize("warmup_steps", [0, 7])
@pytest.mark.parametrize("min_lr", [0.0, 0.02])
@pytest.mark.parametrize("law", ["linear", "sqrt"])
def test_every_text_form_of_the_lr_law_is_the_closure(kind: str, warmup_steps: int, min_lr: float, law: str) -> None:
    """The file's Python expression, the Keras one and the optax composition, evaluated (Keras
    ops and optax's schedules played by numpy with optax's documented semantics, so that this
    runs without either), give learning_rate(schedule)(t) at every step of a budget."""
    import types

    import numpy as np

    from thermocal.records import ScheduleBase
    from thermocal.schedule.functions import KERAS, gamma_of, learning_rate, lr_expression, lr_law

    tau = None if kind == "constant" else 40.0
    schedule = ScheduleBase(kind=kind, eta0=0.3, T0=1.0, Tf=0.1, tau=tau, gamma=1.0 if tau is None else gamma_of(tau, law),
                            steps=100, warmup_steps=warmup_steps, min_lr=min_lr, lr_law=law,
                            lr_expression=lr_expression(kind, warmup_steps, min_lr, law), temperature_expression="T0")
    expected = [learning_rate(schedule)(t) for t in range(warmup_steps + 101)]
    python = [eval(schedule.lr_expression, {"exp": math.exp, "max": max, "eta0": 0.3, "tau": tau,
                                            "warmup_steps": warmup_steps, "min_lr": min_lr, "t": t})
              for t in range(warmup_steps + 101)]
    keras = types.SimpleNamespace(ops=types.SimpleNamespace(exp=np.exp, where=np.where))
    text = KERAS.floor("MIN_LR", f"({lr_expression(kind, warmup_steps, 0.0, law, KERAS)})")
    step = np.arange(warmup_steps + 101, dtype=np.float64)
    lr = eval(text, {"keras": keras, "ETA0": 0.3, "TAU": tau, "WARMUP_STEPS": warmup_steps, "MIN_LR": min_lr, "step": step})
    assert python == pytest.approx(expected, rel=1e-15)
    assert np.broadcast_to(lr, step.shape).tolist() == pytest.approx(expected, rel=1e-12)

    def linear_schedule(init_value, end_value, transition_steps):  # optax: constant init when transition_steps <= 0
        if transition_steps <= 0:
            return lambda count: init_value + 0.0 * count
        return lambda count: init_value + (end_value - init_value) * np.clip(count, 0, transition_steps) / transition_steps

    def join_schedules(schedules, boundaries):
        def joined(count):
            out = schedules[0](count)
            for boundary, later in zip(boundaries, schedules[1:]):
                out = np.where(count < boundary, out, later(count - boundary))
            return out
        return joined

    optax = types.SimpleNamespace(
        constant_schedule=lambda value: lambda count: value + 0.0 * count,
        exponential_decay=lambda init_value, transition_steps, decay_rate: lambda count: init_value * decay_rate ** (count / transition_steps),
        linear_schedule=linear_schedule, join_schedules=join_schedules)
    lines: list[str] = []
    composed = lr_law(kind, warmup_steps, min_lr, law).optax(lines)
    namespace = {"optax": optax, "jnp": np, "ETA0": 0.3, "GAMMA": schedule.gamma, "WARMUP_STEPS": warmup_steps, "MIN_LR": min_lr}
    exec("\n".join([*lines, f"schedule = {composed}"]), namespace)
    assert np.asarray(namespace["schedule"](step)).tolist() == pytest.approx(expected, rel=1e-12)
