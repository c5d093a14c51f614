"""Issue 17 item 2: one configuration, from flags, a file and THERMOCAL_* variables, recorded
whole in the file, so that a result re-runs from its own file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import SAMPLES, one_line_error, run
from thermocal.config import Config, from_environment, make_config

DIGITS = SAMPLES / "digits_mlp"


def same_result(a: Path, b: Path) -> None:
    one, two = (json.loads(p.read_text()) for p in (a, b))
    for doc in (one, two):
        for key in ("created_at", "timings"):
            doc.pop(key)
        doc["inputs"].pop("threads")
    assert one == two


def test_a_result_re_runs_from_its_own_file(tmp_path: Path) -> None:
    first = tmp_path / "first.json"
    assert run("probe", DIGITS / "model.pt", DIGITS / "data", "--steps", 700, "--batch-size", 16, "--epsilon-stderrs", 2,
               "--seed", 3, "-q", "-o", first).exit_code == 0
    again = tmp_path / "again.json"
    result = run("probe", DIGITS / "model.pt", DIGITS / "data", "--config", first, "-q", "-o", again)
    assert result.exit_code == 0, result.output
    same_result(first, again)
    settings = json.loads(again.read_text())["settings"]
    assert (settings["steps"], settings["batch_size"], settings["epsilon_stderrs"], settings["seed"]) == (700, 16, 2.0, 3)


def test_flags_win_over_variables_and_variables_over_a_file(tmp_path: Path) -> None:
    (tmp_path / "c.toml").write_text("batch_size = 8\nsteps = 300\nblocks = ['0\\.', '2\\.']\n")
    assert make_config({}, tmp_path / "c.toml").batch_size == 8
    assert make_config({}, tmp_path / "c.toml").blocks == ("0\\.", "2\\.")
    assert make_config({}, tmp_path / "c.toml", {"THERMOCAL_BATCH_SIZE": "16"}).batch_size == 16
    assert make_config({"batch_size": 64}, tmp_path / "c.toml", {"THERMOCAL_BATCH_SIZE": "16"}).batch_size == 64
    assert from_environment({"THERMOCAL_BLOCKS": "a,b", "THERMOCAL_DEBUG": "1"}) == {"blocks": "a,b"}
    assert make_config({}, None, {"THERMOCAL_BLOCKS": "a,b"}).blocks == ("a", "b")
    out = tmp_path / "o.json"
    done = run("probe", DIGITS / "model.pt", DIGITS / "data", "--config", tmp_path / "c.toml", "-q", "-o", out,
               env={"THERMOCAL_STEPS": "500"})
    assert done.exit_code == 0, done.output
    settings = json.loads(out.read_text())["settings"]
    assert (settings["batch_size"], settings["steps"]) == (8, 500)


def test_bad_settings_are_one_line_naming_the_flag(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text("batch_sizes = 8\n")
    one_line_error(run("probe", DIGITS / "model.pt", DIGITS / "data", "--config", tmp_path / "bad.toml"), 2,
                   "--batch-sizes: Extra inputs are not permitted")
    one_line_error(run("probe", DIGITS / "model.pt", DIGITS / "data", env={"THERMOCAL_PROBABILITY": "2"}), 2,
                   "--probability: Input should be less than 1")
    (tmp_path / "junk.yaml").write_text("[1, 2\n")
    one_line_error(run("probe", DIGITS / "model.pt", DIGITS / "data", "--config", tmp_path / "junk.yaml"), 2,
                   "junk.yaml: cannot be read as TOML, JSON or YAML")


def test_every_setting_has_one_default_and_a_flag() -> None:
    help_text = run("probe", "--help", env={"COLUMNS": "250"}).stdout
    for name in Config.model_fields:
        flag = {"inputs_key": "--inputs", "targets_key": "--targets"}.get(name, "--" + name.replace("_", "-"))
        assert flag in help_text, name
    with pytest.raises(ValueError):
        Config(rules="loss-units", tf=1.0)


def test_the_python_api_applies_params_to_a_module_as_to_a_checkpoint() -> None:
    """thermocal.probe(module, data, Config(params=...)) probes only the matching parameters (it once
    recorded the regex but probed them all)."""
    import torch

    import thermocal
    from conftest import mlp

    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(128, 6, generator=generator), torch.randint(0, 3, (128,), generator=generator)
    model = mlp([6, 8, 3])
    every = thermocal.probe(model, (x, y), Config(batch_size=16))
    first = thermocal.probe(model, (x, y), Config(batch_size=16, params=r"^0\."))
    assert every.inputs.model.num_params == 6 * 8 + 8 + 8 * 3 + 3
    assert first.inputs.model.num_params == 6 * 8 + 8 and first.inputs.model.params == r"^0\."
    assert all(p.requires_grad for p in model.parameters())  # the caller's module is untouched


def test_the_python_api_takes_keywords_as_settings_given_and_fails_in_its_own_errors() -> None:
    """probe(..., Config(steps=100), rules="literal") is the literal rules at steps 100 (it once raised
    pydantic's error about --d-eff, a default the caller never set); bad values are InputErrors."""
    import torch

    import thermocal
    from conftest import mlp
    from thermocal.errors import DegenerateError, InputError

    generator = torch.Generator().manual_seed(1)
    x, y = torch.randn(128, 6, generator=generator), torch.randint(0, 3, (128,), generator=generator)
    try:
        doc = thermocal.probe(mlp([6, 8, 3]), (x, y), Config(steps=100, batch_size=16), rules="literal", flat_if_cold=True)
    except DegenerateError:  # the literal rules may find nothing to cool: an answer, not a crash
        pytest.fail("flat_if_cold asks for a flat schedule instead of a refusal")
    assert doc.settings.rules == "literal" and doc.settings.d_eff == "hessian" and doc.settings.steps == 100
    with pytest.raises(InputError, match="batch_size"):
        thermocal.probe(mlp([6, 8, 3]), (x, y), batch_size=0)
    with pytest.raises(InputError, match="--d-eff"):
        thermocal.probe(mlp([6, 8, 3]), (x, y), Config(d_eff="gauss-newton"), rules="literal")
