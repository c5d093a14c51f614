"""Every setting of a probe and its default, once (README "Commands", method.md).

`Config` is what the CLI's flags, a `--config` file (TOML, YAML or JSON) and `THERMOCAL_*`
environment variables fill in, what `thermocal.probe()` takes from Python, and what a
`thermocal.schedule/v2` file records whole under `settings`: a file says exactly how to make it
again (`thermocal probe MODEL DATA --config that-file.json` re-runs it). Precedence: flags, then
environment variables, then the file, then these defaults. Plain data: no torch here.

A file or a variable may come from someone else (a colleague's result, a CI artifact), so the
settings that run code or lower a safety check (CODE_SETTINGS) are taken from the command line
or the Python API only; from a file or a variable they are refused unless the command line says
--allow-code-from-config, and then `resolve_config` names them so that the CLI says what will run.
"""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, Field, ValidationError, field_validator, model_validator

from thermocal.errors import InputError
from thermocal.records import Record
from thermocal.text import printable

ENV_PREFIX = "THERMOCAL_"
# What `thermocal export --format env` writes: a prefix no setting's variable has (tested), so that
# exporting a schedule into the environment never changes a later probe.
EXPORT_ENV_PREFIX = "THERMOCAL_SCHEDULE_"
# The variables earlier releases exported that are not settings: one of them in the environment
# means THERMOCAL_STEPS, _WARMUP_STEPS, _MIN_LR or _TF there may be an export's, not a setting.
OLD_EXPORT_MARKERS = ("THERMOCAL_ETA0", "THERMOCAL_GAMMA", "THERMOCAL_TOTAL_STEPS", "THERMOCAL_KIND")
# Settings that run code or lower a safety check (README "Security"), with what each does.
CODE_SETTINGS = {"arch": "builds the model by calling that Python code",
                 "dataset": "loads the data by calling that Python code",
                 "loss": "imports or runs that Python code as the loss",
                 "trust_checkpoint": "unpickles the checkpoint, which runs any code it names"}
# The knobs of the native engine's accuracy: a tolerance on the schedule, not on each eigenvalue
# (method.md [H12]): lambda_max to 1% moves eta0 by at most 1%.
SCHEDULE_EIG_RTOL = 1e-2
# Settings that only the seed's literal rules read.
LITERAL_ONLY = frozenset({"tf_rule", "tf", "tf_floor", "flat_if_cold"})
# The hyperparameters each optimizer alone has.
OPTIMIZER_ONLY = {"momentum": ("momentum", "nesterov"), "adamw": ("beta1", "beta2", "adam_eps")}
ADAMW_WEIGHT_DECAY = 0.01  # torch.optim.AdamW's default


class Config(Record):
    """A probe's settings. Groups: what is probed, the training it is for, the calibration, the
    engine. Output options (--out, --quiet, ...) are not settings: they change no number."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False, validate_default=True)

    # what is probed
    arch: str | None = Field(None, description="module:callable or file.py:callable building the model for a state dict")
    trust_checkpoint: bool = Field(False, description="allow unpickling a whole pickled nn.Module (runs code from the file)")
    params: str | None = Field(None, description="probe only the trainable parameters whose name matches this regex")
    inputs_key: str | None = Field(None, description="key (or .npy stem) of the inputs (default: inputs or x; lm: tokens, input_ids)")
    targets_key: str | None = Field(None, description="key (or .npy stem) of the targets (default: targets or y)")
    target_column: str | None = Field(None, description="CSV: the target column (default: target, label or y)")
    task: Literal["supervised", "lm"] = Field("supervised", description="lm: token ids; targets are the inputs shifted by one")
    dataset: str | None = Field(None, description="module:callable returning (inputs, targets), a dict, or a Dataset")
    loss: str = Field("auto", description="auto, cross_entropy, nll, mse, l1, huber, bce, bce_with_logits, lm, or module:callable")
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0, description="label smoothing of cross_entropy and lm")
    max_samples: int | None = Field(None, ge=2, description="probe a seeded random subset of this many examples")
    hessian_samples: int | None = Field(None, ge=1, description="probe the Hessian of the first M of the shuffled "
                                        "examples (default: all of them; with --steps, --probe-budget may take fewer; "
                                        "method.md [S8])")
    seed: int = Field(0, ge=0, lt=2**63, description="seeds the shuffle, subsampling and every random probe")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto picks cuda when available")
    threads: int | None = Field(None, ge=1, description="CPU threads for torch (default: OMP_NUM_THREADS, else the idle CPUs)")

    # the training the schedule is for
    batch_size: int = Field(32, ge=1, description="the batch size you will train with (the temperature depends on it)")
    steps: int | None = Field(None, ge=1, le=10**12, description="training budget in optimizer steps")
    warmup_steps: int = Field(0, ge=0, le=10**12, description="linear warmup to eta0 over this many steps before cooling")
    min_lr: float = Field(0.0, ge=0.0, description="never schedule a learning rate below this floor")
    probe_budget: float | None = Field(0.25, gt=0, description="with --steps: fewer Hessian examples, so that the probe "
                                       "costs at most this fraction of the training run's example-gradients (steps × "
                                       "batch size; not when lambda_min is resolved; method.md [S9]; null in --config: "
                                       "no bound)")

    # the optimizer the schedule is for (method.md [O1]-[O4]); torch.optim's defaults but momentum's
    optimizer: Literal["sgd", "momentum", "adamw"] = Field("sgd", description="the optimizer you will train with: plain "
                                                           "SGD, momentum SGD (heavy ball) or AdamW; the schedule is "
                                                           "calibrated in its metric and every export builds it")
    momentum: float = Field(0.9, gt=0, lt=1, description="--optimizer momentum: the momentum beta")
    nesterov: bool = Field(False, description="--optimizer momentum: Nesterov's momentum (torch's nesterov=True)")
    beta1: float = Field(0.9, ge=0, lt=1, description="--optimizer adamw: the first moment's beta")
    beta2: float = Field(0.999, gt=0, lt=1, description="--optimizer adamw: the second moment's beta")
    adam_eps: float = Field(1e-8, gt=0, description="--optimizer adamw: eps added to the root of the second moment")
    weight_decay: float | None = Field(None, ge=0, description="decoupled weight decay (default: 0.01 for adamw as "
                                       "torch.optim.AdamW, 0 for sgd and momentum)")

    # the calibration
    rules: Literal["loss-units", "literal"] = Field("loss-units", description="loss-units: calibration v2 (temperatures in "
                                                    "loss units); literal: the seed's formulas read literally (v1)")
    epsilon: float | None = Field(None, gt=0, description="loss tolerance: cool until P(L - L* < epsilon) >= probability "
                                  "(default: epsilon_stderrs standard errors of the sample's mean loss)")
    epsilon_stderrs: float = Field(16.0, gt=0, description="without --epsilon, the tolerance is this many standard errors "
                                   "of the sample's mean loss (chosen on the tuning tasks, method.md [C12])")
    epsilon_from: Literal["sample", "run"] = Field("sample", description="without --epsilon: the standard error of the "
                                                  "probe sample's mean loss (sample), or of the mean loss over the "
                                                  "training run's steps × batch size examples (run, with --steps; "
                                                  "method.md [C12])")
    probability: float = Field(0.9, gt=0, lt=1, description="the probability of the §7 statement that sets Tf")
    eta0_rule: Literal["stability", "optimal", "min"] = Field("stability", description="eta0: stability_fraction*2/lambda_max, "
                                                              "the noisy-quadratic optimum, or the smaller")
    stability_fraction: float = Field(0.25, gt=0, description="eta0 <= stability_fraction * c / lambda_max, c the optimizer's "
                                      "stability constant (2 for plain SGD; method.md [O1]-[O3])")
    shape: Literal["exponential", "linear", "cosine"] = Field("exponential", description="the path T(t) takes from T0 "
                                                                "to Tf over --steps: the seed's exponential, or linear "
                                                                "or cosine (method.md [C16])")
    lr_law: Literal["linear", "sqrt"] | None = Field(None, description="lr ∝ T (loss-units default) or lr ∝ sqrt(T) "
                                                     "(the seed's, literal default)")
    d_eff: Literal["hessian", "gauss-newton"] = Field("gauss-newton", description="d_eff = trace/lambda_max from the "
                                                       "Gauss-Newton matrix's trace, which does not cancel at "
                                                       "initialisation (method.md [H15]), or from the Hessian's (the "
                                                       "literal rules', and a file's that records no d_eff)")
    hessian_trace: bool = Field(False, description="also measure the Hessian's trace (Hutch++) where the calibration does "
                                "not read it (it does with --d-eff hessian and the literal rules)")
    tf_rule: Literal["abs", "floor"] = Field("abs", description="literal: Tf = max(|lambda_min|, tf_floor*lambda_max) or "
                                             "max(lambda_min, tf_floor*lambda_max)")
    tf: float | None = Field(None, gt=0, description="literal: set Tf explicitly")
    tf_floor: float = Field(1e-3, gt=0, description="literal: Tf is at least tf_floor * lambda_max")
    flat_if_cold: bool = Field(False, description="literal: when T0 <= Tf, write a constant schedule instead of failing")

    # the engine
    engine: Literal["native", "pyhessian"] = Field("native", description="thermocal's engine, or pyhessian's power iteration")
    method: Literal["lanczos", "power"] | None = Field(None, description="eigenvalue solver (default: native lanczos, "
                                                       "pyhessian power)")
    trace_method: Literal["hutch++", "hutchinson"] | None = Field(None, description="trace estimator (default: native "
                                                                  "hutch++, pyhessian hutchinson)")
    hvp: Literal["auto", "rev-rev", "fwd-rev"] = Field("auto", description="how Hessian-vector products are taken")
    vmap_probes: bool = Field(False, description="batch the trace's probes through vmap")
    dtype: Literal["model", "float32", "float64"] = Field("model", description="probe in the model's dtype or cast")
    eig_rtol: float | None = Field(None, gt=0, description="eigenvalue residual tolerance (default: 1e-2 for lambda_max "
                                   "alone, 1e-3 when lambda_min is resolved; pyhessian 1e-2)")
    max_iter: int | None = Field(None, ge=1, description="iterations of each eigen-solver run (default: lanczos 1000, "
                                 "power 20000)")
    trace_rtol: float = Field(0.035, gt=0, description="trace standard error target, relative to its scale (0.035 moves "
                              "lr(t)/eta0 by under 1%, method.md [H12])")
    max_probes: int = Field(1000, ge=10, description="probe budget of the trace")
    lambda_min: bool = Field(False, description="resolve lambda_min to full accuracy (always for the literal rules)")
    micro_batch: int = Field(1024, ge=1, description="at most this many examples per forward/backward in "
                             "Hessian-vector products")
    graph_memory: float = Field(1.0, ge=0, description="GiB the gradient graphs of several micro-batches may keep")
    lanczos_memory: float = Field(4.0, ge=0, description="GiB the Lanczos basis may hold before it restarts")
    top_k: int = Field(1, ge=1, description="also report the top-k eigenvalues")
    density: bool = Field(False, description="spectral density by stochastic Lanczos quadrature")
    per_layer: bool = Field(False, description="lambda_max and trace per layer")
    blocks: tuple[str, ...] = Field((), description="regexes over parameter names defining blocks")

    @field_validator("blocks", mode="before")
    @classmethod
    def _tuple(cls, value: Any) -> Any:
        """A list, or a comma-separated string (from a THERMOCAL_BLOCKS variable)."""
        if isinstance(value, str):
            return tuple(part for part in value.split(",") if part)
        return tuple(value) if isinstance(value, list) else value

    @model_validator(mode="before")
    @classmethod
    def _d_eff_by_rules(cls, data: Any) -> Any:
        """The literal rules have no d_eff of their own: they record the Hessian's trace (what they
        read for their diagnostics) unless --d-eff is given, which they refuse."""
        if isinstance(data, dict) and data.get("rules") == "literal" and data.get("d_eff") is None:
            return {**data, "d_eff": "hessian"}
        if isinstance(data, dict) and data.get("optimizer") == "adamw" and data.get("d_eff") is None:
            return {**data, "d_eff": "hessian"}  # AdamW's d_eff reads tr(P⁻¹H) ([O3])
        return data

    @model_validator(mode="after")
    def _consistent(self) -> "Config":
        if self.engine == "pyhessian":
            asked = {"--method lanczos": self.method == "lanczos", "--density": self.density, "--top-k": self.top_k > 1,
                     "--per-layer/--blocks": self.per_layer or bool(self.blocks), "--hvp fwd-rev": self.hvp == "fwd-rev",
                     "--trace-method hutch++": self.trace_method == "hutch++"}
            for what, on in asked.items():
                if on:
                    raise ValueError(f"{what} needs --engine native (pyhessian offers power iteration and Hutchinson only)")
        if self.solver == "power" and self.top_k > 1:
            raise ValueError("--top-k needs --method lanczos")
        if self.rules == "literal" and self.d_eff != "hessian":
            raise ValueError("--d-eff belongs to the loss-units rules (the literal rules have no d_eff)")
        for optimizer, names in OPTIMIZER_ONLY.items():
            given = [name for name in names if getattr(self, name) != type(self).model_fields[name].default]
            if given and self.optimizer != optimizer:
                flags = ", ".join("--" + name.replace("_", "-") for name in given)
                raise ValueError(f"{flags} {'belongs' if len(given) == 1 else 'belong'} to --optimizer {optimizer}")
        if self.optimizer == "adamw" and (self.d_eff != "hessian" or self.engine != "native"):
            raise ValueError("--optimizer adamw reads d_eff off the Hessian in Adam's metric, measured by the native "
                             "engine (--d-eff gauss-newton and --engine pyhessian do not measure it)")
        if self.shape != "exponential" and (self.rules == "literal" or self.law != "linear"):
            raise ValueError(f"--shape {self.shape} needs the loss-units rules and lr ∝ T (--lr-law linear)")
        if self.optimizer != "sgd" and self.rules == "literal":
            raise ValueError(f"--optimizer {self.optimizer} needs the loss-units rules (the literal rules read plain SGD)")
        literal_only = sorted(name for name in LITERAL_ONLY if getattr(self, name) != type(self).model_fields[name].default)
        if self.rules == "loss-units" and literal_only:
            flags = ", ".join("--" + name.replace("_", "-") for name in literal_only)
            verb = "belongs" if len(literal_only) == 1 else "belong"
            raise ValueError(f"{flags} {verb} to the literal rules: add --rules literal (the loss-units calibration sets "
                             "Tf from --epsilon and --probability)")
        return self

    # --------------------------------------------------------------- resolved engine defaults
    @property
    def solver(self) -> Literal["lanczos", "power"]:
        return self.method or ("lanczos" if self.engine == "native" else "power")

    @property
    def resolves_lambda_min(self) -> bool:
        """lambda_min is resolved (both ends of Lanczos, or the shifted power iteration) when asked,
        for the literal rules (Tf rests on it), and by power iteration, which finds it anyway."""
        return self.lambda_min or self.rules == "literal" or self.solver == "power"

    @property
    def measures_trace(self) -> bool:
        """The Hessian's trace is measured where something reads it: d_eff from the Hessian [C10]
        (not for AdamW, whose d_eff reads tr(P⁻¹H), [O3]), the literal rules' diagnostics, the
        power routes' shift [H4], and --hessian-trace ([H12])."""
        return self.hessian_trace or (self.d_eff == "hessian" and self.optimizer != "adamw") or self.solver == "power"

    @property
    def budget(self) -> float | None:
        """--probe-budget where it applies: with --steps, on the route whose products it plans.
        Resolving lambda_min (--lambda-min, the literal rules, power iteration) asks for full
        accuracy at the far end, which a cut sample would trade away, so it keeps [S8]'s sample."""
        return self.probe_budget if self.steps is not None and not self.resolves_lambda_min else None

    @property
    def eigen_rtol(self) -> float:
        if self.eig_rtol is not None:
            return self.eig_rtol
        if self.engine == "pyhessian":
            return 1e-2
        return 1e-3 if self.resolves_lambda_min else SCHEDULE_EIG_RTOL

    @property
    def iterations(self) -> int:
        return self.max_iter if self.max_iter is not None else (1000 if self.solver == "lanczos" else 20000)

    @property
    def trace_estimator(self) -> Literal["hutch++", "hutchinson"]:
        return self.trace_method or ("hutch++" if self.engine == "native" else "hutchinson")

    @property
    def decay(self) -> float:
        """Decoupled weight decay: the setting, else torch.optim's default for the optimizer."""
        if self.weight_decay is not None:
            return self.weight_decay
        return ADAMW_WEIGHT_DECAY if self.optimizer == "adamw" else 0.0

    @property
    def law(self) -> Literal["linear", "sqrt"]:
        """lr ∝ T for the loss-units rules (T ∝ eta, method.md [C9]), lr ∝ √T for the literal ones (seed §5.3)."""
        return self.lr_law or ("linear" if self.rules == "loss-units" else "sqrt")


def runs_code(name: str, value: Any) -> bool:
    """Whether setting `name` at `value` (as a file or a variable gives it) runs code or lowers a
    safety check: --arch and --dataset whenever set, a module:callable or file.py:callable --loss,
    --trust-checkpoint unless it is off."""
    if name == "loss":
        return isinstance(value, str) and ":" in value
    if name == "trust_checkpoint":
        return value is not None and value is not False and str(value).strip().lower() not in ("0", "false", "no", "off", "")
    return name in CODE_SETTINGS and value is not None


@dataclass(frozen=True)
class CodeSetting:
    """A code-running setting taken from a settings file or a variable, and where it came from."""

    name: str
    value: Any
    origin: str  # the file's path, or the variable's name

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def __str__(self) -> str:
        shown = "" if self.name == "trust_checkpoint" else f" {printable(str(self.value))[:120]!r}"
        return f"{self.name}{shown} from {printable(self.origin)} ({CODE_SETTINGS[self.name]})"


@dataclass(frozen=True)
class ResolvedConfig:
    """The settings, and the code-running ones among them that came from a file or a variable
    (empty unless --allow-code-from-config let them through)."""

    config: "Config"
    code_from_config: tuple[CodeSetting, ...]


def read_config_file(path: Path) -> dict[str, Any]:
    """Settings from a TOML, YAML or JSON file: a mapping of setting names, or a thermocal.schedule/v2
    file, whose `settings` are taken (so a result can be re-run from its own file)."""
    from thermocal.io.files import read_text

    text = read_text(path)
    try:
        if path.suffix.lower() == ".toml":
            data: Any = tomllib.loads(text)
        elif text.lstrip().startswith("{"):
            data = json.loads(text)
        else:
            from thermocal.io.files import load_yaml

            data = load_yaml(text)
    except Exception as exc:  # tomllib, json and yaml each raise their own
        raise InputError(f"cannot be read as TOML, JSON or YAML ({printable(str(exc).splitlines()[0] if str(exc) else '')})",
                         path) from exc
    if isinstance(data, dict) and isinstance(data.get("settings"), dict) and "format" in data:
        data = recorded_settings(data["settings"])
    if not isinstance(data, dict):
        raise InputError("does not hold a mapping of settings", path)
    return data


def recorded_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """A schedule file's `settings` as what made it: a file written before --probe-budget existed
    (or with it unset, which is not written) probed without a bound, and one without `d_eff`
    read the Hessian's trace (written only when it is not, file.py LATER_DEFAULTS)."""
    return {"probe_budget": None, "d_eff": "hessian"} | settings


def from_environment(environ: dict[str, str] | None = None) -> dict[str, str]:
    """`THERMOCAL_BATCH_SIZE=64` → {"batch_size": "64"} for every setting of Config (values are
    parsed by the model). THERMOCAL_DEBUG is not a setting and is left alone, and so are the
    THERMOCAL_SCHEDULE_* lines `export --format env` writes. An environment that holds an older
    release's export (THERMOCAL_ETA0, ...) is refused: its THERMOCAL_STEPS, _WARMUP_STEPS, _MIN_LR
    and _TF would be read as settings nobody gave."""
    environ = os.environ if environ is None else environ
    names = set(Config.model_fields)
    old_export = [key for key in OLD_EXPORT_MARKERS if key in environ]
    out = {}
    for key, value in environ.items():
        if key.startswith(ENV_PREFIX) and not key.startswith(EXPORT_ENV_PREFIX):
            name = key[len(ENV_PREFIX):].lower()
            if name in names:
                if old_export:
                    raise InputError(f"{key} is set beside {old_export[0]}, which only an older `thermocal export "
                                     "--format env` writes: it may be the export's, not a setting; unset the exported "
                                     "THERMOCAL_* variables (exports now write THERMOCAL_SCHEDULE_*)")
                out[name] = value
    return out


def make_config(flags: dict[str, Any], file: Path | None = None, environ: dict[str, str] | None = None, *,
                allow_code_from_config: bool = False) -> Config:
    """Config from the flags given (non-default only), then THERMOCAL_* variables, then `file`."""
    return resolve_config(flags, file, environ, allow_code_from_config=allow_code_from_config).config


def resolve_config(flags: dict[str, Any], file: Path | None = None, environ: dict[str, str] | None = None, *,
                   allow_code_from_config: bool = False) -> ResolvedConfig:
    """make_config, and the code-running settings that came from `file` or a variable: refused
    (one line naming each, its origin and the flag to pass instead) unless allowed."""
    from_file = read_config_file(file) if file is not None else {}
    from_env = from_environment(environ)
    borrowed = [CodeSetting(name, value, ENV_PREFIX + name.upper() if name in from_env else str(file))
                for name, value in (from_file | from_env).items()
                if name in CODE_SETTINGS and name not in flags and runs_code(name, value)]
    if borrowed and not allow_code_from_config:
        raise InputError("settings that run code are taken from the command line only: "
                         + "; ".join(str(setting) for setting in borrowed)
                         + f". Pass {', '.join(dict.fromkeys(s.flag for s in borrowed))} yourself, or add "
                         "--allow-code-from-config to run it")
    values: dict[str, Any] = {**from_file, **from_env, **flags}
    try:
        return ResolvedConfig(Config.model_validate(values), tuple(borrowed))
    except ValidationError as exc:
        first = exc.errors()[0]
        message = printable(first["msg"].removeprefix("Value error, "))
        if first["loc"]:
            message = f"--{str(first['loc'][0]).replace('_', '-')}: {message}"
        raise InputError(message) from exc
