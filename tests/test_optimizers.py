"""Each optimizer's metric (method.md [O1]-[O4]): the stability limits, found by running the
optimizer on a quadratic; Adam's preconditioned quantities against dense float64 truth; the noise
floor with momentum; the invariances each calibration must have; and the optimizer carried through
the file, its exports and ThermocalLR."""

from __future__ import annotations

import ast
import json
import math
from pathlib import Path

import pytest
import torch

import thermocal
from conftest import ROOT, SAMPLES, mlp, one_line_error, run
from thermocal.calibrate.loss_units import decay_curvature, stability_constant, step_factor
from thermocal.config import Config
from thermocal.curvature.operator import Dense
from thermocal.curvature.preconditioned import noise_in_metric, preconditioned_curvature, preconditioner
from thermocal.noise import GradientSums
from thermocal.schedule.optimizer import optimizer_of

DIGITS = SAMPLES / "digits_mlp"


def quadratic(eigenvalues: list[float], seed: int = 0) -> torch.Tensor:
    """A dense symmetric matrix with these eigenvalues in a random orthonormal basis (float64)."""
    generator = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(len(eigenvalues), len(eigenvalues), generator=generator, dtype=torch.float64))
    return q @ torch.diag(torch.tensor(eigenvalues, dtype=torch.float64)) @ q.T


def diverges(make_optimizer, h: torch.Tensor, lr: float, steps: int = 3000) -> bool:
    """Run `make_optimizer([x], lr)` on L = ½xᵀHx from a fixed start; True when |x| grows over the last
    two thirds of the run (the linear dynamics' spectral radius exceeds 1, whatever the first steps'
    transient did: Adam's bias correction makes its first steps larger)."""
    x = torch.nn.Parameter(torch.ones(h.shape[0], dtype=torch.float64))
    optimizer = make_optimizer([x], lr)
    middle = None
    for step in range(steps):
        optimizer.zero_grad()
        (0.5 * x @ h @ x).backward()
        optimizer.step()
        norm = float(x.detach().norm())
        if not math.isfinite(norm):
            return True
        if step == steps // 3:
            middle = norm
    return norm > middle


def edge(config: Config, lam: float) -> float:
    return stability_constant(config) / (lam + decay_curvature(config))


@pytest.mark.parametrize("config, make", [
    (Config(), lambda p, lr: torch.optim.SGD(p, lr=lr)),
    (Config(weight_decay=0.5), lambda p, lr: torch.optim.SGD(p, lr=lr, weight_decay=0.5)),
    (Config(optimizer="momentum"), lambda p, lr: torch.optim.SGD(p, lr=lr, momentum=0.9)),
    (Config(optimizer="momentum", momentum=0.5), lambda p, lr: torch.optim.SGD(p, lr=lr, momentum=0.5)),
    (Config(optimizer="momentum", nesterov=True), lambda p, lr: torch.optim.SGD(p, lr=lr, momentum=0.9, nesterov=True)),
    (Config(optimizer="momentum", momentum=0.5, nesterov=True, weight_decay=0.3),
     lambda p, lr: torch.optim.SGD(p, lr=lr, momentum=0.5, nesterov=True, weight_decay=0.3)),
], ids=["sgd", "sgd-wd", "heavy-ball-0.9", "heavy-ball-0.5", "nesterov-0.9", "nesterov-0.5-wd"])
def test_sgd_and_momentum_diverge_within_5_percent_of_the_predicted_lr(config: Config, make) -> None:
    h = quadratic([4.0, 2.5, 1.0, 0.3, 0.01])
    predicted = edge(config, 4.0)
    assert not diverges(make, h, 0.95 * predicted)
    assert diverges(make, h, 1.05 * predicted)


class FrozenAdamW(torch.optim.Optimizer):
    """torch.optim.AdamW's step (decoupled decay, then the bias-corrected first moment) with its
    denominator √v̂ + eps held at P: Adam with its preconditioner frozen, which the threshold is about.
    Adam's own v follows g², so as an iterate grows its steps shrink (it hovers at the edge rather
    than diverging): the frozen form is the linear dynamics whose stability [O3] states."""

    def __init__(self, params, lr: float, beta1: float, p: torch.Tensor, weight_decay: float) -> None:
        super().__init__(params, {"lr": lr, "beta1": beta1, "weight_decay": weight_decay})
        self.p = p

    @torch.no_grad()
    def step(self) -> None:
        for group in self.param_groups:
            for param in group["params"]:
                state = self.state[param]
                state["t"] = state.get("t", 0) + 1
                m = state.setdefault("m", torch.zeros_like(param))
                param.mul_(1 - group["lr"] * group["weight_decay"])
                m.mul_(group["beta1"]).add_(param.grad, alpha=1 - group["beta1"])
                param.sub_(group["lr"] * m / (1 - group["beta1"] ** state["t"]) / self.p)


@pytest.mark.parametrize("beta1, decay", [(0.9, 0.0), (0.9, 0.01), (0.5, 0.2)])
def test_adamw_with_its_preconditioner_frozen_diverges_within_5_percent_of_the_predicted_lr(beta1: float,
                                                                                             decay: float) -> None:
    h = quadratic([4.0, 2.5, 1.0, 0.3, 0.01], seed=1)
    p = torch.tensor([0.5, 2.0, 1.0, 4.0, 0.25], dtype=torch.float64)
    config = Config(optimizer="adamw", beta1=beta1, weight_decay=decay)
    d = torch.diag(p.rsqrt())
    lam = float(torch.linalg.eigvalsh(d @ h @ d).max())

    def make(params, lr):
        return FrozenAdamW(params, lr, beta1, p, decay)

    predicted = edge(config, lam)
    assert not diverges(make, h, 0.95 * predicted)
    assert diverges(make, h, 1.05 * predicted)


def test_preconditioned_quantities_equal_dense_float64_truth() -> None:
    d, k = 12, 40
    generator = torch.Generator().manual_seed(3)
    h = quadratic([9.0, 5.0, 3.0, 2.0, 1.0, 0.5, 0.2, 0.1, 0.0, -0.3, -1.0, -2.0], seed=2)  # indefinite
    grads = torch.randn(k, d, generator=generator, dtype=torch.float64) * torch.linspace(0.1, 3.0, d, dtype=torch.float64) \
        + torch.linspace(-1.0, 1.0, d, dtype=torch.float64)
    config = Config(optimizer="adamw", eig_rtol=1e-8, trace_rtol=1e-4, max_probes=20000)
    summary = GradientSums.of(grads, second_moment=True)
    measured = preconditioned_curvature(Dense(h), summary, config, torch.Generator().manual_seed(0), torch.float64)
    # truth
    v = grads.square().mean(dim=0)
    p = v.sqrt() + config.adam_eps
    assert torch.allclose(preconditioner(summary, config.adam_eps), p, rtol=1e-14)
    tilde = torch.diag(p.rsqrt()) @ h @ torch.diag(p.rsqrt())
    eig = torch.linalg.eigvalsh(tilde)
    assert torch.allclose(torch.linalg.eigvals(torch.diag(1 / p) @ h).real.sort().values, eig, atol=1e-10)  # P⁻¹H's
    assert measured.lambda_max == pytest.approx(float(eig[-1]), rel=1e-6)
    assert measured.lambda_min == pytest.approx(float(eig[0]), rel=1e-6)
    assert measured.trace == pytest.approx(float(eig.sum()), abs=max(3 * measured.trace_stderr, 1e-8))
    centred = grads - grads.mean(dim=0)
    sigma = centred.T @ centred / (k - 1)  # Σ_B, unbiased
    assert measured.grad_var == pytest.approx(float(torch.trace(torch.diag(1 / p) @ sigma)), rel=1e-12)
    mean = grads.mean(dim=0)
    assert measured.full_grad_sq == pytest.approx(float(mean @ (mean / p)) - measured.grad_var / k, rel=1e-12)
    assert measured.grad_sq_mean == pytest.approx(float((grads.square() / p).sum(dim=1).mean()), rel=1e-12)
    assert measured.preconditioner_min == pytest.approx(float(p.min())) and measured.preconditioner_max == float(p.max())
    assert not measured.unconverged(d)


def test_the_noise_standard_error_covers_its_spread_over_draws() -> None:
    """tr(P⁻¹Σ_B) over fresh sets of K minibatch gradients (P held): its reported standard error is
    within 20% of the spread it has (the statistical tolerance of 200 sets of K = 64)."""
    generator = torch.Generator().manual_seed(5)
    d, k = 30, 64
    scale = torch.linspace(0.2, 2.0, d, dtype=torch.float64)
    inverse = 1.0 / torch.linspace(0.5, 1.5, d, dtype=torch.float64)
    draws = [noise_in_metric(GradientSums.of(torch.randn(k, d, generator=generator, dtype=torch.float64) * scale,
                                             second_moment=True), inverse)
             for _ in range(200)]
    values = torch.tensor([draw["grad_var"] for draw in draws])
    reported = sum(draw["grad_var_stderr"] for draw in draws) / len(draws)
    assert float(values.mean()) == pytest.approx(float((scale.square() * inverse).sum()), rel=0.02)  # unbiased
    assert reported == pytest.approx(float(values.std()), rel=0.2)


@pytest.mark.parametrize("momentum, nesterov", [(0.9, False), (0.5, True)])
def test_momentum_noise_floor_is_sgds_at_the_effective_step(momentum: float, nesterov: bool) -> None:
    """Heavy ball and Nesterov on a quadratic with Gaussian gradient noise of covariance Σ: the stationary
    excess loss is η/(1 − β)·tr Σ/4 to first order in η_eff·λ (here η_eff·λ_max = 0.04: within 6%)."""
    generator = torch.Generator().manual_seed(7)
    lam = torch.tensor([1.0, 0.6, 0.3], dtype=torch.float64)
    sigma = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    config = Config(optimizer="momentum", momentum=momentum, nesterov=nesterov)
    lr = 0.04 / float(lam.max()) / step_factor(config)
    chains = 4000
    x = torch.zeros(chains, 3, dtype=torch.float64)
    v = torch.zeros_like(x)
    losses = []
    for step in range(6000):
        g = lam * x + sigma.sqrt() * torch.randn(chains, 3, generator=generator, dtype=torch.float64)
        v = momentum * v + g
        x = x - lr * ((g + momentum * v) if nesterov else v)
        if step >= 3000:
            losses.append(float((0.5 * lam * x.square()).sum(dim=1).mean()))
    floor = step_factor(config) * lr * float(sigma.sum()) / 4.0
    assert sum(losses) / len(losses) == pytest.approx(floor, rel=0.06)


# ------------------------------------------------------------------------------- through the pipeline

def sample(n: int = 256, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=generator)
    return x, (x[:, 0] - x[:, 1] > 0).long() + (x[:, 2] > 1).long()


class Scaled(torch.nn.Module):
    """The same network with its parameters θ = c·φ (c = 10): the training problem is the same."""

    def __init__(self, inner: torch.nn.Module, c: float) -> None:
        super().__init__()
        self.inner, self.c = inner, c
        self.phi = torch.nn.ParameterList([torch.nn.Parameter(p.detach() / c) for p in inner.parameters()])
        self.names = [name for name, _ in inner.named_parameters()]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        params = {name: self.c * phi for name, phi in zip(self.names, self.phi)}
        return torch.func.functional_call(self.inner, params, (x,))


def probe(module, data, **settings):
    return thermocal.probe(module, data, Config(batch_size=32, steps=400, seed=1, trace_rtol=0.01, **settings))


@pytest.mark.parametrize("optimizer, exponent", [("sgd", 2), ("momentum", 2), ("adamw", 1)])
def test_each_optimizers_eta0_scales_as_its_dynamics_under_theta_equals_c_phi(optimizer: str, exponent: int) -> None:
    """θ = c·φ is the same problem: SGD's and momentum's lr must scale by 1/c², Adam's by 1/c (its step
    is scale-free in the gradient); the decay depth lr(S)/eta0 is unchanged. weight decay off, which
    is not invariant (it pulls θ and φ to zero at different rates)."""
    x, y = sample()
    model = mlp([6, 16, 3])
    base = probe(model, (x, y), optimizer=optimizer, weight_decay=0.0)
    scaled = probe(Scaled(model, 10.0), (x, y), optimizer=optimizer, weight_decay=0.0)
    assert scaled.schedule.eta0 == pytest.approx(base.schedule.eta0 / 10.0 ** exponent, rel=0.02)
    assert scaled.schedule.gamma ** 400 == pytest.approx(base.schedule.gamma ** 400, rel=0.02)


class Times(torch.nn.Module):
    def __init__(self, k: float) -> None:
        super().__init__()
        self.k = k

    def forward(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.k * torch.nn.functional.cross_entropy(outputs, targets)


@pytest.mark.parametrize("optimizer, exponent", [("sgd", 1), ("momentum", 1), ("adamw", 0)])
def test_each_optimizers_eta0_scales_as_its_dynamics_under_a_scaled_loss(optimizer: str, exponent: int) -> None:
    """loss × k: SGD's and momentum's lr scale by 1/k; Adam's is unchanged (up to eps); temperatures
    scale with the loss, so the decay depth is unchanged."""
    x, y = sample(seed=2)
    model = mlp([6, 16, 3], seed=3)
    base = thermocal.probe(model, (x, y), Config(batch_size=32, steps=400, seed=1, trace_rtol=0.01, optimizer=optimizer,
                                                  weight_decay=0.0), loss_fn=Times(1.0))
    scaled = thermocal.probe(model, (x, y), Config(batch_size=32, steps=400, seed=1, trace_rtol=0.01,
                                                    optimizer=optimizer, weight_decay=0.0), loss_fn=Times(10.0))
    assert scaled.schedule.eta0 == pytest.approx(base.schedule.eta0 / 10.0 ** exponent, rel=0.02)
    assert scaled.schedule.T0 == pytest.approx(base.schedule.T0 * 10.0, rel=0.02)
    assert scaled.schedule.gamma ** 400 == pytest.approx(base.schedule.gamma ** 400, rel=0.02)


def test_momentum_is_sgd_at_the_effective_step() -> None:
    """Same measurements: momentum 0.9's eta0 is SGD's times 2(1 + β)/2 = 1.9, and its temperature is SGD's
    at the step eta0/(1 − β)."""
    x, y = sample(seed=4)
    model = mlp([6, 16, 3], seed=5)
    sgd, momentum = probe(model, (x, y)), probe(model, (x, y), optimizer="momentum")
    assert momentum.schedule.eta0 == pytest.approx(1.9 * sgd.schedule.eta0, rel=1e-12)
    assert momentum.schedule.T0 == pytest.approx(sgd.schedule.T0 * 1.9 / (1 - 0.9), rel=1e-12)
    assert momentum.calibration.step_factor == pytest.approx(10.0) and sgd.calibration.step_factor is None


# ------------------------------------------------------------------------------- the file and its uses

@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("optimizers")
    out = {}
    for name, flags in (("sgd", []), ("momentum", ["--optimizer", "momentum", "--nesterov"]),
                        ("adamw", ["--optimizer", "adamw", "--beta2", "0.99"])):
        out[name] = root / f"{name}.json"
        done = run("probe", DIGITS / "model.pt", DIGITS / "data", "--steps", 500, "-q", "-o", out[name], *flags)
        assert done.exit_code == 0, done.output
    return out


def test_the_file_records_the_optimizer_and_old_files_mean_plain_sgd(files: dict[str, Path]) -> None:
    adamw = json.loads(files["adamw"].read_text())
    assert adamw["settings"]["optimizer"] == "adamw" and adamw["settings"]["beta2"] == 0.99
    assert "preconditioned" in adamw["measurements"] and adamw["calibration"]["stability_constant"] == pytest.approx(38.0)
    sgd = json.loads(files["sgd"].read_text())
    assert "optimizer" not in sgd["settings"] and "preconditioned" not in sgd["measurements"]  # as files were
    for golden in (ROOT / "tests" / "golden").glob("*/*.json"):
        assert optimizer_of(thermocal.load_schedule(golden).document).name == "sgd"
    for name in files:
        assert run("check", files[name], "--strict").exit_code == 0


def test_every_export_builds_the_files_optimizer(files: dict[str, Path]) -> None:
    torch_text = run("export", files["adamw"], "--format", "torch").stdout
    names: dict = {}
    exec(compile(torch_text, "snippet", "exec"), names)  # noqa: S102 - our own export
    optimizer, _ = names["thermocal_optimizer"](torch.nn.Linear(2, 2).parameters())
    assert type(optimizer) is torch.optim.AdamW and optimizer.param_groups[0]["betas"] == (0.9, 0.99)
    assert optimizer.param_groups[0]["weight_decay"] == 0.01
    text = run("export", files["momentum"], "--format", "lightning").stdout
    assert "torch.optim.SGD(self.parameters(), lr=ETA0, momentum=0.9, nesterov=True)" in text
    optax_text = run("export", files["adamw"], "--format", "optax").stdout
    ast.parse(optax_text)
    assert "optax.adamw(learning_rate=schedule, b1=0.9, b2=0.99, eps=1e-08, weight_decay=0.01)" in optax_text
    assert "keras.optimizers.SGD(" in run("export", files["momentum"], "--format", "keras").stdout
    assert "momentum=0.9, nesterov=True" in run("export", files["momentum"], "--format", "keras").stdout
    env = dict(line.split("=", 1) for line in run("export", files["adamw"], "--format", "env").stdout.splitlines())
    assert env["THERMOCAL_SCHEDULE_OPTIMIZER"] == "adamw" and env["THERMOCAL_SCHEDULE_BETA2"] == "0.99"
    rows = run("export", files["momentum"], "--format", "csv", "--every", 250).stdout.splitlines()
    assert rows[0].endswith(",optimizer") and all(row.endswith(",momentum") for row in rows[1:])


def test_thermocal_lr_refuses_another_optimizer(files: dict[str, Path]) -> None:
    params = list(torch.nn.Linear(2, 2).parameters())
    with pytest.raises(ValueError, match="calibrated for AdamW"):
        thermocal.ThermocalLR(torch.optim.SGD(params, lr=0.1), files["adamw"])
    with pytest.raises(ValueError, match="not an SGD with momentum 0.9"):
        thermocal.ThermocalLR(torch.optim.SGD(params, lr=0.1, momentum=0.9), files["sgd"])
    with pytest.raises(ValueError, match="Nesterov"):
        thermocal.ThermocalLR(torch.optim.SGD(params, lr=0.1, momentum=0.9), files["momentum"])
    thermocal.ThermocalLR(torch.optim.AdamW(params, lr=0.1, betas=(0.9, 0.99)), files["adamw"])
    thermocal.ThermocalLR(torch.optim.SGD(params, lr=0.1, momentum=0.9, nesterov=True), files["momentum"])


def test_the_summary_names_the_optimizer(files: dict[str, Path]) -> None:
    shown = run("show", files["adamw"], env={"COLUMNS": "200"}).stdout
    assert "adamw betas (0.9, 0.99)" in shown and "lambda_max(P⁻¹H)" in shown
    assert "sgd (plain, no momentum)" in run("show", files["sgd"], env={"COLUMNS": "200"}).stdout


def test_hyperparameters_of_another_optimizer_are_refused() -> None:
    one_line_error(run("probe", DIGITS / "model.pt", DIGITS / "data", "--momentum", 0.8), 2, "--momentum",
                   "--optimizer momentum")
    one_line_error(run("probe", DIGITS / "model.pt", DIGITS / "data", "--beta1", 0.8, "--optimizer", "momentum"), 2,
                   "--beta1", "--optimizer adamw")
    one_line_error(run("probe", DIGITS / "model.pt", DIGITS / "data", "--optimizer", "adamw", "--engine", "pyhessian"),
                   2, "--optimizer adamw")
    one_line_error(run("probe", DIGITS / "model.pt", DIGITS / "data", "--optimizer", "momentum", "--rules", "literal"),
                   2, "literal")
