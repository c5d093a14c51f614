"""Calibration v2: temperatures in loss units (method.md [C9]–[C14], [D9]–[D13]; design/CALIBRATION.md).

SGD at lr eta with minibatch-gradient covariance Σ_B keeps, near a minimum, an excess loss
E(eta) = eta·tr(Σ_B)/4 (the stationary solution of ηHC + ηCH − η²HCH = η²Σ_B, to first order
in eta·lambda). Spread as a Gibbs density over the d_eff = tr(H)/λ_max stiff modes, that is a
temperature T(eta) = eta·tr(Σ_B)/(2·d_eff), in loss units, proportional to eta/B. So:

- eta0: stability_fraction·2/λ_max, or the noisy-quadratic optimum |∇L|²/(∇LᵀH∇L + tr(HΣ_B))
  (McCandlish et al. 2018), or the smaller;
- T0 = T(eta0);
- Tf: the temperature at which the Gibbs law gives P(L − L* < ε) = p (a Gamma(d_eff/2)
  quantile), ε the user's loss tolerance or, by default, `epsilon_stderrs` standard errors of
  the sample's mean loss (the sample's resolution of the loss, scaled by a constant chosen on
  the tuning tasks);
- tau = S/ln(T0/Tf), and eta(t) = eta0·T(t)/T0 = eta0·exp(−t/tau), since T ∝ eta.
A schedule is flat, never refused, when there is nothing to cool: no budget, or a noise floor at
eta0 already below the target (T0 ≤ Tf). Every quantity here is unchanged when the parameters
are rescaled (θ = cφ) and scales with the loss (× k), with eta0 scaling as SGD requires
(1/c², 1/k): tau and the decay depth are invariant. Plain float math: no torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from thermocal.calibrate.gibbs import gamma_cdf, gamma_quantile
from thermocal.config import Config
from thermocal.errors import DegenerateError
from thermocal.records import (
    Diagnostic, GradientNoise, HessianSpectrum, LossUnitCalibration, LossUnitRules, NoiseCurvature, ScheduleV2,
)
from thermocal.schedule.functions import (
    cooling_phase, cooling_rate, gamma_of, learning_rate, lr_expression, lr_timescale, minimal_work,
    temperature_expression,
)

EPSILON_SOURCES = {"user": "given", "loss_stderr": "from the loss standard error",
                   "run_loss_stderr": "from the training run's loss standard error"}
ADIABATIC_MAX = 1.0  # the noise relaxes within one cooling time at the last learning rate
ADIABATIC_POINTS = 1000  # where the linear and cosine paths' margin is evaluated ([C16])


@dataclass(frozen=True)
class LossUnitResult:
    schedule: ScheduleV2
    details: LossUnitCalibration


def stability_constant(config: Config) -> float:
    """c in the optimizer's stability limit lr·(lambda_max + kappa·wd) < c on a quadratic, lambda_max in
    its metric ([O1]-[O3]): 2 for SGD, 2(1 + β) for heavy-ball momentum, 2(1 + β)/(1 + 2β) for
    Nesterov's, 2(1 + β1)/(1 − β1) for Adam with its preconditioner frozen (Cohen et al. 2022)."""
    if config.optimizer == "momentum":
        beta = config.momentum
        return 2.0 * (1.0 + beta) / (1.0 + 2.0 * beta) if config.nesterov else 2.0 * (1.0 + beta)
    if config.optimizer == "adamw":
        return 2.0 * (1.0 + config.beta1) / (1.0 - config.beta1)
    return 2.0


def decay_curvature(config: Config) -> float:
    """kappa·wd: the curvature weight decay adds to every mode at the stability limit ([O4]): torch's
    SGD adds wd·θ to the gradient (kappa = 1); AdamW's decoupled decay shrinks θ outside the
    momentum, which at the limit counts (1 + β1)/(1 − β1) times."""
    if config.optimizer == "adamw":
        return config.decay * (1.0 + config.beta1) / (1.0 - config.beta1)
    return config.decay


def step_factor(config: Config) -> float:
    """The effective step per unit lr on slow modes ([O2]): 1/(1 − β) for momentum SGD (heavy ball
    or Nesterov), 1 for SGD and for Adam (its first moment is an average, not a sum)."""
    return 1.0 / (1.0 - config.momentum) if config.optimizer == "momentum" else 1.0


def effective_modes(spectrum: HessianSpectrum) -> float:
    """d_eff = tr(H)/λ_max, at least 1 (the top mode itself): how many modes are as stiff as the top one."""
    return max(1.0, spectrum.trace / spectrum.lambda_max)


def optimal_step(noise: GradientNoise, curvature: NoiseCurvature | None) -> float | None:
    """|∇L|²/(∇LᵀH∇L + tr(HΣ_B)), when the mean gradient stands out of the noise and the curvature
    along both is positive; None otherwise."""
    if curvature is None or noise.full_grad_sq <= 0:
        return None
    denominator = curvature.grad_h_grad + curvature.trace_h_sigma
    return noise.full_grad_sq / denominator if denominator > 0 else None


def noise_curvature(curvature: NoiseCurvature | None, noise: GradientNoise, spectrum: HessianSpectrum) -> float:
    """λ_noise = tr(HΣ_B)/tr(Σ_B): the curvature the noise lives in, which sets how fast its
    energy relaxes; λ_max (the fastest) when not measured or not positive."""
    if curvature is None or noise.grad_var <= 0 or curvature.trace_h_sigma <= 0:
        return spectrum.lambda_max
    return min(spectrum.lambda_max, curvature.trace_h_sigma / noise.grad_var)


def calibrate(noise: GradientNoise, spectrum: HessianSpectrum, curvature: NoiseCurvature | None,
              config: Config) -> LossUnitResult:
    """The v2 schedule and its record, with how far the trace's standard error moves its last lr ([C15])."""
    made = _calibrate(noise, spectrum, curvature, config)
    shift = trace_shift(made, noise, spectrum, curvature, config)
    return LossUnitResult(made.schedule, made.details.model_copy(update={"trace_shift": shift}))


def _end_ratio(result: LossUnitResult) -> float:
    """lr(S)/eta0: how far the schedule cools over its budget (1 when flat)."""
    schedule = result.schedule
    return learning_rate(cooling_phase(schedule))(schedule.steps) / schedule.eta0


def trace_shift(made: LossUnitResult, noise: GradientNoise, spectrum: HessianSpectrum, curvature: NoiseCurvature | None,
                config: Config) -> float | None:
    """The largest relative change of lr(S)/eta0 when the trace moves by one standard error of its
    probes (`trace_stderr`, what --trace-rtol sets; not its sampling error over examples) either
    way, everything else held ([C15]); None without a budget or a finite standard error.
    lr(t)/eta0 = (lr(S)/eta0)^(t/S) on the cooling phase, so no step moves more than the last."""
    stderr = spectrum.trace_stderr
    if config.steps is None or stderr is None or not math.isfinite(stderr):
        return None
    base = _end_ratio(made)
    moved = (_end_ratio(_calibrate(noise, spectrum.model_copy(update={"trace": spectrum.trace + sign * stderr}),
                                   curvature, config)) for sign in (-1.0, 1.0))
    return max(abs(ratio / base - 1.0) for ratio in moved)


def _eta0(noise: GradientNoise, spectrum: HessianSpectrum, curvature: NoiseCurvature | None,
          config: Config) -> tuple[float, str, float, float | None]:
    """eta0 by --eta0-rule [C11], which bound was active, and both bounds."""
    eta_stable = config.stability_fraction * stability_constant(config) / (spectrum.lambda_max + decay_curvature(config))
    optimal = optimal_step(noise, curvature)
    eta_optimal = optimal / step_factor(config) if optimal is not None else None  # the optimum is an effective step
    if config.eta0_rule == "stability" or eta_optimal is None:
        return eta_stable, "stability", eta_stable, eta_optimal
    if config.eta0_rule == "optimal" or eta_optimal < eta_stable:
        return eta_optimal, "optimal", eta_stable, eta_optimal
    return eta_stable, "stability", eta_stable, eta_optimal


def temperature_at(eta: float, noise: GradientNoise, d_eff: float, step: float = 1.0) -> float:
    """T(eta) = step·eta·tr Σ_B/(2·d_eff), in loss units [C10], step the optimizer's effective step per
    unit lr [O2] (Σ_B in its metric)."""
    return step * eta * noise.grad_var / (2.0 * d_eff)


def _t0(noise: GradientNoise, spectrum: HessianSpectrum, curvature: NoiseCurvature | None, config: Config) -> float:
    """T0 = T(eta0) [C10], from the measurements alone (what t0_stderr_total differentiates)."""
    return temperature_at(_eta0(noise, spectrum, curvature, config)[0], noise, effective_modes(spectrum),
                          step_factor(config))


# The measured inputs of T0 that carry a standard error: (record, value field, standard-error field).
T0_INPUTS = (("noise", "grad_var", "grad_var_stderr"), ("spectrum", "trace", "trace_stderr"),
             ("spectrum", "trace", "trace_sampling_stderr"), ("spectrum", "lambda_max", "lambda_max_stderr"),
             ("noise", "full_grad_sq", "full_grad_sq_stderr"), ("curvature", "trace_h_sigma", "trace_h_sigma_stderr"))


def t0_stderr_total(noise: GradientNoise, spectrum: HessianSpectrum, curvature: NoiseCurvature | None,
                    config: Config) -> float | None:
    """T0's first-order standard error from every measured input that has one ([C10]): the sum in
    quadrature of ∂T0/∂x·se(x) over T0_INPUTS, the inputs taken as independent, each derivative a
    central difference of T0 itself (so it follows whichever bound of [C11] is active and d_eff's
    floor at 1; inputs T0 does not depend on add nothing). None when an input's standard error is
    not finite."""
    records = {"noise": noise, "spectrum": spectrum, "curvature": curvature}
    total = 0.0
    for owner, field, error in T0_INPUTS:
        record = records[owner]
        se = None if record is None else getattr(record, error)
        if se is None or se == 0.0:
            continue
        if not math.isfinite(se):
            return None
        x = getattr(record, field)
        h = 1e-6 * max(abs(x), se)
        moved = [_t0(**{**records, owner: record.model_copy(update={field: x + sign * h})}, config=config)
                 for sign in (1.0, -1.0)]
        total += ((moved[0] - moved[1]) / (2.0 * h) * se) ** 2
    return math.sqrt(total)


def _calibrate(noise: GradientNoise, spectrum: HessianSpectrum, curvature: NoiseCurvature | None,
               config: Config) -> LossUnitResult:
    if not spectrum.lambda_max > 0:
        raise DegenerateError(f"lambda_max = {spectrum.lambda_max:.4g}: the loss curves down in every probed direction, "
                              "so no learning rate is stable (the model sits near a maximum)")
    if not noise.grad_var > 0:
        raise DegenerateError("the minibatch gradients do not vary (tr Σ_B = 0), so there is no noise to cool")
    d_eff = effective_modes(spectrum)
    eta0, bound, eta_stable, eta_optimal = _eta0(noise, spectrum, curvature, config)
    if config.min_lr >= eta0:
        raise DegenerateError(f"--min-lr {config.min_lr:g} is not below eta0 = {eta0:.4g}: the schedule would be flat")

    step = step_factor(config)
    t0 = temperature_at(eta0, noise, d_eff, step)
    t0_stderr = t0 * noise.grad_var_stderr / noise.grad_var
    if config.epsilon is not None:
        epsilon, source, stderrs = config.epsilon, "user", None
    elif noise.loss_stderr and config.epsilon_from == "run" and config.steps is not None:
        # the run's own resolution of its loss: the per-example spread (sd of the minibatch losses times √B)
        # over √(S·B) examples, i.e. loss_stderr·√(K/S); the probe sample's size drops out [C12]
        epsilon = config.epsilon_stderrs * noise.loss_stderr * math.sqrt(noise.num_batches / config.steps)
        source, stderrs = "run_loss_stderr", config.epsilon_stderrs
    elif noise.loss_stderr:
        epsilon, source, stderrs = config.epsilon_stderrs * noise.loss_stderr, "loss_stderr", config.epsilon_stderrs
    else:
        raise DegenerateError("the minibatch losses do not vary, so the loss's resolution is zero; pass --epsilon "
                              "(the loss tolerance to cool to)")
    k = d_eff / 2.0
    tf = epsilon / gamma_quantile(k, config.probability)
    law = config.law

    if config.steps is None or t0 <= tf:
        tau = tau_budget = None
        kind, gamma, reason = "constant", 1.0, ("no_budget" if config.steps is None else "noise_floor_below_target")
        t_end = t0
    else:
        tau = tau_budget = config.steps / math.log(t0 / tf)
        kind, gamma, reason = "exponential", gamma_of(tau, law), None
        if config.shape != "exponential":  # the same ends along another path [C16]: no tau, no per-step factor
            kind, tau, gamma = config.shape, None, 1.0
        t_end = tf
    rules = LossUnitRules(
        rule_set="loss-units", eta0_rule=config.eta0_rule, eta0_bound=bound, stability_fraction=config.stability_fraction,
        epsilon_source=source, epsilon_stderrs=stderrs, epsilon=epsilon, probability=config.probability,
        tau_rule="budget" if tau is not None else "flat", flat_reason=reason,
    )
    schedule = ScheduleV2(
        kind=kind, eta0=eta0, T0=t0, Tf=tf, tau=tau, gamma=gamma, steps=config.steps,
        warmup_steps=config.warmup_steps, min_lr=config.min_lr, lr_law=law,
        lr_expression=lr_expression(kind, config.warmup_steps, config.min_lr, law),
        temperature_expression=temperature_expression(kind, config.warmup_steps), rules=rules,
    )
    eta_end = learning_rate(cooling_phase(schedule))(config.steps) if config.steps is not None else eta0
    details = LossUnitCalibration(
        d_eff=d_eff, grad_var=noise.grad_var, noise_floor=step * eta0 * noise.grad_var / 4.0,
        noise_floor_end=step * eta_end * noise.grad_var / 4.0, T0_stderr=t0_stderr,
        T0_stderr_total=t0_stderr_total(noise, spectrum, curvature, config), eta_stable=eta_stable,
        eta_optimal=eta_optimal, probability_start=gamma_cdf(k, epsilon / t0), probability_end=gamma_cdf(k, epsilon / t_end),
        tau_budget=tau_budget,
        step_factor=None if config.optimizer == "sgd" else step,
        stability_constant=None if config.optimizer == "sgd" else stability_constant(config),
    )
    return LossUnitResult(schedule=schedule, details=details)


def diagnose(schedule: ScheduleV2, details: LossUnitCalibration, noise: GradientNoise, spectrum: HessianSpectrum,
             curvature: NoiseCurvature | None, config: Config) -> list[Diagnostic]:
    """The seed's conditions in loss units ([D9]–[D13]), in the optimizer's metric; each warning
    says what to change."""
    step = step_factor(config)
    rules = schedule.rules
    assert isinstance(rules, LossUnitRules)
    eta = learning_rate(cooling_phase(schedule))
    end = schedule.steps
    out: list[Diagnostic] = []

    out.append(Diagnostic(
        name="noise_floor", section="§5.1", value=details.noise_floor / rules.epsilon, threshold=None, status="info",
        rule="E(eta0)/epsilon: the excess loss SGD keeps at eta0, eta0·tr(Σ_B)/4, against the tolerance",
    ))
    met = details.probability_end >= rules.probability - 1e-9
    if met:
        advice = None
    elif rules.flat_reason == "no_budget":
        advice = "pass --steps S (the training budget) to cool to the tolerance; without one the schedule stays at eta0"
    else:
        advice = "raise --steps, or raise --epsilon (the loss tolerance)"
    out.append(Diagnostic(
        name="guarantee", section="§7", value=details.probability_end, threshold=rules.probability,
        status="pass" if met else "warn", advice=advice,
        rule=f"P(L - L* < epsilon) at the last temperature, Gibbs law over d_eff = {details.d_eff:.3g} modes "
             f"(epsilon = {rules.epsilon:.4g}, {EPSILON_SOURCES[rules.epsilon_source]})",
    ))
    margin, needed = None, None
    if schedule.tau is not None and end is not None:
        lam = noise_curvature(curvature, noise, spectrum)
        timescale = lr_timescale(schedule)
        relaxation = 1.0 / (2.0 * step * eta(end) * lam)  # steps for the noise energy to relax at the last lr
        margin = relaxation / timescale
        ratio = schedule.eta0 / eta(end)
        needed = math.ceil(ratio * math.log(ratio) / (2.0 * step * schedule.eta0 * lam))
    elif schedule.kind in ("linear", "cosine") and end is not None:
        # the largest relaxation time over cooling time along the path ([C16]); both scale with the
        # budget at a fixed path, so the budget that brings it to 1 is S·margin
        lam = noise_curvature(curvature, noise, spectrum)
        rate = cooling_rate(schedule)
        margin = max(rate(t) / (2.0 * step * eta(t) * lam) for t in (end * i / ADIABATIC_POINTS for i in range(ADIABATIC_POINTS)))
        needed = math.ceil(end * margin)
    out.append(Diagnostic(
        name="adiabatic", section="§4.1", value=margin, threshold=ADIABATIC_MAX,
        status="info" if margin is None else ("pass" if margin <= ADIABATIC_MAX else "warn"),
        advice=None if margin is None or margin <= ADIABATIC_MAX else
        f"raise --steps to at least {needed} so that the noise relaxes as fast as the lr cools, or raise --epsilon",
        rule="relaxation time of the noise at the last lr, 1/(2·eta(S)·lambda_noise), over the lr's cooling time "
             "(pass at <= 1)" if schedule.kind not in ("linear", "cosine") else
             "the largest relaxation time of the noise, 1/(2·eta(t)·lambda_noise), over the lr's cooling time "
             "1/|d ln eta/dt| along the path (pass at <= 1)",
    ))
    stability = schedule.eta0 * (spectrum.lambda_max + decay_curvature(config)) / stability_constant(config)
    if config.optimizer == "sgd":
        limit, rule = "gradient descent's limit 2/lambda_max", "eta0·lambda_max/2: gradient descent is stable below 1"
    else:
        limit = f"{config.optimizer}'s limit c/lambda_max (c = {stability_constant(config):.4g})"
        rule = (f"eta0·(lambda_max + kappa·wd)/c, lambda_max in {config.optimizer}'s metric: {config.optimizer} is "
                "stable below 1 on a quadratic")
    out.append(Diagnostic(
        name="stability", section="§4.2", value=stability, threshold=1.0,
        status="pass" if stability <= 1.0 else "warn",
        advice=None if stability <= 1.0 else f"eta0 is above {limit}: use --eta0-rule min",
        rule=rule,
    ))
    quench = 2.0 * noise.full_grad_sq / (step * schedule.eta0 * noise.grad_var)
    out.append(Diagnostic(
        name="regime_start", section="§3", value=quench, threshold=None, status="info",
        rule="2|grad L|²/(eta0·tr Σ_B): descent against noise per step at eta0; >> 1 quenches, ~1 anneals",
    ))
    out.append(Diagnostic(
        name="minimal_work", section="§4.2", value=minimal_work(schedule, noise.grad_sq_mean), threshold=None, status="info",
        rule="W = sum of eta(t)·grad_sq_mean over the budget (gradient statistics held at their probed values)",
    ))
    return out
