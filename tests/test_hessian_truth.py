"""The probe's curvature against closed forms and dense Hessians (torch.autograd.functional.hessian)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conftest import SAMPLES, dense_hessian, engine_config, load_script, mlp, used_examples
from thermocal.measure import probe

CPU = torch.device("cpu")






ENGINES = ["native", "pyhessian"]


def within_trace_error(spec, exact: float) -> bool:
    """Within three standard errors, plus float64 rounding (a deflated trace can be exact)."""
    return abs(spec.trace - exact) <= 3 * spec.trace_stderr + 1e-10 * abs(exact)


@pytest.mark.parametrize("engine", ENGINES)
def test_linear_regression_matches_the_closed_form(engine: str) -> None:
    # L(w, b) = mean (w·x + b − y)²: H = 2·X̃ᵀX̃/N with X̃ = [X, 1]
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(200, 5, generator=generator) * torch.tensor([3.0, 1.0, 0.5, 2.0, 1.5]) + 0.5
    y = x @ torch.randn(5, 1, generator=generator) + 0.1 * torch.randn(200, 1, generator=generator)
    model = torch.jit.script(torch.nn.Linear(5, 1).double())
    settings = engine_config(batch_size=20, eig_rtol=1e-6, trace_rtol=0.02, engine=engine)
    result = probe(model, x.double(), y.double(), settings, CPU)
    design = torch.cat([x.double(), torch.ones(200, 1, dtype=torch.float64)], dim=1)
    h = 2 * design.T @ design / 200  # all 200 examples are used: K·B = N
    exact = torch.linalg.eigvalsh(h)
    spec = result.measurements.hessian
    assert spec.converged
    assert spec.lambda_max == pytest.approx(float(exact[-1]), rel=1e-5)
    assert spec.lambda_min == pytest.approx(float(exact[0]), rel=1e-4)
    assert within_trace_error(spec, float(h.trace()))
    assert result.loss == "mse" and result.num_params == 6 and spec.engine == engine


@pytest.mark.parametrize("engine", ENGINES)
def test_small_mlp_matches_the_dense_hessian(engine: str) -> None:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(120, 4, generator=generator)
    y = torch.randint(0, 3, (120,), generator=generator)
    eager = mlp([4, 6, 3], seed=2)
    settings = engine_config(batch_size=30, eig_rtol=1e-4, engine=engine)
    result = probe(torch.jit.script(eager), x, y, settings, CPU)
    keep = used_examples(120, settings)
    h = dense_hessian(eager, F.cross_entropy, x[keep], y[keep])
    exact = torch.linalg.eigvalsh(h)
    spec = result.measurements.hessian
    assert spec.lambda_max == pytest.approx(float(exact[-1]), rel=1e-3)
    assert spec.lambda_min == pytest.approx(float(exact[0]), rel=1e-3)
    assert within_trace_error(spec, float(h.trace()))


def test_micro_batched_products_equal_the_single_batch_ones() -> None:
    generator = torch.Generator().manual_seed(4)
    x = torch.randn(64, 4, generator=generator)
    y = torch.randint(0, 3, (64,), generator=generator)
    model = torch.jit.script(mlp([4, 6, 3], seed=1))
    for engine in ENGINES:
        whole = probe(model, x, y, engine_config(batch_size=16, engine=engine), CPU).measurements.hessian
        parts = probe(model, x, y, engine_config(batch_size=16, micro_batch=20, engine=engine), CPU).measurements.hessian
        assert parts.lambda_max == pytest.approx(whole.lambda_max, rel=1e-4)
        assert parts.lambda_min == pytest.approx(whole.lambda_min, rel=1e-2)


@pytest.mark.parametrize(("engine", "eig_bound"), [("pyhessian", (0.01, 0.02)), ("native", (1e-3, 1e-3))])
def test_sample_classifier_meets_the_accuracy_targets(engine: str, eig_bound: tuple[float, float]) -> None:
    """On a small trained MLP: pyhessian engine lambda_max 1%, lambda_min 2% (issue 2); native
    engine both 0.1% (issue 3); the trace within 3 of its standard errors for both."""
    scripted = load_script(SAMPLES / "digits_mlp" / "model.pt")
    data = torch.load(SAMPLES / "digits_mlp" / "data" / "sample.pt", weights_only=True)
    eager = mlp([64, 32, 10])
    eager.load_state_dict(scripted.state_dict())
    settings = engine_config(engine=engine)
    result = probe(scripted, data["inputs"], data["targets"], settings, CPU)
    keep = used_examples(len(data["targets"]), settings)
    h = dense_hessian(eager, F.cross_entropy, data["inputs"][keep], data["targets"][keep])
    exact = torch.linalg.eigvalsh(h)
    spec = result.measurements.hessian
    assert spec.converged and spec.engine == engine
    assert spec.lambda_max == pytest.approx(float(exact[-1]), rel=eig_bound[0])
    assert spec.lambda_min == pytest.approx(float(exact[0]), rel=eig_bound[1])
    assert within_trace_error(spec, float(h.trace()))
