"""What a probe costs, and the Hessian sample cut to --probe-budget (method.md [S9], [H12])."""

from __future__ import annotations

import json
import math

import pytest
import torch

import thermocal
from conftest import SAMPLES, run, used_examples
from thermocal.budget import EXAMPLE_GRADIENTS_PER_HVP, budget_examples, planned_products
from thermocal.calibrate.gibbs import gamma_quantile
from thermocal.config import Config, make_config
from thermocal.curvature.gauss_newton import EXAMPLE_GRADIENTS_PER_DRAW, GAUSS_NEWTON_DRAWS
from thermocal.curvature.native import LAMBDA_MAX_STEPS
from thermocal.schedule.file import dumps, loads


def test_the_budget_keeps_the_most_whole_minibatches_that_fit() -> None:
    # 0.25 of 2000 steps of 32 is 16,000; the gradients took 1024; 41 products cost 2·41 per example
    n = budget_examples(0.25, 2000, 32, 1024, 41)
    assert n % 32 == 0
    assert 1024 + EXAMPLE_GRADIENTS_PER_HVP * 41 * n <= 16_000 < 1024 + EXAMPLE_GRADIENTS_PER_HVP * 41 * (n + 32)
    assert n == 160
    # a budget the gradients alone exceed still leaves one minibatch to take the Hessian of
    assert budget_examples(0.25, 10, 32, 1024, 41) == 32
    # the plan: 20 Lanczos steps and the residual, 10 trace probes, the sampling product, m + 1 noise products
    assert planned_products(20, 8) == 21 + 10 + 1 + 9
    # without the Hessian's trace ([H12]: the default reads tr G instead), no trace probes
    assert planned_products(12, 8, trace=False) == 13 + 1 + 9
    assert planned_products(12, 8, trace=False, heldout=True) == 13 + 1 + 9 + 1


def _regression(n: int = 512, d: int = 5, seed: int = 0, tails: float = 0.0) -> tuple[torch.nn.Module, torch.Tensor,
                                                                                    torch.Tensor]:
    """Linear regression with MSE; `tails` > 0 scales each example by exp(tails·z), z standard normal
    (heavy-tailed inputs, whose subsamples' Hessians differ more)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64) * torch.linspace(0.5, 2.0, d, dtype=torch.float64)
    if tails:
        x = x * torch.exp(tails * torch.randn(n, 1, generator=g, dtype=torch.float64))
    y = x @ torch.randn(d, generator=g, dtype=torch.float64) + torch.randn(n, generator=g, dtype=torch.float64)
    return torch.nn.Linear(d, 1, bias=False).double(), x, y.unsqueeze(1)


def test_a_budgeted_probe_takes_the_hessian_of_the_first_examples_and_records_its_cost() -> None:
    """Linear regression with MSE: the Hessian of the first n examples is 2·XᵀX/n exactly, so the
    probe's lambda_max says which examples it took; the cost record adds up its own products."""
    model, x, y = _regression()
    settings = Config(batch_size=16, steps=1000, hessian_samples=None)  # 0.25 of 16,000 example-gradients
    doc = thermocal.probe(model, (x, y), settings)
    cost, hess, extra = doc.measurements.cost, doc.measurements.hessian, doc.measurements.noise_curvature
    n = doc.inputs.hessian_samples
    assert n == budget_examples(0.25, 1000, 16, 512, cost.planned_hvps) < 512
    first = x[used_examples(512, settings)][:n]
    truth = torch.linalg.eigvalsh(2.0 * first.T @ first / n)
    assert hess.lambda_max == pytest.approx(float(truth[-1]), rel=1e-6)
    # the default reads d_eff off tr G ([H15]) and measures no tr H; for a linear model with MSE, G = H
    assert hess.trace is None and "trace" not in hess.details
    trace_g = doc.measurements.gauss_newton
    # one output per example: each draw of its output's sign gives tr G exactly, and the draws agree
    assert trace_g.examples == n and trace_g.trace == pytest.approx(float(truth.sum()), rel=1e-9)
    assert trace_g.stderr == pytest.approx(0.0, abs=1e-9)
    assert cost.hvps == hess.hvps + extra.hvps
    assert cost.planned_hvps == planned_products(LAMBDA_MAX_STEPS, 8, trace=False, heldout=True) + GAUSS_NEWTON_DRAWS
    # [H16]: lambda_max's vector on the next n examples, which the Hessian did not see: v·(2·XᵀX/m)·v
    m = hess.heldout_examples
    assert m == n
    later = x[used_examples(512, settings)][n:n + m]
    top = torch.linalg.eigh(2.0 * first.T @ first / n).eigenvectors[:, -1]
    assert hess.lambda_max_heldout == pytest.approx(float(top @ (2.0 * later.T @ later / m) @ top), rel=1e-3)
    used = hess.debiased()
    assert used.lambda_max == pytest.approx((hess.lambda_max + hess.lambda_max_heldout) / 2, rel=1e-12)
    assert used.lambda_max_stderr >= abs(hess.lambda_max - hess.lambda_max_heldout) / 2
    assert cost.gauss_newton_example_gradients == EXAMPLE_GRADIENTS_PER_DRAW * trace_g.draws * n
    assert cost.example_gradients == 512 + EXAMPLE_GRADIENTS_PER_HVP * cost.hvps * n + cost.gauss_newton_example_gradients
    assert (cost.training_example_gradients, cost.budget) == (16_000, 0.25)
    assert cost.fraction == pytest.approx(cost.example_gradients / 16_000, rel=1e-12) and cost.fraction <= 0.25


def test_by_default_the_hessian_is_the_whole_samples_so_lambda_max_carries_no_subsample_error() -> None:
    """[S8]: without --hessian-samples (and without --steps' budget) the Hessian is that of all K·B
    examples, so lambda_max, and eta0 ∝ 1/lambda_max, is the whole sample's: 2·XᵀX/N for linear
    regression with MSE, to [H1]'s residual test (within 1%). Heavy-tailed inputs make the premise
    visible: the Hessian of 512 of the 2,048 examples (the default before 2026-12-07) puts
    lambda_max more than 5% away."""
    n = 2048
    model, x, y = _regression(n=n, seed=2, tails=0.75)
    truth = float(torch.linalg.eigvalsh(2.0 * x.T @ x / n)[-1])
    doc = thermocal.probe(model, (x, y), Config(batch_size=16))
    hess = doc.measurements.hessian
    assert doc.settings.hessian_samples is None and doc.inputs.hessian_samples == n
    assert hess.lambda_max == pytest.approx(truth, rel=1e-2)
    assert hess.sampling_groups == 16 and hess.lambda_max_stderr > 0  # [H13] over the whole sample's groups
    sub = thermocal.probe(model, (x, y), Config(batch_size=16, hessian_samples=512))
    assert sub.inputs.hessian_samples == 512
    assert abs(sub.measurements.hessian.lambda_max / truth - 1) > 0.05


def test_without_steps_a_budget_or_with_lambda_min_resolved_the_hessian_sample_is_as_set() -> None:
    model, x, y = _regression()
    for settings in (Config(batch_size=16, hessian_samples=256),
                     Config(batch_size=16, steps=1000, hessian_samples=256, probe_budget=None),
                     Config(batch_size=16, steps=1000, hessian_samples=256, lambda_min=True),  # full accuracy asked
                     Config(batch_size=16, steps=1000, hessian_samples=256, rules="literal")):
        doc = thermocal.probe(model, (x, y), settings)
        assert doc.inputs.hessian_samples == 256
        cost = doc.measurements.cost
        extra = cost.gauss_newton_example_gradients or 0  # tr G's, where d_eff reads it ([H15]); not the literal rules'
        assert (extra == 0) == (settings.rules == "literal")
        assert cost.budget is None and cost.example_gradients == 512 + 2 * cost.hvps * 256 + extra
        assert (cost.fraction is None) == (settings.steps is None)


def test_files_from_before_the_budget_read_as_unbounded_and_export_as_they_were() -> None:
    model, x, y = _regression(n=128)
    written = dumps(thermocal.probe(model, (x, y), Config(batch_size=16, probe_budget=None)), "json")
    assert '"probe_budget"' not in written  # unset is not written: absent means no bound
    data = json.loads(written)
    del data["measurements"]["cost"]
    old = json.dumps(data, indent=2) + "\n"  # as a file of the version before the budget was written
    doc = loads(old, "old.json")
    assert doc.settings.probe_budget is None and doc.measurements.cost is None
    assert dumps(doc, "json") == old
    assert Config().probe_budget == 0.25


def test_a_file_rerun_from_its_settings_keeps_its_budget(tmp_path) -> None:
    model, x, y = _regression(n=128)
    for budget in (None, 0.5):
        path = tmp_path / f"{budget}.json"
        path.write_text(dumps(thermocal.probe(model, (x, y), Config(batch_size=16, steps=50, probe_budget=budget)), "json"))
        assert make_config({}, path).probe_budget == budget


def test_the_default_trace_tolerance_moves_the_lr_by_under_one_percent() -> None:
    """[H12]: lr(t)/eta0 = exp(−t·D/S), D = ln(T0/Tf) = ln(eta0·tr Σ/(2ε)) − ln d_eff + ln Q(d_eff/2, p), and
    d_eff = tr H/lambda_max: a trace off by its tolerance moves D, so every lr(t)/eta0, by under 1%."""
    rtol, probability = Config().trace_rtol, Config().probability

    def depth(d_eff: float) -> float:
        return -math.log(d_eff) + math.log(gamma_quantile(d_eff / 2.0, probability))

    for i in range(101):
        d_eff = 10 ** (i / 20)  # 1 to 10^5 modes
        for moved in (d_eff * (1 + rtol), max(1.0, d_eff * (1 - rtol))):
            assert abs(math.expm1(depth(moved) - depth(d_eff))) < 0.01, d_eff


@pytest.mark.parametrize("options, says", [
    (["--steps", "2000"], "of the training run's 64,000 (budget 0.25: it allows {n} Hessian examples of the 1,024 asked "
                          "for; a larger --probe-budget takes more)"),  # by default, all of them ([S8])
    (["--steps", "2000", "--hessian-samples", "512"], "(budget 0.25: it allows {n} Hessian examples of the 512 asked"),
    (["--steps", "200000"], "of the training run's 6,400,000 (budget 0.25)"),
    (["--steps", "10"], "7.20 of the training run's 320, OVER the budget of 0.25 (even one minibatch of Hessian "
                        "examples does not fit beside the gradients)"),
])
def test_the_summary_says_what_the_probe_spent_against_its_budget(tmp_path, options: list[str], says: str) -> None:
    result = run("probe", str(SAMPLES / "digits_mlp" / "model.pt"), str(SAMPLES / "digits_mlp" / "data"), *options,
                 "-o", str(tmp_path / "o.json"), env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    doc = thermocal.load_schedule(tmp_path / "o.json").document
    cost, said = doc.measurements.cost, " ".join(result.stderr.split())
    assert says.format(n=doc.inputs.hessian_samples) in said, result.stderr
    assert f"│ probe cost │ {cost.example_gradients:,} │" in said
    # under two minibatches of Hessian examples lambda_max has no sampling error ([H13]), and its row says why;
    # tr G's is its spread over single examples ([H15]), measured all the same
    unmeasured = ("its sampling error over examples is not measured: its 32 Hessian examples are under two "
                  "minibatches of 32; a larger --probe-budget takes more")
    hess = doc.measurements.hessian
    if doc.inputs.hessian_samples < 64:
        assert said.count(unmeasured) == 1 and hess.lambda_max_stderr is None and hess.trace is None
        assert doc.measurements.gauss_newton.sampling_stderr is not None
    else:
        assert unmeasured not in said and f"± its sampling error ({hess.sampling_groups} groups)" in said
    # within the budget, it names the examples it allowed only where it allowed fewer than [S8]'s
    if cost.fraction <= cost.budget:
        assert ("it allows" in said) == (doc.inputs.hessian_samples < min(doc.settings.hessian_samples or 1024, 1024))
