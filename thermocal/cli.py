"""The thin Typer layer: parse, call the library, render. Exit codes live here (see errors.py)."""

from __future__ import annotations

import functools
import importlib
import json
import os
import platform
import sys
import warnings
from datetime import datetime, timezone
from enum import Enum
from importlib.metadata import version
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, TypeVar

import torch
import typer
from typer.core import TyperCommand, TyperGroup
from rich.console import Console
from rich.text import Text

from thermocal import __version__
from thermocal.calibrate import CalibrationSettings, calibrate
from thermocal.diagnostics import diagnose
from thermocal.check import check as run_check, remedy
from thermocal.distributed import default_threads, distributed
from thermocal.errors import (
    EXIT_BAD_INPUT, EXIT_DEGENERATE, EXIT_INTERNAL, DataError, InputError, NumericalError, OutputError, ThermocalError,
)
from thermocal.text import first_line, printable
from thermocal.io.checkpoint import ModelOptions, load_model
from thermocal.io.data import DataOptions, load_sample
from thermocal.io.log import read_log
from thermocal.io.files import ensure_writable, read_text, write_bytes_atomic, write_text_atomic
from thermocal.probe.measure import NoProgress, ProbeSettings, probe as run_probe
from thermocal.monitor import DEFAULT_EPSILON, DEFAULT_WINDOW, replay
from thermocal.report import RichProgress, render, show as show_group
from thermocal.schedule.export import render as render_export
from thermocal.schedule.file import (
    DataInput, Environment, Inputs, ModelInput, ScheduleFile, dumps, loads, sample_table, schema_text,
)
from thermocal.schedule.functions import total_steps

# click's exceptions, from the copy typer uses (typer ≥ 0.29 vendors its own click).
_click = importlib.import_module(typer.BadParameter.__module__)


def _usage_line(exc: Exception) -> str:
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


class _Command(_FlagsWithoutType, TyperCommand):
    pass


class _Group(_FlagsWithoutType, TyperGroup):
    """The root command: usage errors are one line on stderr and exit 2, like every other error."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except _click.UsageError as exc:
            if type(exc).__name__ == "NoArgsIsHelpError":  # `thermocal` alone: the help, as usual
                exc.show()
                code = exc.exit_code
            else:
                print(f"thermocal: error: {printable(_usage_line(exc))}", file=sys.stderr)
                code = EXIT_BAD_INPUT
        except _click.Abort:
            print("thermocal: error: interrupted", file=sys.stderr)
            code = 130
        if not standalone_mode:
            return code
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    cls=_Group, add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
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
F = TypeVar("F", bound=Callable[..., Any])
DEFAULT_RESULT = Path("thermocal.json")


class Task(str, Enum):
    supervised = "supervised"
    lm = "lm"


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class TfRule(str, Enum):
    abs = "abs"
    floor = "floor"


class EngineChoice(str, Enum):
    native = "native"
    pyhessian = "pyhessian"


class MethodChoice(str, Enum):
    lanczos = "lanczos"
    power = "power"


class TraceMethod(str, Enum):
    hutchpp = "hutch++"
    hutchinson = "hutchinson"


class HvpMode(str, Enum):
    auto = "auto"
    rev_rev = "rev-rev"
    fwd_rev = "fwd-rev"


class DtypeChoice(str, Enum):
    model = "model"
    float32 = "float32"
    float64 = "float64"


class Format(str, Enum):
    yaml = "yaml"
    json = "json"
    csv = "csv"
    torch = "torch"
    hf = "hf"
    lightning = "lightning"
    optax = "optax"
    keras = "keras"
    env = "env"


def _stderr() -> Console:
    return Console(stderr=True, highlight=False)


def _error(message: str, code: int) -> typer.Exit:
    """Print `thermocal: error: message` as one printable line (rank 0 only) and return the exit to raise."""
    if _is_main_process():
        print(f"thermocal: error: {printable(message)}", file=sys.stderr)
    return typer.Exit(code)


def handle_errors(command: F) -> F:
    """Map ThermocalError to a one-line message and its exit code; a sys.exit() in user code
    (the model's forward, a loss) and running out of memory are errors of the input (exit 2);
    anything else is a bug (exit 3)."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except ThermocalError as exc:
            raise _error(str(exc), exc.exit_code) from None
        except (typer.Exit, typer.Abort):
            raise
        except SystemExit as exc:  # typer.Exit is not one: only user code calls sys.exit here
            raise _error(f"user code (--arch, --dataset, --loss or the model's forward) called sys.exit({exc.code!r})",
                         EXIT_BAD_INPUT) from None
        except MemoryError:
            raise _error("out of memory; lower --micro-batch, --max-samples or --lanczos-memory, or probe a subset "
                         "with --params", EXIT_BAD_INPUT) from None
        except Exception as exc:
            if isinstance(exc, RuntimeError) and "out of memory" in str(exc):  # torch's OutOfMemoryError, CPU and CUDA
                raise _error(f"out of memory ({first_line(exc)[:120]}); lower --micro-batch, --max-samples or "
                             "--lanczos-memory, or probe a subset with --params", EXIT_BAD_INPUT) from None
            if os.environ.get("THERMOCAL_DEBUG"):
                raise
            if _is_main_process():
                print(f"thermocal: internal error: {type(exc).__name__}: {first_line(exc)} "
                      "(THERMOCAL_DEBUG=1 shows the traceback)", file=sys.stderr)
            raise typer.Exit(EXIT_INTERNAL) from None

    return wrapper  # type: ignore[return-value]


def _emit(pieces: Iterable[str]) -> None:
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


def _is_main_process() -> bool:
    """Under torchrun only rank 0 speaks (every rank meets the same errors)."""
    return os.environ.get("RANK", "0") == "0"


def _device(choice: Device) -> torch.device:
    if choice is Device.cuda and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA device is available (use --device cpu)")
    if choice is Device.auto:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(choice.value)


def _environment() -> Environment:
    return Environment(thermocal=__version__, torch=torch.__version__, pyhessian=version("pyhessian"),
                       python=platform.python_version())


@app.command(cls=_Command)
@handle_errors
def probe(
    model: Path = typer.Argument(..., help="TorchScript, torch.export (.pt2), or a state dict (.pt/.pth/.bin/.safetensors) with --arch."),
    data: Optional[Path] = typer.Argument(None, help="A data file or folder (.pt, .npz, .npy, .safetensors, .csv); omit with --dataset."),
    arch: Optional[str] = typer.Option(None, help="module:callable or path/to/file.py:callable building the model for a state dict."),
    trust_checkpoint: bool = typer.Option(False, "--trust-checkpoint", help="Allow unpickling a whole pickled nn.Module (runs code from the file)."),
    params: Optional[str] = typer.Option(None, help="Probe only the trainable parameters whose name matches this regex."),
    inputs_key: Optional[str] = typer.Option(None, "--inputs", help="Key (or .npy stem) of the inputs (default: inputs or x; lm: tokens, input_ids)."),
    targets_key: Optional[str] = typer.Option(None, "--targets", help="Key (or .npy stem) of the targets (default: targets or y)."),
    target_column: Optional[str] = typer.Option(None, help="CSV: the target column (default: target, label or y)."),
    task: Task = typer.Option(Task.supervised, help="lm: the data are token ids; targets are the inputs shifted by one."),
    dataset: Optional[str] = typer.Option(None, help="module:callable or file.py:callable returning (inputs, targets), a dict, or a Dataset."),
    loss: str = typer.Option("auto", help="auto, cross_entropy, nll, mse, l1, huber, bce, bce_with_logits, lm, or module:callable."),
    label_smoothing: float = typer.Option(0.0, min=0.0, max=0.999, help="Label smoothing of cross_entropy and lm."),
    batch_size: int = typer.Option(32, min=1, help="The batch size you will train with (the temperature depends on it)."),
    steps: Optional[int] = typer.Option(None, min=1, help="Training budget S in optimizer steps; without it tau = d/Tf."),
    seed: int = typer.Option(0, min=0, max=2**63 - 1, help="Seeds the minibatch shuffle, subsampling and all random probes."),
    device: Device = typer.Option(Device.auto, help="auto picks cuda when available."),
    threads: Optional[int] = typer.Option(None, min=1, help="CPU threads for torch (default: the CPUs not already busy, from the load average)."),
    max_samples: Optional[int] = typer.Option(None, min=2, help="Probe a seeded random subset of this many examples."),
    out: Path = typer.Option(DEFAULT_RESULT, "--out", "-o", help="Where to write the result (JSON)."),
    force: bool = typer.Option(False, "--force", help="Replace --out if it exists."),
    tf_rule: TfRule = typer.Option(TfRule.abs, help="abs: max(|lambda_min|, tf_floor*lambda_max); floor: max(lambda_min, tf_floor*lambda_max)."),
    tf: Optional[float] = typer.Option(None, min=0.0, help="Set Tf explicitly instead of a rule."),
    tf_floor: float = typer.Option(1e-3, min=0.0, help="Tf is at least tf_floor * lambda_max."),
    stability_fraction: float = typer.Option(0.25, min=0.0, help="eta0 <= stability_fraction * 2 / lambda_max."),
    epsilon: float = typer.Option(0.01, min=0.0, help="Loss tolerance for the §7 guarantee diagnostic."),
    flat_if_cold: bool = typer.Option(False, help="When T0 <= Tf, write a constant schedule instead of failing."),
    warmup_steps: int = typer.Option(0, min=0, help="Linear warmup to eta0 over this many steps before cooling starts."),
    min_lr: float = typer.Option(0.0, min=0.0, help="Never schedule a learning rate below this floor."),
    engine: EngineChoice = typer.Option(EngineChoice.native, help="Curvature engine: thermocal's own, or pyhessian (power iteration + Hutchinson)."),
    method: Optional[MethodChoice] = typer.Option(None, help="Eigenvalues by lanczos (native default) or power iteration (pyhessian's only)."),
    trace_method: Optional[TraceMethod] = typer.Option(None, help="hutch++ (native default) or plain hutchinson (pyhessian's only)."),
    hvp: HvpMode = typer.Option(HvpMode.auto, help="Hessian-vector products: reverse-over-reverse, forward-over-reverse (eager modules); auto = rev-rev, the faster in the benchmark."),
    vmap_probes: bool = typer.Option(False, "--vmap-probes", help="Batch trace probes through vmap (slower on CPU in the benchmark; try it on GPU)."),
    dtype: DtypeChoice = typer.Option(DtypeChoice.model, help="Probe in the model's dtype, or cast the model and data."),
    eig_rtol: Optional[float] = typer.Option(None, min=0.0, help="Eigenvalue converged when ||Hv - lambda v|| <= eig_rtol*|lambda| (default: native 1e-3, pyhessian 1e-2)."),
    max_iter: Optional[int] = typer.Option(None, min=1, help="Iteration budget of each eigen-solver run (default: lanczos 1000, power 20000)."),
    trace_rtol: float = typer.Option(2e-2, min=0.0, help="Stop the trace when its standard error <= trace_rtol*max(|trace|, tr|H| by Lanczos quadrature, |lambda_max|)."),
    max_probes: int = typer.Option(1000, min=10, help="Probe budget of the trace."),
    micro_batch: int = typer.Option(1024, min=1, help="Examples per forward/backward in Hessian-vector products (bounds memory)."),
    lanczos_memory: float = typer.Option(4.0, min=0.0, help="GiB the Lanczos basis may hold; past it Lanczos restarts, keeping the Ritz vectors at both ends."),
    graph_memory: float = typer.Option(1.0, min=0.0, help="GiB the gradient graphs of several micro-batches may keep between products; the rest are rebuilt each product."),
    top_k: int = typer.Option(1, min=1, help="Also report the top-k eigenvalues (lanczos)."),
    density: bool = typer.Option(False, "--density", help="Spectral density by stochastic Lanczos quadrature."),
    per_layer: bool = typer.Option(False, "--per-layer", help="lambda_max and trace of each layer's diagonal Hessian block."),
    blocks: Optional[list[str]] = typer.Option(None, "--blocks", help="A regex over parameter names defining a block (repeatable)."),
    fail_unconverged: bool = typer.Option(False, "--fail-unconverged", help="Exit 1, writing nothing, if an estimate misses its tolerance."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar and no summary."),
    as_json: bool = typer.Option(False, "--json", help="Also print the result (JSON) on stdout, for scripts; no summary."),
) -> None:
    """Measure gradient noise and Hessian curvature, calibrate the schedule, write --out."""
    ensure_writable(out, force=force)
    torch.set_num_threads(threads or default_threads())
    with distributed(_device(device)) as (group, torch_device):
        quiet = quiet or not group.is_main  # under torchrun rank 0 alone prints and writes
        as_json = as_json and group.is_main
        loaded = load_model(model, ModelOptions(arch=arch, trust_checkpoint=trust_checkpoint, params=params))
        if loaded.fixed_batch is not None:  # a torch.export program exported without a dynamic batch dimension
            size = loaded.fixed_batch
            if batch_size % size:
                raise InputError(f"was exported for batches of exactly {size} examples (torch.export.export without "
                                 f"dynamic_shapes), so --batch-size must be a multiple of {size}; or re-export with "
                                 "dynamic_shapes=({0: torch.export.Dim('batch')},)", model)
            micro_batch = max(size, micro_batch - micro_batch % size)
        sample = load_sample(data, max_samples=max_samples, seed=seed, options=DataOptions(
            inputs_key=inputs_key, targets_key=targets_key, target_column=target_column, task=task.value, dataset=dataset))
        settings = ProbeSettings(
            batch_size=batch_size, loss=loaded.default_loss if loss == "auto" and loaded.default_loss else loss,
            label_smoothing=label_smoothing, seed=seed, engine=engine.value,
            method=method.value if method else None, trace_method=trace_method.value if trace_method else None,
            hvp=hvp.value, vmap_probes=vmap_probes, dtype=None if dtype is DtypeChoice.model else dtype.value, eig_rtol=eig_rtol,
            max_iter=max_iter, trace_rtol=trace_rtol, max_probes=max_probes, micro_batch=micro_batch, top_k=top_k,
            density=density, lanczos_memory=lanczos_memory, graph_memory=graph_memory, per_layer=per_layer,
            blocks=tuple(blocks or ()),
        ).resolved()
        console = _stderr()
        try:
            if quiet:
                result = run_probe(loaded.module, sample.inputs, sample.targets, settings, torch_device, NoProgress(), group=group)
            else:
                with RichProgress(console) as progress:
                    result = run_probe(loaded.module, sample.inputs, sample.targets, settings, torch_device, progress, group=group)
        except DataError as exc:
            exc.path = exc.path or sample.path
            raise
        noise, spectrum = result.measurements.gradient_noise, result.measurements.hessian
        calibration = calibrate(noise, spectrum, result.num_params, CalibrationSettings(
            steps=steps, tf_rule=tf_rule.value, tf_value=tf, tf_floor=tf_floor,
            stability_fraction=stability_fraction, flat_if_cold=flat_if_cold, warmup_steps=warmup_steps,
            min_lr=min_lr, epsilon=epsilon,
        ))
        document = ScheduleFile(
            created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            inputs=Inputs(
                model=ModelInput(path=str(model), sha256=loaded.sha256, format=loaded.format, num_params=result.num_params,
                                 note=loaded.note, arch=arch, params=params,
                                 unused_parameters=result.unused_parameters or None),
                data=DataInput(path=str(sample.path), sha256=sample.sha256, files=[f.name for f in sample.files],
                               total_samples=sample.total_samples, num_samples=len(sample), format=sample.format,
                               task=task.value),
                loss=result.loss, batch_size=batch_size, max_samples=max_samples, device=str(torch_device),
                dtype=result.dtype, seed=seed, processes=group.world,
            ),
            measurements=result.measurements,
            calibration=calibration.details,
            schedule=calibration.schedule,
            diagnostics=diagnose(calibration.schedule, calibration.details, noise, spectrum, epsilon=epsilon),
            table=sample_table(calibration.schedule),
            environment=_environment(),
            timings=result.timings,
        )
        unconverged = spectrum.unconverged(result.num_params)
        if unconverged and fail_unconverged:
            raise NumericalError(f"not converged within budget: {', '.join(unconverged)} (nothing written; {remedy(result.dtype)})")
        if not group.is_main:
            return
        write_text_atomic(out, dumps(document, "json"), force=force)
        if loaded.fixed_batch is not None and not quiet:
            console.print(_line("note", f"{model} was exported for batches of {loaded.fixed_batch}: the probe feeds it "
                                        f"{loaded.fixed_batch} examples at a time"), soft_wrap=True)
        if result.unused_parameters:
            console.print(_line("warning", f"the loss does not depend on {', '.join(result.unused_parameters)}: "
                                           "left out of d and the Hessian"), soft_wrap=True)
        if as_json:
            _emit([dumps(document, "json")])
        if not quiet and not as_json:
            render(document, console)
            if unconverged:
                console.print(_line("warning", f"not converged within budget: {', '.join(unconverged)} "
                                               f"(`thermocal check` will fail on this file; {remedy(result.dtype)})"),
                              soft_wrap=True)
            console.print(_line(None, f"wrote {out}"), soft_wrap=True)


def _line(label: str | None, message: str) -> Text:
    """A summary line as plain text (never parsed as rich markup), after a coloured `label:`."""
    text = Text(f"{label}:", style="yellow" if label == "warning" else "dim") if label else Text()
    return text.append((" " if label else "") + printable(message))


def _read_schedule(path: Path) -> ScheduleFile:
    return loads(read_text(path), str(path))


@app.command(cls=_Command)
@handle_errors
def export(
    file: Path = typer.Argument(DEFAULT_RESULT, help="A probe result (JSON or YAML)."),
    format: Format = typer.Option(Format.yaml, "--format", "-f", help="yaml/json: the file; csv: step,lr,temperature; a framework's snippet; env: shell lines."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write here instead of stdout."),
    force: bool = typer.Option(False, "--force", help="Replace --out if it exists."),
    every: int = typer.Option(1, min=1, help="csv: one row every N steps (the last step always)."),
) -> None:
    """Write the schedule (validated) as a file, a table or a framework snippet, to stdout by default."""
    document = _read_schedule(file)
    if format is Format.csv and total_steps(document.schedule) is None:
        raise InputError("holds a flat schedule without a budget: probe with --steps to tabulate it", file)
    rendered = render_export(document, format.value, every)
    if out is None:
        _emit(rendered)
    else:
        write_text_atomic(out, rendered, force=force)


@app.command(cls=_Command)
@handle_errors
def check(
    file: Path = typer.Argument(DEFAULT_RESULT, help="The schedule file to check."),
    strict: bool = typer.Option(False, "--strict", help="Diagnostic warnings fail too."),
    against: Optional[Path] = typer.Option(None, "--against", help="A previous schedule file to compare with."),
    max_drift: float = typer.Option(0.25, min=0.0, help="With --against: the largest relative change of eta0, tau, T0, Tf."),
    as_json: bool = typer.Option(False, "--json", help="Print the findings as JSON on stdout."),
) -> None:
    """Validate a schedule file, re-derive it from its measurements, and compare it with a previous one.

    Exit 0: every check passed; 1: a check failed; 2: a file is unusable.
    """
    document = _read_schedule(file)
    previous = _read_schedule(against) if against is not None else None
    report = run_check(document, strict=strict, previous=previous, max_drift=max_drift)
    if as_json:
        payload = {"file": str(file), "passed": report.passed,
                   "findings": [{"check": f.check, "status": f.status, "message": f.message} for f in report.findings]}
        _emit([json.dumps(payload, indent=2) + "\n"])
    else:
        _emit([printable(f"{f.status:4s}  {f.check}: {f.message}") + "\n" for f in report.findings]
              + [printable(f"{file}: {'passed' if report.passed else 'FAILED'}") + "\n"])
    if not report.passed:
        raise typer.Exit(EXIT_DEGENERATE)


@app.command(cls=_Command)
@handle_errors
def show(
    file: Path = typer.Argument(DEFAULT_RESULT, help="A probe result (JSON or YAML)."),
    no_color: bool = typer.Option(False, "--no-color", help="Plain text, no colour codes (also when stdout is not a terminal)."),
) -> None:
    """Show the measurements with their errors, the schedule, the diagnostics and the curves."""
    document = _read_schedule(file)
    console = Console(no_color=no_color or "NO_COLOR" in os.environ, highlight=False, soft_wrap=False,
                      width=None if sys.stdout.isatty() else int(os.environ.get("COLUMNS", "80")))
    with console.capture() as captured:
        console.print(show_group(document))
    _emit([captured.get()])


@app.command(cls=_Command)
@handle_errors
def plot(
    file: Path = typer.Argument(DEFAULT_RESULT, help="A probe result (JSON or YAML)."),
    out: Path = typer.Option(Path("schedule.png"), "--out", "-o", help="The PNG to write."),
    force: bool = typer.Option(False, "--force", help="Replace --out if it exists."),
) -> None:
    """Draw lr(t), T(t) (and the spectral density) as a PNG; needs the plot extra (matplotlib)."""
    from thermocal.plot import render_png

    document = _read_schedule(file)
    ensure_writable(out, force=force)
    write_bytes_atomic(out, render_png(document), force=force)
    _stderr().print(f"wrote {out}")


@app.command(cls=_Command)
@handle_errors
def monitor(
    log: Path = typer.Argument(..., help="A CSV log with columns step, loss, grad_norm, lr."),
    epsilon: float = typer.Option(DEFAULT_EPSILON, min=0.0, help="Fire when |dS/dt| / S_dot_tot exceeds this."),
    window: int = typer.Option(DEFAULT_WINDOW, min=2, help="Steps in the loss slope, and steps the excess must last."),
    as_json: bool = typer.Option(False, "--json", help="Print the firings as JSON on stdout."),
) -> None:
    """Replay the seed's §6.2 rule over a training log and report where it fires."""
    rows = read_log(log)
    readings, firings = replay(rows, epsilon=epsilon, window=window)
    if as_json:
        payload = {"log": str(log), "epsilon": epsilon, "window": window, "steps": len(readings),
                   "firings": [f.__dict__ for f in firings]}
        _emit([json.dumps(payload, indent=2) + "\n"])
        return
    ratios = [r.ratio for r in readings if r.ratio is not None]
    where = printable(str(log))
    if ratios:
        lines = [f"{where}: {len(readings)} steps; ratio |dS/dt|/S_dot_tot median {sorted(ratios)[len(ratios) // 2]:.3g}, "
                 f"max {max(ratios):.3g} (epsilon {epsilon:g}, window {window})\n"]
    else:
        lines = [f"{where}: {len(readings)} steps, fewer than the window of {window}: no ratio yet\n"]
    lines += [f"fired at step {f.first_step} (held to {f.last_step}, peak ratio {f.peak_ratio:.3g}): "
              f"cooling too fast; stretch tau by {f.stretch:.3g} from step {f.first_step}\n" for f in firings]
    _emit(lines if firings else [*lines, "the rule did not fire\n"])


@app.command(cls=_Command)
@handle_errors
def schema() -> None:
    """Print the JSON Schema of the schedule file (thermocal.schedule/v1)."""
    _emit([schema_text()])


def main() -> None:
    """The `thermocal` command. Warnings from torch and other libraries are not shown (each is
    about their internals, not the user's input); THERMOCAL_DEBUG=1 shows them and tracebacks."""
    if not os.environ.get("THERMOCAL_DEBUG"):
        warnings.simplefilter("ignore")
    app(prog_name="thermocal")
