"""Issue 4: every checkpoint format, data format and loss, and the bad cases of each.

The same 6-8-3 MLP and the same 96 examples go through every format; the measurements must
agree with the TorchScript baseline, and each loss must equal torch's own value on the sample.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings, strategies as st
from safetensors.torch import save_file

from conftest import mlp, one_line_error, run, save_data, save_script
from thermocal.errors import ThermocalError
from thermocal.io.checkpoint import ModelOptions, load_model
from thermocal.io.data import load_sample


ARCH = '''
import torch

def build():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))

def frozen():
    model = build()
    model[0].requires_grad_(False)
    return model

def wider():
    return torch.nn.Sequential(torch.nn.Linear(6, 9), torch.nn.Tanh(), torch.nn.Linear(9, 3))

def renamed():
    return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Sequential(torch.nn.Linear(8, 3)))

class WithSpare(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = build()
        self.spare = torch.nn.Linear(2, 2)

    def forward(self, x):
        return self.body(x)

def not_a_module():
    return 42

def broken():
    raise ValueError("no GPU here")

def dataset():
    blob = torch.load(__file__.replace("arch.py", "data.pt"), weights_only=True)
    return torch.utils.data.TensorDataset(blob["inputs"], blob["targets"])

def half_loss(outputs, targets):
    return 0.5 * torch.nn.functional.cross_entropy(outputs, targets)
'''


def probe_doc(model: object, data: object, tmp: Path, *extra: object) -> dict:
    out = tmp / f"out{len(list(tmp.glob('out*.json')))}.json"
    result = run("probe", model, data, "--batch-size", 16, "--out", out, "-q", *extra)
    assert result.exit_code == 0, result.output
    return json.loads(out.read_text())


class Payload:
    """Unpickling this touches a marker file: proof that code ran."""

    marker: Path

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("formats")
    (root / "arch.py").write_text(ARCH)
    model = mlp([6, 8, 3]).eval()
    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(96, 6, generator=generator), torch.randint(0, 3, (96,), generator=generator)
    paths = {"root": root, "arch": root / "arch.py"}
    paths["script"] = save_script(model, root / "model.ts")
    torch.save(model.state_dict(), root / "state.pt")
    torch.save(model.state_dict(), root / "legacy.pth", _use_new_zipfile_serialization=False)
    save_file(model.state_dict(), str(root / "weights.safetensors"))
    torch.save({"epoch": 7, "optimizer": {"lr": 0.1},
                "model_state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, root / "train.ckpt")
    torch.save(model, root / "whole.pt")
    program = torch.export.export(model, (x[:4],), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, str(root / "model.pt2"))
    paths["data"] = save_data(root / "data.pt", inputs=x, targets=y)
    paths["x"], paths["y"] = x, y
    return paths


@pytest.fixture(scope="module")
def baseline(world, tmp_path_factory) -> dict:
    return probe_doc(world["script"], world["data"], tmp_path_factory.mktemp("base"))


def same_numbers(doc: dict, base: dict, rel: float = 1e-6) -> None:
    assert doc["measurements"]["hessian"]["lambda_max"] == pytest.approx(base["measurements"]["hessian"]["lambda_max"],
                                                                         rel=rel)
    assert doc["measurements"]["gauss_newton"]["trace"] == pytest.approx(base["measurements"]["gauss_newton"]["trace"],
                                                                         rel=rel)
    assert doc["measurements"]["hessian"]["lambda_min"] is base["measurements"]["hessian"]["lambda_min"] is None
    assert doc["schedule"]["T0"] == pytest.approx(base["schedule"]["T0"], rel=rel)
    assert doc["inputs"]["model"]["num_params"] == base["inputs"]["model"]["num_params"]


# ----------------------------------------------------------------------------- checkpoints


@pytest.mark.parametrize("name, extra, fmt, note", [
    ("model.pt2", [], "torch.export", "mode it was exported in"),
    ("state.pt", ["--arch", "{arch}:build"], "torch.save", "built by --arch"),
    ("legacy.pth", ["--arch", "{arch}:build"], "torch.save", "built by --arch"),
    ("weights.safetensors", ["--arch", "{arch}:build"], "safetensors", "built by --arch"),
    ("train.ckpt", ["--arch", "{arch}:build"], "torch.save", "state dict under 'model_state_dict'; 'module.' prefix removed"),
    ("whole.pt", ["--trust-checkpoint"], "pickled-module", "--trust-checkpoint"),
])
def test_every_checkpoint_format_measures_the_same_model(world, baseline, tmp_path, name, extra, fmt, note) -> None:
    extra = [e.format(arch=world["arch"]) for e in extra]
    doc = probe_doc(world["root"] / name, world["data"], tmp_path, *extra)
    assert doc["inputs"]["model"]["format"] == fmt and note in doc["inputs"]["model"]["note"]
    same_numbers(doc, baseline)


def test_arch_as_an_importable_module(world, baseline, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(world["root"])
    doc = probe_doc("state.pt", "data.pt", tmp_path, "--arch", "arch:build")
    assert doc["inputs"]["model"]["arch"] == "arch:build"
    same_numbers(doc, baseline)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
def test_pickles_never_run_without_trust(world, tmp_path, monkeypatch) -> None:
    Payload.marker = tmp_path / "pwned"
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # an environment that asks for unsafe loads
    torch.save(Payload(), tmp_path / "evil.pt")
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps(Payload()))
    for evil in ("evil.pt", "evil.pkl"):
        one_line_error(run("probe", tmp_path / evil, world["data"], "-q"), 2, f"{evil}: holds pickled Python objects",
                       "--trust-checkpoint", "state_dict()")
    torch.save({"inputs": Payload(), "targets": torch.zeros(2)}, tmp_path / "evil_data.pt")
    one_line_error(run("probe", world["script"], tmp_path / "evil_data.pt", "-q"), 2,
                   "evil_data.pt: holds pickled Python objects, which thermocal does not unpickle")
    # A torch.export archive whose pickled sample inputs would run code: torch.export.load
    # falls back to weights_only=False by itself; thermocal forces the restricted unpickler.
    evil_pt2 = tmp_path / "evil.pt2"
    with zipfile.ZipFile(world["root"] / "model.pt2") as src, zipfile.ZipFile(evil_pt2, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename.endswith("sample_inputs/model.pt"):
                buffer = tmp_path / "payload.pt"
                torch.save(Payload(), buffer)
                data = buffer.read_bytes()
            dst.writestr(item, data)
    one_line_error(run("probe", evil_pt2, world["data"], "-q", "--out", tmp_path / "o.json"), 2,
                   "evil.pt2: entry", "holds pickled Python objects, which thermocal does not unpickle")
    assert not Payload.marker.exists()
    assert os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD") is None  # restored after loading


def test_state_dict_problems_name_what_is_wrong(world, tmp_path) -> None:
    arch, state = world["arch"], world["root"] / "state.pt"
    one_line_error(run("probe", state, world["data"], "-q"), 2, "state.pt: is a state dict of 4 tensors", "--arch")
    one_line_error(run("probe", state, world["data"], "-q", "--arch", f"{arch}:renamed"), 2,
                   "does not match --arch", "missing keys [2.0.weight, 2.0.bias]", "unexpected keys [2.weight, 2.bias]")
    one_line_error(run("probe", state, world["data"], "-q", "--arch", f"{arch}:wider"), 2,
                   "shapes differ (file vs arch) for 0.weight (8, 6) vs (9, 6)")
    one_line_error(run("probe", state, world["data"], "-q", "--arch", f"{arch}:not_a_module"), 2, "returned a int")
    one_line_error(run("probe", state, world["data"], "-q", "--arch", f"{arch}:broken"), 2, "raised ValueError: no GPU here")
    one_line_error(run("probe", state, world["data"], "-q", "--arch", f"{arch}:nothing"), 2, "cannot import it (AttributeError")
    one_line_error(run("probe", state, world["data"], "-q", "--arch", "no_such_module_xyz:build"), 2, "ModuleNotFoundError")
    one_line_error(run("probe", state, world["data"], "-q", "--arch", "build"), 2, "expected module:callable")
    one_line_error(run("probe", world["script"], world["data"], "-q", "--arch", f"{arch}:build"), 2,
                   "--arch is for state dicts")
    torch.save({"epoch": 1, "notes": "hi"}, tmp_path / "nodict.pt")
    one_line_error(run("probe", tmp_path / "nodict.pt", world["data"], "-q", "--arch", f"{arch}:build"), 2,
                   "holds a dict with keys [epoch, notes] and no state dict")


def test_corrupted_and_foreign_files(world, tmp_path) -> None:
    cases = {
        "truncated.pt": (world["root"] / "state.pt").read_bytes()[:200],
        "truncated.ts": world["script"].read_bytes()[:3000],
        "truncated.safetensors": (world["root"] / "weights.safetensors").read_bytes()[:60],
        "notes.txt": b"hello, this is not a model\n",
        "empty.pt": b"",
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        line = one_line_error(run("probe", tmp_path / name, world["data"], "-q", "--arch", f"{world['arch']}:build"), 2, name)
        assert "Traceback" not in line
    (tmp_path / "folder").mkdir()
    one_line_error(run("probe", tmp_path / "folder", world["data"], "-q"), 2, "folder: is a directory without config.json")
    (tmp_path / "dcp").mkdir()
    (tmp_path / "dcp" / ".metadata").write_bytes(b"x")
    one_line_error(run("probe", tmp_path / "dcp", world["data"], "-q"), 2, "dcp: is a sharded torch.distributed.checkpoint",
                   "dcp_to_torch_save")
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text("{}")
    if importlib.util.find_spec("transformers") is not None:
        needle = "hf: has a config.json transformers cannot read"
    else:
        needle = "hf: is a Hugging Face model directory; loading it needs transformers"
    one_line_error(run("probe", tmp_path / "hf", world["data"], "-q"), 2, needle)


@pytest.mark.interop
def test_hugging_face_directory_with_its_own_loss(tmp_path) -> None:
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(vocab_size=23, n_positions=16, n_embd=16, n_layer=1, n_head=2,
                                     bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config).eval()
    model.save_pretrained(tmp_path / "tiny-gpt2")
    tokens = torch.randint(0, 23, (64, 9), generator=torch.Generator().manual_seed(3))
    torch.save({"input_ids": tokens}, tmp_path / "tokens.pt")
    doc = probe_doc(tmp_path / "tiny-gpt2", tmp_path / "tokens.pt", tmp_path, "--task", "lm")
    assert doc["inputs"]["model"]["format"] == "huggingface" and doc["inputs"]["loss"] == "lm"
    assert "GPT2LMHeadModel; its own loss: lm" in doc["inputs"]["model"]["note"]
    assert doc["inputs"]["model"]["num_params"] == sum(p.numel() for p in model.parameters())  # tied weights once
    with torch.no_grad():
        expected = float(model(input_ids=tokens, labels=tokens).loss)  # transformers' own loss
    assert doc["measurements"]["gradient_noise"]["loss"] == pytest.approx(expected, rel=1e-5)
    (tmp_path / "tiny-gpt2" / "model.safetensors").write_bytes(b"broken")
    one_line_error(run("probe", tmp_path / "tiny-gpt2", tmp_path / "tokens.pt", "-q", "--task", "lm"), 2,
                   "tiny-gpt2: cannot be loaded as GPT2LMHeadModel from safetensors")


def test_params_regex_frozen_and_unused_parameters(world, tmp_path) -> None:
    doc = probe_doc(world["script"], world["data"], tmp_path, "--params", r"^2\.")
    assert doc["inputs"]["model"]["num_params"] == 8 * 3 + 3 and doc["inputs"]["model"]["params"] == r"^2\."
    state = world["root"] / "state.pt"
    frozen = probe_doc(state, world["data"], tmp_path, "--arch", f"{world['arch']}:frozen")
    assert frozen["inputs"]["model"]["num_params"] == 27
    assert frozen["measurements"]["hessian"]["lambda_max"] == pytest.approx(doc["measurements"]["hessian"]["lambda_max"], rel=1e-9)
    one_line_error(run("probe", world["script"], world["data"], "-q", "--params", "^nope"), 2, "no trainable parameter matches")
    one_line_error(run("probe", world["script"], world["data"], "-q", "--params", "("), 2, "not a regular expression")

    exec(ARCH, namespace := {})
    module = namespace["WithSpare"]()
    torch.save(module.state_dict(), tmp_path / "spare.pt")
    result = run("probe", tmp_path / "spare.pt", world["data"], "--batch-size", 16, "--out", tmp_path / "spare.json",
                 "--arch", f"{world['arch']}:WithSpare")
    assert result.exit_code == 0, result.output
    assert "the loss does not depend on spare.weight, spare.bias" in result.stderr
    doc = json.loads((tmp_path / "spare.json").read_text())
    assert doc["inputs"]["model"]["unused_parameters"] == ["spare.weight", "spare.bias"]
    assert doc["inputs"]["model"]["num_params"] == 83


# ----------------------------------------------------------------------------- data


def test_every_data_format_gives_the_same_sample(world, baseline, tmp_path) -> None:
    x, y = world["x"], world["y"]
    np.savez(tmp_path / "d.npz", features=x.numpy(), labels=y.numpy())
    (tmp_path / "npy").mkdir()
    np.save(tmp_path / "npy" / "inputs.npy", x.numpy())
    np.save(tmp_path / "npy" / "targets.npy", y.numpy())
    save_file({"x": x, "y": y}, str(tmp_path / "d.safetensors"))
    torch.save((x, y), tmp_path / "tuple.pt")
    header = ",".join([f"f{i}" for i in range(6)] + ["label"])
    lines = [",".join([repr(float(v)) for v in row] + [str(int(t))]) for row, t in zip(x, y)]
    (tmp_path / "d.csv").write_text(header + "\n" + "\n".join(lines) + "\n")
    (tmp_path / "split").mkdir()
    for i in range(3):
        torch.save({"x": x[32 * i: 32 * (i + 1)], "y": y[32 * i: 32 * (i + 1)]}, tmp_path / "split" / f"part{i}.pt")
    cases = {
        "d.npz": ["--inputs", "features", "--targets", "labels"], "npy": [], "d.safetensors": [], "tuple.pt": [],
        "d.csv": [], "split": [],
    }
    for name, extra in cases.items():
        doc = probe_doc(world["script"], tmp_path / name, tmp_path, *extra)
        same_numbers(doc, baseline, rel=1e-9)
        assert doc["inputs"]["data"]["total_samples"] == 96
    doc = probe_doc(world["script"], None, tmp_path, "--dataset", f"{world['arch']}:dataset")
    same_numbers(doc, baseline, rel=1e-9)
    assert doc["inputs"]["data"]["format"] == "dataset"


def test_bad_data(world, tmp_path) -> None:
    model = world["script"]
    outside = tmp_path / "outside.pt"
    torch.save({"x": world["x"], "y": world["y"]}, outside)
    (tmp_path / "linked").mkdir()
    (tmp_path / "linked" / "a.pt").symlink_to(outside)
    one_line_error(run("probe", model, tmp_path / "linked", "-q"), 2, "a.pt: is a symlink to", "outside the data folder")
    (tmp_path / "mixed").mkdir()
    torch.save({"x": world["x"], "y": world["y"]}, tmp_path / "mixed" / "a.pt")
    np.savez(tmp_path / "mixed" / "b.npz", x=world["x"].numpy(), y=world["y"].numpy())
    one_line_error(run("probe", model, tmp_path / "mixed", "-q"), 2, "mixes data formats (npz, pt)")
    (tmp_path / "bad.csv").write_text("a,b,label\n1,2,0\n1,oops,1\n")
    one_line_error(run("probe", model, tmp_path / "bad.csv", "-q"), 2, "bad.csv: line 3: could not convert string to float")
    (tmp_path / "nolabel.csv").write_text("a,b\n1,2\n")
    one_line_error(run("probe", model, tmp_path / "nolabel.csv", "-q"), 2, "--target-column", "columns: a, b")
    np.savez(tmp_path / "objects.npz", x=np.array([{"a": 1}], dtype=object), y=np.zeros(1))
    one_line_error(run("probe", model, tmp_path / "objects.npz", "-q"), 2, "objects.npz: 'x' cannot be read")
    (tmp_path / "x.txt").write_text("1 2 3")
    one_line_error(run("probe", model, tmp_path / "x.txt", "-q"), 2, "unknown data suffix")
    one_line_error(run("probe", model, "-q"), 2, "give DATA or --dataset")
    wide = save_data(tmp_path / "wide.pt", inputs=torch.randn(40, 7), targets=torch.zeros(40, dtype=torch.long))
    one_line_error(run("probe", model, wide, "-q", "--batch-size", 8), 2, "wide.pt", "(7,) per example do not fit the model")


# ----------------------------------------------------------------------------- losses


@pytest.mark.parametrize("loss, head, make_targets, reference, extra", [
    ("cross_entropy", None, lambda g: torch.randint(0, 3, (96,), generator=g),
     lambda o, t: F.cross_entropy(o, t, label_smoothing=0.1), ["--label-smoothing", 0.1]),
    ("nll", torch.nn.LogSoftmax(dim=1), lambda g: torch.randint(0, 3, (96,), generator=g), F.nll_loss, []),
    ("mse", None, lambda g: torch.randn(96, 3, generator=g), F.mse_loss, []),
    ("l1", None, lambda g: torch.randn(96, 3, generator=g), F.l1_loss, []),
    ("huber", None, lambda g: 3 * torch.randn(96, 3, generator=g), F.huber_loss, []),
    ("bce", torch.nn.Sigmoid(), lambda g: torch.rand(96, 3, generator=g), F.binary_cross_entropy, []),
    ("bce_with_logits", None, lambda g: (torch.rand(96, 3, generator=g) > 0.5).float(),
     F.binary_cross_entropy_with_logits, []),
])
def test_each_loss_is_torchs_own_on_the_sample(tmp_path, loss, head, make_targets, reference, extra) -> None:
    generator = torch.Generator().manual_seed(1)
    x, targets = torch.randn(96, 6, generator=generator), make_targets(generator)
    model = mlp([6, 8, 3]).eval()
    if head is not None:
        model = torch.nn.Sequential(model, head).eval()
    path = save_script(model, tmp_path / "m.pt")
    data = save_data(tmp_path / "d.pt", inputs=x, targets=targets)
    doc = probe_doc(path, data, tmp_path, "--loss", loss, *extra)
    assert doc["inputs"]["loss"] == loss
    with torch.no_grad():
        expected = float(reference(model(x), targets))
    # 96 examples in 6 equal minibatches, all used: the mean of batch means is the sample mean.
    assert doc["measurements"]["gradient_noise"]["loss"] == pytest.approx(expected, rel=1e-5)


def test_custom_loss_and_lm_task(world, tmp_path) -> None:
    doc = probe_doc(world["script"], world["data"], tmp_path, "--loss", f"{world['arch']}:half_loss")
    with torch.no_grad():
        expected = 0.5 * float(F.cross_entropy(mlp([6, 8, 3]).eval()(world["x"]), world["y"]))
    assert doc["measurements"]["gradient_noise"]["loss"] == pytest.approx(expected, rel=1e-5)

    torch.manual_seed(0)
    lm = torch.nn.Sequential(torch.nn.Embedding(11, 8), torch.nn.Tanh(), torch.nn.Linear(8, 11)).eval()
    tokens = torch.randint(0, 11, (64, 9), generator=torch.Generator().manual_seed(2))
    path = save_script(lm, tmp_path / "lm.pt")
    np.save(tmp_path / "tokens.npy", tokens.numpy())
    doc = probe_doc(path, tmp_path / "tokens.npy", tmp_path, "--task", "lm")
    assert doc["inputs"]["loss"] == "lm" and doc["inputs"]["data"]["task"] == "lm"
    with torch.no_grad():
        logits = lm(tokens[:, :-1])
        expected = float(F.cross_entropy(logits.reshape(-1, 11), tokens[:, 1:].reshape(-1)))
    assert doc["measurements"]["gradient_noise"]["loss"] == pytest.approx(expected, rel=1e-5)
    one_line_error(run("probe", path, world["data"], "-q", "--task", "lm"), 2, "--task lm needs integer token ids of shape (N, T+1)")


def test_auto_says_what_it_saw(world, tmp_path) -> None:
    data = save_data(tmp_path / "odd.pt", inputs=world["x"], targets=torch.randn(96, 5))
    one_line_error(run("probe", world["script"], data, "-q"), 2, "cannot choose a loss: targets are torch.float32 of shape (5,)",
                   "outputs are torch.float32 of shape (3,)", "pass --loss")
    one_line_error(run("probe", world["script"], world["data"], "-q", "--loss", "hinge"), 2, "unknown loss 'hinge'")
    one_line_error(run("probe", world["script"], world["data"], "-q", "--loss", "mse", "--label-smoothing", 0.1), 2,
                   "--label-smoothing applies to cross_entropy and lm")


# ----------------------------------------------------------------------------- property-based


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=2048), suffix=st.sampled_from([".pt", ".pth", ".npz", ".npy", ".safetensors", ".csv", ".pt2"]),
       cut=st.integers(min_value=0, max_value=4000))
def test_corrupted_bytes_give_a_clean_error(world, tmp_path_factory, data: bytes, suffix: str, cut: int) -> None:
    """Random bytes, and real files cut short or with random bytes spliced in, never escape as a
    traceback: every loader raises ThermocalError (or, for a harmless splice, loads)."""
    folder = tmp_path_factory.mktemp("fuzz")
    sources = {".pt": world["data"], ".pth": world["root"] / "state.pt", ".pt2": world["root"] / "model.pt2",
               ".safetensors": world["root"] / "weights.safetensors"}
    real = sources.get(suffix)
    candidates = [data]
    if real is not None:
        blob = real.read_bytes()
        candidates += [blob[:cut], blob[:cut] + data + blob[cut + len(data):]]
    for i, content in enumerate(candidates):
        path = folder / f"f{i}{suffix}"
        path.write_bytes(content)
        for load in (lambda: load_sample(path), lambda: load_model(path, ModelOptions(arch=f"{world['arch']}:build"))):
            try:
                load()
            except ThermocalError:
                pass


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(0, 40), in_shape=st.lists(st.integers(1, 7), min_size=0, max_size=2),
       out_shape=st.lists(st.integers(1, 4), min_size=0, max_size=2), integer=st.booleans())
def test_random_shapes_never_crash(world, tmp_path_factory, n, in_shape, out_shape, integer) -> None:
    folder = tmp_path_factory.mktemp("shapes")
    x = torch.randn(n, *in_shape)
    y = torch.randint(0, 4, (n, *out_shape)) if integer else torch.randn(n, *out_shape)
    data = save_data(folder / "d.pt", inputs=x, targets=y)
    result = run("probe", world["script"], data, "-q", "--batch-size", 4, "--out", folder / "o.json")
    assert result.exit_code in (0, 1, 2), result.output
    if result.exit_code != 0:
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output
        assert not (folder / "o.json").exists()


def test_weights_and_outputs_that_cannot_be_used(world, tmp_path) -> None:
    state = {k: v.clone() for k, v in torch.load(world["root"] / "state.pt", weights_only=True).items()}
    state["0.weight"][0, 0] = float("nan")
    torch.save(state, tmp_path / "nan.pt")
    one_line_error(run("probe", tmp_path / "nan.pt", world["data"], "-q", "--arch", f"{world['arch']}:build"), 2,
                   "nan.pt: parameter '0.weight' holds NaN or Inf values")
    empty = save_script(torch.nn.Sequential(torch.nn.Identity()), tmp_path / "identity.pt")
    one_line_error(run("probe", empty, world["data"], "-q"), 2, "identity.pt: has no trainable floating-point parameters")
    one_line_error(run("probe", world["script"], world["data"], "-q", "--out", tmp_path / "no" / "such" / "o.json"), 2,
                   "o.json: its folder", "does not exist")
    one_line_error(run("probe", world["script"], world["data"], "-q", "--out", tmp_path), 2, "is a directory; give a file path")
