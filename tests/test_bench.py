"""The curvature benchmark still runs (tiny sizes), and its thermocal row meets the accuracy bar."""

from __future__ import annotations

import copy
import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT


def assert_report_regenerates(script: str, out: Path, text: str, tmp_path: Path) -> None:
    """`bench/<script> --report` makes exactly `text` again from the JSON `out` (never edited by hand)."""
    again = tmp_path / "again.md"
    subprocess.run([sys.executable, str(ROOT / "bench" / script), "--report", "--out", str(out), "--markdown", str(again)],
                   check=True, timeout=120)
    assert again.read_text() == text


@pytest.mark.parametrize(("script", "data", "report"), [("curvature.py", "results.json", "RESULTS.md"),
                                                          ("evidence.py", "evidence.json", "EVIDENCE.md"),
                                                          ("scaling.py", "scaling.json", "SCALING.md")])
def test_committed_reports_are_what_their_json_makes(script: str, data: str, report: str, tmp_path: Path) -> None:
    """bench/*.md are generated, never edited: each committed report is exactly what `--report`
    makes from the committed JSON with today's report code."""
    assert_report_regenerates(script, ROOT / "bench" / data, (ROOT / "bench" / report).read_text(), tmp_path)


@pytest.mark.bench
def test_quick_benchmark_runs_and_thermocal_matches_the_dense_reference(tmp_path: Path) -> None:
    """bench/curvature.py --quick on the digits MLP: the full-accuracy row meets the accuracy bar
    against the dense Hessian, the default row resolves lambda_max alone on its Hessian subsample,
    the JSON is stamped, and RESULTS.md is exactly what --report makes from the JSON."""
    out, markdown = tmp_path / "results.json", tmp_path / "RESULTS.md"
    command = [sys.executable, str(ROOT / "bench" / "curvature.py"), "--quick", "--models", "digits", "--contenders",
               "step,timing,reference,thermocal_default,thermocal,pyhessian,pyhessian_matched", "--rounds", "2",
               "--out", str(out), "--markdown", str(markdown)]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(out.read_text())
    cells = results["models"]["digits"]
    assert all("error" not in cell for cell in cells.values()), cells
    ref, ours, default, theirs = cells["reference"], cells["thermocal"], cells["thermocal_default"], cells["pyhessian"]
    assert ref["method"] == "dense eigvalsh"
    assert abs(ours["lambda_max"] / ref["lambda_max"] - 1) < 1e-3
    assert abs(ours["lambda_min"] / ref["lambda_min"] - 1) < 1e-3
    assert abs(ours["trace"] - ref["trace"]) <= 3 * ours["trace_stderr"]
    assert default["lambda_min"] is None and default["hessian_examples"] == results["sizes"]["digits"]["examples"]
    assert 0 < default["hvps"] < ours["hvps"] and theirs["hvps"] > 0 and theirs["lambda_min"] is None
    assert cells["timing"]["hvp_rev_rev_reused"] > 0 and cells["step"]["peak_extra_mb"] > 0
    matched = cells["pyhessian_matched"]  # pyhessian to 1e-6 and a 5% trace: it must agree with the dense Hessian too
    assert abs(matched["lambda_max"] / ref["lambda_max"] - 1) < 1e-4 and matched["trace_probes"] >= 10
    assert abs(matched["trace"] - ref["trace"]) <= 4 * matched["trace_stderr"]
    for name in ("thermocal_default", "pyhessian"):  # --rounds 2: the target's pair ran twice, the first pass included
        assert len(cells[name]["rounds"]) == 2 and cells[name]["rounds"][0] == cells[name]["time"]
    assert "rounds" not in ours
    provenance = results["provenance"]
    assert len(provenance["commit"]) == 40 and provenance["quick"] is True and "--quick" in provenance["argv"]
    assert provenance["rounds"] == 2
    text = markdown.read_text()
    median_ratio = statistics.median(default["rounds"]) / statistics.median(theirs["rounds"])
    assert f"| thermocal_default wall time / pyhessian default, medians of 2 rounds (issue 15: ≤ 1) | {median_ratio:.2f} |" in text
    lowest = min(a / b for a, b in zip(default["rounds"], theirs["rounds"]))
    assert f"| the same, lowest paired round | {lowest:.2f} |" in text
    assert provenance["commit"][:12] in text and "| digits | thermocal_default |" in text and "## Against the targets" in text
    assert_report_regenerates("curvature.py", out, text, tmp_path)


@pytest.mark.bench
def test_the_evidence_harness_runs_end_to_end_and_reports_from_its_json(tmp_path: Path) -> None:
    """bench/evidence.py --quick: one tuning and one held-out task, two seeds, tiny budgets. Every
    method is in the JSON for every seed, the file carries its provenance, the targets table is
    there, and EVIDENCE.md is exactly what --report makes from the JSON (never edited by hand)."""
    out, markdown = tmp_path / "evidence.json", tmp_path / "EVIDENCE.md"
    command = [sys.executable, str(ROOT / "bench" / "evidence.py"), "--quick", "--tasks", "diabetes_mlp", "friedman_mlp",
               "--out", str(out), "--markdown", str(markdown)]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(out.read_text())
    provenance = results["provenance"]
    assert len(provenance["commit"]) == 40 and isinstance(provenance["dirty"], bool) and provenance["argv"][1:3] == ["--quick", "--tasks"]
    assert provenance["defaults"]["rules"] == "loss-units" and provenance["quick"] is True
    tasks = {t["task"]: t for t in results["tasks"]}
    assert set(tasks) == {"diabetes_mlp", "friedman_mlp"}
    rows = {f"thermocal{o}{v}" for o in ("", "_momentum", "_adamw") for v in ("", "_constant", "_linear0")}
    baselines = rows | {"literal", "reprobed", "grid", "range_test", "adamw_1e-3", "adamw_1e-3_linear", "adamw_tuned",
                        "momentum_tuned", "stability"}
    assert set(tasks["friedman_mlp"]["methods"]) == baselines  # held out: no candidate is ever run on it
    # tuning: the reference candidate and one v3 candidate per optimizer
    assert set(tasks["diabetes_mlp"]["methods"]) == baselines | {"v2_eps1se_linear", "v3_momentum_f0.013", "v3_adamw_f0.01"}
    for task in tasks.values():
        for method, runs in task["methods"].items():
            assert len(runs) == 2, method
            assert all(r["test"] is not None or r["diverged"] or r.get("refused") for r in runs), method
        assert task["grid"]["runs"] >= 3 and task["methods"]["thermocal"][0]["probe_cost"] > 0
        # d_eff reads tr G ([H15]); both tasks are regressions with one output per example, where
        # every draw gives tr G exactly: its draws' error is 0, and so is trace_shift
        assert all(r["d_eff_from"] == "gauss-newton" and r["trace_draws"] == 4 for r in task["methods"]["thermocal"])
        assert all(r["trace_stderr"] <= 1e-9 * abs(r["trace"]) and r["trace_shift"] <= 1e-6
                   for r in task["methods"]["thermocal"])
        # the Hessian's examples the budget left the probe ([S8], [S9]): at least a minibatch, at most the sample
        assert all(task["batch"] <= r["hessian_examples"] <= task["train_examples"] for r in task["methods"]["thermocal"])
        assert task["regime"] == "small data" and task["epochs"] > 1
        # each optimizer's rows trained with the optimizer their file names (evidence v3)
        assert {r["optimizer"] for r in task["methods"]["thermocal_adamw"] if not r.get("refused")} <= {"adamw"}
        assert all(r["d_eff_from"] == "preconditioned" for r in task["methods"]["thermocal_adamw"] if not r.get("refused"))
        assert task["momentum_grid"]["runs"] >= 3 and task["adamw_grid"]["runs"] >= 3
    text = markdown.read_text()
    assert "## Calibration v3 targets on the held-out tasks" in text
    assert "## Calibration v3 candidates on the tuning tasks" in text and "| v3_adamw_f0.01 |" in text
    assert "## The trace's effect on the schedule" in text
    assert "## Calibration v2 candidates on the tuning tasks" in text and "## Targets on the held-out tasks" in text and "friedman_mlp" in text and provenance["commit"][:12] in text
    assert_report_regenerates("evidence.py", out, text, tmp_path)


@pytest.mark.bench
def test_scaling_benchmark_runs_and_tables_memory_against_d(tmp_path: Path) -> None:
    out, markdown = tmp_path / "scaling.json", tmp_path / "SCALING.md"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "scaling.py"), "--quick", "--out", str(out), "--markdown",
                           str(markdown)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = markdown.read_text()
    assert "### Peak memory against d" in text and "### Processes" in text
    results = json.loads(out.read_text())
    assert len(results["provenance"]["commit"]) == 40 and results["provenance"]["quick"] is True and results["provenance"]["commit"][:12] in text
    assert_report_regenerates("scaling.py", out, text, tmp_path)
    assert all("error" not in c for key in ("by_n", "by_d", "memory") for c in results[key]), results
    (memory,) = results["memory"]
    assert memory["peak_mb"] >= memory["extra_peak_mb"] > 0 and memory["hvps"] > 0
    a, b = results["processes"]  # one process and two under torchrun agree
    assert abs(a["lambda_max"] - b["lambda_max"]) <= 1e-6 * abs(a["lambda_max"])


def test_gpu_benchmark_refuses_to_run_without_a_gpu() -> None:
    import pytest
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: bench/gpu_check.sh runs the benchmark there")
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu.py"), "--quick"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and "no CUDA device" in proc.stderr


@pytest.mark.bench
def test_trace_coverage_script_runs_and_its_intervals_cover(tmp_path: Path) -> None:
    """bench/trace_coverage.py cannot rot, and the trace's ±2 se interval covers the exact trace
    (Σ e_iᵀHe_i) about as often as a 10-probe interval should: a t-distribution with 9 degrees
    of freedom puts 92% within 2, so 40 seeded draws below 30 hits would be a 4-sigma miss."""
    out = tmp_path / "coverage.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "trace_coverage.py"), "--quick", "--models", "digits",
                           "--seeds", "40", "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| digits | 2,410 | 40 |" in proc.stdout
    cell = json.loads(out.read_text())["models"]["digits"]
    assert cell["within_2"] >= 30 and cell["within_1"] < cell["within_2"]
    assert abs(cell["mean_z"]) < 0.5  # no bias: the mean of 40 z's has a standard error of about 0.17
    assert len(cell["draws"]) == 40 and all(d["probes"] >= 10 for d in cell["draws"])


def results_steps(task: str) -> int:
    """The training budget S of a bench/tasks.py task."""
    sys.path.insert(0, str(ROOT / "bench"))
    import tasks

    return {**tasks.TUNING, **tasks.HELD_OUT}[task]().steps


def quick_run(script: str, out: Path, *options: str) -> tuple[subprocess.CompletedProcess, dict]:
    """`bench/<script> --quick --out out`, which must succeed and stamp its JSON as a quick run of a commit."""
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / script), "--quick", "--out", str(out), *options],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(out.read_text())
    assert len(results["provenance"]["commit"]) == 40 and results["provenance"]["quick"] is True
    return proc, results


@pytest.mark.bench
def test_subsample_coverage_script_runs_on_the_probes_own_subsamples(tmp_path: Path) -> None:
    """bench/subsample_coverage.py cannot rot, and it scores each draw against the dense Hessian of
    the very examples the probe used: the probe's lambda_max (Lanczos to residual 1e-2) is that
    subsample's to 1% (another subsample's differs by 5-10% on the digits MLP), and no z is
    beyond 6 (with honest error bars, a 6-se miss in 3 draws is below one in 10⁷)."""
    proc, results = quick_run("subsample_coverage.py", tmp_path / "subsample.json")
    assert [d["seed"] for d in results["draws"]] == [0, 1, 2]
    for d in results["draws"]:
        lam, sub = d["lambda_max"]["value"], d["subsample"]["lambda_max"]
        assert abs(lam - sub) <= 1e-2 * sub, d
        assert d["hessian_examples"] == 512 and d["trace"]["sampling_stderr"] > 0 and d["lambda_max"]["sampling_stderr"] > 0
        assert all(abs(d[q][z]) < 6 for q in ("trace", "lambda_max") for z in ("z_total", "z_sampling"))
    assert "| trace | z_total | 3 |" in proc.stdout


def test_an_evidence_run_resumes_from_the_pieces_it_stored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """bench/evidence.py keeps each finished piece under its commit's folder and a rerun reads it back
    instead of recomputing it; without a folder (a dirty tree, --quick, --fresh) it computes."""
    sys.path.insert(0, str(ROOT / "bench"))
    import evidence

    calls: list[int] = []

    def compute() -> dict:
        calls.append(1)
        return {"test": 0.5, "seed": len(calls)}

    monkeypatch.setattr(evidence, "CACHE", None)
    assert evidence.cached("t/m/0", compute) == {"test": 0.5, "seed": 1} and len(calls) == 1
    monkeypatch.setattr(evidence, "CACHE", tmp_path)
    first = evidence.cached("t/m/0", compute)
    again = evidence.cached("t/m/0", compute)
    assert first == again == {"test": 0.5, "seed": 2} and len(calls) == 2  # stored once, then read back
    assert sorted(p.name for p in (tmp_path / "t" / "m").iterdir()) == ["0.json"]  # no partial file left


def test_the_single_pass_tasks_train_for_less_than_one_epoch() -> None:
    """Evidence v3's single-pass regime: a character LM over a corpus larger than steps x batch,
    tuned on one corpus (stdlib_lm) and held out on another (copyright_lm), val and test after the
    training part."""
    sys.path.insert(0, str(ROOT / "bench"))
    import tasks

    tuning, held = tasks.TUNING["stdlib_lm"](), tasks.HELD_OUT["copyright_lm"]()
    for task in (tuning, held):
        assert task.regime == "single pass" and task.epochs < 1 and len(task.test[0]) == len(task.val[0]) == 1000
        assert task.train[0].shape[1] == 64 and int(task.train[0].max()) < task.build().head.out_features
    assert all(tasks.TUNING[name]().regime == "small data" for name in ("digits_mlp", "markov_lm"))


@pytest.mark.bench
def test_noise_memory_script_measures_each_k_in_its_own_process(tmp_path: Path) -> None:
    """bench/noise_memory.py cannot rot: it measures the gradient noise's peak memory at two K, in
    separate processes, and at most MAX_GROUPS sums are kept (the gradients themselves never are)."""
    from thermocal.noise import MAX_GROUPS

    proc, results = quick_run("noise_memory.py", tmp_path / "memory.json")
    assert [row["k"] for row in results["rows"]] == [100, 1000]
    assert all(row["groups"] <= MAX_GROUPS and row["grad_var_stderr"] > 0 for row in results["rows"])
    assert "peak memory at the largest K over the smallest" in proc.stdout


@pytest.mark.bench
def test_budget_bias_script_scores_every_draw_against_the_whole_sample(tmp_path: Path) -> None:
    """bench/budget_bias.py cannot rot: every draw's Hessian is a subsample with a held-out quotient
    on as many other examples, and its midpoint lies between the Ritz value and the quotient."""
    proc, results = quick_run("budget_bias.py", tmp_path / "budget.json")
    assert [(c["model"], c["batch"]) for c in results["cells"]] == [(m, b) for m in ("digits", "mlp", "cnn") for b in (8, 32)]
    for cell in results["cells"]:
        for d in cell["draws"]:
            if d["heldout"] is None:  # the budget left no example unseen (a quick sample)
                continue
            assert d["hessian_examples"] < cell["examples"] and d["heldout_examples"] <= d["hessian_examples"]
            assert min(d["lambda_max"], d["heldout"]) <= d["midpoint"] <= max(d["lambda_max"], d["heldout"])
            assert d["combined_stderr"] >= abs(d["lambda_max"] - d["heldout"]) / 2
    assert "all: z_new within 2 in" in proc.stdout


@pytest.mark.bench
@pytest.mark.parametrize("midtraining", [False, True])
def test_ggn_trace_script_runs_on_the_probes_own_examples(tmp_path: Path, midtraining: bool) -> None:
    """bench/ggn_trace.py --quick cannot rot: each row is the default probe's and its tr(G) (the
    tool's estimator, tests/test_gauss_newton.py) is on as many examples as the probe's Hessian,
    at two example-gradients per example and draw."""
    proc, results = quick_run("ggn_trace.py", tmp_path / "ggn.json", *(["--midtraining"] if midtraining else []))
    assert results["provenance"]["midtraining"] is midtraining
    assert [r["task"] for r in results["runs"]] == ["digits_mlp", "diabetes_mlp"]
    for r in results["runs"]:
        assert r["trace_g"] > 0 and r["ggn_example_gradients"] == 2 * r["hessian_examples"] * results["provenance"]["draws"]
        assert r["d_eff_g"] == pytest.approx(r["trace_g"] / r["lambda_max"])
        assert r["trained_steps"] == (results_steps(r["task"]) // 10 if midtraining else 0)
    assert "| digits_mlp | 0 |" in proc.stdout


@pytest.mark.bench
def test_targets_script_runs_and_its_rows_solve_the_same_problem(tmp_path: Path) -> None:
    """bench/targets.py cannot rot (the transformer, tiny, has every kind of row), and its rows
    are the same estimate at other costs: every row's lambda_max, and lambda_min where it has
    one, is within the two runs' residual tolerances of the full-accuracy row's; a smaller basis
    restarts and so takes more Lanczos products, and pyhessian's task alone takes fewer."""
    out = tmp_path / "targets.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "targets.py"), "--quick", "--models", "transformer",
                           "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| transformer | basis 12 rows |" in proc.stdout
    rows = json.loads(out.read_text())["models"]["transformer"]
    assert all("error" not in cell for cell in rows.values()), rows
    full = rows["full accuracy"]
    for name, cell in rows.items():
        if name in ("pyhessian", "step", "live tensors"):
            continue
        assert cell["converged"], name
        rtol = float(name.split()[1]) if name.startswith("eig-rtol") else 1e-3
        assert abs(cell["lambda_max"] / full["lambda_max"] - 1) <= 2 * rtol, name
        if cell["lambda_min"] is not None:
            assert abs(cell["lambda_min"] / full["lambda_min"] - 1) <= 2 * rtol, name
    assert rows["basis 12 rows"]["hvps_extremes"] > rows["basis 24 rows"]["hvps_extremes"] > full["hvps_extremes"]
    assert rows["lambda_max + trace"]["hvps"] < full["hvps"] and rows["pyhessian"]["lambda_min"] is None
    assert rows["step"]["peak_extra_mb"] > 0
    # the retained double-backward graph and a product hold more tensors than a training step
    assert rows["live tensors"]["live_product_mb"] > rows["live tensors"]["live_step_mb"] > 0


def test_gpu_benchmark_cells_run_on_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """bench/gpu.py runs only where there is CUDA, so its cells are exercised here on the CPU (quick
    sizes), against the dense Hessian: a cell that rotted (a renamed module or setting) fails here."""
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    import gpu  # bench/gpu.py
    import torch

    cpu = torch.device("cpu")
    model, x, y, loss_fn = gpu.curvature.build("digits", quick=True)
    unit = gpu.unit_costs(model, x, y, loss_fn, cpu)
    assert unit["gradient"] > 0 and unit["hvp"] > 0
    dense = copy.deepcopy(model).double()  # ground truth in float64: torch.autograd.functional.hessian + eigvalsh
    names = [name for name, _ in dense.named_parameters()]
    shapes = [p.shape for p in dense.parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in dense.parameters()])

    def loss_of(theta: torch.Tensor) -> torch.Tensor:
        pieces = dict(zip(names, (piece.reshape(shape) for piece, shape in
                                  zip(theta.split([s.numel() for s in shapes]), shapes))))
        return loss_fn(torch.func.functional_call(dense, pieces, (x.double(),)), y)

    eigenvalues = torch.linalg.eigvalsh(torch.autograd.functional.hessian(loss_of, flat))
    for vmap in (False, True):
        cell = gpu.thermocal_probe(model, x, y, loss_fn, cpu, vmap=vmap)
        assert abs(cell["lambda_max"] / float(eigenvalues[-1]) - 1) < 1e-3
        assert abs(cell["lambda_min"] / float(eigenvalues[0]) - 1) < 1e-3


def test_bench_models_are_the_same_whatever_the_thread_count(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bench model trained with 2 threads had other weights than with 1 (CPU kernels sum in a
    thread-dependent order), so references computed on one machine were not those of the model
    another builds. Builders now train on one thread: the same fingerprint either way."""
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    import models  # bench/models.py
    import torch

    threads = torch.get_num_threads()
    prints = {}
    try:
        for count in (1, 2):
            torch.set_num_threads(count)
            model, x, y, _ = models.cnn(n=128)
            prints[count] = models.fingerprint(model, x, y)
            assert torch.get_num_threads() == count  # the caller's setting is left as it was
    finally:
        torch.set_num_threads(threads)
    assert prints[1] == prints[2]


def test_scripts_refuse_references_computed_on_another_model(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """targets.py and trace_coverage.py measure errors against bench/results.json's reference
    cells; they take one only when that run's fingerprint is the model they built."""
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    import curvature  # bench/curvature.py

    model, x, y, _ = curvature.build("digits", quick=True)
    reference = {"lambda_max": 1.0}
    path = tmp_path / "results.json"
    results = {"models": {"digits": {"reference": reference}}, "fingerprints": {}}
    with pytest.raises(SystemExit, match=f"{path}: no fingerprint for digits"):
        curvature.reference_for(results, path, "digits", model, x, y)
    results["fingerprints"]["digits"] = curvature.zoo.fingerprint(model, x, y)
    assert curvature.reference_for(results, path, "digits", model, x, y) is reference
    x2 = x.clone()
    x2[0, 0] += 1e-6  # one input changed: another problem
    with pytest.raises(SystemExit, match="built with other weights or data"):
        curvature.reference_for(results, path, "digits", model, x2, y)
