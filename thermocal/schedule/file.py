"""The schedule file (method.md §5): `thermocal.schedule/v2`, what the probe writes, with every
setting that produced it; `thermocal.schedule/v1`, what earlier releases wrote, which keeps
loading, exporting and passing `check`. JSON and YAML carry the same content.
"""

from __future__ import annotations

import json
import math
import re
from datetime import datetime
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from thermocal.errors import InputError
from thermocal.io.files import load_yaml
from thermocal.text import printable
from thermocal.config import Config, recorded_settings
from thermocal.records import (
    CalibrationDetails, Diagnostic, LossUnitCalibration, Measurements, Record, Schedule, ScheduleBase, ScheduleV2,
)
from thermocal.schedule.functions import (
    gamma_of, learning_rate, lr_expression, temperature, temperature_expression, total_steps,
)

FORMAT = "thermocal.schedule/v2"
FORMAT_V1 = "thermocal.schedule/v1"
FORMATS = ("json", "yaml")
MAX_FILE_BYTES = 8 << 20
MAX_DEPTH = 32
_NOT_BRACKETS = re.compile(r"[^\[\]{}]+")


class ModelInput(Record):
    path: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    format: str
    num_params: int = Field(ge=1)
    note: str | None = Field(default=None, description="how the checkpoint was read (unwrapped key, prefix, --arch)")
    arch: str | None = Field(default=None, description="--arch that built the module from a state dict")
    params: str | None = Field(default=None, description="--params: the regex restricting the probed parameters")
    unused_parameters: list[str] | None = Field(default=None, description="trainable parameters the loss does not depend on (left out)")


class DataInput(Record):
    path: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    files: list[str]
    total_samples: int = Field(ge=1)
    num_samples: int = Field(ge=1, description="examples kept after --max-samples")
    format: str | None = Field(default=None, description="pt, npz, npy, safetensors, csv or dataset")
    task: str | None = Field(default=None, description="supervised, or lm (targets are the inputs shifted by one)")


class Inputs(Record):
    model: ModelInput
    data: DataInput
    loss: str
    batch_size: int = Field(ge=1)
    max_samples: int | None = None
    device: str
    dtype: str
    seed: int
    processes: int | None = Field(default=None, ge=1, description="processes that shared the probe (torchrun)")
    hessian_samples: int | None = Field(default=None, ge=1, description="examples whose loss's Hessian was probed")
    threads: int | None = Field(default=None, ge=1, description="CPU threads torch used")


class Environment(Record):
    thermocal: str
    torch: str
    pyhessian: str | None = Field(default=None, description="pyhessian's version, when --engine pyhessian ran")
    python: str


class TablePoint(Record):
    step: int = Field(ge=0)
    lr: float
    temperature: float


class _File(Record):
    """What every version of the file holds; the versions narrow `format`, `schedule` and `calibration`."""

    format: str
    created_at: str = Field(description="ISO 8601 date and time with its UTC offset")
    inputs: Inputs
    measurements: Measurements
    calibration: CalibrationDetails | LossUnitCalibration
    schedule: ScheduleBase
    diagnostics: list[Diagnostic]
    table: list[TablePoint]
    environment: Environment
    timings: dict[str, float] = Field(default_factory=dict, description="seconds per probe phase")

    @field_validator("created_at")
    @classmethod
    def _iso_datetime(cls, value: str) -> str:
        try:
            stamp = datetime.fromisoformat(value)
        except ValueError as exc:
            raise ValueError(f"{value[:40]!r} is not an ISO 8601 date and time") from exc
        if stamp.tzinfo is None:
            raise ValueError(f"{value!r} has no UTC offset")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "_File":
        s = self.schedule
        if s.kind == "exponential":
            if s.tau is None or s.steps is None:
                raise ValueError("an exponential schedule needs tau and steps")
            if not math.isclose(s.gamma, gamma_of(s.tau, s.lr_law), rel_tol=1e-12):
                timescale = "tau" if s.lr_law == "linear" else "(2*tau)"
                raise ValueError(f"gamma {s.gamma} is not exp(-1/{timescale}) for tau = {s.tau}")
            if not s.T0 > s.Tf:
                raise ValueError(f"an exponential schedule needs T0 > Tf, got T0 = {s.T0}, Tf = {s.Tf}")
        elif s.tau is not None or s.gamma != 1.0:
            raise ValueError(f"a {s.kind} schedule has no tau and gamma = 1")
        if s.kind in ("linear", "cosine"):
            if s.steps is None or not s.T0 > s.Tf or s.lr_law != "linear":
                raise ValueError(f"a {s.kind} schedule needs steps, T0 > Tf and lr_law linear")
        if s.lr_expression != lr_expression(s.kind, s.warmup_steps, s.min_lr, s.lr_law):
            raise ValueError(f"lr_expression {s.lr_expression!r} does not match the schedule's kind, warmup_steps, "
                             "min_lr and lr_law")
        if s.temperature_expression != temperature_expression(s.kind, s.warmup_steps):
            raise ValueError(f"temperature_expression {s.temperature_expression!r} does not match the schedule")
        if s.min_lr >= s.eta0:
            raise ValueError(f"min_lr {s.min_lr} must be below eta0 {s.eta0}")
        return self


class ScheduleFileV1(_File):
    """A file of the first release: the seed's literal rules, lr ∝ √T, lambda_min always resolved."""

    format: Literal["thermocal.schedule/v1"]
    calibration: CalibrationDetails
    schedule: Schedule

    @model_validator(mode="after")
    def _v1(self) -> "ScheduleFileV1":
        if self.schedule.lr_law != "sqrt":
            raise ValueError("a v1 schedule has lr_law sqrt")
        if self.measurements.hessian.lambda_min is None:
            raise ValueError("a v1 file has lambda_min")
        return self


class ScheduleFileV2(_File):
    """The current file: the settings that made it, and the rule set's own calibration record."""

    format: Literal["thermocal.schedule/v2"] = FORMAT
    schedule: ScheduleV2
    settings: Config

    @field_validator("settings", mode="before")
    @classmethod
    def _as_recorded(cls, value: Any) -> Any:
        return recorded_settings(value) if isinstance(value, dict) else value

    @model_validator(mode="after")
    def _v2(self) -> "ScheduleFileV2":
        wanted = LossUnitCalibration if self.schedule.rules.rule_set == "loss-units" else CalibrationDetails
        if not isinstance(self.calibration, wanted):
            raise ValueError(f"the {self.schedule.rules.rule_set} rules keep a {wanted.__name__} calibration record")
        if self.settings.rules != self.schedule.rules.rule_set:
            raise ValueError(f"settings.rules {self.settings.rules!r} is not the schedule's {self.schedule.rules.rule_set!r}")
        return self


ScheduleFile = ScheduleFileV1 | ScheduleFileV2
_MODELS: dict[str, type[ScheduleFileV1] | type[ScheduleFileV2]] = {FORMAT_V1: ScheduleFileV1, FORMAT: ScheduleFileV2}


def sample_table(schedule: ScheduleBase, points: int = 11) -> list[TablePoint]:
    """(step, lr, temperature) at `points` evenly spaced steps from 0 to warmup + budget."""
    end = total_steps(schedule)
    if end is None:
        return []
    lr, temp = learning_rate(schedule), temperature(schedule)
    steps = sorted({round(i * end / (points - 1)) for i in range(points)})
    return [TablePoint(step=t, lr=lr(t), temperature=temp(t)) for t in steps]


def schema_text() -> str:
    """The JSON Schema of the current file (v2), as committed under schemas/."""
    return json.dumps(ScheduleFileV2.model_json_schema(), indent=2, sort_keys=True) + "\n"


# Fields v2 gained after its first files were written; each is left out when it holds nothing.
LATER_OPTIONAL = (("measurements", "cost"), ("settings", "probe_budget"), ("calibration", "trace_shift"),
                  ("calibration", "T0_stderr_total"), ("calibration", "step_factor"), ("calibration", "stability_constant"))
# Settings v2 gained later, left out at the value that earlier files were made with (absent reads as it).
LATER_DEFAULTS = (("settings", "d_eff", "hessian"), ("settings", "hessian_trace", False), ("settings", "optimizer", "sgd"), ("settings", "shape", "exponential"),
                  ("settings", "epsilon_from", "sample"),
                  ("settings", "momentum", 0.9), ("settings", "nesterov", False), ("settings", "beta1", 0.9),
                  ("settings", "beta2", 0.999), ("settings", "adam_eps", 1e-8), ("settings", "weight_decay", None))


class _PlainDumper(yaml.SafeDumper):
    """Writes a value seen twice out again, never as an alias (load_yaml refuses aliases)."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def dumps(document: ScheduleFile, fmt: str) -> str:
    """The file as JSON or YAML. A v1 document is written with the fields it was read with only
    (the records' newer optional fields are not v1's), so exporting it gives back a v1 file."""
    data = document.model_dump(mode="json", exclude_unset=isinstance(document, ScheduleFileV1))
    for section, name in LATER_OPTIONAL:  # absent means None: a file written before them exports as it was
        if isinstance(data.get(section), dict) and data[section].get(name, 0) is None:
            del data[section][name]
    for section, name, value in LATER_DEFAULTS:
        if isinstance(data.get(section), dict) and name in data[section] and data[section][name] == value:
            del data[section][name]
    if fmt == "json":
        return json.dumps(data, indent=2) + "\n"
    if fmt == "yaml":
        return yaml.dump(data, Dumper=_PlainDumper, sort_keys=False, allow_unicode=True)
    raise InputError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")


def loads(text: str, source: str) -> ScheduleFile:
    """Parse and validate a schedule file (JSON, or YAML when it is not JSON); errors name `source`.

    A file is a few kilobytes (with a density and blocks, tens): one over MAX_FILE_BYTES, or
    nested deeper than MAX_DEPTH, is refused before it is parsed in full."""
    if len(text) > MAX_FILE_BYTES:
        raise InputError(f"is {len(text) / 2**20:.0f} MB; a schedule file is a few KB (at most "
                         f"{MAX_FILE_BYTES // 2**20} MB is read)", source)
    if _depth(text) > MAX_DEPTH:
        raise InputError(f"is nested more than {MAX_DEPTH} levels deep; a schedule file is not", source)
    try:
        data: Any = json.loads(text) if text.lstrip().startswith("{") else load_yaml(text)
    except (ValueError, yaml.YAMLError, RecursionError) as exc:
        raise InputError(f"is neither JSON nor YAML ({printable(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)})",
                         source) from exc
    if not isinstance(data, dict):
        raise InputError("does not hold a thermocal schedule (expected a mapping at the top)", source)
    shown = data.get("format")
    model = _MODELS.get(shown) if isinstance(shown, str) else None
    if model is None:
        expected = f"{FORMAT!r} (or {FORMAT_V1!r})"
        raise InputError(f"has format {printable(str(shown))[:60]!r}; expected {expected}"
                         if shown is not None else f"has no format field; expected {expected}", source)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "(top)"
        raise InputError(f"is not a valid {shown} file: {printable(where)}: {printable(first['msg'])}", source) from exc


def _depth(text: str) -> int:
    """The deepest nesting of brackets and braces (a bound for JSON and flow-style YAML; block
    YAML nests by indentation, which a 1000-level file cannot hide in MAX_FILE_BYTES cheaply)."""
    depth = deepest = 0
    for char in _NOT_BRACKETS.sub("", text):
        if char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest
