"""Frozen records the stages pass to each other; each is also a section of the schedule file.

Field meanings and formulas: docs/method.md (the section is named in each docstring).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from thermocal.text import printable, strings, unprintable


# No training run takes 10^12 optimizer steps; a larger count is a mistake, and could not be tabulated.
MAX_STEPS = 10**12
# Integers beyond this are refused in any record: they could not be converted to a float.
MAX_INT = 2**63


class Record(BaseModel):
    """Immutable, closed to unknown keys, never holding NaN or Inf nor an integer of 2^63 or more,
    and no string in it holds a control character (a terminal escape or a newline: every string
    may be echoed or written into a snippet)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    @field_validator("*", mode="after")
    @classmethod
    def _bounded(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= MAX_INT:
            raise ValueError(f"an integer of {len(str(abs(value)))} digits is out of range (at most 2^63)")
        for text in strings(value):
            if unprintable(text):
                raise ValueError(f"holds a control character: {printable(text)[:80]!r}")
        return value


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
    loss_stderr: float | None = Field(default=None, ge=0, description="standard error of the sample's mean loss: the "
                                      "standard deviation of the K minibatch losses over √K ([N7])")


class NoiseCurvature(Record):
    """The curvature along the mean gradient and along its noise (method.md [N8]): ∇LᵀH∇L and
    tr(H·Σ_B), the two quantities of McCandlish et al.'s optimal step, from one Hessian-vector
    product with the mean gradient and one with each of `minibatches` deviations g_k − ḡ."""

    grad_h_grad: float
    trace_h_sigma: float
    trace_h_sigma_stderr: float = Field(ge=0)
    minibatches: int = Field(ge=2)
    hvps: int = Field(ge=0)


class GaussNewtonTrace(Record):
    """tr(G), the generalized Gauss-Newton matrix's trace on the Hessian's examples (method.md
    [H15]), measured with `--d-eff gauss-newton`: `stderr` is its draws' error, `sampling_stderr`
    its spread over samples of as many examples (the draws' included)."""

    trace: float
    stderr: float = Field(ge=0)
    sampling_stderr: float | None = Field(default=None, ge=0)
    examples: int = Field(ge=1)
    draws: int = Field(ge=2)


# The acceptance tests of method.md [H1] and [H3], shared by the estimators and by `check`:
# an eigenvalue is resolved to rtol of max(|λ|, EIG_FLOOR_FRACTION·|λ_dom|) ...
EIG_FLOOR_FRACTION = 1e-3
# ... and a trace after at least MIN_TRACE_PROBES probes, to rtol of max(|trace|, scale).
MIN_TRACE_PROBES = 10


def _absent(value: object) -> bool:
    """Fields added after v2's first files are left out of a dump when None, so that an older
    file exports exactly as it was read."""
    return value is None


Estimator = Literal[
    "lanczos", "lanczos_block", "power", "shifted_power", "pyhessian_power",
    "hutchinson", "pyhessian_hutchinson", "hutchpp_lanczos", "hutchpp_sketch", "hutchpp_block_lanczos",
]


class EstimateRecord(Record):
    """How one curvature estimate was obtained (method.md §2): `method` in words for people,
    `estimator` and `restarts` as data for programs."""

    method: str
    # Added after v2's first files (_absent).
    estimator: Estimator | None = Field(default=None, exclude_if=_absent,
                                        description="which estimator ran (method.md §2)")
    restarts: int | None = Field(default=None, ge=0, exclude_if=_absent,
                                 description="Lanczos: thick restarts within --lanczos-memory")
    hvps: int = Field(ge=0)
    iterations: int = Field(ge=0)
    residual: float | None = Field(default=None, ge=0)
    tolerance: float = Field(ge=0)
    converged: bool
    scale: float | None = Field(default=None, ge=0, description="trace: the spectral scale its error is judged against ([H3])")

    def eigenvalue_met(self, value: float, dominant: float) -> bool:
        """[H1] from the record's own numbers: residual ≤ tolerance·max(|value|, 10⁻³·|λ_dom|)."""
        return self.converged and self.residual is not None and \
            self.residual <= self.tolerance * max(abs(value), EIG_FLOOR_FRACTION * dominant)

    def trace_met(self, value: float, stderr: float, scale_bound: float) -> bool:
        """[H3] from the record's own numbers: at least MIN_TRACE_PROBES probes and
        stderr ≤ tolerance·max(|value|, scale). A file that does not record the scale is judged
        against `scale_bound`, which no scale exceeds (d·|λ_dom| ≥ tr|H| ≥ the quadrature estimate)."""
        scale = self.scale if self.scale is not None else scale_bound
        return self.converged and self.iterations >= MIN_TRACE_PROBES and stderr <= self.tolerance * max(abs(value), scale)


class SpectralDensity(Record):
    """Eigenvalue density by stochastic Lanczos quadrature, on a grid (method.md [H9])."""

    grid: list[float] = Field(min_length=2)
    density: list[float] = Field(min_length=2)
    sigma: float = Field(gt=0)
    probes: int = Field(ge=1)
    steps: int = Field(ge=1)
    hvps: int = Field(ge=0)

    @model_validator(mode="after")
    def _same_length(self) -> "SpectralDensity":
        if len(self.grid) != len(self.density):
            raise ValueError(f"grid has {len(self.grid)} points but density {len(self.density)}")
        return self


class BlockCurvature(Record):
    """lambda_max and trace of one diagonal block of the Hessian (method.md [H10])."""

    name: str
    parameters: list[str]
    num_params: int = Field(ge=1)
    lambda_max: float
    trace: float
    trace_stderr: float = Field(ge=0)
    details: dict[str, EstimateRecord]

    @model_validator(mode="after")
    def _estimates(self) -> "BlockCurvature":
        return _require(self, ("lambda_max", "trace"))


def _require(record: "BlockCurvature | HessianSpectrum", names: tuple[str, ...]) -> Any:
    missing = [name for name in names if name not in record.details]
    if missing:
        raise ValueError(f"details lacks the record of {', '.join(missing)}")
    return record


class HessianSpectrum(Record):
    """Extreme eigenvalues and trace of the Hessian of the mean loss over the sample (method.md §2)."""

    engine: str
    hvp_mode: str | None = None
    lambda_max: float
    lambda_min: float | None = Field(description="null when not resolved (calibration v2 does not need it)")
    # Added after v2's first files (_absent).
    lambda_max_stderr: float | None = Field(
        default=None, ge=0, exclude_if=_absent, description="sampling standard error of lambda_max: how "
        "far another sample of as many examples would move it, to first order (method.md [H13]); absent when not measured")
    sampling_groups: int | None = Field(default=None, ge=2, exclude_if=_absent,
                                        description="groups of examples behind lambda_max_stderr")
    # Added with calibration v3 (_absent): where the Hessian is a subsample of the probe's examples.
    lambda_max_heldout: float | None = Field(
        default=None, exclude_if=_absent, description="the Rayleigh quotient of lambda_max's Ritz vector on as many "
        "examples the Hessian did not see: below the whole sample's lambda_max in expectation, where lambda_max is "
        "above it (selection); calibration reads their midpoint and counts half their gap in its error (method.md [H16])")
    lambda_max_heldout_stderr: float | None = Field(default=None, ge=0, exclude_if=_absent,
                                                    description="its sampling standard error over groups")
    heldout_examples: int | None = Field(default=None, ge=1, exclude_if=_absent,
                                         description="the examples behind lambda_max_heldout")
    # Null where the calibration does not read it and --hessian-trace was not given ([H12]).
    trace: float | None = Field(description="null when not measured (d_eff from the Gauss-Newton trace does not read it)")
    trace_stderr: float | None = Field(ge=0)
    # Added after trace_stderr's first files (_absent).
    trace_sampling_stderr: float | None = Field(
        default=None, ge=0, exclude_if=_absent, description="sampling standard error of the trace over examples: how "
        "far another sample of as many examples would move it (method.md [H14]); absent when not measured")
    trace_sampling_groups: int | None = Field(default=None, ge=2, exclude_if=_absent,
                                              description="groups of examples behind trace_sampling_stderr")
    hvps: int = Field(ge=0)
    converged: bool
    details: dict[str, EstimateRecord]
    top_eigenvalues: list[float] | None = None
    density: SpectralDensity | None = None
    blocks: list[BlockCurvature] | None = None

    @model_validator(mode="after")
    def _estimates(self) -> "HessianSpectrum":
        if (self.trace is None) != (self.trace_stderr is None):
            raise ValueError("trace and trace_stderr are measured together (both null, or neither)")
        return _require(self, ("lambda_max",) + (("trace",) if self.trace is not None else ())
                        + (("lambda_min",) if self.lambda_min is not None else ()))

    def debiased(self) -> "HessianSpectrum":
        """The spectrum calibration reads ([H16]): where a held-out Rayleigh quotient was measured,
        lambda_max is the midpoint of it and the subsample's Ritz value, with its standard error
        √((se² + se_heldout²)/4 + (gap/2)²); unchanged otherwise."""
        if self.lambda_max_heldout is None:
            return self
        gap = self.lambda_max - self.lambda_max_heldout
        se = ((self.lambda_max_stderr or 0.0) ** 2 + (self.lambda_max_heldout_stderr or 0.0) ** 2) / 4.0
        return self.model_copy(update={"lambda_max": (self.lambda_max + self.lambda_max_heldout) / 2.0,
                                       "lambda_max_stderr": (se + gap * gap / 4.0) ** 0.5})

    @property
    def dominant(self) -> float:
        """|λ_dom|: the largest magnitude measured (λ_max alone when λ_min was not resolved)."""
        return max(abs(self.lambda_max), abs(self.lambda_min or 0.0))

    def unconverged(self, num_params: int) -> list[str]:
        """Names of the estimates that missed their tolerance, blocks' as `block.estimate`: judged
        on each record's own residual or standard error ([H1], [H3]), so a `converged` flag set
        by hand does not pass. `num_params` is d (it bounds the trace's scale, see trace_met)."""
        dominant = self.dominant
        eigenvalues = {"lambda_max": self.lambda_max, "lambda_min": self.lambda_min}
        names = _missed(self.details, eigenvalues, self.trace, self.trace_stderr, num_params * dominant, dominant)
        for block in self.blocks or []:
            names += [f"{block.name}.{name}" for name in _missed(block.details, {"lambda_max": block.lambda_max}, block.trace,
                                                                 block.trace_stderr, block.num_params * dominant, dominant)]
        return names


def _missed(details: dict[str, EstimateRecord], eigenvalues: dict[str, float | None], trace: float | None,
            trace_stderr: float | None, scale_bound: float, dominant: float) -> list[str]:
    """The estimates in `details` whose record says unconverged, or whose own residual or standard
    error misses its tolerance (an eigenvalue of None was not resolved and is judged by its flag)."""
    met = {name: details[name].eigenvalue_met(value, dominant) for name, value in eigenvalues.items()
           if value is not None and name in details}
    if trace is not None and trace_stderr is not None:
        met["trace"] = details["trace"].trace_met(trace, trace_stderr, scale_bound)
    return [name for name, rec in details.items() if not (rec.converged and met.get(name, True))]


class PreconditionedCurvature(Record):
    """Adam's metric at this θ (method.md [O3]): the preconditioner P = √v + eps, v the fixed point of
    Adam's second moment (the mean squared minibatch gradient at the training batch size, per
    coordinate), and what calibration v2 reads, measured in φ = P^(1/2)·θ: the curvature
    H̃ = P^(-1/2)·H·P^(-1/2) (whose eigenvalues are those of P⁻¹H) and the noise tr(P⁻¹Σ_B)."""

    eps: float = Field(gt=0, description="Adam's eps (--adam-eps)")
    preconditioner_min: float = Field(gt=0, description="the smallest P_i")
    preconditioner_median: float = Field(gt=0)
    preconditioner_max: float = Field(gt=0)
    lambda_max: float = Field(description="the largest eigenvalue of P⁻¹H")
    lambda_min: float = Field(description="the smallest (most negative) eigenvalue of P⁻¹H")
    trace: float = Field(description="tr(P⁻¹H), by Hutch++ on H̃ with its Lanczos basis")
    trace_stderr: float = Field(ge=0)
    grad_var: float = Field(ge=0, description="tr(P⁻¹Σ_B): the minibatch noise in Adam's metric")
    grad_var_stderr: float = Field(ge=0, description="its standard error over minibatches (P held fixed)")
    full_grad_sq: float = Field(ge=0, description="∇LᵀP⁻¹∇L, unbiased for the noise as full_grad_sq [N4]")
    grad_sq_mean: float = Field(ge=0, description="the mean of g_kᵀP⁻¹g_k over the minibatches")
    hvps: int = Field(ge=0)
    details: dict[str, EstimateRecord]

    @model_validator(mode="after")
    def _estimates(self) -> "PreconditionedCurvature":
        missing = [name for name in ("lambda_max", "lambda_min", "trace") if name not in self.details]
        if missing:
            raise ValueError(f"details lacks the record of {', '.join(missing)}")
        return self

    def unconverged(self, num_params: int) -> list[str]:
        """As HessianSpectrum.unconverged, on P⁻¹H's estimates ([H1], [H3])."""
        dominant = max(abs(self.lambda_max), abs(self.lambda_min))
        return _missed(self.details, {"lambda_max": self.lambda_max, "lambda_min": self.lambda_min}, self.trace,
                       self.trace_stderr, num_params * dominant, dominant)


class ProbeCost(Record):
    """What the probe spent, in example-gradients (a forward and a backward of one example), and
    against the training run it schedules (method.md [S9]): the gradient noise's examples, plus
    EXAMPLE_GRADIENTS_PER_HVP per Hessian example and product."""

    example_gradients: int = Field(ge=0)
    gradient_examples: int = Field(ge=0, description="examples of the minibatch gradients (K·B)")
    hessian_examples: int = Field(ge=0)
    hvps: int = Field(ge=0, description="every Hessian-vector product: spectrum, sampling error, noise curvature")
    planned_hvps: int = Field(ge=0, description="the products the budget planned for (the default route's minimum)")
    training_example_gradients: int | None = Field(default=None, ge=1, description="steps × batch size (with --steps)")
    fraction: float | None = Field(default=None, ge=0, description="example_gradients / training_example_gradients")
    budget: float | None = Field(default=None, gt=0, description="--probe-budget where it applied (with --steps, "
                                 "lambda_min not resolved)")
    # Added with --d-eff gauss-newton (_absent): its two vector-Jacobian products per example and draw.
    gauss_newton_example_gradients: int | None = Field(default=None, ge=0, exclude_if=_absent,
                                                       description="example-gradients of tr(G) (method.md [H15])")


class Measurements(Record):
    gradient_noise: GradientNoise
    hessian: HessianSpectrum
    noise_curvature: NoiseCurvature | None = None
    cost: ProbeCost | None = None
    gauss_newton: GaussNewtonTrace | None = Field(default=None, exclude_if=_absent)  # with --d-eff gauss-newton
    preconditioned: PreconditionedCurvature | None = Field(default=None, exclude_if=_absent)  # with --optimizer adamw

    def unconverged(self, num_params: int) -> list[str]:
        """Every curvature estimate that missed its tolerance, as `hessian.name` or `preconditioned.name`."""
        return [f"hessian.{name}" for name in self.hessian.unconverged(num_params)] + \
            [f"preconditioned.{name}" for name in (self.preconditioned.unconverged(num_params)
                                                   if self.preconditioned is not None else [])]


class Rules(Record):
    """Which rule produced each constant, and which bound was active (method.md §3)."""

    tf_rule: Literal["abs", "floor", "explicit"]
    tf_floor: float = Field(gt=0)
    tau_rule: Literal["budget", "relaxation", "flat"]
    steps_source: Literal["budget", "implied", "none"]
    eta0_bound: Literal["balance", "stability"]
    stability_fraction: float = Field(gt=0)
    epsilon: float = Field(default=0.01, ge=0, description="the loss tolerance of the §7 guarantee diagnostic")


class LiteralRules(Rules):
    """The seed's formulas read literally (method.md §3, [C1]–[C8]), in a v2 file."""

    rule_set: Literal["literal"]


class LossUnitRules(Record):
    """Which rules of calibration v2 produced the schedule (method.md [C9]–[C14])."""

    rule_set: Literal["loss-units"]
    eta0_rule: Literal["stability", "optimal", "min"]
    eta0_bound: Literal["stability", "optimal"]
    stability_fraction: float = Field(gt=0)
    epsilon_source: Literal["user", "loss_stderr", "run_loss_stderr"]
    epsilon_stderrs: float | None = Field(default=None, gt=0, description="ε in standard errors of the mean loss, when measured")
    epsilon: float = Field(gt=0, description="the loss tolerance ε, in loss units")
    probability: float = Field(gt=0, lt=1, description="Tf is where P(L − L* < ε) reaches this")
    tau_rule: Literal["budget", "flat"]
    flat_reason: Literal["noise_floor_below_target", "no_budget"] | None = None


class ScheduleBase(Record):
    """T(t) = T0·exp(−t/tau), t in optimizer steps after an optional linear warmup of
    `warmup_steps`, with eta(t) = eta0·exp(−t/tau) (`lr_law: linear`, eta ∝ T) or
    eta0·exp(−t/(2·tau)) (`sqrt`, the seed's eta ∝ √T), never below `min_lr` (method.md [C5],
    [C8], [C9]). `steps` is the cooling budget; training lasts warmup_steps + steps.
    A `constant` schedule has no tau and gamma = 1. `linear` and `cosine` (calibration v3's paths,
    method.md [C16]; lr ∝ T) take T from T0 to Tf over `steps` along that path; they have no tau
    and gamma = 1 either.
    """

    kind: Literal["exponential", "constant", "linear", "cosine"]
    eta0: float = Field(gt=0)
    T0: float = Field(gt=0)
    Tf: float = Field(gt=0)
    tau: float | None = Field(default=None, gt=0)
    gamma: float = Field(gt=0, le=1)
    steps: int | None = Field(default=None, ge=1, le=MAX_STEPS)
    warmup_steps: int = Field(default=0, ge=0, le=MAX_STEPS)
    min_lr: float = Field(default=0.0, ge=0)
    lr_law: Literal["linear", "sqrt"] = "sqrt"
    lr_expression: str
    temperature_expression: str


class Schedule(ScheduleBase):
    """A v1 file's schedule: the literal rules, the seed's lr ∝ √T."""

    rules: Rules


class ScheduleV2(ScheduleBase):
    rules: LiteralRules | LossUnitRules = Field(discriminator="rule_set")


class CalibrationDetails(Record):
    """The intermediate values behind the schedule, kept so that each can be checked (method.md §3)."""

    T0_stderr: float = Field(ge=0)
    lambda_min_raw: float
    tau_budget: float | None = None
    tau_relaxation: float = Field(gt=0)
    implied_steps: int = Field(ge=0)
    eta_balance: float = Field(gt=0)
    eta_stable: float | None = Field(default=None, gt=0)


class LossUnitCalibration(Record):
    """The intermediate values of calibration v2, kept so that each can be checked (method.md [C9]–[C15])."""

    d_eff: float = Field(gt=0, description="tr(H)/lambda_max, at least 1: the stiff modes that hold the noise")
    grad_var: float = Field(ge=0, description="tr Σ_B at the training batch size [N3]")
    noise_floor: float = Field(ge=0, description="E(eta0) = eta0·tr Σ_B / 4: the excess loss SGD keeps at eta0")
    noise_floor_end: float = Field(ge=0, description="E at the schedule's last learning rate")
    T0_stderr: float = Field(ge=0, description="grad_var's share of T0's standard error (T0·grad_var_stderr/grad_var)")
    T0_stderr_total: float | None = Field(default=None, ge=0, description=(
        "T0's first-order standard error from every measured input that has one: grad_var, the trace's probes and, "
        "where eta0 depends on them, lambda_max's sampling error, full_grad_sq and tr(HΣ_B); taken as independent "
        "(method.md [C10]). Null in files written before it was recorded"))
    eta_stable: float | None = Field(default=None, gt=0)
    eta_optimal: float | None = Field(default=None, gt=0)
    probability_start: float = Field(ge=0, le=1, description="P(L − L* < ε) at T0, by the Gibbs law [G1]")
    probability_end: float = Field(ge=0, le=1, description="P(L − L* < ε) at the last temperature")
    tau_budget: float | None = None
    step_factor: float | None = Field(default=None, gt=0, exclude_if=_absent, description=(
        "the optimizer's effective step per unit lr on slow modes: 1/(1 − momentum) for momentum SGD, 1 for AdamW "
        "(method.md [O2], [O3]); absent for plain SGD (1)"))
    stability_constant: float | None = Field(default=None, gt=0, exclude_if=_absent, description=(
        "c in the optimizer's stability limit lr < c/lambda_max (in its metric): 2(1 + β) for heavy ball, "
        "2(1 + β)/(1 + 2β) for Nesterov, 2(1 + β1)/(1 − β1) for AdamW; absent for plain SGD (2)"))
    trace_shift: float | None = Field(default=None, ge=0, description=(
        "largest relative change of lr(S)/eta0 when the trace moves by one standard error of its probes "
        "(trace_stderr), everything else held "
        "(method.md [C15]); null without --steps, and in files written before it was recorded"))


class Diagnostic(Record):
    """One of the seed's conditions as a named check (method.md §4, [D9]–[D13])."""

    name: str
    section: str
    value: float | None
    threshold: float | None
    status: Literal["pass", "warn", "fail", "info"]
    rule: str
    advice: str | None = Field(default=None, description="what the user can change when it warns")
