"""The CLI end to end through CliRunner: exit codes, stdout, stderr and files, each checked apart."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch
import yaml

from conftest import SAMPLES, one_line_error, run, save_data, save_script
from thermocal.schedule.file import loads

DIGITS = SAMPLES / "digits_mlp"
DIABETES = SAMPLES / "diabetes_mlp"


@pytest.fixture(scope="module")
def digits_result(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("probe") / "thermocal.json"
    result = run("probe", DIGITS / "model.pt", DIGITS / "data", "--steps", 2000, "--epsilon-stderrs", 1, "--out", out)
    return out, result


def test_probe_writes_a_valid_file_and_a_summary(digits_result) -> None:
    out, result = digits_result
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    for section in ("Measurements", "Schedule (exponential; calibration in loss units)", "Diagnostics", f"wrote {out}"):
        assert section in result.stderr
    doc = loads(out.read_text(), str(out))
    s = doc.schedule
    assert doc.format == "thermocal.schedule/v2" and doc.settings.steps == 2000 and doc.settings.rules == "loss-units"
    assert (doc.settings.epsilon_stderrs, doc.schedule.rules.epsilon_stderrs) == (1.0, 1.0)
    assert (s.steps, s.rules.tau_rule, s.lr_law, doc.inputs.loss, doc.inputs.batch_size) == (2000, "budget", "linear",
                                                                                            "cross_entropy", 32)
    assert s.tau == pytest.approx(2000 / math.log(s.T0 / s.Tf), rel=1e-12)
    assert s.gamma == pytest.approx(math.exp(-1 / s.tau), rel=1e-12)
    assert doc.inputs.model.num_params == 2410 and doc.inputs.data.num_samples == 1024
    cost, n = doc.measurements.cost, doc.inputs.hessian_samples  # cut to a quarter of the 64,000 example-gradients
    assert (cost.training_example_gradients, cost.budget, n) == (64_000, 0.25, 256)
    assert cost.example_gradients == 1024 + 2 * cost.hvps * n + cost.gauss_newton_example_gradients
    assert cost.fraction <= 0.25
    assert doc.measurements.hessian.lambda_min is None
    assert doc.measurements.hessian.converged
    assert [d.name for d in doc.diagnostics] == ["noise_floor", "guarantee", "adiabatic", "stability", "regime_start",
                                                 "minimal_work"]
    assert doc.table[0].step == 0 and doc.table[-1].step == 2000
    assert doc.table[-1].lr == pytest.approx(s.eta0 * s.Tf / s.T0, rel=1e-12)  # lr ∝ T: it ends at eta0·Tf/T0


def test_temperature_in_the_file_follows_from_a_direct_computation(digits_result) -> None:
    """tr Σ_B within its stated error of a direct computation (here: equal to float precision), and
    T0 = eta0·tr Σ_B/(2·d_eff) exactly ([N3], [C10])."""
    out, _ = digits_result
    doc = loads(out.read_text(), str(out))
    model = torch.jit.load(str(DIGITS / "model.pt"))
    data = torch.load(DIGITS / "data" / "sample.pt", weights_only=True)
    order = torch.randperm(1024, generator=torch.Generator().manual_seed(0))
    grads = []
    for idx in order.split(32):
        loss = torch.nn.functional.cross_entropy(model(data["inputs"][idx]), data["targets"][idx])
        grads.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, list(model.parameters()))]).double())
    g = torch.stack(grads)
    var = float(((g - g.mean(0)) ** 2).sum() / (len(g) - 1))
    noise = doc.measurements.gradient_noise
    assert abs(noise.grad_var - var) <= 1e-7 * var  # float32 gradients, summed in another order
    assert abs(noise.grad_var - var) <= noise.grad_var_stderr
    assert doc.schedule.T0 == pytest.approx(doc.schedule.eta0 * var / (2 * doc.calibration.d_eff), rel=1e-6)
    assert doc.calibration.T0_stderr == pytest.approx(doc.schedule.T0 * noise.grad_var_stderr / noise.grad_var, rel=1e-12)


def test_export_yaml_and_json_carry_the_same_content(digits_result, tmp_path: Path) -> None:
    out, _ = digits_result
    as_yaml = run("export", out, "--format", "yaml")
    as_json = run("export", out, "--format", "json")
    assert as_yaml.exit_code == 0 and as_json.exit_code == 0
    assert as_yaml.stderr == "" and as_json.stderr == ""
    assert yaml.safe_load(as_yaml.stdout) == json.loads(as_json.stdout) == json.loads(out.read_text())
    target = tmp_path / "schedule.yaml"
    assert run("export", out, "--out", target).exit_code == 0
    assert yaml.safe_load(target.read_text())["schedule"]["eta0"] == json.loads(out.read_text())["schedule"]["eta0"]
    again = run("export", out, "--out", target)
    one_line_error(again, 2, str(target), "already exists; pass --force")


def test_export_rejects_a_tampered_file(digits_result, tmp_path: Path) -> None:
    out, _ = digits_result
    data = json.loads(out.read_text())
    data["schedule"]["gamma"] = 0.5
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    one_line_error(run("export", bad), 2, str(bad), "gamma 0.5 is not exp(-1/tau)")
    bad.write_text("[1, 2")
    one_line_error(run("export", bad), 2, str(bad), "neither JSON nor YAML")
    one_line_error(run("export", tmp_path / "none.json"), 2, "none.json", "no such file")


def test_regression_sample_without_a_budget(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    result = run("probe", DIABETES / "model.pt", DIABETES / "data" / "sample.pt", "--out", out, "--quiet")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    doc = loads(out.read_text(), str(out))
    assert doc.inputs.loss == "mse"
    assert (doc.schedule.kind, doc.schedule.rules.tau_rule, doc.schedule.rules.flat_reason) == ("constant", "flat", "no_budget")
    literal = tmp_path / "literal.json"
    assert run("probe", DIABETES / "model.pt", DIABETES / "data" / "sample.pt", "--rules", "literal", "--out", literal,
               "-q").exit_code == 0
    doc = loads(literal.read_text(), str(literal))
    assert doc.schedule.rules.tau_rule == "relaxation" and doc.schedule.rules.steps_source == "implied"
    assert doc.schedule.tau == pytest.approx(doc.inputs.model.num_params / doc.schedule.Tf, rel=1e-12)


def test_refuses_to_overwrite_and_keeps_the_old_file(classifier, tmp_path: Path) -> None:
    model, data = classifier
    out = tmp_path / "keep.json"
    out.write_text("precious")
    one_line_error(run("probe", model, data, "--batch-size", 16, "--out", out), 2, str(out), "--force")
    assert out.read_text() == "precious"
    forced = run("probe", model, data, "--batch-size", 16, "--out", out, "--force", "--quiet")
    assert forced.exit_code == 0, forced.output
    assert loads(out.read_text(), str(out)).inputs.batch_size == 16


def test_written_files_get_the_usual_mode_not_a_temp_files_0600(classifier, tmp_path: Path) -> None:
    model, data = classifier
    out = tmp_path / "mode.json"
    assert run("probe", model, data, "--batch-size", 16, "--out", out, "-q").exit_code == 0
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask


def test_same_seed_same_numbers(classifier, tmp_path: Path) -> None:
    model, data = classifier
    docs = []
    for name in ("a.json", "b.json"):
        assert run("probe", model, data, "--batch-size", 16, "--out", tmp_path / name, "-q").exit_code == 0
        docs.append(json.loads((tmp_path / name).read_text()))
        docs[-1].pop("created_at")
        docs[-1].pop("timings")
    assert docs[0] == docs[1]


def test_degenerate_already_cold_exits_1_without_a_file(classifier, tmp_path: Path) -> None:
    model, data = classifier
    out = tmp_path / "cold.json"
    result = run("probe", model, data, "--batch-size", 16, "--rules", "literal", "--tf", 1e6, "--out", out, "-q")
    one_line_error(result, 1, "already cold: T0 = ", "<= Tf = 1e+06")
    assert not out.exists()
    flat = run("probe", model, data, "--batch-size", 16, "--rules", "literal", "--tf", 1e6, "--flat-if-cold", "--out", out, "-q")
    assert flat.exit_code == 0 and loads(out.read_text(), str(out)).schedule.kind == "constant"
    one_line_error(run("probe", model, data, "--tf", 1e6, "--out", out, "--force"), 2,
                          "--tf belongs to the literal rules: add --rules literal")


def test_non_finite_loss_exits_1(tmp_path: Path) -> None:
    class Overflow(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(3, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.linear(x) * 1e38 * 1e38

    model = save_script(Overflow(), tmp_path / "m.pt")
    data = save_data(tmp_path / "d.pt", x=torch.ones(8, 3), y=torch.zeros(8, dtype=torch.int64))
    result = run("probe", model, data, "--batch-size", 4, "--out", tmp_path / "o.json", "-q")
    one_line_error(result, 1, "the loss on minibatch 0 is nan, not finite")
    assert not (tmp_path / "o.json").exists()


def test_bad_inputs_exit_2_naming_the_file(classifier, tmp_path: Path) -> None:
    model, data = classifier
    out = tmp_path / "never.json"

    def probe(m: object, d: object, *extra: object):
        return run("probe", m, d, "--out", out, "-q", *extra)

    one_line_error(probe(tmp_path / "nope.pt", data), 2, "nope.pt: no such file")
    one_line_error(probe(model, tmp_path / "nope"), 2, "nope: no such file or directory")
    empty = tmp_path / "empty"
    empty.mkdir()
    one_line_error(probe(model, empty), 2, "empty: directory holds no data files")
    keys = save_data(tmp_path / "keys.pt", features=torch.ones(4, 6), labels=torch.zeros(4))
    one_line_error(probe(model, keys), 2, "keys.pt: has keys [features, labels]; expected inputs/targets or x/y")
    lengths = save_data(tmp_path / "len.pt", inputs=torch.ones(40, 6), targets=torch.zeros(39, dtype=torch.int64))
    one_line_error(probe(model, lengths), 2, "len.pt: 'inputs' has 40 examples but 'targets' has 39")
    one_line_error(probe(model, data, "--batch-size", 64), 2, str(data), "N = 96 examples at --batch-size 64 give 1 minibatch(es)")
    shapes = save_data(tmp_path / "shape.pt", inputs=torch.ones(40, 5), targets=torch.zeros(40, dtype=torch.int64))
    one_line_error(probe(model, shapes, "--batch-size", 8), 2, "shape.pt: inputs of shape (5,) per example do not fit the model")
    labels = save_data(tmp_path / "labels.pt", inputs=torch.ones(40, 6), targets=torch.full((40,), 7))
    one_line_error(probe(model, labels, "--batch-size", 8), 2, "labels.pt: targets range over [7, 7] but the model has 3 classes")
    ambiguous = save_data(tmp_path / "amb.pt", inputs=torch.ones(40, 6), targets=torch.ones(40, 2))
    one_line_error(probe(model, ambiguous, "--batch-size", 8), 2, "amb.pt: cannot choose a loss", "pass --loss")
    nan = save_data(tmp_path / "nan.pt", inputs=torch.full((40, 6), float("nan")), targets=torch.zeros(40, dtype=torch.int64))
    one_line_error(probe(model, nan), 2, "nan.pt: 'inputs' holds NaN or Inf values")
    assert not out.exists()


def test_cuda_without_a_gpu_is_a_usage_error(classifier, tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    model, data = classifier
    one_line_error(run("probe", model, data, "--device", "cuda", "--out", tmp_path / "o.json"), 2, "--device cuda")


def test_engine_options_reach_the_file_and_the_summary(classifier, tmp_path: Path) -> None:
    model, data = classifier
    out = tmp_path / "full.json"
    result = run("probe", model, data, "--batch-size", 16, "--per-layer", "--density", "--top-k", 3, "--out", out)
    assert result.exit_code == 0, result.output
    for section in ("Per-block curvature", "Spectral density", "top 3", "HVPs in all"):
        assert section in result.stderr
    hess = loads(out.read_text(), str(out)).measurements.hessian
    assert hess.engine == "native" and len(hess.top_eigenvalues) == 3 and [b.name for b in hess.blocks] == ["0", "2"]
    assert hess.top_eigenvalues[0] == hess.lambda_max and hess.density.probes == 4
    legacy = run("probe", model, data, "--batch-size", 16, "--engine", "pyhessian", "--out", tmp_path / "p.json", "-q")
    assert legacy.exit_code == 0, legacy.output
    assert loads((tmp_path / "p.json").read_text(), "p").measurements.hessian.engine == "pyhessian"


def test_engine_option_errors(classifier, tmp_path: Path) -> None:
    model, data = classifier
    out = tmp_path / "o.json"
    one_line_error(run("probe", model, data, "--engine", "pyhessian", "--density", "--out", out), 2,
                          "--density needs --engine native")
    one_line_error(run("probe", model, data, "--hvp", "fwd-rev", "--out", out), 2, "--hvp fwd-rev needs an eager module")
    one_line_error(run("probe", model, data, "--blocks", "nothing", "--out", out), 2,
                          "--blocks 'nothing' matches no trainable parameter")
    unconverged = run("probe", model, data, "--batch-size", 16, "--max-iter", 2, "--fail-unconverged", "--out", out)
    one_line_error(unconverged, 1, "not converged within budget: lambda_max", "nothing written")
    assert not out.exists()
    warned = run("probe", model, data, "--batch-size", 16, "--max-iter", 2, "--out", out)
    assert warned.exit_code == 0 and "warning: not converged within budget: lambda_max" in warned.stderr
    assert "thermocal check` will fail on this file; re-probe with a larger --max-iter" in " ".join(warned.stderr.split())
    assert loads(out.read_text(), str(out)).measurements.hessian.converged is False
