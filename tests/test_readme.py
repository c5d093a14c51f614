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

import thermocal


from conftest import ROOT, SAMPLES, run

README = (ROOT / "README.md").read_text()


def test_ci_runs_the_readme_test_command_and_the_full_tier() -> None:
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()
    readme_command = next(line for line in ci if line.startswith("pip install") and "pytest" in line)
    assert readme_command in README
    assert 'python -m pytest -m "slow or bench"' in ci and 'python -m pytest -m "slow or bench"' in README


def test_every_documented_flag_exists() -> None:
    for command in ("probe", "export", "check", "show", "plot", "monitor"):
        help_text = run(command, "--help", env={"COLUMNS": "200"}).stdout
        section = README.split(f"### `thermocal {command}")[1].split("\n## ")[0].split("\n### ")[0]
        for flag in set(re.findall(r"(--[a-z][a-z-]+)", section)):
            assert flag in help_text, f"{command} {flag}"


def fenced(language: str, after: str) -> str:
    """The first ```language block after the heading `after`."""
    return README.split(after, 1)[1].split(f"```{language}\n", 1)[1].split("```", 1)[0]


def test_use_the_schedule_pytorch_block_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = run("probe", str(SAMPLES / "digits_mlp" / "model.pt"), str(SAMPLES / "digits_mlp" / "data"),
                 "--steps", "300", "--warmup-steps", "10", "-q")
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


@pytest.mark.slow
def test_the_python_block_probes_without_the_cli_and_leaves_the_model_alone(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    data = torch.load(SAMPLES / "digits_mlp" / "data" / "sample.pt", weights_only=True)
    model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.Tanh(), torch.nn.Linear(32, 10)).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    namespace = {"model": model, "inputs": data["inputs"], "targets": data["targets"]}
    exec(fenced("python", "From Python, without the CLI"), namespace)
    doc = namespace["doc"]
    assert doc.settings.batch_size == 64 and doc.schedule.steps == 20_000
    assert thermocal.load_schedule(tmp_path / "thermocal.json").eta0 == doc.schedule.eta0
    assert model.training and all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.requires_grad for p in model.parameters())


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


WHAT_CAN_I_PROBE_ARCH = """
import torch

def build():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))

def dataset():
    g = torch.Generator().manual_seed(0)
    return torch.utils.data.TensorDataset(torch.randn(96, 6, generator=g), torch.randint(0, 3, (96,), generator=g))
"""


@pytest.mark.slow
def test_what_can_i_probe_commands_work(tmp_path: Path) -> None:
    """Every command of "What can I probe?", run as written on files made to its names."""
    import numpy as np
    from safetensors.torch import save_file

    from conftest import save_script

    (tmp_path / "arch.py").write_text(WHAT_CAN_I_PROBE_ARCH)
    namespace: dict = {}
    exec(WHAT_CAN_I_PROBE_ARCH, namespace)
    model = namespace["build"]().eval()
    x, y = namespace["dataset"]().tensors
    save_script(model, tmp_path / "model.ts")
    torch.export.save(torch.export.export(model, (x[:4],), dynamic_shapes=({0: torch.export.Dim("batch")},)),
                      str(tmp_path / "model.pt2"))
    save_file(model.state_dict(), str(tmp_path / "weights.safetensors"))
    torch.save({"epoch": 3, "model_state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}},
               tmp_path / "checkpoint.pt")
    torch.save(model, tmp_path / "whole.pt")
    torch.save({"inputs": x, "targets": y}, tmp_path / "data.pt")
    np.savez(tmp_path / "data.npz", features=x.numpy(), labels=y.numpy())
    (tmp_path / "arrays").mkdir()
    np.save(tmp_path / "arrays" / "inputs.npy", x.numpy())
    np.save(tmp_path / "arrays" / "targets.npy", y.numpy())
    save_file({"inputs": x, "targets": y}, str(tmp_path / "data.safetensors"))
    rows = [",".join([repr(float(v)) for v in row] + [str(int(t))]) for row, t in zip(x, y)]
    (tmp_path / "table.csv").write_text("a,b,c,d,e,f,label\n" + "\n".join(rows) + "\n")
    torch.manual_seed(0)
    lm = torch.nn.Sequential(torch.nn.Embedding(11, 8), torch.nn.Linear(8, 11)).eval()
    save_script(lm, tmp_path / "lm.ts")
    tokens = torch.randint(0, 11, (64, 9), generator=torch.Generator().manual_seed(1))
    np.save(tmp_path / "tokens.npy", tokens.numpy())
    torch.save({"input_ids": tokens}, tmp_path / "tokens.pt")
    try:
        import transformers
        config = transformers.GPT2Config(vocab_size=11, n_positions=16, n_embd=16, n_layer=1, n_head=2,
                                         bos_token_id=0, eos_token_id=0)
        transformers.GPT2LMHeadModel(config).save_pretrained(tmp_path / "tiny-gpt2")
    except ImportError:
        pass

    section = README.split("## What can I probe?", 1)[1].split("\n## ", 1)[0]
    commands = [line.split("#", 1)[0].strip() for block in section.split("```bash\n")[1:]
                for line in block.split("```", 1)[0].splitlines() if line.strip()]
    assert len(commands) == 12
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    for i, command in enumerate(commands):
        if "tiny-gpt2" in command and not (tmp_path / "tiny-gpt2").exists():
            continue  # transformers is an optional extra
        done = subprocess.run(["bash", "-c", f"{command} --out out{i}.json -q --batch-size 16"],
                              cwd=tmp_path, env=env, capture_output=True, text=True)
        assert done.returncode == 0, f"{command}: {done.stderr}"
        assert (tmp_path / f"out{i}.json").exists()
