"""Build the bundled sample models and their data samples, offline and deterministically.

    pip install -e ".[test]"   # scikit-learn ships the two data sets used here
    python sample_models/make_samples.py

digits_mlp:   a 64-32-10 tanh MLP trained briefly on scikit-learn's handwritten digits
              (8x8 images, 10 classes); sample: 1024 training images. Loss: cross_entropy.
diabetes_mlp: a 10-16-1 tanh MLP trained briefly on scikit-learn's diabetes data
              (10 standardised features, standardised target); sample: all 442 rows. Loss: mse.

Both are saved as TorchScript (model.pt) with the sample in data/sample.pt as
{"inputs": float32 tensor, "targets": tensor}. Training stops early on purpose: a probe
is meant to run before (or early in) training, where gradient noise is still large.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import torch
from sklearn.datasets import load_diabetes, load_digits

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from sample_models.architectures import mlp  # noqa: E402


def _train(model: torch.nn.Module, loss_fn, x: torch.Tensor, y: torch.Tensor, *, lr: float, epochs: int, batch: int) -> float:
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(1)
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=generator).split(batch):
            opt.zero_grad()
            loss_fn(model(x[idx]), y[idx]).backward()
            opt.step()
    with torch.no_grad():
        return float(loss_fn(model(x), y))


def _save(name: str, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    folder = HERE / name
    (folder / "data").mkdir(parents=True, exist_ok=True)
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(model), str(folder / "model.pt"))
    torch.save({"inputs": x.contiguous(), "targets": y.contiguous()}, folder / "data" / "sample.pt")


def digits() -> None:
    torch.manual_seed(0)
    features, labels = load_digits(return_X_y=True)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))[:1024]
    x = torch.tensor(features, dtype=torch.float32)[order] / 16.0
    y = torch.tensor(labels, dtype=torch.int64)[order]
    model = mlp([64, 32, 10])
    loss = _train(model, torch.nn.functional.cross_entropy, x, y, lr=0.05, epochs=40, batch=32)
    print(f"digits_mlp: {sum(p.numel() for p in model.parameters())} parameters, loss {loss:.4f}")
    _save("digits_mlp", model, x, y)


def diabetes() -> None:
    torch.manual_seed(0)
    features, target = load_diabetes(return_X_y=True)
    x = torch.tensor(features, dtype=torch.float32)
    x = (x - x.mean(0)) / x.std(0)
    y = torch.tensor(target, dtype=torch.float32).unsqueeze(1)
    y = (y - y.mean()) / y.std()
    model = mlp([10, 16, 1])
    loss = _train(model, torch.nn.functional.mse_loss, x, y, lr=0.01, epochs=40, batch=32)
    print(f"diabetes_mlp: {sum(p.numel() for p in model.parameters())} parameters, loss {loss:.4f}")
    _save("diabetes_mlp", model, x, y)


if __name__ == "__main__":
    digits()
    diabetes()
