"""The native engine: Lanczos, Hutch++, SLQ and blocks on known spectra, and its operator on models."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from conftest import dense_hessian, engine_config, mlp, symmetric_with_spectrum, used_examples
from thermocal.curvature.blocks import partition
from thermocal.curvature.density import slq_density
from thermocal.curvature.hutchinson import deflated_probes, hutchinson, rademacher
from thermocal.curvature.hutchpp import hutchpp_sketch, sketch_trace
from thermocal.curvature.hvp import HessianOperator
from thermocal.curvature.lanczos import lanczos
from thermocal.curvature.operator import Dense
from thermocal.measure import probe
from thermocal.noise import gram_matrix

CPU = torch.device("cpu")


def start(dim: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("kind", ["diagonal", "orthogonal", "indefinite"])
def test_lanczos_finds_both_ends_and_the_top_k(kind: str) -> None:
    if kind == "diagonal":
        eigenvalues = torch.linspace(0.01, 10.0, 300).double()
    elif kind == "orthogonal":
        eigenvalues = torch.cat([torch.linspace(0.0, 1.0, 290), torch.tensor([2.0, 3.0, 4.0, 5.0, 8.0, 9.0, 9.5, 9.9, 10.0, 12.0])]).double()
    else:
        eigenvalues = torch.cat([torch.tensor([-2.0, -1.5]), torch.linspace(-0.1, 0.1, 296), torch.tensor([4.0, 5.0])]).double()
    h = torch.diag(eigenvalues) if kind == "diagonal" else symmetric_with_spectrum(eigenvalues, seed=5)
    run = lanczos(Dense(h), start(300), rtol=1e-8, max_iter=300, top_k=3, bottom_k=1)
    exact = torch.sort(eigenvalues).values
    assert run.converged
    for pair, expected in zip(run.largest, exact.flip(0)[:3].tolist()):
        assert abs(pair.value - expected) <= max(pair.residual, 1e-10)  # Bauer–Fike: within the residual
        assert pair.residual <= 1e-8 * abs(pair.value)
    assert run.smallest[0].value == pytest.approx(float(exact[0]), abs=run.smallest[0].residual + 1e-12)
    # The basis is orthonormal (full reorthogonalization) and T = V H V^T.
    v = run.basis
    torch.testing.assert_close(v @ v.T, torch.eye(len(v), dtype=torch.float64), atol=1e-10, rtol=0)
    assert float(run.alphas.sum()) == pytest.approx(float(torch.trace(v @ h @ v.T)), rel=1e-10)


def test_lanczos_reports_an_unmet_tolerance() -> None:
    h = symmetric_with_spectrum(torch.linspace(0.0, 1.0, 200).double())
    run = lanczos(Dense(h), start(200), rtol=1e-12, max_iter=8)
    assert run.iterations == 8 and not run.converged
    assert all(p.residual > 1e-12 * abs(p.value) for p in run.largest + run.smallest)


def indefinite(dim: int = 400) -> tuple[torch.Tensor, torch.Tensor]:
    eigenvalues = torch.cat([torch.tensor([-2.0, -1.5]), torch.linspace(-0.1, 0.1, dim - 4), torch.tensor([4.0, 5.0])]).double()
    return eigenvalues, symmetric_with_spectrum(eigenvalues, seed=7)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_thick_restarts_bound_the_basis_and_still_find_both_ends(dtype: torch.dtype) -> None:
    eigenvalues, h = indefinite()
    rtol = 1e-8 if dtype == torch.float64 else 1e-5  # a float32 basis resolves residuals to about 1e-6
    run = lanczos(Dense(h), start(400), rtol=rtol, max_iter=2000, top_k=2, bottom_k=1,
                  max_basis=8, dtype=dtype)
    assert run.restarts > 0 and run.basis.shape[0] <= 8 and run.basis.dtype == dtype
    assert run.converged
    exact = torch.sort(eigenvalues).values
    for pair, expected in zip(run.largest + run.smallest, [float(exact[-1]), float(exact[-2]), float(exact[0])]):
        assert abs(pair.value - expected) <= pair.residual + 1e-12  # Bauer–Fike
        assert pair.residual <= rtol * abs(pair.value)
    # Still an orthonormal basis with T = V H V^T on the diagonal, so Hutch++ can deflate by it.
    v = run.basis.double()
    eps = 1e-10 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(v @ v.T, torch.eye(len(v), dtype=torch.float64), atol=eps, rtol=0)
    assert float(run.alphas.sum()) == pytest.approx(float(torch.trace(v @ h @ v.T)), rel=eps, abs=eps)


def test_a_restarted_run_agrees_with_an_unbounded_one_on_a_slow_spectrum() -> None:
    # Evenly spaced eigenvalues: the hard case for Lanczos; restarts cost products, not accuracy.
    eigenvalues = torch.linspace(0.01, 10.0, 600).double()
    h = torch.diag(eigenvalues)
    free = lanczos(Dense(h), start(600), rtol=1e-6, max_iter=3000, top_k=3, bottom_k=1)
    bounded = lanczos(Dense(h), start(600), rtol=1e-6, max_iter=3000, top_k=3, bottom_k=1, max_basis=30)
    assert free.restarts == 0 and bounded.restarts > 0 and free.converged and bounded.converged
    assert bounded.iterations >= free.iterations
    for a, b in zip(free.largest + free.smallest, bounded.largest + bounded.smallest):
        assert b.value == pytest.approx(a.value, abs=a.residual + b.residual)


def test_a_basis_that_must_grow_gives_the_same_run_as_a_reserved_one(monkeypatch) -> None:
    """On the CPU the basis reserves all its rows at once (pages become resident as rows are
    written); where that is refused it starts at 64 rows and doubles. Past row 64 both give
    the same numbers."""
    import thermocal.curvature.lanczos as module

    eigenvalues = torch.linspace(0.01, 10.0, 600).double()
    h = torch.diag(eigenvalues)
    reserved = lanczos(Dense(h), start(600), rtol=1e-6, max_iter=3000, top_k=3, bottom_k=1)
    empty = torch.empty

    def refuse_big(*shape, **kwargs):  # the reservation (all 600 rows) is refused, growth steps are not
        if shape[0] >= 600:
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory")
        return empty(*shape, **kwargs)

    monkeypatch.setattr(module.torch, "empty", refuse_big)
    grown = lanczos(Dense(h), start(600), rtol=1e-6, max_iter=3000, top_k=3, bottom_k=1)
    monkeypatch.undo()
    assert reserved.iterations > 64 and grown.iterations == reserved.iterations
    torch.testing.assert_close(grown.basis, reserved.basis, rtol=0, atol=0)
    assert [p.value for p in grown.largest + grown.smallest] == [p.value for p in reserved.largest + reserved.smallest]


def test_lanczos_estimates_the_total_curvature_magnitude_for_free() -> None:
    # Uniform on [-1, 1]: tr H ≈ 0 but tr|H| = Σ|λ| ≈ d/2. One Gaussian probe's quadrature has a
    # relative standard deviation of about √2·‖H‖_F/tr|H| ≈ 4% here; allow 5 of those.
    eigenvalues = torch.linspace(-1.0, 1.0, 2000).double()
    h = torch.diag(eigenvalues)
    exact = float(eigenvalues.abs().sum())
    for seed in range(3):
        run = lanczos(Dense(h), start(2000, seed), rtol=1e-3, max_iter=300)
        assert run.abs_trace == pytest.approx(exact, rel=0.2)
    bounded = lanczos(Dense(h), start(2000), rtol=1e-3, max_iter=600, max_basis=20)
    assert bounded.restarts > 0 and bounded.abs_trace == pytest.approx(exact, rel=0.2)  # from the first cycle


def test_a_trace_with_cancelling_curvature_stops_at_the_scale_of_the_total_curvature() -> None:
    # Here tr H = 6.3 but tr|H| = 25.9 (negative curvature cancels part of it). Judged against
    # max(|tr H|, lambda_max) the trace took 230 probes; against tr|H| it needs about a tenth
    # of that, and is still within its error bar of the dense truth.
    x, y = classification_sample(200, seed=9)
    eager = mlp([5, 40, 3], seed=11)
    settings = engine_config(batch_size=40, dtype="float64", trace_rtol=0.02, max_probes=1000)
    spec = probe(eager, x, y, settings, CPU).measurements.hessian
    keep = used_examples(200, settings)
    h = dense_hessian(eager, F.cross_entropy, x[keep], y[keep])
    total = float(torch.linalg.eigvalsh(h).abs().sum())
    assert spec.details["trace"].converged and spec.details["trace"].iterations <= 50
    assert abs(spec.trace - float(h.trace())) <= 3 * spec.trace_stderr + 1e-9
    assert spec.trace_stderr <= 0.02 * 2 * total  # rtol of tr|H|, up to the one-probe quadrature's error


def test_hutchpp_converges_and_beats_plain_hutchinson_on_a_decaying_spectrum() -> None:
    eigenvalues = 1.0 / torch.arange(1, 401, dtype=torch.float64) ** 1.5
    h = symmetric_with_spectrum(eigenvalues, seed=2)
    op = Dense(h)
    exact = float(eigenvalues.sum())
    generator = torch.Generator().manual_seed(0)
    plain = hutchinson(deflated_probes(op, None, generator), rtol=0.0, max_probes=60)
    sketch = hutchpp_sketch(op, 20, generator)
    plus = hutchinson(deflated_probes(op, sketch, generator), rtol=0.0, max_probes=20, offset=sketch_trace(op, sketch))
    for est in (plain, plus):
        assert abs(est.value - exact) <= 4 * est.stderr
    assert plus.stderr < plain.stderr / 3  # same 60 products, far lower error
    tight = hutchinson(deflated_probes(op, sketch, generator), rtol=1e-3, max_probes=10**5, offset=sketch_trace(op, sketch))
    assert tight.converged and abs(tight.value - exact) <= 4 * tight.stderr and tight.stderr <= 1e-3 * tight.value


def test_slq_density_integrates_to_one_and_puts_mass_where_the_eigenvalues_are() -> None:
    # 75% of the eigenvalues near 0, 25% near 5
    eigenvalues = torch.cat([torch.linspace(-0.05, 0.05, 150), torch.linspace(4.9, 5.1, 50)]).double()
    h = symmetric_with_spectrum(eigenvalues, seed=1)
    d = slq_density(Dense(h), probes=30, steps=40, generator=torch.Generator().manual_seed(0))
    grid, density = torch.tensor(d.grid), torch.tensor(d.density)
    step = float(grid[1] - grid[0])
    assert float(density.sum()) * step == pytest.approx(1.0, abs=0.01)
    upper = float(density[grid > 2.5].sum()) * step
    assert upper == pytest.approx(0.25, abs=0.08)  # 30 Rademacher probes: standard error ~0.015
    assert min(d.nodes) == pytest.approx(-0.05, abs=0.01) and max(d.nodes) == pytest.approx(5.1, abs=0.01)


def classification_sample(n: int = 96, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, 5, generator=generator), torch.randint(0, 3, (n,), generator=generator)


def test_operator_modes_batching_and_micro_batches_agree() -> None:
    x, y = classification_sample()
    model = mlp([5, 7, 3], seed=3)
    params = list(model.parameters())
    vectors = torch.randn(4, sum(p.numel() for p in params), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    reference = torch.stack([HessianOperator(model, F.cross_entropy, [(x, y)], params).matvec(v) for v in vectors])
    for mode in ("rev-rev", "fwd-rev"):
        for size in (96, 40):
            op = HessianOperator(model, F.cross_entropy, list(zip(x.split(size), y.split(size))), params, mode=mode)
            counted = op.counted()
            torch.testing.assert_close(counted.matmat(vectors), reference, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(counted.matvec(vectors[0]), reference[0], rtol=1e-5, atol=1e-6)
            # in the vectors' dtype (a float32 basis's; accumulated over the micro-batches in it): no float64 copy
            single = counted.matvec(vectors[0].float())
            assert single.dtype == torch.float32 and counted.matmat(vectors.float()).dtype == torch.float32
            torch.testing.assert_close(single.double(), reference[0], rtol=1e-5, atol=1e-6)
            assert counted.products == 10
    with pytest.raises(ValueError, match="forward-over-reverse needs an eager module"):
        HessianOperator(torch.jit.script(model), F.cross_entropy, [(x, y)], params, mode="fwd-rev")


def test_top_k_density_and_blocks_against_the_dense_hessian() -> None:
    x, y = classification_sample(120, seed=2)
    eager = mlp([5, 7, 3], seed=4)
    settings = engine_config(batch_size=30, top_k=4, density=True, per_layer=True, dtype="float64", eig_rtol=1e-8, trace_rtol=0.01)
    spec = probe(eager, x, y, settings, CPU).measurements.hessian
    keep = used_examples(120, settings)
    h = dense_hessian(eager, F.cross_entropy, x[keep], y[keep])
    exact = torch.linalg.eigvalsh(h)
    torch.testing.assert_close(torch.tensor(spec.top_eigenvalues, dtype=torch.float64), exact.flip(0)[:4], rtol=1e-6, atol=1e-9)
    assert spec.density is not None and spec.density.hvps > 0
    names = [n for n, _ in eager.named_parameters()]
    blocks = partition(names, [p.numel() for p in eager.parameters()], per_layer=True, patterns=())
    assert [b.name for b in spec.blocks] == [b.name for b in blocks] == ["0", "2"]
    total_se = math.sqrt(sum(b.trace_stderr**2 for b in spec.blocks) + spec.trace_stderr**2)
    assert abs(sum(b.trace for b in spec.blocks) - spec.trace) <= 3 * total_se + 1e-9 * abs(spec.trace)
    for block, index in zip(spec.blocks, (b.index for b in blocks)):
        sub = h[index][:, index]
        assert block.lambda_max == pytest.approx(float(torch.linalg.eigvalsh(sub)[-1]), rel=1e-6)
        assert abs(block.trace - float(sub.trace())) <= 3 * block.trace_stderr + 1e-9 * abs(float(sub.trace()))
        assert block.num_params == len(index)


def test_a_probe_within_a_tiny_lanczos_memory_matches_the_dense_hessian() -> None:
    x, y = classification_sample(120, seed=6)
    eager = mlp([5, 9, 3], seed=8)  # 84 parameters
    settings = engine_config(batch_size=30, dtype="float64", eig_rtol=1e-7, trace_rtol=0.05, lanczos_memory=12 * 84 * 8 / 2**30)
    spec = probe(eager, x, y, settings, CPU).measurements.hessian
    keep = used_examples(120, settings)
    h = dense_hessian(eager, F.cross_entropy, x[keep], y[keep])
    exact = torch.linalg.eigvalsh(h)
    assert spec.details["lambda_max"].restarts > 0  # 12 rows of 84 numbers: it had to restart
    assert spec.converged
    assert spec.lambda_max == pytest.approx(float(exact[-1]), rel=1e-6)
    assert spec.lambda_min == pytest.approx(float(exact[0]), abs=1e-6 * float(exact[-1]))
    assert abs(spec.trace - float(h.trace())) <= 3 * spec.trace_stderr + 1e-9


def test_micro_batch_graphs_are_kept_within_the_graph_budget_and_give_the_same_products() -> None:
    """Each micro-batch's gradient graph is kept while the kept graphs' saved tensors fit in
    graph_memory, else rebuilt for every product; the products are the same either way."""
    x, y = classification_sample(120)
    model = mlp([5, 7, 3], seed=3)
    params = list(model.parameters())
    vectors = torch.randn(4, sum(p.numel() for p in params), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    batches = list(zip(x.split(40), y.split(40)))
    reference = HessianOperator(model, F.cross_entropy, [(x, y)], params).matmat(vectors)

    def run(budget: int) -> HessianOperator:
        op = HessianOperator(model, F.cross_entropy, batches, params, vmap=False, graph_memory=budget)
        torch.testing.assert_close(op.matmat(vectors), reference, rtol=1e-5, atol=1e-6)
        return op

    kept = run(1 << 30)
    assert kept.graphs_built == 3 and kept.graph_bytes > 0  # built once each, on the first product
    one = kept.graph_bytes // 3  # the three graphs are alike: 40 examples each
    assert run(0).graphs_built == 3 * 4  # nothing fits: every product rebuilds every graph
    partial = run(one + one // 2)  # room for one graph: the first is kept, the other two rebuilt
    assert partial.graphs_built == 3 + 2 * 3 and partial.graph_bytes == one
    # saved activations grow with the micro-batch: a graph of 80 examples saves about twice 40's
    double = HessianOperator(model, F.cross_entropy, list(zip(x.split(80), y.split(80))), params, graph_memory=1 << 30)
    double.matvec(vectors[0])
    assert 1.6 * one <= double.graph_bytes - one <= 2.4 * one
    kept.release()  # dropped: the next product builds the three again
    assert kept.graph_bytes == 0
    kept.matvec(vectors[0])
    assert kept.graphs_built == 6


def test_gram_and_probe_pieces_bound_memory_without_changing_the_numbers() -> None:
    rows = torch.randn(5, 1000, generator=torch.Generator().manual_seed(0))
    exact = rows.double() @ rows.double().T
    torch.testing.assert_close(gram_matrix(rows, chunk=7), exact, rtol=1e-12, atol=1e-12)
    seen: list[int] = []
    scaled_identity = Dense(3.0 * torch.eye(50, dtype=torch.float64)).counted(seen.append)
    draw = deflated_probes(scaled_identity, None, torch.Generator().manual_seed(0), max_rows=3)
    assert draw(10) == [150.0] * 10 and seen == [3, 3, 3, 1]  # zᵀ(3I)z = 3·d for every ±1 probe
    # The probes are the same draws in any dtype, so a float32 sketch (the Lanczos basis of a
    # float32 model) projects the probes a float64 one does, to float32 rounding.
    ones = [rademacher(4, 300, torch.Generator().manual_seed(5), torch.device("cpu"), dtype) for dtype in (torch.float32, torch.float64)]
    assert torch.equal(ones[0].double(), ones[1]) and set(ones[1].unique().tolist()) == {-1.0, 1.0}
    h = symmetric_with_spectrum(torch.linspace(-1.0, 4.0, 300).double())
    sketch = torch.linalg.qr(torch.randn(300, 12, generator=torch.Generator().manual_seed(2), dtype=torch.float64))[0].T
    values = [deflated_probes(Dense(h), q, torch.Generator().manual_seed(7))(6)
              for q in (sketch, sketch.float())]
    assert values[1] == pytest.approx(values[0], rel=1e-4, abs=1e-4)


def test_power_method_and_plain_hutchinson_on_the_native_engine() -> None:
    x, y = classification_sample(90, seed=3)
    eager = mlp([5, 6, 3], seed=5)
    settings = engine_config(batch_size=30, method="power", trace_method="hutchinson", eig_rtol=1e-4)
    spec = probe(eager, x, y, settings, CPU).measurements.hessian
    keep = used_examples(90, settings)
    exact = torch.linalg.eigvalsh(dense_hessian(eager, F.cross_entropy, x[keep], y[keep]))
    assert spec.lambda_max == pytest.approx(float(exact[-1]), rel=1e-4)
    assert spec.lambda_min == pytest.approx(float(exact[0]), rel=1e-3)
    assert spec.details["trace"].estimator == "hutchinson" and spec.details["lambda_max"].estimator in ("power", "shifted_power")


def test_without_room_for_a_sketch_the_power_method_traces_by_plain_hutchinson(monkeypatch) -> None:
    """[H11]: Meyer et al.'s sketch H·S of `--method power` holds its columns at once; where
    fewer than two fit the probe memory bound the trace is plain Hutchinson, and says so."""
    import thermocal.curvature.memory as memory

    x, y = classification_sample(90, seed=3)
    eager = mlp([5, 6, 3], seed=5)
    settings = engine_config(batch_size=30, method="power", eig_rtol=1e-4, trace_rtol=0.05)
    keep = used_examples(90, settings)
    exact = float(torch.trace(dense_hessian(eager, F.cross_entropy, x[keep], y[keep])))
    roomy = probe(eager, x, y, settings, CPU).measurements.hessian
    assert roomy.details["trace"].estimator == "hutchpp_sketch"
    dim = sum(p.numel() for p in eager.parameters())
    monkeypatch.setattr(memory, "PROBE_MEMORY", 3 * 8 * dim)  # room for one column
    tight = probe(eager, x, y, settings, CPU).measurements.hessian
    assert tight.details["trace"].estimator == "hutchinson"  # asked for Hutch++, fell back for memory
    for spec in (roomy, tight):
        assert abs(spec.trace - exact) <= 3 * spec.trace_stderr


def test_blocks_by_regex_and_their_errors() -> None:
    names, sizes = ["enc.weight", "enc.bias", "head.weight", "head.bias"], [6, 2, 4, 2]
    blocks = partition(names, sizes, per_layer=False, patterns=[r"weight$"])
    assert [(b.name, b.parameters) for b in blocks] == [("weight$", ("enc.weight", "head.weight")), ("(rest)", ("enc.bias", "head.bias"))]
    assert blocks[0].index.tolist() == list(range(0, 6)) + list(range(8, 12))
    with pytest.raises(Exception, match=r"--blocks 'decoder' matches no trainable parameter"):
        partition(names, sizes, per_layer=False, patterns=["decoder"])
    with pytest.raises(Exception, match=r"--blocks '\(' is not a regular expression"):
        partition(names, sizes, per_layer=False, patterns=["("])


@pytest.mark.parametrize("engine_name", ["native", "pyhessian"])
def test_both_engines_meet_one_protocol(engine_name: str) -> None:
    """open_engine gives an engine whose operator is the dense Hessian (float64 model), whose
    hvps counts every product taken through the operator, and whose spectrum has the dense
    extremes and counts its own products in the record."""
    from thermocal.curvature.engine import open_engine
    from thermocal.progress import NoProgress, Timer

    x, y = classification_sample(60, seed=4)
    model = mlp([5, 6, 3], seed=7).double()
    x = x.double()
    h = dense_hessian(model, F.cross_entropy, x, y)
    named = list(model.named_parameters())
    settings = engine_config(engine=engine_name, batch_size=20, eig_rtol=1e-6, method="power")
    engine = open_engine(model, F.cross_entropy, [(x, y)], [p for _, p in named], [n for n, _ in named], settings, CPU,
                         NoProgress())
    try:
        vectors = torch.randn(3, h.shape[0], generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        torch.testing.assert_close(engine.operator.matmat(vectors), vectors @ h, rtol=1e-8, atol=1e-10)
        assert engine.hvps == 3
        spec, top_vector = engine.spectrum(torch.Generator().manual_seed(1), NoProgress(), Timer())
    finally:
        engine.release()
    exact = torch.linalg.eigvalsh(h)
    assert spec.engine == engine_name
    assert spec.lambda_max == pytest.approx(float(exact[-1]), rel=1e-5)
    assert spec.lambda_min == pytest.approx(float(exact[0]), abs=1e-4 * float(exact[-1]))
    assert spec.hvps == engine.hvps == 3 + sum(rec.hvps for rec in spec.details.values())
    if top_vector is not None:
        v = top_vector.double() / torch.linalg.vector_norm(top_vector.double())
        assert float(v @ h @ v) == pytest.approx(spec.lambda_max, rel=1e-5)
