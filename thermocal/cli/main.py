"""The thin Typer layer's frame: the app, the one error map, stdout that fails loudly, --version.

Only here (and in the commands) are typer, exit codes and sys.exit. Each command parses, calls
one library function, renders. Nothing here imports torch: `thermocal check`, `export`, `show`
and `--help` start without it; `probe` imports it when it runs.
"""

from __future__ import annotations

import functools
import importlib
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, TypeVar

import typer
from rich.console import Console
from rich.text import Text
from typer.core import TyperCommand, TyperGroup

from thermocal import __version__
from thermocal.errors import EXIT_BAD_INPUT, EXIT_INTERNAL, OutputError, ThermocalError
from thermocal.text import first_line, printable

F = TypeVar("F", bound=Callable[..., Any])
DEFAULT_RESULT = Path("thermocal.json")
# click's exceptions, from the copy typer uses (typer ≥ 0.29 vendors its own click).
_click = importlib.import_module(typer.BadParameter.__module__)


def usage_line(exc: Exception) -> str:
    """click's usage error as one line: `no such option --stepz (did you mean --steps?)`."""
    if isinstance(exc, _click.NoSuchOption):
        near = [p for p in exc.possibilities or () if p.startswith("--") and p != "--help"]
        return f"no such option {exc.option_name}" + (f" (did you mean {' or '.join(near)}?)" if near else "")
    text = " ".join(exc.format_message().split()).rstrip(".").replace("Value error, ", "")
    text = text[:1].lower() + text[1:]
    command = exc.ctx.command_path if getattr(exc, "ctx", None) is not None else "thermocal"
    return f"{text} (see {command} --help)"


class _FlagsWithoutType:
    """Help shows flags as `--force`, not typer's `--force <bool>`."""

    def get_params(self, ctx: Any) -> list[Any]:
        params = super().get_params(ctx)  # type: ignore[misc]
        for param in params:
            if getattr(param, "is_flag", False):
                param.metavar = ""
        return params


class Command(_FlagsWithoutType, TyperCommand):
    pass


class Group(_FlagsWithoutType, TyperGroup):
    """The root command: usage errors are one line on stderr and exit 2, like every other error."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except _click.UsageError as exc:
            if type(exc).__name__ == "NoArgsIsHelpError":  # `thermocal` alone: the help, as usual
                exc.show()
                code = exc.exit_code
            else:
                print(f"thermocal: error: {printable(usage_line(exc))}", file=sys.stderr)
                code = EXIT_BAD_INPUT
        except typer.Abort:
            print("thermocal: error: interrupted", file=sys.stderr)
            code = 130
        except OSError as exc:  # --help or --version to a stdout that cannot take it (commands map their own)
            _silence_stdout()
            if not isinstance(exc, BrokenPipeError):
                print(f"thermocal: error: stdout: cannot be written ({exc.strerror or exc})", file=sys.stderr)
            code = EXIT_BAD_INPUT
        if not standalone_mode:
            return code
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    cls=Group, add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
    help="Calibrate a cooling learning-rate schedule from a checkpoint's gradient noise and curvature.",
)


def _version(value: bool) -> None:
    if value:
        print(f"thermocal {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """Calibrate a cooling learning-rate schedule from a checkpoint's gradient noise and curvature."""


def is_main_process() -> bool:
    """Under torchrun only rank 0 speaks (every rank meets the same errors)."""
    return os.environ.get("RANK", "0") == "0"


# Under torchrun the other ranks wait this long before exiting on an error: the first rank to exit
# with an error makes torchrun stop the rest, and rank 0, which alone prints, must not be stopped
# before its line is out (a full test run once lost it so).
QUIET_RANK_GRACE_S = 5.0


def _let_rank_0_speak() -> None:
    if not is_main_process():
        time.sleep(QUIET_RANK_GRACE_S)


def error(message: str, code: int) -> typer.Exit:
    """Print `thermocal: error: message` as one printable line (rank 0 only) and return the exit to raise."""
    if is_main_process():
        print(f"thermocal: error: {printable(message)}", file=sys.stderr, flush=True)
    _let_rank_0_speak()
    return typer.Exit(code)


MEMORY_REMEDY = "lower --micro-batch, --hessian-samples, --max-samples or --lanczos-memory, or probe a subset with --params"


def handle_errors(command: F) -> F:
    """Map ThermocalError to a one-line message and its exit code; a sys.exit() in user code
    (the model's forward, a loss) and running out of memory are errors of the input (exit 2);
    anything else is a bug (exit 3)."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except ThermocalError as exc:
            raise error(str(exc), exc.exit_code) from None
        except (typer.Exit, typer.Abort):
            raise
        except SystemExit as exc:  # typer.Exit is not one: only user code calls sys.exit here
            raise error(f"user code (--arch, --dataset, --loss or the model's forward) called sys.exit({exc.code!r})",
                        EXIT_BAD_INPUT) from None
        except MemoryError:
            raise error(f"out of memory; {MEMORY_REMEDY}", EXIT_BAD_INPUT) from None
        except Exception as exc:
            if isinstance(exc, RuntimeError) and "out of memory" in str(exc):  # torch's OutOfMemoryError, CPU and CUDA
                raise error(f"out of memory ({first_line(exc)[:120]}); {MEMORY_REMEDY}", EXIT_BAD_INPUT) from None
            if os.environ.get("THERMOCAL_DEBUG"):
                raise
            if is_main_process():
                print(f"thermocal: internal error: {type(exc).__name__}: {first_line(exc)} "
                      "(THERMOCAL_DEBUG=1 shows the traceback)", file=sys.stderr, flush=True)
            _let_rank_0_speak()
            raise typer.Exit(EXIT_INTERNAL) from None

    return wrapper  # type: ignore[return-value]


def emit(pieces: Iterable[str]) -> None:
    """Write to stdout and flush: a write that fails (a full disk under `> file`) is one line and
    exit 2, never a truncated file with exit 0; a reader that closed the pipe (`| head`) ends the
    output quietly, with exit 2."""
    try:
        for piece in pieces:
            sys.stdout.write(piece)
        sys.stdout.flush()
    except OSError as exc:
        _silence_stdout()
        if isinstance(exc, BrokenPipeError):
            raise typer.Exit(EXIT_BAD_INPUT) from None
        raise OutputError(f"cannot be written ({exc.strerror or exc})", "stdout") from None


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that the interpreter's last flush does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no file descriptor (a test runner's stream)
        pass


def stderr_console() -> Console:
    return Console(stderr=True, highlight=False)


def line(label: str | None, message: str) -> Text:
    """A summary line as plain text (never parsed as rich markup), after a coloured `label:`."""
    text = Text(f"{label}:", style="yellow" if label == "warning" else "dim") if label else Text()
    return text.append((" " if label else "") + printable(message))


def command(function: F) -> F:
    """Register `function` as a command with one-line errors and type-less flags."""
    return app.command(cls=Command)(handle_errors(function))  # type: ignore[return-value]


def main() -> None:
    """The `thermocal` command. Warnings from torch and other libraries are not shown (each is
    about their internals, not the user's input); THERMOCAL_DEBUG=1 shows them and tracebacks."""
    if not os.environ.get("THERMOCAL_DEBUG"):
        warnings.simplefilter("ignore")
    app(prog_name="thermocal")
