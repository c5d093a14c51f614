"""--d-eff gauss-newton: the Gauss-Newton trace against dense ground truth, its file and its refusals
(method.md [H15])."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import thermocal
from conftest import ROOT, SAMPLES, dense_hessian, mlp, one_line_error, run
from thermocal.config import Config
from thermocal.curvature.gauss_newton import gauss_newton_trace
from thermocal.curvature.native import LANCZOS_MIN_ITER
from thermocal.losses import _builtin


class OneHot(torch.nn.Module):
    """Token ids → one-hot rows, in the dtype of the model (dense_hessian makes it float64)."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.vocab = vocab
        self.register_buffer("like", torch.zeros(()))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return (tokens.long().unsqueeze(-1) == torch.arange(self.vocab)).to(self.like.dtype)


def estimate(model, loss_fn, x, y, draws: int, chunk: int = 1, seed: int = 1):
    params = [p for p in model.parameters() if p.requires_grad]
    return gauss_newton_trace(model, loss_fn, x, y, params, draws=draws, chunk=chunk,
                              generator=torch.Generator().manual_seed(seed))


def linear_cases():
    torch.manual_seed(0)
    x = torch.randn(40, 5)
    tokens = torch.randint(0, 6, (16, 7))
    return [("mse", torch.nn.Linear(5, 3), x, torch.randn(40, 3)),
            ("cross_entropy", torch.nn.Linear(5, 4), x, torch.randint(0, 4, (40,))),
            ("lm", torch.nn.Sequential(OneHot(6), torch.nn.Linear(6, 6)), tokens, torch.randint(0, 6, (16, 7)))]


@pytest.mark.parametrize("case", range(3), ids=["mse", "cross_entropy", "lm"])
def test_where_the_outputs_are_linear_in_the_parameters_tr_g_is_the_hessians_trace(case: int) -> None:
    """G = H when the outputs are linear in the parameters: the estimate meets the dense Hessian's
    trace within 4 of its own (draws') standard errors, and its errors shrink as 1/√draws. (A
    linear layer under mean squared error has J_iJ_iᵀ ∝ I, so there uᵀ·H_i·J_iJ_iᵀ·u is the
    same for every sign vector u: exact, with no error.)"""
    name, model, x, y = linear_cases()[case]
    loss_fn = _builtin(name, 0.0)
    exact = float(torch.diagonal(dense_hessian(copy.deepcopy(model), loss_fn, x, y)).sum())
    few, many = estimate(model, loss_fn, x, y, 4), estimate(model, loss_fn, x, y, 64)
    assert few.examples == len(x) and few.draws == 4 and few.sampling_stderr > 0
    if name == "mse":
        assert few.trace == pytest.approx(exact, rel=1e-6) and few.stderr == pytest.approx(0.0, abs=1e-9)
        return
    assert few.stderr > 0 and abs(many.trace - exact) <= 4 * many.stderr, (few, many, exact)
    assert abs(many.trace - exact) > 0  # an estimate, not the exact value by construction
    assert many.stderr == pytest.approx(few.stderr / 4, rel=0.5)


def test_the_batched_and_the_looped_paths_give_the_same_numbers(monkeypatch: pytest.MonkeyPatch) -> None:
    """An eager module that is not only Linear and row-wise layers (here a LayerNorm) goes through
    torch.func.vmap, a TorchScript one through a loop over its examples: the same signs give the
    same estimate, on a nonlinear classifier."""
    import thermocal.curvature.gauss_newton as gauss_newton

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.LayerNorm(8), torch.nn.Tanh(), torch.nn.Linear(8, 4))
    x, y = torch.randn(30, 5), torch.randint(0, 4, (30,))
    with monkeypatch.context() as patch:
        patch.setattr(gauss_newton, "_looped", lambda *args: pytest.fail("the eager module took the loop"))
        patch.setattr(gauss_newton, "_dense", lambda *args: pytest.fail("a LayerNorm took the dense path"))
        eager = estimate(model, F.cross_entropy, x, y, 3)
    scripted = estimate(torch.jit.script(model), F.cross_entropy, x, y, 3)
    assert eager.trace == pytest.approx(scripted.trace, rel=1e-6) and eager.stderr == pytest.approx(scripted.stderr, rel=1e-5)


def dense_model() -> torch.nn.Sequential:
    """Flatten, Linear layers (one without bias, nested), row-wise activations and an eval-mode Dropout."""
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(6, 8), torch.nn.GELU(), torch.nn.Dropout(0.5),
                               torch.nn.Sequential(torch.nn.Linear(8, 8, bias=False), torch.nn.Tanh()),
                               torch.nn.Linear(8, 7), torch.nn.Softplus(), torch.nn.Linear(7, 4)).eval()


def looped(model, loss_fn, x, y, draws: int):
    """The estimate through the loop over examples, whatever the model (the reference for the others)."""
    import thermocal.curvature.gauss_newton as gauss_newton

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(gauss_newton, "_dense_chain", lambda *args: None)
        patch.setattr(gauss_newton, "_batched", lambda *args: None)
        return estimate(model, loss_fn, x, y, draws)


@pytest.mark.parametrize("frozen", [[], ["1.bias", "5.weight", "5.bias"]], ids=["all", "frozen"])
@pytest.mark.parametrize("form", ["eager", "torchscript"])
def test_linear_layers_take_the_dense_path_with_the_same_numbers(monkeypatch: pytest.MonkeyPatch, frozen: list[str],
                                                                  form: str) -> None:
    """[H15] A Sequential of Linear and row-wise layers, eager or TorchScript, needs no per-example
    gradients: example i's weight gradients g_i·a_iᵀ and h_i·a_iᵀ have the dot product
    (g_i·h_i)|a_i|², its bias ones g_i·h_i. The same signs give the loop's estimate, with every
    parameter trained and with a layer and a bias frozen (their terms left out)."""
    import thermocal.curvature.gauss_newton as gauss_newton

    model = dense_model()
    for name, p in model.named_parameters():
        p.requires_grad_(name not in frozen)
    if form == "torchscript":
        model = torch.jit.script(model)
    x, y = torch.randn(30, 2, 3), torch.randint(0, 4, (30,))
    with monkeypatch.context() as patch:
        for path in ("_looped", "_batched"):
            patch.setattr(gauss_newton, path, lambda *args: pytest.fail("the dense model took per-example gradients"))
        dense = estimate(model, F.cross_entropy, x, y, 3)
    reference = looped(model, F.cross_entropy, x, y, 3)
    assert dense.trace == pytest.approx(reference.trace, rel=1e-6)
    assert dense.stderr == pytest.approx(reference.stderr, rel=1e-5)
    assert dense.sampling_stderr == pytest.approx(reference.sampling_stderr, rel=1e-5)


def test_the_bundled_torchscript_sample_takes_the_dense_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """The digits sample as the CLI loads it (torch.jit.load, whose class names TorchScript numbers):
    the dense path, with the loop's numbers."""
    import thermocal.curvature.gauss_newton as gauss_newton

    model = torch.jit.load(str(SAMPLES / "digits_mlp" / "model.pt"))
    torch.manual_seed(0)
    x, y = torch.randn(40, 64), torch.randint(0, 10, (40,))
    with monkeypatch.context() as patch:
        patch.setattr(gauss_newton, "_looped", lambda *args: pytest.fail("the sample took the loop"))
        dense = estimate(model, F.cross_entropy, x, y, 4)
    assert dense.trace == pytest.approx(looped(model, F.cross_entropy, x, y, 4).trace, rel=1e-6)


class Centred(torch.nn.Sequential):
    """A Sequential whose forward mixes the examples: per example it is not what the batch computes."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x - x.mean(dim=0)
        for layer in self:
            x = layer(x)
        return x


def not_dense():
    torch.manual_seed(0)
    shared = torch.nn.Linear(6, 6)
    tied = torch.nn.Sequential(torch.nn.Linear(6, 6), torch.nn.Tanh(), torch.nn.Linear(6, 6))
    tied[2].weight = tied[0].weight
    hooked = torch.nn.Sequential(torch.nn.Linear(6, 6))
    hooked[0].register_forward_hook(lambda module, args, output: output * 2)
    training = torch.nn.Sequential(torch.nn.Linear(6, 6), torch.nn.Dropout(0.5))
    return {"subclass": Centred(torch.nn.Linear(6, 6)), "scripted subclass": torch.jit.script(Centred(torch.nn.Linear(6, 6))),
            "reused": torch.nn.Sequential(shared, torch.nn.Tanh(), shared), "tied": tied, "hooked": hooked,
            "norm": torch.nn.Sequential(torch.nn.Linear(6, 6), torch.nn.LayerNorm(6)),
            "scripted norm": torch.jit.script(torch.nn.Sequential(torch.nn.Linear(6, 6), torch.nn.LayerNorm(6))),
            "training": training, "flatten": torch.nn.Sequential(torch.nn.Flatten(0), torch.nn.Linear(6, 6))}


@pytest.mark.parametrize("name", list(not_dense()))
def test_the_dense_path_refuses_what_it_cannot_prove_row_wise(name: str) -> None:
    """A subclass's forward, a layer used twice, a tied weight, a hook, a layer with other parameters,
    a Dropout in training or a Flatten over the examples: each may make an example's gradient other
    than g_i·a_iᵀ, so those models go to the per-example paths."""
    from thermocal.curvature.gauss_newton import _dense_chain

    model = not_dense()[name]
    assert _dense_chain(model, [p for p in model.parameters()]) is None


def test_the_dense_path_refuses_parameters_the_model_does_not_hold() -> None:
    from thermocal.curvature.gauss_newton import _dense_chain

    assert _dense_chain(torch.nn.Sequential(torch.nn.Linear(6, 6)), list(torch.nn.Linear(6, 6).parameters())) is None


def test_a_linear_layer_over_positions_falls_back_with_the_same_numbers() -> None:
    """A Linear layer applied at every position of a sequence has a per-example gradient summed over
    positions: _dense declines after its first forward and the batched path gives the loop's numbers."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Tanh(), torch.nn.Linear(5, 4))
    x, y = torch.randn(12, 6, 3), torch.randint(0, 4, (12, 6))
    loss_fn = _builtin("lm", 0.0)
    assert estimate(model, loss_fn, x, y, 2).trace == pytest.approx(looped(model, loss_fn, x, y, 2).trace, rel=1e-6)


def test_one_output_per_example_is_exact_on_a_nonlinear_model() -> None:
    """With one output (u = ±1) the estimate is exact: (2/n)·Σ|∇f_i|² for mean squared error,
    from per-example gradients, on an MLP whose Hessian is not G."""
    torch.manual_seed(0)
    model, x, y = mlp([4, 8, 1], seed=2), torch.randn(24, 4), torch.randn(24, 1)
    params = list(model.parameters())
    exact = 0.0
    for i in range(len(x)):
        grads = torch.autograd.grad(model(x[i:i + 1]).sum(), params)
        exact += 2.0 / len(x) * sum(float(g.pow(2).sum()) for g in grads)
    got = estimate(model, F.mse_loss, x, y, 3)
    assert got.trace == pytest.approx(exact, rel=1e-5) and got.stderr == pytest.approx(0.0, abs=1e-9)
    hessian = float(torch.diagonal(dense_hessian(copy.deepcopy(model), F.mse_loss, x, y)).sum())
    assert abs(hessian - exact) > 1e-3 * exact  # so that the test tells G from H


def test_a_chunk_of_examples_is_unbiased_as_well() -> None:
    """Chunks of several examples (a fixed-batch program's) add cross terms of mean 0: over 30 seeds
    the mean estimate meets the per-example one within 4 standard errors of that mean."""
    name, model, x, y = linear_cases()[1]
    loss_fn = _builtin(name, 0.0)
    exact = float(torch.diagonal(dense_hessian(copy.deepcopy(model), loss_fn, x, y)).sum())
    values = torch.tensor([estimate(model, loss_fn, x, y, 2, chunk=8, seed=s).trace for s in range(30)])
    assert abs(float(values.mean()) - exact) <= 4 * float(values.std()) / 30 ** 0.5


def test_the_file_records_tr_g_check_rederives_it_and_the_summary_says_so(tmp_path: Path) -> None:
    out = tmp_path / "g.json"
    result = run("probe", SAMPLES / "digits_mlp" / "model.pt", SAMPLES / "digits_mlp" / "data", "--steps", "2000",
                 "--d-eff", "gauss-newton", "-o", out, env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    doc = thermocal.load_schedule(out).document
    g, cost = doc.measurements.gauss_newton, doc.measurements.cost
    assert doc.settings.d_eff == "gauss-newton" and g.examples == doc.inputs.hessian_samples and g.draws == 4
    assert doc.calibration.d_eff == pytest.approx(g.trace / doc.measurements.hessian.debiased().lambda_max, rel=1e-12)
    assert cost.gauss_newton_example_gradients == 2 * 4 * g.examples
    assert cost.example_gradients == cost.gradient_examples + 2 * cost.hvps * cost.hessian_examples \
        + cost.gauss_newton_example_gradients
    said = " ".join(result.stderr.split())
    assert "d_eff = tr G/lambda_max" in said and "for tr G" in said and "│ tr G │" in said
    assert run("check", out).exit_code == 0
    tampered = json.loads(out.read_text())
    tampered["measurements"]["gauss_newton"]["trace"] *= 2
    (tmp_path / "t.json").write_text(json.dumps(tampered))
    assert run("check", tmp_path / "t.json").exit_code != 0  # d_eff moved: the schedule no longer re-derives
    tampered = json.loads(out.read_text())  # settings that read tr(H), which this file never measured
    tampered["settings"]["d_eff"] = "hessian"
    (tmp_path / "h.json").write_text(json.dumps(tampered))
    checked = run("check", tmp_path / "h.json")
    assert checked.exit_code == 1 and "d_eff reads the Hessian's trace" in checked.stdout, checked.output


def test_the_default_reads_tr_g_and_spends_nothing_on_the_hessians_trace() -> None:
    """[H12], [H15]: the default's d_eff is tr G/lambda_max, so it measures no tr H, and Lanczos stops
    when lambda_max passes [H1] instead of running to the trace's 20-step floor. --hessian-trace
    measures tr H beside tr G; --d-eff hessian reads it instead; the literal rules read tr H."""
    x, y = torch.randn(64, 4), torch.randint(0, 3, (64,))
    model = mlp([4, 8, 3], seed=1)
    doc = thermocal.probe(model, (x, y), Config(batch_size=16, steps=100))
    hess, g = doc.measurements.hessian, doc.measurements.gauss_newton
    assert doc.settings.d_eff == "gauss-newton" and g is not None
    assert doc.calibration.d_eff == pytest.approx(g.trace / hess.debiased().lambda_max, rel=1e-12)
    assert hess.trace is None and hess.trace_stderr is None and set(hess.details) == {"lambda_max"}
    assert hess.details["lambda_max"].iterations < LANCZOS_MIN_ITER and hess.details["lambda_max"].converged
    both = thermocal.probe(model, (x, y), Config(batch_size=16, steps=100, hessian_trace=True))
    measured = both.measurements.hessian
    assert both.settings.d_eff == "gauss-newton" and measured.trace is not None and "trace" in measured.details
    assert measured.details["lambda_max"].iterations >= LANCZOS_MIN_ITER
    assert both.calibration.d_eff == pytest.approx(both.measurements.gauss_newton.trace / measured.debiased().lambda_max, rel=1e-12)
    for settings in (Config(batch_size=16, steps=100, d_eff="hessian"), Config(batch_size=16, steps=100, rules="literal")):
        read = thermocal.probe(model, (x, y), settings)
        assert read.settings.d_eff == "hessian" and read.measurements.gauss_newton is None
        assert "gauss_newton" not in read.measurements.model_dump_json()  # no tr G field where it is not read
        assert read.measurements.hessian.trace is not None


def test_files_from_before_the_gauss_newton_default_read_as_hessian_and_pass_check() -> None:
    """A file written before --d-eff existed, or while tr H was the default, has no d_eff in its
    settings: it read d_eff off tr H, and it still does."""
    golden = ROOT / "tests" / "golden" / "v2" / "digits_default.json"
    assert "d_eff" not in json.loads(golden.read_text())["settings"]
    assert thermocal.load_schedule(golden).document.settings.d_eff == "hessian" and run("check", golden).exit_code == 0


def test_it_belongs_to_the_loss_units_rules(tmp_path: Path) -> None:
    result = run("probe", SAMPLES / "digits_mlp" / "model.pt", SAMPLES / "digits_mlp" / "data", "--rules", "literal",
                 "--d-eff", "gauss-newton", "-o", tmp_path / "o.json")
    one_line_error(result, 2, "--d-eff belongs to the loss-units rules")
    assert not (tmp_path / "o.json").exists()
