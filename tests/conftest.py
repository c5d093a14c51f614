"""Shared helpers: tiny TorchScript models and data files written to a temporary folder.

Every test runs in a fresh temporary working directory (the folder pytest was started from is
never read or written: the Quick start's `thermocal.json` there changes nothing), hypothesis
keeps no example database and draws the same examples on every run, and torch uses THREADS
threads, so that the suite's time does not depend on what else the machine runs.
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
from torch.func import functional_call  # noqa: E402
from hypothesis import settings  # noqa: E402

from thermocal.records import EstimateRecord, GradientNoise, HessianSpectrum  # noqa: E402

torch.set_num_threads(THREADS)
# The same examples on every run (derandomize: seeded by each test's hash), so that a failure
# in CI is the same failure when it is rerun; `--hypothesis-profile explore` draws fresh ones.
settings.register_profile("thermocal", database=None, derandomize=True)
settings.register_profile("explore", database=None)
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
    """The engine as the curvature tests exercise it: both ends of the spectrum and the trace of H
    resolved, and the Hessian of the whole sample (no --hessian-samples subset), so that dense
    truth applies."""
    from thermocal.config import Config

    return Config(lambda_min=True, hessian_trace=True, hessian_samples=None, **settings)


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


# ----------------------------------------------------------------------------- shared ground truths and records


def noise(grad_var: float = 0.5, grad_norm_mean: float = 2.0, grad_sq_mean: float = 5.0, **errors: float) -> GradientNoise:
    return GradientNoise(
        batch_size=32, num_batches=10, samples_used=320, samples_dropped=0, loss=1.0,
        grad_norm_mean=grad_norm_mean, grad_norm_mean_stderr=errors.get("norm_se", 0.0),
        grad_sq_mean=grad_sq_mean, grad_sq_mean_stderr=0.0,
        grad_var=grad_var, grad_var_stderr=errors.get("var_se", 0.0),
        full_grad_sq=1.0, full_grad_sq_stderr=0.0, noise_scale=16.0, noise_scale_stderr=0.0,
        grad_var_norm_cov=errors.get("cov", 0.0), bootstrap_resamples=0,
    )


def spectrum(lambda_max: float = 4.0, lambda_min: float = -0.05, trace: float = 20.0) -> HessianSpectrum:
    record = EstimateRecord(method="test", hvps=0, iterations=0, residual=0.0, tolerance=0.0, converged=True)
    return HessianSpectrum(
        engine="test", lambda_max=lambda_max, lambda_min=lambda_min, trace=trace, trace_stderr=0.0, hvps=0,
        converged=True, details={"lambda_max": record, "lambda_min": record, "trace": record},
    )


def symmetric_with_spectrum(eigenvalues: torch.Tensor, seed: int = 0) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(len(eigenvalues), len(eigenvalues), generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return q @ torch.diag(eigenvalues) @ q.T


def dense_hessian(model: torch.nn.Module, loss_fn, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Dense float64 Hessian of loss_fn(model(x), y) over the flattened parameters."""
    model = model.double()
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def loss(v: torch.Tensor) -> torch.Tensor:
        params, i = {}, 0
        for name, shape in zip(names, shapes):
            params[name] = v[i:i + shape.numel()].reshape(shape)
            i += shape.numel()
        return loss_fn(functional_call(model, params, (x.double(),)), y)

    return torch.autograd.functional.hessian(loss, flat)


def used_examples(n: int, settings) -> torch.Tensor:
    """The K·B examples the probe uses, in its order (method.md §0)."""
    k = n // settings.batch_size
    return torch.randperm(n, generator=torch.Generator().manual_seed(settings.seed))[: k * settings.batch_size]
