"""Settings files, schedule files and variables that come from someone else: they name no code
that runs, expand to no more than their size, collide with no variable an export writes, and
answer bad input in one line. Payloads only write a marker file; each test fails on the code
before these rules (4fcabd8)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, SAMPLES, one_line_error, run
from thermocal.check import check
from thermocal.config import CODE_SETTINGS, EXPORT_ENV_PREFIX, Config, from_environment, make_config, runs_code
from thermocal.errors import InputError
from thermocal.schedule.file import dumps, loads

DIGITS = SAMPLES / "digits_mlp"
GOLDEN = ROOT / "tests" / "golden" / "v2" / "digits_default.json"
ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}

PAYLOAD = """
import pathlib
pathlib.Path({marker!r}).write_text("ran")

def loss(outputs, targets):
    import torch.nn.functional as F
    return F.cross_entropy(outputs, targets)

def build():
    raise SystemExit("not reached")

def data():
    raise SystemExit("not reached")
"""


@pytest.fixture
def payload(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A module `helpers` in the working folder and a file `payload.py`; importing either writes the marker."""
    monkeypatch.delitem(sys.modules, "helpers", raising=False)  # another test's, imported in this process
    marker = tmp_path / "MARKER"
    for where in (Path.cwd() / "helpers.py", tmp_path / "payload.py"):
        where.write_text(PAYLOAD.format(marker=str(marker)))
    return marker, tmp_path / "payload.py"


def their_file(tmp_path: Path, **settings: object) -> Path:
    """The golden v2 file with `settings` changed: a schedule file someone sent."""
    doc = json.loads(GOLDEN.read_text())
    doc["settings"].update(settings)
    path = tmp_path / "their.json"
    path.write_text(json.dumps(doc))
    return path


def probe(*args: object, env: dict | None = None):
    return run("probe", DIGITS / "model.pt", DIGITS / "data", "-q", *args, env=env)


@pytest.mark.parametrize("setting, value, flag", [
    ("loss", "helpers:loss", "--loss"), ("loss", "PAYLOAD:loss", "--loss"), ("arch", "helpers:build", "--arch"),
    ("dataset", "helpers:data", "--dataset"), ("trust_checkpoint", True, "--trust-checkpoint"),
])
def test_a_schedule_file_that_names_code_is_refused_unless_the_command_line_allows_it(
        tmp_path: Path, payload, setting: str, value: object, flag: str) -> None:
    marker, script = payload
    value = f"{script}:loss" if value == "PAYLOAD:loss" else value
    file = their_file(tmp_path, **{setting: value})
    out = tmp_path / "out.json"
    line = one_line_error(probe("--config", file, "-o", out), 2, setting, str(file), flag, "--allow-code-from-config")
    assert not marker.exists() and not out.exists(), line


@pytest.mark.parametrize("suffix, text", [
    (".toml", 'loss = "helpers:loss"\n'), (".yaml", "loss: helpers:loss\n"), (".json", '{"loss": "helpers:loss"}'),
    (".toml", "trust_checkpoint = true\n"), (".yaml", "arch: helpers:build\n"),
])
def test_a_settings_file_that_names_code_is_refused(tmp_path: Path, payload, suffix: str, text: str) -> None:
    marker, _ = payload
    file = tmp_path / f"settings{suffix}"
    file.write_text(text)
    one_line_error(probe("--config", file, "-o", tmp_path / "o.json"), 2, str(file), "--allow-code-from-config")
    assert not marker.exists()


@pytest.mark.parametrize("variable, value", [("THERMOCAL_LOSS", "helpers:loss"), ("THERMOCAL_ARCH", "helpers:build"),
                                             ("THERMOCAL_DATASET", "helpers:data"), ("THERMOCAL_TRUST_CHECKPOINT", "1")])
def test_a_variable_that_names_code_is_refused(tmp_path: Path, payload, variable: str, value: str) -> None:
    marker, _ = payload
    one_line_error(probe("-o", tmp_path / "o.json", env={variable: value}), 2, variable, "--allow-code-from-config")
    assert not marker.exists()


def test_allowed_code_from_a_file_is_named_before_it_runs(tmp_path: Path, payload) -> None:
    marker, _ = payload
    out = tmp_path / "out.json"
    done = probe("--config", their_file(tmp_path, loss="helpers:loss"), "--steps", 300, "--allow-code-from-config",
                 "-o", out)
    assert done.exit_code == 0, done.output
    assert marker.read_text() == "ran"
    warnings = [line for line in done.stderr.splitlines() if "--allow-code-from-config" in line]
    assert len(warnings) == 1 and "helpers:loss" in warnings[0] and "their.json" in warnings[0]
    assert json.loads(out.read_text())["settings"]["loss"] == "helpers:loss"


def test_code_named_on_the_command_line_runs_and_a_file_cannot_lower_trust(tmp_path: Path, payload) -> None:
    marker, _ = payload
    file = their_file(tmp_path, loss="helpers:loss")
    done = probe("--config", file, "--loss", "helpers:loss", "--steps", 300, "-o", tmp_path / "a.json")
    assert done.exit_code == 0, done.output
    assert marker.exists() and "--allow-code-from-config" not in done.stderr
    # a file that sets a code setting to its harmless value is fine
    assert make_config({}, their_file(tmp_path, trust_checkpoint=False, loss="mse")).loss == "mse"


def test_out_and_force_in_a_file_overwrite_nothing(tmp_path: Path) -> None:
    existing = tmp_path / "thermocal.json"
    existing.write_text("mine")
    (tmp_path / "s.toml").write_text(f'out = "{existing}"\nforce = true\n')
    one_line_error(probe("--config", tmp_path / "s.toml", "-o", existing), 2, "--out")
    assert existing.read_text() == "mine"


def test_which_values_run_code() -> None:
    assert set(CODE_SETTINGS) == {"arch", "dataset", "loss", "trust_checkpoint"}
    assert runs_code("loss", "m:f") and runs_code("loss", "a/b.py:f") and not runs_code("loss", "cross_entropy")
    assert runs_code("trust_checkpoint", True) and runs_code("trust_checkpoint", "yes")
    assert not any(runs_code("trust_checkpoint", v) for v in (False, None, "0", "false", "off", ""))
    assert runs_code("arch", "m:f") and not runs_code("arch", None) and not runs_code("params", "x")


def test_check_reports_code_settings_and_strict_fails_them(tmp_path: Path) -> None:
    doc = loads(their_file(tmp_path, loss="helpers:loss", arch="m:build").read_text(), "their.json")
    findings = {f.check: f for f in check(doc).findings}
    assert findings["settings"].status == "warn" and "helpers:loss" in findings["settings"].message
    assert check(doc).passed and not check(doc, strict=True).passed
    plain = loads(GOLDEN.read_text(), "golden")
    assert "settings" not in {f.check for f in check(plain, strict=True).findings}
    result = run("check", their_file(tmp_path, trust_checkpoint=True), "--strict")
    assert result.exit_code == 1 and "trust_checkpoint" in result.stdout


def test_check_judges_convergence_by_the_settings_tolerance_not_the_files(tmp_path: Path) -> None:
    doc = json.loads(GOLDEN.read_text())
    record = doc["measurements"]["hessian"]["details"]["lambda_max"]
    lam = doc["measurements"]["hessian"]["lambda_max"]
    record.update(tolerance=10.0, residual=0.5 * lam)  # a residual 50x the settings' 1% passes a tolerance of 10
    edited = loads(json.dumps(doc), "edited")
    findings = {f.check: f.status for f in check(edited).findings}
    assert findings == {**findings, "tolerance": "fail", "convergence": "fail"} and not check(edited).passed
    # a residual within the settings' tolerance passes whatever (looser) tolerance the record states
    record.update(residual=0.5 * Config().eigen_rtol * lam)
    findings = {f.check: f.status for f in check(loads(json.dumps(doc), "edited")).findings}
    assert findings["convergence"] == "pass" and findings["tolerance"] == "fail"
    record.update(tolerance=Config().eigen_rtol)
    assert check(loads(json.dumps(doc), "honest")).passed


# ------------------------------------------------------------------------------- YAML aliases

def laughs(levels: int, width: int = 10) -> str:
    """A YAML document whose aliases expand to width**levels strings."""
    lines = ["a0: &a0 [" + ", ".join(["lol"] * width) + "]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def test_yaml_aliases_are_refused_in_schedule_and_settings_files(tmp_path: Path) -> None:
    bomb = "format: thermocal.schedule/v2\n" + laughs(9)  # 10^9 strings once expanded; a few hundred bytes here
    with pytest.raises(InputError, match="aliases"):
        loads(bomb, "bomb.yaml")
    (tmp_path / "bomb.yaml").write_text(bomb)
    one_line_error(run("check", tmp_path / "bomb.yaml"), 2, "bomb.yaml", "aliases")
    one_line_error(run("export", tmp_path / "bomb.yaml", "--format", "json"), 2, "bomb.yaml", "aliases")
    (tmp_path / "s.yaml").write_text("steps: &n 300\nwarmup_steps: *n\n")
    one_line_error(probe("--config", tmp_path / "s.yaml"), 2, "s.yaml", "aliases")


def test_written_yaml_has_no_aliases_and_reads_back() -> None:
    doc = loads(GOLDEN.read_text(), "golden")
    shared = {"a": 1.0}
    twice = doc.model_copy(update={"timings": shared, "settings": doc.settings})
    text = dumps(twice, "yaml")
    assert loads(text, "again") == twice
    assert not any(line.lstrip().startswith(("&", "*")) or ": &" in line or ": *" in line for line in text.splitlines())


# ------------------------------------------------------------------------------- exported variables

def test_export_env_variables_are_never_read_as_settings(tmp_path: Path) -> None:
    assert not any(name.upper().startswith(EXPORT_ENV_PREFIX[len("THERMOCAL_"):]) for name in Config.model_fields)
    lines = run("export", GOLDEN, "--format", "env").stdout.splitlines()
    exported = dict(line.split("=", 1) for line in lines)
    assert exported and all(key.startswith(EXPORT_ENV_PREFIX) for key in exported)
    assert from_environment(exported) == {}
    # eval "$(thermocal export --format env)" then probe: the same file as without it
    first, second = tmp_path / "first.json", tmp_path / "second.json"
    assert probe("--steps", 300, "-o", first).exit_code == 0
    done = probe("--steps", 300, "-o", second, env=exported)
    assert done.exit_code == 0, done.output
    a, b = (json.loads(p.read_text()) for p in (first, second))
    for doc in (a, b):
        doc.pop("created_at"), doc.pop("timings"), doc["inputs"].pop("threads")
    assert a == b


def test_an_older_export_in_the_environment_is_not_read_as_settings(tmp_path: Path) -> None:
    old = {"THERMOCAL_ETA0": "0.3", "THERMOCAL_STEPS": "2000", "THERMOCAL_KIND": "constant"}
    one_line_error(probe("-o", tmp_path / "o.json", env=old), 2, "THERMOCAL_STEPS", "THERMOCAL_ETA0")
    assert from_environment({"THERMOCAL_ETA0": "0.3"}) == {}  # alone it sets nothing


# ------------------------------------------------------------------------------- input that was exit 3

def test_a_monitor_log_that_warms_up_from_zero(tmp_path: Path) -> None:
    rows = ["step,loss,grad_norm,lr"] + [f"{t},{2.3 - 0.001 * t},1.0,{0.3 * min(t, 100) / 100}" for t in range(300)]
    rows += [f"{t},2.0,1.0,0.0" for t in range(300, 305)]  # and ends at zero, as linear-to-zero does
    (tmp_path / "log.csv").write_text("\n".join(rows) + "\n")
    done = run("monitor", tmp_path / "log.csv", "--schedule", GOLDEN, "--window", 10, "--json")
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["steps"] == 305
    (tmp_path / "neg.csv").write_text("step,loss,grad_norm,lr\n0,2.3,1.0,-0.1\n")
    one_line_error(run("monitor", tmp_path / "neg.csv", "--schedule", GOLDEN), 2, "neg.csv", "line 2")


def test_the_monitor_is_quiet_at_lr_zero() -> None:
    from thermocal.monitor import CoolingMonitor

    monitor = CoolingMonitor(GOLDEN, window=2)
    readings = [monitor.update(t, 2.0, 1.0, lr=lr) for t, lr in enumerate([0.0, 0.0, 0.1, 0.2, 0.0, 0.0])]
    assert [r.ratio is None for r in readings] == [True, True, False, False, True, True]
    assert readings[2].ratio == 0.0 and not any(r.fired for r in readings)


@pytest.mark.parametrize("which", ["model", "data"])
@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_model_and_data_that_are_not_files_are_refused_before_any_read(tmp_path: Path, which: str, kind: str) -> None:
    if kind == "fifo":
        special = tmp_path / "pipe"
        os.mkfifo(special)
    else:
        special = Path("/dev/zero")
        if not special.exists():
            pytest.skip("no /dev/zero")
    model, data = (special, DIGITS / "data") if which == "model" else (DIGITS / "model.pt", special)
    done = subprocess.run(["thermocal", "probe", str(model), str(data), "-o", str(tmp_path / "o.json")],
                          capture_output=True, text=True, env=ENV, timeout=120, stdin=subprocess.DEVNULL)
    lines = done.stderr.splitlines()  # one line, not even a blank one before it (a stopped progress bar's)
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert lines[0].startswith(f"thermocal: error: {special}: is a {kind}")


@pytest.mark.parametrize("args", [["show", str(GOLDEN)], ["--help"], ["--version"], ["probe", "--help"],
                                  ["export", str(GOLDEN)], ["check", str(GOLDEN)]])
def test_a_full_stdout_is_one_line_and_exit_2(args: list[str]) -> None:
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full")
    with open("/dev/full", "w") as full:
        done = subprocess.run(["thermocal", *args], stdout=full, stderr=subprocess.PIPE, text=True, env=ENV, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == ["thermocal: error: stdout: cannot be written (No space left on device)"]
