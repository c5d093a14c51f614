"""The one pipeline: load → prepare → measure → calibrate → diagnose → schedule file.

    import thermocal
    doc = thermocal.probe(model, (inputs, targets), thermocal.Config(batch_size=64, steps=20_000))
    doc.schedule.eta0, thermocal.load_schedule(...)   # or write it: thermocal.dumps(doc, "json")

`model` is a module (never changed: a copy is probed) or a checkpoint path; `data` is
(inputs, targets) tensors, a data path, or None with `config.dataset`. The CLI's `probe`
parses its flags into a Config, calls this, and renders what it returns; the benchmarks call
it the same way.
"""

from __future__ import annotations

import copy
import hashlib
import platform
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path
from typing import Callable

import torch
from pydantic import ValidationError

from thermocal import __version__
from thermocal.calibrate import calibrate
from thermocal.config import Config
from thermocal.distributed import SINGLE, Group
from thermocal.errors import DataError, InputError
from thermocal.io.checkpoint import LoadedModel, ModelOptions, load_model, restrict_parameters
from thermocal.io.data import DataOptions, Sample, load_sample, subsample
from thermocal.io.user_code import call_user, import_callable
from thermocal.measure import ProbeResult, probe as measure
from thermocal.progress import NoProgress, Progress
from thermocal.schedule.file import DataInput, Environment, Inputs, ModelInput, ScheduleFileV2, sample_table
from thermocal.text import printable

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Probed:
    """The schedule file and what the CLI says beside it (notes, unconverged estimates)."""

    document: ScheduleFileV2
    result: ProbeResult
    model: LoadedModel


def device_of(choice: str) -> torch.device:
    if choice == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA device is available (use --device cpu)")
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(choice)


def _tensor_digest(*tensors: torch.Tensor) -> str:
    digest = hashlib.sha256()
    for tensor in tensors:
        digest.update(str((tuple(tensor.shape), tensor.dtype)).encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _module(model: torch.nn.Module | str | Path, config: Config) -> LoadedModel:
    """The model to probe: a loaded checkpoint, or a copy of the caller's module (its device,
    dtype and requires_grad flags are the caller's; the probe changes only its copy)."""
    if isinstance(model, (str, Path)):
        return load_model(Path(model), ModelOptions(arch=config.arch, trust_checkpoint=config.trust_checkpoint,
                                                    params=config.params))
    if not isinstance(model, torch.nn.Module):
        raise InputError(f"model must be a torch.nn.Module or a checkpoint path, got a {type(model).__name__}")
    state = [p for p in model.state_dict().values() if isinstance(p, torch.Tensor)]
    module = copy.deepcopy(model)
    if config.params is not None:  # as load_model does for a checkpoint: only the matching parameters are probed
        restrict_parameters(module, config.params, Path("<module>"))
    return LoadedModel(module=module, path=Path("<module>"), sha256=_tensor_digest(*state),
                       format="module", note="a torch.nn.Module passed to thermocal.probe (a copy was probed)")


def _sample(data: tuple[torch.Tensor, torch.Tensor] | str | Path | None, config: Config) -> Sample:
    if data is None or isinstance(data, (str, Path)):
        options = DataOptions(inputs_key=config.inputs_key, targets_key=config.targets_key,
                              target_column=config.target_column, task=config.task, dataset=config.dataset)
        return load_sample(None if data is None else Path(data), max_samples=config.max_samples, seed=config.seed,
                           options=options)
    inputs, targets = data
    total = int(inputs.shape[0])
    keep = subsample(total, config.max_samples, config.seed)
    if keep is not None:
        inputs, targets = inputs[keep], targets[keep]
    return Sample(inputs=inputs, targets=targets, path=Path("<tensors>"), files=(), sha256=_tensor_digest(inputs, targets),
                  total_samples=total, format="tensors")


def user_loss(spec: str) -> Loss:
    """`--loss module:callable`: the user's function, whose errors (and sys.exit) become one line naming --loss."""
    fn = import_callable(spec, "--loss")
    return lambda outputs, targets: call_user(fn, spec, "--loss", outputs, targets)


def _fixed_batch(loaded: LoadedModel, config: Config) -> Config:
    """A torch.export program exported for batches of n is fed multiples of n: the batch size must
    be one, and micro-batches and the Hessian's examples are rounded down to one (engine details,
    not settings: the file records the settings as given and the examples used)."""
    size = loaded.fixed_batch
    if size is None:
        return config
    if config.batch_size % size:
        raise InputError(f"was exported for batches of exactly {size} examples (torch.export.export without "
                         f"dynamic_shapes), so --batch-size must be a multiple of {size}; or re-export with "
                         "dynamic_shapes=({0: torch.export.Dim('batch')},)", loaded.path)
    def whole(count: int) -> int:  # rounded down to whole batches of the program's size
        return max(size, count - count % size)

    update = {"micro_batch": whole(config.micro_batch)}
    if config.hessian_samples is not None:
        update["hessian_samples"] = whole(config.hessian_samples)
    return config.model_copy(update=update)


def run(model: torch.nn.Module | str | Path, data: tuple[torch.Tensor, torch.Tensor] | str | Path | None,
        config: Config, *, loss_fn: Loss | None = None, progress: Progress | None = None, group: Group = SINGLE,
        device: torch.device | None = None) -> Probed:
    """The pipeline with everything the CLI reports beside the file."""
    loaded = _module(model, config)
    sample = _sample(data, config)
    engine_config = _fixed_batch(loaded, config)
    loss_config = engine_config
    if config.loss == "auto" and loaded.default_loss:
        loss_config = engine_config.model_copy(update={"loss": loaded.default_loss})
    if loss_fn is None and ":" in config.loss:
        loss_fn = user_loss(config.loss)
    elif loss_fn is not None and config.loss == "auto":
        loss_config = loss_config.model_copy(update={"loss": getattr(loss_fn, "__name__", "callable")})
    device = device or device_of(config.device)
    try:
        result = measure(loaded.module, sample.inputs, sample.targets, loss_config, device, progress or NoProgress(),
                         loss_fn=loss_fn, group=group, example_chunk=loaded.fixed_batch or 1)
    except DataError as exc:
        exc.path = exc.path or sample.path
        raise
    calibrated = calibrate(result.measurements, result.num_params, config)
    document = ScheduleFileV2(
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        settings=config,
        inputs=Inputs(
            model=ModelInput(path=printable(str(loaded.path)), sha256=loaded.sha256, format=loaded.format,
                             num_params=result.num_params, note=loaded.note, arch=config.arch, params=config.params,
                             unused_parameters=result.unused_parameters or None),
            data=DataInput(path=printable(str(sample.path)), sha256=sample.sha256,
                           files=[printable(f.name) for f in sample.files], total_samples=sample.total_samples,
                           num_samples=len(sample), format=sample.format, task=config.task),
            loss=result.loss, batch_size=config.batch_size, max_samples=config.max_samples, device=str(device),
            dtype=result.dtype, seed=config.seed, processes=group.world, hessian_samples=result.hessian_samples,
            threads=torch.get_num_threads(),
        ),
        measurements=result.measurements,
        calibration=calibrated.details,
        schedule=calibrated.schedule,
        diagnostics=calibrated.diagnostics,
        table=sample_table(calibrated.schedule),
        environment=Environment(thermocal=__version__, torch=torch.__version__, python=platform.python_version(),
                                pyhessian=version("pyhessian") if config.engine == "pyhessian" else None),
        timings=result.timings,
    )
    return Probed(document=document, result=result, model=loaded)


def probe(model: torch.nn.Module | str | Path, data: tuple[torch.Tensor, torch.Tensor] | str | Path | None = None,
          config: Config | None = None, *, loss_fn: Loss | None = None, **settings: object) -> ScheduleFileV2:
    """Probe `model` on `data` and return the schedule file (settings from `config`, or as keywords).

    `loss_fn(outputs, targets)` (a mean over examples), when given, replaces the loss that
    `config.loss` names. Raises thermocal.errors.ThermocalError subclasses on bad input (InputError)
    and on measurements from which no schedule follows (DegenerateError)."""
    given = {} if config is None else config.model_dump(exclude_unset=True)  # the fields the caller set
    if config is None or settings:
        try:  # validated as the CLI's settings are: a default is not a setting the caller gave
            config = Config.model_validate({**given, **settings})
        except ValidationError as exc:
            first = exc.errors()[0]
            where = f"{first['loc'][0]}: " if first["loc"] else ""
            raise InputError(f"{where}{first['msg'].removeprefix('Value error, ')}") from exc
    return run(model, data, config, loss_fn=loss_fn).document
