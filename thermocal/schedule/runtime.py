"""Use a schedule file at training time, with no CLI dependencies (no typer, no rich).

    schedule = thermocal.load_schedule("thermocal.json")
    schedule.lr(step), schedule.temperature(step)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from thermocal.io.files import read_text
from thermocal.schedule.file import ScheduleFile, loads
from thermocal.schedule.functions import learning_rate, temperature, total_steps


@dataclass(frozen=True)
class LoadedSchedule:
    """A validated schedule file and its learning rate and temperature as functions of the step."""

    document: ScheduleFile

    def lr(self, step: int) -> float:
        """eta(step) (method.md [C5], [C8])."""
        return learning_rate(self.document.schedule)(step)

    def temperature(self, step: int) -> float:
        """T(step) (method.md [C5], [C8])."""
        return temperature(self.document.schedule)(step)

    @property
    def eta0(self) -> float:
        """The learning rate to build the optimizer with (the schedule's peak)."""
        return self.document.schedule.eta0

    @property
    def total_steps(self) -> int | None:
        """Warmup plus the cooling budget."""
        return total_steps(self.document.schedule)


def load_schedule(path: str | Path) -> LoadedSchedule:
    """Read and validate a schedule file (JSON or YAML). Raises thermocal.errors.InputError."""
    path = Path(path)
    return LoadedSchedule(loads(read_text(path), str(path)))
