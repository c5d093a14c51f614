"""`thermocal probe MODEL DATA`: parse flags into a Config, run the pipeline, write and render.

The setting flags are made from `thermocal.config.Config`, one per field (its description is
the help, its default is shown), so a default lives in one place. Flags that are given, then
THERMOCAL_* variables, then `--config FILE`, then the defaults decide each setting.
"""

from __future__ import annotations

import contextlib
import inspect
import types
import typing
from pathlib import Path
from typing import Any, Optional, Union

import typer

from thermocal.cli.main import DEFAULT_RESULT, command, emit, is_main_process, line, stderr_console
from thermocal.config import Config, resolve_config
from thermocal.errors import NumericalError

# Flags whose name is not the field's; the help panel of each field (the rest: "Engine and memory").
FLAG_NAMES = {"inputs_key": "--inputs", "targets_key": "--targets"}
MAIN = ("batch_size", "steps", "epsilon", "seed", "device", "threads", "max_samples", "loss", "task", "arch",
        "warmup_steps", "min_lr")
PANELS = {
    **{name: "Main settings" for name in MAIN},
    **{name: "Model and data" for name in ("trust_checkpoint", "params", "inputs_key", "targets_key", "target_column",
                                            "dataset", "label_smoothing", "hessian_samples",
                                            "probe_budget")},
    **{name: "Optimizer" for name in ("optimizer", "momentum", "nesterov", "beta1", "beta2", "adam_eps", "weight_decay")},
    **{name: "Calibration" for name in ("shape", "epsilon_from", "rules", "probability", "eta0_rule", "stability_fraction", "lr_law", "d_eff", "tf_rule",
                                         "tf", "tf_floor", "flat_if_cold")},
}


def _flag(name: str) -> str:
    return FLAG_NAMES.get(name, "--" + name.replace("_", "-"))


def _optional(annotation: Any) -> Any:
    """The field's type as an optional CLI value (None: not given on the command line)."""
    if typing.get_origin(annotation) in (Union, types.UnionType):
        annotation = next(arg for arg in typing.get_args(annotation) if arg is not type(None))
    if typing.get_origin(annotation) is tuple:
        return Optional[list[str]]
    return Optional[annotation]


def _setting_parameters() -> list[inspect.Parameter]:
    parameters = []
    for name, field in Config.model_fields.items():
        flag = _flag(name)
        is_bool = field.annotation is bool
        default = field.default
        described = default is None or default == () or is_bool or "(default:" in (field.description or "")
        text = field.description if described else f"{field.description} (default: {default})"
        option = typer.Option(None, f"{flag}/--no-{flag[2:]}" if is_bool else flag, help=text, show_default=False,
                              rich_help_panel=PANELS.get(name, "Engine and memory"))
        parameters.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option,
                                            annotation=_optional(field.annotation)))
    return parameters


def probe(
    model: Path, data: Optional[Path], config_file: Optional[Path], out: Path, force: bool, quiet: bool,
    as_json: bool, fail_unconverged: bool, allow_code_from_config: bool, **settings: Any,
) -> None:
    """Measure gradient noise and Hessian curvature, calibrate the schedule, write --out."""
    import torch

    from thermocal.api import device_of, run
    from thermocal.check import remedy
    from thermocal.distributed import default_threads, distributed
    from thermocal.io.files import ensure_writable, write_text_atomic
    from thermocal.report import RichProgress, render
    from thermocal.progress import NoProgress
    from thermocal.schedule.file import dumps

    flags = {name: tuple(value) if isinstance(value, list) else value for name, value in settings.items() if value is not None}
    resolved = resolve_config(flags, config_file, allow_code_from_config=allow_code_from_config)
    config = resolved.config
    ensure_writable(out, force=force)
    for setting in resolved.code_from_config:  # said before it runs, --quiet or not
        if is_main_process():
            stderr_console().print(line("warning", f"--allow-code-from-config: running {setting}"), soft_wrap=True)
    torch.set_num_threads(config.threads or default_threads())
    with distributed(device_of(config.device)) as (group, device):
        quiet = quiet or not group.is_main  # under torchrun rank 0 alone prints and writes
        as_json = as_json and group.is_main
        console = stderr_console()
        with contextlib.nullcontext(NoProgress()) if quiet else RichProgress(console) as progress:
            probed = run(model, data, config, progress=progress, group=group, device=device)
        document, result = probed.document, probed.result
        unconverged = [name.removeprefix("hessian.") for name in document.measurements.unconverged(result.num_params)]
        if unconverged and fail_unconverged:
            raise NumericalError(f"not converged within budget: {', '.join(unconverged)} (nothing written; "
                                 f"{remedy(result.dtype)})")
        if not group.is_main:
            return
        write_text_atomic(out, dumps(document, "json"), force=force)
        notes = []
        if probed.model.fixed_batch is not None:
            size = probed.model.fixed_batch
            notes.append(line("note", f"{model} was exported for batches of {size}: the probe feeds it {size} examples at "
                                      "a time"))
        if result.unused_parameters:
            notes.append(line("warning", f"the loss does not depend on {', '.join(result.unused_parameters)}: left out "
                                         "of d and the Hessian"))
        if as_json:
            emit([dumps(document, "json")])
        if not quiet:
            for note in notes:
                console.print(note, soft_wrap=True)
            if not as_json:
                render(document, console)
                if unconverged:
                    console.print(line("warning", f"not converged within budget: {', '.join(unconverged)} "
                                                  f"(`thermocal check` will fail on this file; {remedy(result.dtype)})"),
                                  soft_wrap=True)
                console.print(line(None, f"wrote {out}"), soft_wrap=True)


def _fixed_parameters() -> list[inspect.Parameter]:
    keyword = inspect.Parameter.KEYWORD_ONLY
    rows = [
        ("model", Path, typer.Argument(..., help="TorchScript, torch.export (.pt2), a state dict (.pt/.pth/.bin/"
                                                 ".safetensors) with --arch, or a Hugging Face directory.")),
        ("data", Optional[Path], typer.Argument(None, help="A data file or folder (.pt, .npz, .npy, .safetensors, .csv); "
                                                           "omit with --dataset.")),
        ("config_file", Optional[Path], typer.Option(None, "--config", help="Settings from a TOML, YAML or JSON file, or "
                                                     "from a thermocal.schedule/v2 file (re-runs it); flags win.",
                                                     rich_help_panel="Main settings")),
        ("out", Path, typer.Option(DEFAULT_RESULT, "--out", "-o", help="Where to write the result (JSON).",
                                   rich_help_panel="Output")),
        ("force", bool, typer.Option(False, "--force", help="Replace --out if it exists.", rich_help_panel="Output")),
        ("quiet", bool, typer.Option(False, "--quiet", "-q", help="No progress bar and no summary.", rich_help_panel="Output")),
        ("as_json", bool, typer.Option(False, "--json", help="Also print the result (JSON) on stdout; no summary.",
                                       rich_help_panel="Output")),
        ("fail_unconverged", bool, typer.Option(False, "--fail-unconverged", help="Exit 1, writing nothing, if an estimate "
                                                "misses its tolerance.", rich_help_panel="Output")),
        ("allow_code_from_config", bool, typer.Option(False, "--allow-code-from-config", help="Let --config or a "
                                                      "THERMOCAL_* variable set --arch, --dataset, a module:callable "
                                                      "--loss or --trust-checkpoint (each is named before it runs); "
                                                      "without it they are refused.", rich_help_panel="Main settings")),
    ]
    return [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD if i < 2 else keyword, default=default,
                              annotation=annotation) for i, (name, annotation, default) in enumerate(rows)]


probe.__signature__ = inspect.Signature(_fixed_parameters() + _setting_parameters())  # type: ignore[attr-defined]
probe.__annotations__ = {}  # typer reads the signature's annotations, not the function's
command(probe)
