"""The probe's curvature against closed forms and dense Hessians (torch.autograd.functional.hessian)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from conftest import SAMPLES, load_script, mlp
from thermocal.probe.measure import ProbeSettings, probe

CPU = torch.device("cpu")


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


def used_examples(n: int, settings: ProbeSettings) -> torch.Tensor:
    """The K·B examples the probe uses, in its order (method.md §0)."""
    k = n // settings.batch_size
    return torch.randperm(n, generator=torch.Generator().manual_seed(settings.seed))[: k * settings.batch_size]


def test_linear_regression_matches_the_closed_form() -> None:
    # L(w, b) = mean (w·x + b − y)²: H = 2·X̃ᵀX̃/N with X̃ = [X, 1]
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(200, 5, generator=generator) * torch.tensor([3.0, 1.0, 0.5, 2.0, 1.5]) + 0.5
    y = x @ torch.randn(5, 1, generator=generator) + 0.1 * torch.randn(200, 1, generator=generator)
    model = torch.jit.script(torch.nn.Linear(5, 1).double())
    settings = ProbeSettings(batch_size=20, eig_rtol=1e-6, trace_rtol=0.02)
    result = probe(model, x.double(), y.double(), settings, CPU)
    design = torch.cat([x.double(), torch.ones(200, 1, dtype=torch.float64)], dim=1)
    h = 2 * design.T @ design / 200  # all 200 examples are used: K·B = N
    exact = torch.linalg.eigvalsh(h)
    spec = result.measurements.hessian
    assert spec.converged
    assert spec.lambda_max == pytest.approx(float(exact[-1]), rel=1e-5)
    assert spec.lambda_min == pytest.approx(float(exact[0]), rel=1e-4)
    assert abs(spec.trace - float(h.trace())) <= 3 * spec.trace_stderr
    assert result.loss == "mse" and result.num_params == 6


def test_small_mlp_matches_the_dense_hessian() -> None:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(120, 4, generator=generator)
    y = torch.randint(0, 3, (120,), generator=generator)
    eager = mlp([4, 6, 3], seed=2)
    settings = ProbeSettings(batch_size=30, eig_rtol=1e-4)
    result = probe(torch.jit.script(eager), x, y, settings, CPU)
    keep = used_examples(120, settings)
    h = dense_hessian(eager, F.cross_entropy, x[keep], y[keep])
    exact = torch.linalg.eigvalsh(h)
    spec = result.measurements.hessian
    assert spec.lambda_max == pytest.approx(float(exact[-1]), rel=1e-3)
    assert spec.lambda_min == pytest.approx(float(exact[0]), rel=1e-3)
    assert abs(spec.trace - float(h.trace())) <= 3 * spec.trace_stderr


def test_micro_batched_products_equal_the_single_batch_ones() -> None:
    generator = torch.Generator().manual_seed(4)
    x = torch.randn(64, 4, generator=generator)
    y = torch.randint(0, 3, (64,), generator=generator)
    model = torch.jit.script(mlp([4, 6, 3], seed=1))
    whole = probe(model, x, y, ProbeSettings(batch_size=16), CPU).measurements.hessian
    parts = probe(model, x, y, ProbeSettings(batch_size=16, micro_batch=20), CPU).measurements.hessian
    assert parts.lambda_max == pytest.approx(whole.lambda_max, rel=1e-4)
    assert parts.lambda_min == pytest.approx(whole.lambda_min, rel=1e-2)


def test_sample_classifier_meets_the_accuracy_targets() -> None:
    """Issue 2's bar on a small trained MLP: lambda_max 1%, lambda_min 2%, trace within 3 errors."""
    scripted = load_script(SAMPLES / "digits_mlp" / "model.pt")
    data = torch.load(SAMPLES / "digits_mlp" / "data" / "sample.pt", weights_only=True)
    eager = mlp([64, 32, 10])
    eager.load_state_dict(scripted.state_dict())
    settings = ProbeSettings()
    result = probe(scripted, data["inputs"], data["targets"], settings, CPU)
    keep = used_examples(len(data["targets"]), settings)
    h = dense_hessian(eager, F.cross_entropy, data["inputs"][keep], data["targets"][keep])
    exact = torch.linalg.eigvalsh(h)
    spec = result.measurements.hessian
    assert spec.converged
    assert spec.lambda_max == pytest.approx(float(exact[-1]), rel=0.01)
    assert spec.lambda_min == pytest.approx(float(exact[0]), rel=0.02)
    assert abs(spec.trace - float(h.trace())) <= 3 * spec.trace_stderr
