"""Frozen records the stages pass to each other; each is also a section of the schedule file.

Field meanings and formulas: docs/method.md (the section is named in each docstring).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Record(BaseModel):
    """Immutable, closed to unknown keys, and never holding NaN or Inf."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class GradientNoise(Record):
    """Statistics of K minibatch gradients at the training batch size B (method.md §1).

    Each `*_stderr` is the bootstrap standard error over minibatches; `grad_var_norm_cov` is
    the bootstrap covariance of the grad_var and grad_norm_mean estimates (used for T0's error).
    """

    batch_size: int = Field(ge=1)
    num_batches: int = Field(ge=2)
    samples_used: int = Field(ge=2)
    samples_dropped: int = Field(ge=0)
    loss: float
    grad_norm_mean: float = Field(ge=0)
    grad_norm_mean_stderr: float = Field(ge=0)
    grad_sq_mean: float = Field(ge=0)
    grad_sq_mean_stderr: float = Field(ge=0)
    grad_var: float = Field(ge=0)
    grad_var_stderr: float = Field(ge=0)
    full_grad_sq: float = Field(ge=0)
    full_grad_sq_stderr: float = Field(ge=0)
    noise_scale: float | None = Field(default=None, ge=0)
    noise_scale_stderr: float | None = Field(default=None, ge=0)
    grad_var_norm_cov: float
    bootstrap_resamples: int = Field(ge=0)


class EstimateRecord(Record):
    """How one curvature estimate was obtained (method.md §2)."""

    method: str
    hvps: int = Field(ge=0)
    iterations: int = Field(ge=0)
    residual: float | None = Field(default=None, ge=0)
    tolerance: float = Field(ge=0)
    converged: bool


class SpectralDensity(Record):
    """Eigenvalue density by stochastic Lanczos quadrature, on a grid (method.md [H9])."""

    grid: list[float]
    density: list[float]
    sigma: float = Field(gt=0)
    probes: int = Field(ge=1)
    steps: int = Field(ge=1)
    hvps: int = Field(ge=0)


class BlockCurvature(Record):
    """lambda_max and trace of one diagonal block of the Hessian (method.md [H10])."""

    name: str
    parameters: list[str]
    num_params: int = Field(ge=1)
    lambda_max: float
    trace: float
    trace_stderr: float = Field(ge=0)
    details: dict[str, EstimateRecord]


class HessianSpectrum(Record):
    """Extreme eigenvalues and trace of the Hessian of the mean loss over the sample (method.md §2)."""

    engine: str
    hvp_mode: str | None = None
    lambda_max: float
    lambda_min: float
    trace: float
    trace_stderr: float = Field(ge=0)
    hvps: int = Field(ge=0)
    converged: bool
    details: dict[str, EstimateRecord]
    top_eigenvalues: list[float] | None = None
    density: SpectralDensity | None = None
    blocks: list[BlockCurvature] | None = None

    def unconverged(self) -> list[str]:
        """Names of the estimates that missed their tolerance, blocks' as `block.estimate`."""
        names = [name for name, rec in self.details.items() if not rec.converged]
        for block in self.blocks or []:
            names += [f"{block.name}.{name}" for name, rec in block.details.items() if not rec.converged]
        return names


class Measurements(Record):
    gradient_noise: GradientNoise
    hessian: HessianSpectrum


class Rules(Record):
    """Which rule produced each constant, and which bound was active (method.md §3)."""

    tf_rule: Literal["abs", "floor", "explicit"]
    tf_floor: float = Field(gt=0)
    tau_rule: Literal["budget", "relaxation", "flat"]
    steps_source: Literal["budget", "implied", "none"]
    eta0_bound: Literal["balance", "stability"]
    stability_fraction: float = Field(gt=0)
    epsilon: float = Field(default=0.01, ge=0, description="the loss tolerance of the §7 guarantee diagnostic")


class Schedule(Record):
    """T(t) = T0·exp(−t/tau), eta(t) = eta0·exp(−t/(2·tau)), t in optimizer steps (method.md §3),
    after an optional linear warmup of `warmup_steps` and never below `min_lr` ([C8]).
    `steps` is the cooling budget; training lasts warmup_steps + steps.

    A `constant` schedule (asked for with --flat-if-cold) has no tau and gamma = 1.
    """

    kind: Literal["exponential", "constant"]
    eta0: float = Field(gt=0)
    T0: float = Field(gt=0)
    Tf: float = Field(gt=0)
    tau: float | None = Field(default=None, gt=0)
    gamma: float = Field(gt=0, le=1)
    steps: int | None = Field(default=None, ge=1)
    warmup_steps: int = Field(default=0, ge=0)
    min_lr: float = Field(default=0.0, ge=0)
    lr_expression: str
    temperature_expression: str
    rules: Rules


class CalibrationDetails(Record):
    """The intermediate values behind the schedule, kept so that each can be checked (method.md §3)."""

    T0_stderr: float = Field(ge=0)
    lambda_min_raw: float
    tau_budget: float | None = None
    tau_relaxation: float = Field(gt=0)
    implied_steps: int = Field(ge=0)
    eta_balance: float = Field(gt=0)
    eta_stable: float | None = Field(default=None, gt=0)


class Diagnostic(Record):
    """One of the seed's conditions as a named check (method.md §4)."""

    name: str
    section: str
    value: float | None
    threshold: float | None
    status: Literal["pass", "warn", "fail", "info"]
    rule: str
