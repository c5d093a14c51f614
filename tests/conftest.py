"""Shared helpers: tiny TorchScript models and data files written to a temporary folder.

Every test runs in a fresh temporary working directory (the folder pytest was started from is
never read or written: the Quick start's `thermocal.json` there changes nothing), hypothesis
keeps no example database, and torch uses THREADS threads, so that the suite's time does not
depend on what else the machine runs.
"""

from __future__ import annotations

import os
import sys
import tempfile
import warnings
from pathlib import Path

THREADS = int(os.environ.setdefault("OMP_NUM_THREADS", "1"))  # before torch starts its pool; children inherit it
# hypothesis caches Unicode tables in ./.hypothesis unless told where: not in the starting folder.
os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", os.path.join(tempfile.gettempdir(), "thermocal-tests-hypothesis"))

import pytest  # noqa: E402
import torch  # noqa: E402
from hypothesis import settings  # noqa: E402

torch.set_num_threads(THREADS)
settings.register_profile("thermocal", database=None)
settings.load_profile("thermocal")

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_models"
sys.path.insert(0, str(ROOT))  # for sample_models.architectures, the one MLP builder
from sample_models import architectures  # noqa: E402


@pytest.fixture(autouse=True)
def _fresh_working_directory(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))


def run(*args: object, **kwargs):
    """`thermocal ARGS…` through typer's CliRunner (arguments as strings, None left out; keyword
    arguments such as env= go to CliRunner.invoke)."""
    from typer.testing import CliRunner

    from thermocal.cli import app

    return CliRunner().invoke(app, [str(a) for a in args if a is not None], **kwargs)


def one_line_error(result, code: int, *needles: str) -> str:
    """A CliRunner result that failed with `code`, nothing on stdout, and one line on stderr
    (`thermocal: error: …`) holding every needle; returns that line."""
    assert result.exit_code == code, result.output
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("thermocal: error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def engine_config(**settings: object):
    """The engine as the curvature tests exercise it: both ends of the spectrum resolved, and the
    Hessian of the whole sample (no --hessian-samples subset), so that dense truth applies."""
    from thermocal.config import Config

    return Config(lambda_min=True, hessian_samples=None, **settings)


def save_script(model: torch.nn.Module, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(model.eval()), str(path))
    return path


def load_script(path: Path) -> torch.nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.load(str(path))


def save_data(path: Path, **tensors: object) -> Path:
    torch.save(tensors, path)
    return path


def mlp(sizes: list[int], seed: int = 0) -> torch.nn.Sequential:
    """sample_models.architectures.mlp (tanh) with the initial weights of `seed`."""
    return architectures.mlp(sizes, seed=seed)


@pytest.fixture
def classifier(tmp_path: Path) -> tuple[Path, Path]:
    """A 6-8-3 MLP and 96 examples with integer labels."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(96, 6, generator=generator)
    y = torch.randint(0, 3, (96,), generator=generator)
    return save_script(mlp([6, 8, 3]), tmp_path / "model.pt"), save_data(tmp_path / "data.pt", inputs=x, targets=y)
