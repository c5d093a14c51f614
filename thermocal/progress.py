"""Where a probe reports its phases and products, and how long each phase took."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator, Protocol


class Progress(Protocol):
    """Where the probe reports its phases and products. `total` is the phase's exact length when
    it is known (minibatches, density steps), None for iterative solvers that stop when converged."""

    def phase(self, name: str, total: int | None) -> None: ...

    def advance(self, amount: int = 1) -> None: ...


class NoProgress:
    def phase(self, name: str, total: int | None) -> None:
        pass

    def advance(self, amount: int = 1) -> None:
        pass


class Timer:
    """Seconds spent in each named phase (`with timer("trace"): ...`), summed over its entries."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - start
