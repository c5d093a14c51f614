"""Issue 18: code-execution paths, files left wrong, unbounded resources, and errors that were
internal or misleading. Each test failed on the code before the fix; payloads only write a marker."""

from __future__ import annotations

import json
import math
import os
import pickle
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from conftest import ROOT, mlp, one_line_error, run, save_data, save_script
from thermocal.errors import DataError, InputError
from thermocal.io.data import load_sample
from thermocal.io.user_code import import_callable
from thermocal.schedule.export import render
from thermocal.schedule.file import loads
from thermocal.schedule.runtime import load_schedule

GOLDEN = ROOT / "tests" / "golden" / "v1"
ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


class Marker:
    """Unpickling it writes `path`: the proof that code ran."""

    path = Path("/nonexistent")

    def __reduce__(self):
        return (Path.write_text, (self.path, "ran"))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("security")
    model = mlp([6, 8, 3]).eval()
    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(96, 6, generator=generator), torch.randint(0, 3, (96,), generator=generator)
    dynamic = torch.export.export(model, (x[:4],), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(dynamic, str(root / "dynamic.pt2"))
    torch.export.save(torch.export.export(model, (x[:8],)), str(root / "fixed.pt2"))
    return {"root": root, "model": model, "x": x, "y": y, "data": save_data(root / "data.pt", inputs=x, targets=y),
            "script": save_script(model, root / "model.ts")}


def rewrite_zip(source: Path, target: Path, change) -> Path:
    """Copy a zip archive entry by entry; `change(name, data)` returns the entries to write instead."""
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w") as dst:
        for info in src.infolist():
            for name, data, compression in change(info.filename, src.read(info)):
                dst.writestr(zipfile.ZipInfo(name), data, compress_type=compression)
    return target


def keep(name: str, data: bytes):
    return [(name, data, zipfile.ZIP_STORED)]


# ----------------------------------------------------------------------------- 1. .pt2 constants


def with_constant(path_name: str, payload: bytes):
    """A change adding a constant stored as `path_name`, described as pickled, beside the real ones."""
    def change(name: str, data: bytes):
        if name.endswith("model_constants_config.json"):
            config = json.loads(data)
            config["config"]["extra"] = {"path_name": path_name, "is_param": False, "use_pickle": True, "tensor_meta": None}
            folder = name.rsplit("/", 1)[0]
            return [(f"{folder}/{path_name}", payload, zipfile.ZIP_STORED), (name, json.dumps(config).encode(),
                                                                              zipfile.ZIP_STORED)]
        return keep(name, data)
    return change


@pytest.mark.parametrize("path_name", ["opaque_obj_0", "custom_obj_0", "tensor_7"])
def test_a_pt2_with_a_pickled_constant_is_refused_before_it_runs(tiny, tmp_path, path_name) -> None:
    Marker.path = tmp_path / "ran"
    evil = rewrite_zip(tiny["root"] / "dynamic.pt2", tmp_path / "evil.pt2", with_constant(path_name, pickle.dumps(Marker())))
    line = one_line_error(run("probe", evil, tiny["data"], "-q", "-o", tmp_path / "o.json"), 2, "evil.pt2: entry")
    assert path_name in line or "'extra'" in line
    assert not Marker.path.exists() and not (tmp_path / "o.json").exists()


def test_a_pt2_with_compiled_code_or_a_pickled_weight_is_refused(tiny, tmp_path) -> None:
    def aoti(name: str, data: bytes):
        extra = [(name.split("/", 1)[0] + "/data/aotinductor/model/model.so", b"\x7fELF", zipfile.ZIP_STORED)]
        return keep(name, data) + (extra if name.endswith("archive_version") else [])

    one_line_error(run("probe", rewrite_zip(tiny["root"] / "dynamic.pt2", tmp_path / "aoti.pt2", aoti), tiny["data"], "-q"),
                   2, "aoti.pt2: entry", "AOTInductor")

    def pickled_weight(name: str, data: bytes):
        if name.endswith("model_weights_config.json"):
            config = json.loads(data)
            next(iter(config["config"].values()))["use_pickle"] = True
            data = json.dumps(config).encode()
        return keep(name, data)

    one_line_error(run("probe", rewrite_zip(tiny["root"] / "dynamic.pt2", tmp_path / "w.pt2", pickled_weight), tiny["data"],
                       "-q"), 2, "w.pt2: entry", "as a pickled object, not plain tensor storage")


def test_the_readme_names_what_a_pt2_may_hold() -> None:
    security = (ROOT / "README.md").read_text().split("## Security", 1)[1].split("\n## ", 1)[0]
    for word in ("opaque_obj_", "custom_obj_", "use_pickle", "AOTInductor", "compressed"):
        assert word in security, word


# ----------------------------------------------------------------------------- 2. snippets


def golden(name: str = "digits_plain.json") -> dict:
    return json.loads((GOLDEN / name).read_text())


@pytest.mark.parametrize("stamp", ["2026-11-28T21:17:26+00:00\nimport os; os.system('id')", "yesterday",
                                   "2026-11-28T21:17:26"])
def test_created_at_must_be_an_iso_datetime_with_an_offset(tmp_path, stamp) -> None:
    doc = golden()
    doc["created_at"] = stamp
    path = tmp_path / "t.json"
    path.write_text(json.dumps(doc))
    for command in ("export", "check"):
        one_line_error(run(command, path, *(["--format", "torch"] if command == "export" else [])), 2, "created_at")


def test_snippets_render_the_parsed_date_not_the_raw_string(tmp_path) -> None:
    doc = golden()
    doc["created_at"] = "2026-11-28T21:17:26.000+00:00"
    path = tmp_path / "t.json"
    path.write_text(json.dumps(doc))
    text = run("export", path, "--format", "torch").stdout
    assert "created 2026-11-28T21:17:26+00:00\n" in text
    compile(text, "snippet", "exec")


# ----------------------------------------------------------------------------- 3. sys.path


def test_arch_module_import_leaves_sys_path_as_it_was(tmp_path, monkeypatch) -> None:
    (tmp_path / "myarch.py").write_text("def build():\n    return 1\n")
    monkeypatch.chdir(tmp_path)
    before = list(sys.path)
    assert import_callable("myarch:build", "--arch")() == 1
    assert sys.path == before


def test_a_module_shadowing_the_stdlib_in_the_working_directory_is_never_imported(tiny, tmp_path) -> None:
    (tmp_path / "arch.py").write_text("import torch\ndef build():\n    torch.manual_seed(0)\n"
                                      "    return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))\n")
    (tmp_path / "tabnanny.py").write_text(f"open({str(tmp_path / 'ran')!r}, 'w').write('x')\n")
    torch.save(tiny["model"].state_dict(), tmp_path / "state.pt")
    code = ("import sys; from thermocal.io.checkpoint import load_model, ModelOptions; from pathlib import Path; "
            "load_model(Path('state.pt'), ModelOptions(arch='arch:build')); import tabnanny")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env={**ENV, "PYTHONSAFEPATH": "1"},
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "ran").exists()


# ----------------------------------------------------------------------------- 4. terminal escapes


def test_escapes_in_csv_headers_and_schedule_strings_never_reach_the_terminal(tiny, tmp_path) -> None:
    (tmp_path / "d.csv").write_text("a\x1b[31m,b\n1,2\n3,4\n")
    line = one_line_error(run("probe", tiny["script"], tmp_path / "d.csv", "-q"), 2, "--target-column")
    assert "\x1b" not in line and "\\x1b" in line
    doc = golden()
    doc["diagnostics"][0]["section"] = "\x1b]0;pwned\x07"
    path = tmp_path / "t.json"
    path.write_text(json.dumps(doc))
    for command in ("check", "show", "export"):
        result = run(command, path)
        assert "\x1b" not in result.output and "\x07" not in result.output
        one_line_error(result, 2, "control character")


def test_rich_markup_in_a_schedule_string_is_shown_as_written(tmp_path) -> None:
    doc = golden()
    doc["timings"] = {"[bold red]phase[/]": 1.0, "[/]": 2.0}
    path = tmp_path / "t.json"
    path.write_text(json.dumps(doc))
    result = run("show", path, "--no-color")
    assert result.exit_code == 0, result.output
    assert "[bold red]phase[/]" in result.stdout


# ----------------------------------------------------------------------------- 5. stdout errors


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
@pytest.mark.parametrize("fmt", ["json", "yaml", "csv", "torch"])
def test_export_to_a_full_disk_fails_with_one_line(fmt) -> None:
    with open("/dev/full", "w") as full:
        done = subprocess.run(["thermocal", "export", str(GOLDEN / "digits_plain.json"), "--format", fmt], stdout=full,
                              stderr=subprocess.PIPE, text=True, env=ENV)
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == ["thermocal: error: stdout: cannot be written (No space left on device)"]


# ----------------------------------------------------------------------------- 6. check re-derives convergence


def test_check_judges_convergence_by_residual_not_by_the_flag(tmp_path) -> None:
    doc = golden()
    record = doc["measurements"]["hessian"]["details"]["lambda_min"]
    record["residual"] = 1e3 * record["tolerance"] * abs(doc["measurements"]["hessian"]["lambda_min"])
    assert record["converged"] is True
    path = tmp_path / "t.json"
    path.write_text(json.dumps(doc))
    result = run("check", path)
    assert result.exit_code == 1 and "fail  convergence" in result.stdout and "hessian.lambda_min" in result.stdout
    doc = golden()
    trace = doc["measurements"]["hessian"]["details"]["trace"]
    trace["iterations"] = 3
    path.write_text(json.dumps(doc))
    assert run("check", path).exit_code == 1


def test_check_requires_every_estimate_record(tmp_path) -> None:
    doc = golden()
    doc["measurements"]["hessian"]["details"] = {}
    path = tmp_path / "t.json"
    path.write_text(json.dumps(doc))
    one_line_error(run("check", path), 2, "details lacks the record of lambda_max, trace, lambda_min")


# ----------------------------------------------------------------------------- 7. sys.exit in user code


USER_CODE = """
import sys, torch

def build():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))

def quits():
    sys.exit(0)

def data_quits():
    sys.exit()

def loss_quits(outputs, targets):
    sys.exit(0)

class QuitsLater(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = build()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        if self.calls > 3:
            sys.exit(0)
        return self.body(x)

def quits_later():
    return QuitsLater()

class Hungry(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = build()

    def forward(self, x):
        raise MemoryError()

def hungry():
    return Hungry()
"""


@pytest.fixture
def user_code(tiny, tmp_path) -> dict:
    (tmp_path / "code.py").write_text(USER_CODE)
    torch.save(tiny["model"].state_dict(), tmp_path / "state.pt")
    torch.save({f"body.{k}": v for k, v in tiny["model"].state_dict().items()}, tmp_path / "body.pt")
    return {"code": tmp_path / "code.py", "state": tmp_path / "state.pt", "body": tmp_path / "body.pt", "out": tmp_path / "o.json"}


def test_sys_exit_in_user_code_is_an_error_of_that_code(tiny, user_code) -> None:
    code, out = user_code["code"], user_code["out"]
    one_line_error(run("probe", user_code["state"], tiny["data"], "--arch", f"{code}:quits", "-o", out), 2,
                   "--arch", "sys.exit(0)")
    one_line_error(run("probe", tiny["script"], "--dataset", f"{code}:data_quits", "-o", out), 2, "--dataset", "sys.exit(None)")
    one_line_error(run("probe", tiny["script"], tiny["data"], "--loss", f"{code}:loss_quits", "-o", out), 2, "--loss",
                   "sys.exit(0)")
    one_line_error(run("probe", user_code["body"], tiny["data"], "--arch", f"{code}:quits_later", "-o", out, "--batch-size", 16),
                   2, "called sys.exit(0)")
    assert not out.exists()


def test_running_out_of_memory_is_one_line_with_a_remedy(tiny, user_code) -> None:
    one_line_error(run("probe", user_code["body"], tiny["data"], "--arch", f"{user_code['code']}:hungry", "-o",
                       user_code["out"]), 2, "out of memory", "--micro-batch")


# ----------------------------------------------------------------------------- 8, 9. bounded memory


def test_a_stride_0_view_is_refused_when_it_cannot_fit_and_subsampled_before_it_is_copied(tmp_path, monkeypatch) -> None:
    row = torch.randn(1, 64)
    save_data(tmp_path / "wide.pt", inputs=row.expand(100_000, 64), targets=torch.zeros(1, dtype=torch.long).expand(100_000))
    assert (tmp_path / "wide.pt").stat().st_size < 4096
    monkeypatch.setattr("thermocal.io.data.memory_budget", lambda: 1 << 20)
    with pytest.raises(DataError, match=r"100000 examples of 264 bytes take .* --max-samples 3971"):
        load_sample(tmp_path / "wide.pt")
    sample = load_sample(tmp_path / "wide.pt", max_samples=1000)
    assert sample.inputs.shape == (1000, 64) and sample.total_samples == 100_000
    assert torch.equal(sample.inputs[-1], row[0])


def test_nan_under_a_repeating_view_is_found_in_its_storage(tmp_path) -> None:
    save_data(tmp_path / "nan.pt", inputs=torch.tensor([[float("nan"), 1.0]]).expand(50, 2), targets=torch.zeros(50, dtype=torch.long))
    with pytest.raises(DataError, match="'inputs' holds NaN or Inf"):
        load_sample(tmp_path / "nan.pt")


def deflated(name: str, data: bytes):
    return [(name, data, zipfile.ZIP_DEFLATED)]


def test_compressed_entries_in_torch_files_are_refused(tiny, tmp_path) -> None:
    torch.save({"inputs": torch.zeros(4096, 64), "targets": torch.zeros(4096, dtype=torch.long)}, tmp_path / "zeros.pt")
    bomb = rewrite_zip(tmp_path / "zeros.pt", tmp_path / "bomb.pt", deflated)
    assert bomb.stat().st_size < 20_000  # 1 MB of zeros
    one_line_error(run("probe", tiny["script"], bomb, "-q"), 2, "bomb.pt: entry", "is compressed")
    torch.save(tiny["model"].state_dict(), tmp_path / "state.pt")
    squeezed = rewrite_zip(tmp_path / "state.pt", tmp_path / "squeezed.pt", deflated)
    one_line_error(run("probe", squeezed, tiny["data"], "-q", "--arch", "x:y"), 2, "squeezed.pt: entry", "is compressed")


def _with_undecodable_name(blob: bytearray, name: bytes) -> None:
    """The first entry's name made invalid UTF-8 while the entry still says its name is UTF-8
    (flag bit 11): zipfile raises UnicodeDecodeError, not BadZipFile."""
    for header, flags in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):  # local header, central directory
        at = blob.index(header)
        blob[at + flags + 1] |= 0x08  # general purpose flag bit 11: the name is UTF-8
        blob[blob.index(name, at)] = 0xAA  # a continuation byte cannot start a UTF-8 character


def _with_unknown_version(blob: bytearray, name: bytes) -> None:
    """The first entry needs zip version 12.8 to extract: zipfile raises NotImplementedError."""
    at = blob.index(b"PK\x01\x02")
    blob[at + 6] = 128  # "version needed to extract", in tenths


@pytest.mark.parametrize("damage", [_with_undecodable_name, _with_unknown_version])
def test_a_zip_that_zipfile_cannot_open_is_one_line(tiny, tmp_path, damage) -> None:
    """Found by fuzzing: zipfile raises UnicodeDecodeError or NotImplementedError, not only
    BadZipFile, and those escaped the archive check as internal errors."""
    torch.save({"inputs": torch.zeros(64, 6), "targets": torch.zeros(64, dtype=torch.long)}, tmp_path / "data.pt")
    torch.save(tiny["model"].state_dict(), tmp_path / "state.pt")
    for source, odd in (("data.pt", "odd.pt"), ("state.pt", "odd_state.pt")):
        blob = bytearray((tmp_path / source).read_bytes())
        damage(blob, zipfile.ZipFile(tmp_path / source).infolist()[0].filename.encode())
        (tmp_path / odd).write_bytes(bytes(blob))
    one_line_error(run("probe", tiny["script"], tmp_path / "odd.pt", "-q"), 2, "odd.pt")
    one_line_error(run("probe", tmp_path / "odd_state.pt", tiny["data"], "-q", "--arch", "x:y"), 2, "odd_state.pt")


def test_npz_reads_only_the_arrays_it_uses_and_each_within_the_budget(tmp_path, monkeypatch) -> None:
    x, y = np.random.default_rng(0).normal(size=(40, 6)).astype(np.float32), np.zeros(40, dtype=np.int64)
    np.savez_compressed(tmp_path / "d.npz", inputs=x, targets=y, junk=np.zeros(3_000_000))
    monkeypatch.setattr("thermocal.io.data.memory_budget", lambda: 1 << 20)
    assert load_sample(tmp_path / "d.npz").inputs.shape == (40, 6)  # 24 MB of junk never decompressed
    np.savez_compressed(tmp_path / "big.npz", inputs=np.zeros((200_000, 6)), targets=np.zeros(200_000, dtype=np.int64))
    with pytest.raises(DataError, match="'inputs' would take .* GB once decompressed"):
        load_sample(tmp_path / "big.npz")


# ----------------------------------------------------------------------------- 10. schedule files


def test_schedule_files_are_parsed_as_json_and_bounded(tmp_path) -> None:
    deep = tmp_path / "deep.json"
    deep.write_text('{"format": "thermocal.schedule/v1", "x": ' + "[" * 5000 + "]" * 5000 + "}")
    for command in ("check", "export", "show"):
        one_line_error(run(command, deep), 2, "nested more than 32 levels")
    huge = tmp_path / "huge.json"
    huge.write_text('{"format": "thermocal.schedule/v1", "pad": "' + "x" * (9 << 20) + '"}')
    one_line_error(run("check", huge), 2, "huge.json: is 9 MB")
    deep_yaml = tmp_path / "deep.yaml"
    deep_yaml.write_text("".join("  " * i + f"k{i}:\n" for i in range(3000)) + "  " * 3000 + "v: 1\n")
    with pytest.raises(InputError):
        load_schedule(deep_yaml)


# ----------------------------------------------------------------------------- 11. streaming


def test_csv_is_produced_a_line_at_a_time(tmp_path) -> None:
    import tracemalloc

    doc = golden()
    doc["schedule"]["steps"] = 2_000_000
    doc = loads(json.dumps(doc), "t")
    lines = render(doc, "csv", every=1)
    assert not isinstance(lines, (str, list))
    tracemalloc.start()
    count = sum(1 for _ in lines)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert count == 2_000_002 and peak < 1 << 20


def test_monitor_replay_does_constant_work_per_row() -> None:
    """Counted, not timed: Python-level calls per row stay flat as the window grows."""
    from thermocal.monitor import replay

    schedule = load_schedule(GOLDEN / "digits_plain.json")

    def calls(window: int) -> int:
        rows = [(i, 1.0 / (1 + 0.01 * i), 1.0, 1e-3) for i in range(3000)]
        count = 0

        def tally(frame, event, arg):
            nonlocal count
            count += event == "call"

        sys.setprofile(tally)
        try:
            replay(rows, schedule, window=window)
        finally:
            sys.setprofile(None)
        return count

    assert calls(1000) < 1.5 * calls(10)


# ----------------------------------------------------------------------------- 12. fixed batch size


def test_a_program_exported_for_a_fixed_batch_is_fed_that_batch_size(tiny, tmp_path) -> None:
    fixed = run("probe", tiny["root"] / "fixed.pt2", tiny["data"], "--batch-size", 16, "-o", tmp_path / "f.json",
                "--micro-batch", 20, "--hessian-trace")
    assert fixed.exit_code == 0, fixed.output
    assert "exported for batches of 8: the probe feeds it 8 examples at a time" in fixed.stderr
    dynamic = run("probe", tiny["root"] / "dynamic.pt2", tiny["data"], "--batch-size", 16, "-o", tmp_path / "d.json", "-q",
                  "--hessian-trace")
    assert dynamic.exit_code == 0, dynamic.output
    files = [json.loads((tmp_path / n).read_text())["measurements"] for n in ("f.json", "d.json")]
    a, b = (m["hessian"] for m in files)
    for key in ("lambda_max", "trace"):
        assert a[key] == pytest.approx(b[key], rel=1e-6)
    # the Gauss-Newton trace ([H15]) feeds the program its 8 examples at a time: unbiased, with its error from the chunks
    gf, gd = (m["gauss_newton"] for m in files)
    assert gf["examples"] == gd["examples"] and gf["stderr"] > gd["stderr"] > 0
    assert abs(gf["trace"] - gd["trace"]) <= 4 * math.hypot(gf["stderr"], gd["stderr"])
    one_line_error(run("probe", tiny["root"] / "fixed.pt2", tiny["data"], "--batch-size", 12, "-q"), 2,
                   "fixed.pt2: was exported for batches of exactly 8", "--batch-size must be a multiple of 8", "dynamic_shapes")


def test_a_fixed_batch_that_does_not_divide_the_hessian_subsample_is_fed_whole_batches(tmp_path) -> None:
    """A program exported for batches of 24 on 1200 examples: a Hessian subsample of 512 is not a
    multiple of 24, and was fed as one batch of 512 (exit 2, blaming the data)."""
    program = torch.export.export(mlp([6, 8, 3]).eval(), (torch.zeros(24, 6),))
    torch.export.save(program, str(tmp_path / "fixed24.pt2"))
    generator = torch.Generator().manual_seed(0)
    data = save_data(tmp_path / "d.pt", inputs=torch.randn(1200, 6, generator=generator),
                     targets=torch.randint(0, 3, (1200,), generator=generator))
    result = run("probe", tmp_path / "fixed24.pt2", data, "--batch-size", 48, "--hessian-samples", 512, "-q",
                 "-o", tmp_path / "f.json")
    assert result.exit_code == 0, result.output
    doc = json.loads((tmp_path / "f.json").read_text())
    assert doc["inputs"]["hessian_samples"] == 504 and doc["settings"]["hessian_samples"] == 512


# ----------------------------------------------------------------------------- 13. no crash on odd files


def test_show_and_check_answer_every_file_that_validates(tmp_path) -> None:
    doc = golden("digits_blocks_density_nosteps.json")
    doc["measurements"]["hessian"]["density"]["grid"] = [0.0]
    path = tmp_path / "t.json"
    path.write_text(json.dumps(doc))
    one_line_error(run("show", path), 2, "density.grid")
    doc = golden()
    doc["schedule"]["steps"] = 10**400
    path.write_text(json.dumps(doc))
    for command in ("check", "show", "export"):
        one_line_error(run(command, path), 2, "schedule.steps")


def test_a_monitor_log_with_a_huge_or_odd_step_is_one_line(tmp_path) -> None:
    log = tmp_path / "log.csv"
    log.write_text("step,loss,grad_norm,lr\n1e400,1,1,0.1\n")
    one_line_error(run("monitor", log), 2, "line 2: step, loss, grad_norm and lr must be finite")
    log.write_text("step,loss,grad_norm,lr\n1.5,1,1,0.1\n")
    one_line_error(run("monitor", log), 2, "step 1.5 is not a whole number")


# ----------------------------------------------------------------------------- 14. advice that helps


def test_remedies_fit_the_problem(tiny, tmp_path) -> None:
    from thermocal.check import remedy

    assert "--dtype float32" in remedy("bfloat16") and "--max-iter" not in remedy("bfloat16")
    assert "--max-iter" in remedy("float32")
    save_data(tmp_path / "one.pt", inputs=tiny["x"][:1], targets=tiny["y"][:1])
    line = one_line_error(run("probe", tiny["script"], tmp_path / "one.pt", "--batch-size", 1, "-q"), 2, "N = 1 examples")
    assert "lower --batch-size" not in line and "add data" in line


def test_model_errors_say_what_the_model_did(tiny, tmp_path) -> None:
    class Rounds(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = mlp([6, 8, 3])

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.body(x).round().long()

    class Broken(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = mlp([6, 8, 3])

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise ValueError("lookup table not loaded")

    one_line_error(run("probe", save_script(Rounds(), tmp_path / "r.ts"), tiny["data"], "-q"), 2, "returned int64 values")
    line = one_line_error(run("probe", save_script(Broken(), tmp_path / "b.ts"), tiny["data"], "-q"), 2,
                          "the model's forward raised", "lookup table not loaded")
    assert "do not fit" not in line


def test_state_dict_mismatch_lists_only_what_is_there(tiny, tmp_path) -> None:
    (tmp_path / "arch.py").write_text("import torch\ndef build():\n    return torch.nn.Sequential(torch.nn.Linear(6, 8), "
                                      "torch.nn.Tanh(), torch.nn.Linear(8, 3), torch.nn.Linear(3, 3))\n")
    torch.save(tiny["model"].state_dict(), tmp_path / "state.pt")
    line = one_line_error(run("probe", tmp_path / "state.pt", tiny["data"], "--arch", f"{tmp_path / 'arch.py'}:build", "-q"),
                          2, "missing keys [3.weight, 3.bias]")
    assert "unexpected" not in line


def test_logs_with_a_bom_or_a_short_row_and_multiline_loss_errors(tiny, tmp_path) -> None:
    log = tmp_path / "log.csv"
    log.write_bytes("\ufeffstep,loss,grad_norm,lr\n".encode() + b"".join(f"{i},1,1,0.1\n".encode() for i in range(5)))
    assert run("monitor", log, "--window", 2, "--schedule", GOLDEN / "digits_plain.json").exit_code == 0
    log.write_text("step,loss,grad_norm,lr\n0,1,1\n")
    one_line_error(run("monitor", log), 2, "line 2 has 3 fields, the header 4")
    (tmp_path / "lossy.py").write_text("def loss(o, t):\n    raise ValueError('first\\nsecond\\nthird')\n")
    line = one_line_error(run("probe", tiny["script"], tiny["data"], "--loss", f"{tmp_path / 'lossy.py'}:loss", "-q"), 2,
                          "ValueError: first")
    assert "second" not in line


def test_library_warnings_do_not_reach_stderr(tiny, tmp_path) -> None:
    (tmp_path / "arch.py").write_text("import warnings, torch\nwarnings.warn('a library talking', UserWarning)\n"
                                      "def build():\n    torch.manual_seed(0)\n    return torch.nn.Sequential(torch.nn.Linear(6, 8), "
                                      "torch.nn.Tanh(), torch.nn.Linear(8, 3))\n")
    torch.save(tiny["model"].state_dict(), tmp_path / "state.pt", _use_new_zipfile_serialization=False)
    done = subprocess.run(["thermocal", "probe", "state.pt", str(tiny["data"]), "--arch", "arch.py:build", "-q"],
                          cwd=tmp_path, env=ENV, capture_output=True, text=True)
    assert done.returncode == 0 and done.stderr == "", done.stderr


# ----------------------------------------------------------------------------- 15. --out


def test_a_dangling_out_symlink_is_refused_before_anything_runs(tmp_path) -> None:
    (tmp_path / "link.json").symlink_to(tmp_path / "missing" / "target.json")
    one_line_error(run("probe", tmp_path / "no-model.pt", tmp_path / "no-data", "-o", tmp_path / "link.json"), 2,
                   "link.json: is a symlink to", "which does not exist")


# ----------------------------------------------------------------------------- fuzz


def _field_paths(value, prefix=()):
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _field_paths(item, (*prefix, key))
    elif isinstance(value, list) and value:
        yield from _field_paths(value[0], (*prefix, 0))
    yield prefix


GOLDEN_DOCS = {f"{path.parent.name}/{path.name}": json.loads(path.read_text())
               for path in sorted(GOLDEN.parent.glob("v*/*.json"))}
PATHS = sorted({(name, path) for name, doc in GOLDEN_DOCS.items() for path in _field_paths(doc) if path},
               key=repr)
ODD_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(10**30), max_value=10**30), st.just(10**400), st.just(-(2**63)),
    st.floats(allow_nan=False, allow_infinity=False), st.just(1e308), st.just(-1e-308), st.just(0.0),
    st.text(max_size=20), st.sampled_from(["\x1b[31m", "[bold]x[/]", "a\nb", "\u202e", "", "[/]"]),
    st.lists(st.integers(), max_size=3), st.just({}), st.just([]), st.recursive(st.integers(), lambda c: st.lists(c, max_size=2), max_leaves=40),
)


@pytest.mark.slow
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(target=st.sampled_from(PATHS), value=ODD_VALUES, text_format=st.sampled_from(["json", "yaml"]))
def test_hand_edited_schedule_files_never_give_an_internal_error(tmp_path_factory, target, value, text_format) -> None:
    import yaml

    name, path = target
    doc = json.loads(json.dumps(GOLDEN_DOCS[name]))
    holder = doc
    for key in path[:-1]:
        holder = holder[key]
    holder[path[-1]] = value
    file = tmp_path_factory.mktemp("fuzz") / f"t.{text_format}"
    file.write_text(json.dumps(doc) if text_format == "json" else yaml.safe_dump(doc))
    for args in (["check", file], ["export", file, "--format", "csv", "--every", "1000"], ["export", file, "--format", "keras"],
                 ["export", file, "--format", "env"], ["show", file]):
        result = run(*args)
        assert result.exit_code in (0, 1, 2), (args[0], path, value, result.output)
        assert "internal error" not in result.stderr, (args[0], path, value, result.stderr)
        assert "\x1b" not in result.output
    try:
        load_schedule(file)
    except InputError:
        pass
