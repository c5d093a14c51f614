"""Issue 15: calibration v2 is a measurement. Temperatures in loss units, invariant where the
training problem is (θ = c·φ, loss × k), T ∝ 1/B at fixed eta, §7 computed from the Gibbs law,
and no refusal of a healthy model (method.md [C9]–[C14], [G1])."""

from __future__ import annotations

import json
import math
import sys

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

import thermocal
from conftest import ROOT, SAMPLES, mlp, run
from thermocal.calibrate.gibbs import gamma_cdf, gamma_quantile
from thermocal.config import Config
from thermocal.schedule.functions import learning_rate


def digits() -> tuple[torch.Tensor, torch.Tensor]:
    data = torch.load(SAMPLES / "digits_mlp" / "data" / "sample.pt", weights_only=True)
    return data["inputs"], data["targets"]


class Rescaled(torch.nn.Module):
    """g(φ) = f(c·φ): the same network with every parameter stored divided by c. SGD on φ with lr
    eta/c² is SGD on θ = c·φ with lr eta: the same training run."""

    def __init__(self, base: torch.nn.Module, c: float) -> None:
        super().__init__()
        self.base, self.c = base, c
        self.names = [name for name, _ in base.named_parameters()]
        # a list, in the base's order: the flat parameter vector (and so each seeded probe) is the same
        self.phi = torch.nn.ParameterList([torch.nn.Parameter(p.detach() / c) for p in base.parameters()])
        for p in base.parameters():
            p.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.base, {name: self.c * phi for name, phi in zip(self.names, self.phi)}, (x,))


def calibrated(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn=None, **settings):
    """A cooling schedule: epsilon one standard error of the mean loss unless given (the default's
    16 would leave this model, at this budget, with a nearly flat schedule)."""
    config = Config(batch_size=32, steps=2000, **{"epsilon_stderrs": 1.0, **settings})
    return thermocal.probe(model, (x, y), config, loss_fn=loss_fn)


def assert_modes_from(d_eff: str, *docs) -> None:
    """d_eff is the chosen matrix's trace over lambda_max ([C10], [H15])."""
    for doc in docs:
        m = doc.measurements
        trace = m.gauss_newton.trace if d_eff == "gauss-newton" else m.hessian.trace
        assert (m.gauss_newton is not None) == (d_eff == "gauss-newton")
        assert doc.calibration.d_eff == pytest.approx(max(1.0, trace / m.hessian.debiased().lambda_max), rel=1e-12)


def depth(doc) -> float:
    """lr(S)/eta0: how far the schedule cools."""
    return learning_rate(doc.schedule)(doc.schedule.steps) / doc.schedule.eta0


@pytest.mark.parametrize("d_eff", ["hessian", "gauss-newton"])
def test_reparameterising_theta_as_c_phi_scales_eta0_by_one_over_c_squared(d_eff: str) -> None:
    x, y = digits()
    base = mlp([64, 32, 10], seed=3)
    plain = calibrated(base, x, y, d_eff=d_eff)
    scaled = calibrated(Rescaled(mlp([64, 32, 10], seed=3), 10.0), x, y, d_eff=d_eff)
    assert scaled.schedule.kind == plain.schedule.kind == "exponential"
    assert scaled.schedule.eta0 == pytest.approx(plain.schedule.eta0 / 100, rel=0.02)
    assert scaled.schedule.tau == pytest.approx(plain.schedule.tau, rel=0.02)
    assert depth(scaled) == pytest.approx(depth(plain), rel=0.02)
    assert scaled.schedule.T0 == pytest.approx(plain.schedule.T0, rel=0.02)  # loss units: unchanged
    assert_modes_from(d_eff, plain, scaled)


@pytest.mark.parametrize("d_eff", ["hessian", "gauss-newton"])
def test_multiplying_the_loss_by_k_scales_eta0_by_one_over_k(d_eff: str) -> None:
    x, y = digits()
    plain = calibrated(mlp([64, 32, 10], seed=3), x, y, d_eff=d_eff)
    scaled = calibrated(mlp([64, 32, 10], seed=3), x, y, loss_fn=lambda o, t: 7.0 * F.cross_entropy(o, t), d_eff=d_eff)
    assert scaled.schedule.eta0 == pytest.approx(plain.schedule.eta0 / 7, rel=0.02)
    assert scaled.schedule.tau == pytest.approx(plain.schedule.tau, rel=0.02)
    assert depth(scaled) == pytest.approx(depth(plain), rel=0.02)
    assert scaled.schedule.T0 == pytest.approx(7 * plain.schedule.T0, rel=0.02)  # loss units: times k
    assert_modes_from(d_eff, plain, scaled)


def test_the_temperature_at_a_fixed_lr_is_proportional_to_one_over_b() -> None:
    """Linear regression at its least-squares solution: the per-example gradients are
    x_i·r_i, so Σ_1 is known in closed form, and tr Σ_B = tr Σ_1/B·(N − B)/(N − 1) for minibatches
    drawn without replacement (the probe's shuffled partition). T(eta) = eta·tr Σ_B/(2·d_eff)."""
    g = torch.Generator().manual_seed(0)
    n, d = 8192, 12
    x = torch.randn(n, d, generator=g, dtype=torch.float64) * torch.linspace(0.5, 1.5, d, dtype=torch.float64)
    y = x @ torch.randn(d, generator=g, dtype=torch.float64) + torch.randn(n, generator=g, dtype=torch.float64)
    w = torch.linalg.lstsq(x, y).solution
    model = torch.nn.Linear(d, 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(w.unsqueeze(0))
    per_example = x * (2 * (x @ w - y))[:, None]  # gradient of (x·w − y)² for each example
    trace_sigma1 = float(((per_example - per_example.mean(0)) ** 2).sum(1).mean())
    temps = {}
    for b in (8, 32):
        settings = Config(batch_size=b, steps=1000, hessian_samples=None, probe_budget=None)  # one Hessian for both
        doc = thermocal.probe(model, (x, y.unsqueeze(1)), settings)
        noise = doc.measurements.gradient_noise
        expected = trace_sigma1 / b * (n - b) / (n - 1)
        assert abs(noise.grad_var - expected) <= 3 * noise.grad_var_stderr, b  # a stated statistical tolerance
        eta = 0.01  # a fixed lr
        temps[b] = eta * noise.grad_var / (2 * doc.calibration.d_eff)
    ratio = temps[8] / temps[32]
    assert ratio == pytest.approx(4 * (n - 8) / (n - 32), rel=0.15)  # ∝ 1/B (grad_var's own error is ~5% each)


def test_the_guarantee_is_the_gibbs_law_over_d_eff_modes() -> None:
    x, y = digits()
    doc = calibrated(mlp([64, 32, 10], seed=3), x, y, epsilon=0.005)
    rules, cal = doc.schedule.rules, doc.calibration
    k = cal.d_eff / 2
    assert (rules.epsilon, rules.epsilon_source, doc.schedule.kind) == (0.005, "user", "exponential")
    assert gamma_cdf(k, 0.005 / doc.schedule.Tf) == pytest.approx(0.9, abs=1e-9)  # Tf is where P(L - L* < eps) = 0.9
    assert cal.probability_start == pytest.approx(gamma_cdf(k, 0.005 / doc.schedule.T0), abs=1e-12)
    guarantee = next(d for d in doc.diagnostics if d.name == "guarantee")
    assert guarantee.value == pytest.approx(0.9, abs=1e-9) and guarantee.status == "pass"
    scipy = pytest.importorskip("scipy.stats")
    for shape in (0.5, 4.0, 37.5):
        for p in (0.1, 0.9):
            assert gamma_quantile(shape, p) == pytest.approx(float(scipy.gamma.ppf(p, shape)), rel=1e-9)


def test_a_flat_schedule_says_why_and_a_budget_cools() -> None:
    x, y = digits()
    model = mlp([64, 32, 10], seed=3)
    loose = calibrated(model, x, y, epsilon=10.0)
    assert (loose.schedule.kind, loose.schedule.rules.flat_reason) == ("constant", "noise_floor_below_target")
    nobudget = thermocal.probe(model, (x, y), Config(batch_size=32, epsilon_stderrs=1.0))
    assert (nobudget.schedule.kind, nobudget.schedule.rules.flat_reason) == ("constant", "no_budget")
    advice = next(d for d in nobudget.diagnostics if d.name == "guarantee").advice
    assert nobudget.calibration.probability_end < 0.9 and advice and "--steps" in advice


@pytest.mark.slow
def test_no_refusal_at_initialisation_on_the_samples_and_the_bench_tasks() -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    import tasks

    checked = []
    for name, make in {**tasks.TUNING, **tasks.HELD_OUT}.items():
        task = make()
        torch.manual_seed(0)
        x, y = task.train[0][:1024], task.train[1][:1024]
        doc = thermocal.probe(task.build(), (x, y), Config(batch_size=task.batch, steps=task.steps), loss_fn=task.loss_fn)
        assert doc.schedule.kind == "exponential" or doc.schedule.rules.flat_reason == "noise_floor_below_target", name
        checked.append(name)
    for sample, sizes in (("digits_mlp", [64, 32, 10]), ("diabetes_mlp", [10, 16, 1])):
        data = torch.load(SAMPLES / sample / "data" / "sample.pt", weights_only=True)
        doc = thermocal.probe(mlp(sizes, seed=0), (data["inputs"], data["targets"]), Config(steps=2000))
        assert doc.schedule.eta0 > 0 and math.isfinite(doc.schedule.T0), sample
    assert len(checked) == 10  # the eight small-data tasks and evidence v3's two single-pass ones


def _end_ratio(d_eff: float, doc) -> float:
    """lr(S)/eta0 of the linear law in closed form: Tf/T0 = (ε/Q(d_eff/2, p))·2·d_eff/(eta0·tr Σ_B),
    1 when the schedule would be flat (T0 ≤ Tf). Q from scipy: independent of thermocal's own."""
    stats = pytest.importorskip("scipy.stats")
    rules, s = doc.schedule.rules, doc.schedule
    t0 = s.eta0 * doc.measurements.gradient_noise.grad_var / (2 * d_eff)
    tf = rules.epsilon / float(stats.gamma.ppf(rules.probability, d_eff / 2))
    return min(1.0, tf / t0)


def read_trace(doc) -> tuple[float, float, float | None]:
    """The trace d_eff reads ([C10], [H15]): tr G by default, tr H with --d-eff hessian; with its
    draws' or probes' standard error, and its sampling error over examples."""
    if doc.settings.d_eff == "gauss-newton":
        g = doc.measurements.gauss_newton
        return g.trace, g.stderr, g.sampling_stderr
    h = doc.measurements.hessian
    return h.trace, h.trace_stderr, h.trace_sampling_stderr


@pytest.mark.parametrize("d_eff", ["gauss-newton", "hessian"])
@pytest.mark.parametrize("epsilon", [0.005, 10.0])  # a cooling schedule, and one flat on both sides of the trace
def test_trace_shift_is_how_far_one_trace_standard_error_moves_the_last_lr(epsilon: float, d_eff: str) -> None:
    x, y = digits()
    doc = calibrated(mlp([64, 32, 10], seed=3), x, y, epsilon=epsilon, d_eff=d_eff)
    trace, stderr, _ = read_trace(doc)
    lambda_max = doc.measurements.hessian.debiased().lambda_max  # [H16]
    moved = [_end_ratio(max(1.0, (trace + sign * stderr) / lambda_max), doc) for sign in (-1, 1)]
    base = _end_ratio(doc.calibration.d_eff, doc)
    expected = max(abs(ratio / base - 1) for ratio in moved)
    assert base == pytest.approx(depth(doc), rel=1e-9)
    assert doc.calibration.trace_shift == pytest.approx(expected, rel=1e-6, abs=1e-12)
    if epsilon == 10.0:
        assert doc.schedule.kind == "constant" and doc.calibration.trace_shift == 0.0
    else:
        assert doc.schedule.kind == "exponential" and doc.calibration.trace_shift > 0


def test_trace_shift_needs_a_budget_and_is_checked_where_the_file_has_it() -> None:
    from thermocal.schedule.file import dumps

    x, y = digits()
    model = mlp([64, 32, 10], seed=3)
    assert thermocal.probe(model, (x, y), Config(batch_size=32)).calibration.trace_shift is None  # no --steps
    assert_checked_where_present(dumps(calibrated(model, x, y, epsilon=0.005), "json"), "trace_shift")


def assert_checked_where_present(written: str, field: str) -> None:
    """A calibration field v2 gained later (file.LATER_OPTIONAL): `check` re-derives it, so a hand
    edit fails, and a file written before it existed passes and exports unchanged."""
    from thermocal.check import check
    from thermocal.schedule.file import dumps, loads

    assert check(loads(written, "new.json")).passed
    data = json.loads(written)
    data["calibration"][field] *= 2  # a hand edit is caught
    report = check(loads(json.dumps(data), "edited.json"))
    assert not report.passed and any(f"calibration.{field}" in f.message for f in report.findings)
    del data["calibration"][field]  # a file written before the field: re-derived where present only
    old = json.dumps(data, indent=2) + "\n"
    assert check(loads(old, "old.json")).passed and dumps(loads(old, "old.json"), "json") == old


def test_the_summary_says_when_the_trace_leaves_the_last_lr_uncertain_by_more_than_one_percent(tmp_path) -> None:
    """At initialisation positive and negative curvature cancel in tr H, which is then resolved to
    --trace-rtol of tr|H| [H3], not of itself: on this fresh MLP one standard error moves lr(S) by ~5%.
    tr G has no negative part to cancel ([H15]): the default's four draws move it by under 1%."""
    from thermocal.schedule.file import dumps

    x, y = digits()
    for d_eff in ("hessian", "gauss-newton"):
        doc = calibrated(mlp([64, 32, 10], seed=3), x, y, epsilon=0.005, d_eff=d_eff)
        shift = doc.calibration.trace_shift
        path = tmp_path / f"{d_eff}.json"
        path.write_text(dumps(doc, "json"))
        shown = " ".join(run("show", str(path), env={"COLUMNS": "400"}).stdout.split())  # show writes to stdout
        assert f"│ lr(S) vs trace │ ± {shift:.2%} │" in shown, shown
        if d_eff == "hessian":
            assert shift > 0.01 and doc.measurements.hessian.details["trace"].converged and "more than 1%" in shown
        else:
            assert 0 < shift < 0.01 and "more than 1%" not in shown
            data = json.loads(path.read_text())  # as mid-training, where 4 draws left tr G's error up to 10% ([H15])
            data["calibration"]["trace_shift"] = 0.05
            path.write_text(json.dumps(data))
            shown = " ".join(run("show", str(path), env={"COLUMNS": "400"}).stdout.split())
            assert "more than 1%; more Hessian examples (a larger --probe-budget) narrow it" in shown, shown


@pytest.mark.parametrize("d_eff", ["gauss-newton", "hessian"])
@pytest.mark.parametrize("rule", ["stability", "optimal"])
def test_t0_standard_error_counts_the_trace_and_every_input_eta0_depends_on(rule: str, d_eff: str) -> None:
    """[C10]: T0 = eta0·tr Σ_B/(2·d_eff), d_eff = tr H/λ_max. Under the stability bound eta0 =
    f·2/λ_max, so T0 = f·tr Σ_B/tr H: λ_max cancels and the trace's error counts as much as
    grad_var's. Under the optimal step, T0 = |∇L|²/(∇LᵀH∇L + tr HΣ_B)·tr Σ_B·λ_max/(2·tr H):
    five inputs with a standard error. First order, independent: relative errors in quadrature; the
    trace's two (its probes' or draws' error and its sampling error over examples, [H14], [H15]) each
    count. The same with tr G in place of tr H."""
    from thermocal.schedule.file import dumps

    x, y = digits()
    doc = calibrated(mlp([64, 32, 10], seed=3), x, y, eta0_rule=rule, d_eff=d_eff)
    noise, curv = doc.measurements.gradient_noise, doc.measurements.noise_curvature
    hess = doc.measurements.hessian.debiased()  # what the calibration reads ([H16])
    assert doc.schedule.rules.eta0_bound == rule and doc.calibration.d_eff > 1
    trace, stderr, sampling = read_trace(doc)
    assert sampling > 0 and stderr > 0
    relative = [noise.grad_var_stderr / noise.grad_var, stderr / trace, sampling / trace]
    if rule == "optimal":
        relative += [hess.lambda_max_stderr / hess.lambda_max, noise.full_grad_sq_stderr / noise.full_grad_sq,
                     curv.trace_h_sigma_stderr / (curv.grad_h_grad + curv.trace_h_sigma)]
    expected = doc.schedule.T0 * math.sqrt(sum(r * r for r in relative))
    cal = doc.calibration
    assert cal.T0_stderr_total == pytest.approx(expected, rel=1e-4)
    assert cal.T0_stderr == pytest.approx(doc.schedule.T0 * relative[0], rel=1e-12)  # grad_var's share, as before
    if d_eff == "hessian":
        assert hess.trace_sampling_groups >= 2
        assert cal.T0_stderr_total > 1.5 * cal.T0_stderr  # at initialisation tr H's error dominates
    assert_checked_where_present(dumps(doc, "json"), "T0_stderr_total")


@pytest.mark.parametrize("d_eff", ["gauss-newton", "hessian"])
def test_the_summary_prints_t0_with_its_whole_standard_error(tmp_path, d_eff: str) -> None:
    from thermocal.schedule.file import dumps

    x, y = digits()
    doc = calibrated(mlp([64, 32, 10], seed=3), x, y, d_eff=d_eff)
    path = tmp_path / "t0.json"
    path.write_text(dumps(doc, "json"))
    shown = " ".join(run("show", str(path), env={"COLUMNS": "400"}).stdout.split())
    cal = doc.calibration
    assert f"│ T0 │ {doc.schedule.T0:.4g} ± {cal.T0_stderr_total:.2g} │" in shown, shown
    assert f"grad_var's alone: {cal.T0_stderr:.2g}" in shown
    # the trace's ± is its probes' (or draws') error; its sampling error over examples is printed beside it
    hess = doc.measurements.hessian
    if d_eff == "hessian":
        assert (f"± the probes' error; its sampling error over examples ± {hess.trace_sampling_stderr:.2g} "
                f"({hess.trace_sampling_groups} groups)") in shown, shown
    else:
        sampling = doc.measurements.gauss_newton.sampling_stderr
        assert f"± the draws' error; its sampling error over examples ± {sampling:.2g}" in shown, shown


def test_the_end_from_the_run_does_not_move_with_the_probe_samples_size() -> None:
    """[C12] with --epsilon-from run: ε = c·loss_stderr·√(K/S), the standard error of the mean loss
    over the run's S·B examples, so a probe of 4× more examples of the same distribution gives the
    same ε within its error (the sd of K minibatch losses: relative error 1/√(2(K − 1))), where the
    sample rule's ε falls by about √4."""
    def sample(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(n)
        x = torch.randn(n, 8, generator=g)
        return x, (x[:, 0] + 0.5 * x[:, 1] > 0).long()

    model = mlp([8, 16, 2], seed=0)
    eps = {}
    for rule in ("sample", "run"):
        for n in (512, 2048):
            doc = thermocal.probe(model, sample(n), Config(batch_size=16, steps=2000, epsilon_from=rule, seed=1))
            eps[rule, n] = doc.schedule.rules.epsilon
            assert doc.schedule.rules.epsilon_source == ("run_loss_stderr" if rule == "run" else "loss_stderr")
            k = doc.measurements.gradient_noise.num_batches
            if rule == "run":
                noise = doc.measurements.gradient_noise
                assert eps[rule, n] == pytest.approx(16 * noise.loss_stderr * math.sqrt(k / 2000), rel=1e-12)
    spread = 3 * math.sqrt(1 / (2 * (512 // 16 - 1)) + 1 / (2 * (2048 // 16 - 1)))
    assert abs(eps["run", 2048] / eps["run", 512] - 1) <= spread
    assert eps["sample", 2048] / eps["sample", 512] < 0.8
