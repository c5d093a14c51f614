"""The training benchmark's tasks, fixed here before any rule or constant was chosen (issue 16).

TUNING tasks choose thermocal's rules and constants (calibration v2, issue 15); HELD_OUT tasks
are never used to choose anything and report the result. Each has train / validation / test
splits: baselines tune on validation, every reported number is on test. All data ships with a
package (scikit-learn, CPython's pydoc_data) or is generated from a fixed seed: nothing is
downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from models import TinyLM, _text, lm_loss
from sample_models.architectures import mlp

Split = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class Task:
    name: str
    kind: str
    build: Callable[[], torch.nn.Module]  # a fresh model; seed torch before calling
    train: Split
    val: Split
    test: Split
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    steps: int
    batch: int
    # evidence v3's regimes: "small data" (many epochs over a few thousand examples, the first eight
    # tasks) or "single pass" (at most one epoch of a corpus larger than steps x batch)
    regime: str = "small data"

    @property
    def epochs(self) -> float:
        return self.steps * self.batch / len(self.train[0])

    @property
    def params(self) -> int:
        torch.manual_seed(0)
        return sum(p.numel() for p in self.build().parameters())


def _split(x: torch.Tensor, y: torch.Tensor, train: int, val: int, seed: int = 0) -> tuple[Split, Split, Split]:
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    x, y = x[order], y[order]
    return (x[:train], y[:train]), (x[train:train + val], y[train:train + val]), (x[train + val:], y[train + val:])


def _standardize(train: Split, *others: Split, targets: bool = False) -> list[Split]:
    """Scale inputs (and regression targets) by the training split's statistics."""
    mx, sx = train[0].mean(0), train[0].std(0).clamp_min(1e-8)
    my, sy = (train[1].mean(0), train[1].std(0)) if targets else (0.0, 1.0)
    return [((x - mx) / sx, (y - my) / sy if targets else y) for x, y in (train, *others)]


# ----------------------------------------------------------------------------- tuning tasks


def _digits() -> tuple[Split, Split, Split]:
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32) / 16.0
    return _split(x, torch.tensor(data.target, dtype=torch.int64), 1024, 385)


def digits_mlp() -> Task:
    train, val, test = _digits()
    return Task("digits_mlp", "MLP classifier (sklearn digits)", lambda: mlp([64, 32, 10]), train, val, test,
                F.cross_entropy, 1500, 32)


def digits_cnn() -> Task:
    train, val, test = _digits()

    def build() -> torch.nn.Module:
        return torch.nn.Sequential(torch.nn.Unflatten(1, (1, 8, 8)), torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.Tanh(),
                                   torch.nn.Conv2d(8, 16, 3, padding=1, stride=2), torch.nn.Tanh(), torch.nn.Flatten(),
                                   torch.nn.Linear(16 * 16, 10))
    return Task("digits_cnn", "CNN classifier (sklearn digits)", build, train, val, test, F.cross_entropy, 1000, 32)


def diabetes_mlp() -> Task:
    from sklearn.datasets import load_diabetes

    raw = load_diabetes()
    x = torch.tensor(raw.data, dtype=torch.float32)
    y = torch.tensor(raw.target, dtype=torch.float32).unsqueeze(1)
    train, val, test = _standardize(*_split(x, y, 265, 88), targets=True)
    return Task("diabetes_mlp", "MLP regression (sklearn diabetes)", lambda: mlp([10, 16, 1]), train, val, test,
                F.mse_loss, 1000, 32)


def markov_lm() -> Task:
    vocab, context = 24, 32
    tokens = _text((512 + 128 + 128) * context, vocab, torch.Generator().manual_seed(5)).reshape(-1, context)
    train, val, test = (tokens[:512], tokens[:512]), (tokens[512:640], tokens[512:640]), (tokens[640:], tokens[640:])
    return Task("markov_lm", "transformer LM (synthetic Markov text)", lambda: TinyLM(vocab, 32, 1, 2, context), train, val,
                test, lm_loss, 400, 32)


# ----------------------------------------------------------------------------- held-out tasks


def _shapes(n: int, seed: int) -> Split:
    """12×12 images of one of four strokes (horizontal, vertical, diagonal, anti-diagonal) at a random
    place, with a random contrast and Gaussian noise."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 4, (n,), generator=g)
    images = torch.zeros(n, 1, 12, 12)
    offsets = torch.randint(2, 10, (n, 2), generator=g)
    contrast = 0.5 + torch.rand(n, generator=g)
    steps = torch.arange(-2, 3)
    for i in range(n):
        r, c = int(offsets[i, 0]), int(offsets[i, 1])
        kind = int(labels[i])
        rows = torch.full_like(steps, r) if kind == 0 else r + steps
        cols = torch.full_like(steps, c) if kind == 1 else (c + steps if kind != 3 else c - steps)
        images[i, 0, rows.clamp(0, 11), cols.clamp(0, 11)] = contrast[i]
    return images + 0.3 * torch.randn(images.shape, generator=g), labels


def shapes_cnn() -> Task:
    x, y = _shapes(2560, seed=11)
    train, val, test = _split(x, y, 1536, 512, seed=12)

    def build() -> torch.nn.Module:
        return torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 16, 3, padding=1),
                                   torch.nn.ReLU(), torch.nn.AvgPool2d(2), torch.nn.Flatten(), torch.nn.Linear(16 * 36, 4))
    return Task("shapes_cnn", "CNN classifier (generated strokes)", build, train, val, test, F.cross_entropy, 1000, 32)


def docs_lm() -> Task:
    """A character-level transformer LM on CPython's own documentation (pydoc_data.topics)."""
    from pydoc_data.topics import topics

    text = "".join(topics[key] for key in sorted(topics))
    counts: dict[str, int] = {}
    for ch in text:
        counts[ch] = counts.get(ch, 0) + 1
    alphabet = sorted(ch for ch, n in counts.items() if n >= 200)
    index = {ch: i + 1 for i, ch in enumerate(alphabet)}  # 0: any rarer character
    ids = torch.tensor([index.get(ch, 0) for ch in text], dtype=torch.int64)
    context = 48
    sequences = ids[: len(ids) // context * context].reshape(-1, context)
    pick = torch.randperm(len(sequences), generator=torch.Generator().manual_seed(21))[:1536]
    chosen = sequences[pick]
    train, val, test = chosen[:1024], chosen[1024:1280], chosen[1280:]
    vocab = len(alphabet) + 1
    return Task("docs_lm", "transformer LM (CPython documentation, characters)", lambda: TinyLM(vocab, 48, 2, 4, context),
                (train, train), (val, val), (test, test), lm_loss, 500, 32)


def friedman_mlp() -> Task:
    from sklearn.datasets import make_friedman1

    x, y = make_friedman1(n_samples=2000, n_features=10, noise=1.0, random_state=31)
    xt, yt = torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32).unsqueeze(1)
    train, val, test = _standardize(*_split(xt, yt, 1200, 400, seed=32), targets=True)
    return Task("friedman_mlp", "MLP regression (Friedman #1, generated)", lambda: mlp([10, 64, 64, 1]), train, val, test,
                F.mse_loss, 1500, 32)


def noisy_wide_mlp() -> Task:
    from sklearn.datasets import make_classification

    x, y = make_classification(n_samples=4000, n_features=256, n_informative=32, n_redundant=32, n_classes=8,
                               n_clusters_per_class=2, flip_y=0.2, random_state=41)
    xt, yt = torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.int64)
    train, val, test = _standardize(*_split(xt, yt, 2400, 800, seed=42))
    return Task("noisy_wide_mlp", "wide MLP classifier, 20% flipped labels (1.05M parameters)",
                lambda: mlp([256, 1024, 768, 8], torch.nn.ReLU), train, val, test, F.cross_entropy, 600, 64)


# ----------------------------------------------------------------------------- single pass (evidence v3)

CORPUS_CHARACTERS = 3_500_000  # of each corpus: about 54,000 sequences of 64, against 600 x 32 = 19,200 trained on


def _corpus_sequences(text: str, context: int) -> tuple[torch.Tensor, int]:
    """Characters seen at least 200 times get ids 1.., any rarer one 0; the text cut into sequences."""
    counts: dict[str, int] = {}
    for ch in text:
        counts[ch] = counts.get(ch, 0) + 1
    index = {ch: i + 1 for i, ch in enumerate(sorted(ch for ch, n in counts.items() if n >= 200))}
    ids = torch.tensor([index.get(ch, 0) for ch in text], dtype=torch.int64)
    return ids[: len(ids) // context * context].reshape(-1, context), len(index) + 1


def _single_pass(name: str, kind: str, text: str) -> Task:
    """A character-level transformer LM trained for one pass (less than one epoch) of `text`; the
    validation and test sequences come from the corpus's end, after the training part."""
    context = 64
    sequences, vocab = _corpus_sequences(text[:CORPUS_CHARACTERS], context)
    train, val, test = sequences[:-2000], sequences[-2000:-1000], sequences[-1000:]
    return Task(name, kind, lambda: TinyLM(vocab, 48, 2, 4, context), (train, train), (val, val), (test, test), lm_loss,
                600, 32, regime="single pass")


def stdlib_lm() -> Task:
    """Tuning: CPython's standard library source (the top-level Lib/*.py of the running Python), in order."""
    import sysconfig

    files = sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))
    return _single_pass("stdlib_lm", "transformer LM, one pass (Python standard library source, characters)",
                        "".join(f.read_text(encoding="utf-8", errors="replace") for f in files))


def copyright_lm() -> Task:
    """Held out: the copyright and licence texts Debian ships beside its packages (/usr/share/doc/*/copyright)."""
    files = sorted(Path("/usr/share/doc").glob("*/copyright"))
    return _single_pass("copyright_lm", "transformer LM, one pass (Debian's copyright and licence texts, characters)",
                        "".join(f.read_text(encoding="utf-8", errors="replace") for f in files))


TUNING: dict[str, Callable[[], Task]] = {"digits_mlp": digits_mlp, "diabetes_mlp": diabetes_mlp, "digits_cnn": digits_cnn,
                                         "markov_lm": markov_lm, "stdlib_lm": stdlib_lm}
HELD_OUT: dict[str, Callable[[], Task]] = {"shapes_cnn": shapes_cnn, "docs_lm": docs_lm, "friedman_mlp": friedman_mlp,
                                           "noisy_wide_mlp": noisy_wide_mlp, "copyright_lm": copyright_lm}
