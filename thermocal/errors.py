"""The one error hierarchy. The CLI maps each class to a one-line message and an exit code.

Exit codes (README, "Exit codes"):
  0  success
  1  the tool ran, but the result is unusable: the schedule is degenerate (already cold),
     a measurement is not finite, or (with --fail-unconverged) an estimate missed its tolerance
  2  bad input or usage: a missing or unreadable file, malformed data, a refused overwrite
  3  an internal error (a bug in thermocal); THERMOCAL_DEBUG=1 shows the traceback
"""

from __future__ import annotations

from pathlib import Path

EXIT_OK = 0
EXIT_DEGENERATE = 1
EXIT_BAD_INPUT = 2
EXIT_INTERNAL = 3


class ThermocalError(Exception):
    """Base class: a message for the user, optionally tied to the file it is about."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, message: str, path: Path | str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.path = path

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path is not None else self.message


class InputError(ThermocalError):
    """Bad input or usage: the user must change a file or a flag."""


class CheckpointError(InputError):
    """The MODEL argument cannot be loaded or is not usable."""


class DataError(InputError):
    """The DATA argument cannot be loaded or does not fit the model."""


class OutputError(InputError):
    """The output cannot be written, or writing it would replace a file without --force."""


class DegenerateError(ThermocalError):
    """The measurements are fine as input, but no schedule follows from them."""

    exit_code = EXIT_DEGENERATE


class NumericalError(DegenerateError):
    """A loss, gradient or curvature value is not finite."""
