"""The benchmark's models and data, built deterministically in memory (no downloads).

Each builder returns (eager module, inputs, targets, loss_fn), trained for a few SGD steps so
that the curvature is that of a model in training rather than at initialisation. Builders run
on one thread: CPU kernels sum in an order that depends on the thread count, so trained weights
built with 1 and 2 threads differ (by up to 0.5% in the CNN's lambda_max), and a reference
computed on one machine would not be that of the model another machine builds. `fingerprint`
names the weights and data a result was computed on.
"""

from __future__ import annotations

import functools
import hashlib
import math
from typing import Callable

import torch
import torch.nn.functional as F

from sample_models.architectures import mlp as stack

Built = tuple[torch.nn.Module, torch.Tensor, torch.Tensor, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]


def _train(model: torch.nn.Module, loss_fn, x: torch.Tensor, y: torch.Tensor, *, steps: int, lr: float, batch: int = 64) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    generator = torch.Generator().manual_seed(1)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (batch,), generator=generator)
        opt.zero_grad()
        loss_fn(model(x[idx]), y[idx]).backward()
        opt.step()
    model.eval()


def one_thread(builder: Callable[..., Built]) -> Callable[..., Built]:
    """`builder`, run with torch on one thread (and the caller's thread count restored after)."""
    @functools.wraps(builder)
    def build(*args, **kwargs) -> Built:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return builder(*args, **kwargs)
        finally:
            torch.set_num_threads(threads)
    return build


def fingerprint(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> str:
    """The first 16 hex digits of a SHA-256 over the weights (names and bytes) and the data."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    for tensor in (x, y):
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


@one_thread
def mlp(n: int = 4096, width: int = 320, train: bool = True) -> Built:
    """64 → width → 256 → 10 tanh MLP (about 105k parameters at width 320), teacher-labelled Gaussians."""
    torch.manual_seed(0)
    x = torch.randn(n, 64)
    teacher = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.Tanh(), torch.nn.Linear(32, 10))
    with torch.no_grad():
        y = (teacher(x) + 0.5 * torch.randn(n, 10)).argmax(1)
    model = torch.nn.Sequential(torch.nn.Linear(64, width), torch.nn.Tanh(), torch.nn.Linear(width, 256), torch.nn.Tanh(),
                                torch.nn.Linear(256, 10))
    if train:
        _train(model, F.cross_entropy, x, y, steps=300, lr=0.05)
    return model.eval(), x, y, F.cross_entropy


@one_thread
def cnn(n: int = 2048, train: bool = True) -> Built:
    """Two 3×3 conv layers, average pooling and a linear head on 1×12×12 images (about 16k parameters)."""
    torch.manual_seed(0)
    x = torch.randn(n, 1, 12, 12)
    teacher = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 5), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(4 * 8 * 8, 10))
    with torch.no_grad():
        y = (teacher(x) + 0.5 * torch.randn(n, 10)).argmax(1)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(),
        torch.nn.AvgPool2d(2), torch.nn.Flatten(), torch.nn.Linear(32 * 6 * 6, 10),
    )
    if train:
        _train(model, F.cross_entropy, x, y, steps=200, lr=0.02)
    return model.eval(), x, y, F.cross_entropy


class TinyLM(torch.nn.Module):
    """A pre-norm causal transformer language model (scaled-dot-product attention)."""

    def __init__(self, vocab: int, width: int, layers: int, heads: int, context: int) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, width)
        self.position = torch.nn.Parameter(0.02 * torch.randn(context, width))
        layer = torch.nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.0, batch_first=True, norm_first=True)
        self.blocks = torch.nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = torch.nn.LayerNorm(width)
        self.head = torch.nn.Linear(width, vocab)
        self.register_buffer("mask", torch.nn.Transformer.generate_square_subsequent_mask(context), persistent=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        t = tokens.shape[1]
        h = self.embed(tokens) + self.position[:t]
        h = self.blocks(h, mask=self.mask[:t, :t], is_causal=True)
        return self.head(self.norm(h))


def lm_loss(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy: targets are the inputs shifted by one."""
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1))


def _text(length: int, vocab: int, generator: torch.Generator) -> torch.Tensor:
    """A second-order Markov chain over `vocab` symbols with sparse, skewed transitions: text-like statistics."""
    table = torch.rand(vocab, vocab, vocab, generator=generator) ** 8
    table = table / table.sum(-1, keepdim=True)
    out = torch.zeros(length, dtype=torch.int64)
    out[:2] = torch.randint(0, vocab, (2,), generator=generator)
    uniforms = torch.rand(length, generator=generator)
    cumulative = table.cumsum(-1)
    for i in range(2, length):
        out[i] = int(torch.searchsorted(cumulative[out[i - 2], out[i - 1]], uniforms[i].unsqueeze(0)).clamp_max(vocab - 1))
    return out


@one_thread
def transformer(n: int = 512, context: int = 32, width: int = 128, layers: int = 5, vocab: int = 48, train: bool = True) -> Built:
    """A 5-layer, width-128 causal LM (about 1.0M parameters) on n sequences of a synthetic text."""
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    tokens = _text(n * context, vocab, generator).reshape(n, context)
    model = TinyLM(vocab, width, layers, 4, context)
    if train:
        _train(model, lm_loss, tokens, tokens, steps=100, lr=0.05, batch=32)
    return model.eval(), tokens, tokens, lm_loss


def digits(train: bool = True) -> Built:
    """The bundled digits sample (64-32-10 MLP, 1024 examples) as an eager module: small enough for a dense Hessian."""
    import warnings
    from pathlib import Path

    folder = Path(__file__).resolve().parents[1] / "sample_models" / "digits_mlp"
    model = stack([64, 32, 10])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        model.load_state_dict(torch.jit.load(str(folder / "model.pt")).state_dict())
    data = torch.load(folder / "data" / "sample.pt", weights_only=True)
    return model.eval(), data["inputs"], data["targets"], F.cross_entropy


BUILDERS = {"digits": digits, "mlp": mlp, "cnn": cnn, "transformer": transformer}


def num_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def describe(name: str, model: torch.nn.Module, x: torch.Tensor) -> str:
    return f"{name}: {num_params(model):,} parameters, {len(x):,} examples"


if __name__ == "__main__":
    import time

    from thermocal.curvature.hvp import HessianOperator

    for name, build in BUILDERS.items():
        if name == "digits":
            continue
        start = time.perf_counter()
        model, x, y, loss_fn = build()
        built = time.perf_counter() - start
        params = list(model.parameters())
        op = HessianOperator(model, loss_fn, [(x, y)], params)
        v = torch.randn(op.dim, dtype=torch.float64)
        op.matvec(v)
        start = time.perf_counter()
        op.matvec(v)
        hvp = time.perf_counter() - start
        print(describe(name, model, x), f"built in {built:.1f}s, one HVP {hvp:.3f}s", math.isfinite(float(loss_fn(model(x), y))))
