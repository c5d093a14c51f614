"""`thermocal check`: is a schedule file sound enough to train with? (method.md §6, [K1]–[K4])

v2 files are re-derived with their own `settings`; v1 files with the literal rules they name.

[K1] the file validates (format, types, cross-field rules);
[K2] the schedule and calibration re-derived from the file's own measurements and rules equal
     the file's (a hand-edited eta0 is caught), and so do the recomputed diagnostics; a field
     v2 gained later (file.LATER_OPTIONAL) is compared only where the file has it;
[K3] every curvature estimate met its tolerance, re-derived from the file's settings (v1: its
     release's defaults), never looser than that whatever `details` says; and no diagnostic has
     status fail (nor warn, with strict);
[K4] with a previous file: eta0, tau, T0 and Tf moved by at most max_drift (relative);
[K5] settings that would run code or unpickle when the file is re-run (`probe --config`) are
     reported (warn; fail with strict).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from thermocal.calibrate import CalibrationSettings, calibrate, literal, literal_diagnostics
from thermocal.config import CODE_SETTINGS, runs_code
from thermocal.errors import DegenerateError
from thermocal.records import CalibrationDetails, Diagnostic, EstimateRecord, LossUnitCalibration, Measurements, ScheduleBase
from thermocal.schedule.file import LATER_OPTIONAL, ScheduleFile, ScheduleFileV2
from thermocal.text import first_line, printable

REL_TOL = 1e-9
DRIFT_FIELDS = ("eta0", "tau", "T0", "Tf")
# What v1 files were probed to (the first release's --eig-rtol and --trace-rtol defaults; v1 files
# do not record their settings).
V1_EIG_RTOL, V1_TRACE_RTOL = 1e-3, 0.02


@dataclass(frozen=True)
class Finding:
    check: str
    status: Literal["pass", "warn", "fail"]
    message: str


@dataclass(frozen=True)
class Report:
    findings: list[Finding] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(f.status != "fail" for f in self.findings)


def _close(a: float | int | None, b: float | int | None) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=REL_TOL, abs_tol=1e-300)


def settings_of(doc: ScheduleFile) -> CalibrationSettings:
    """The literal calibration settings a v1 file was made with, read back from its rules."""
    s, r = doc.schedule, doc.schedule.rules
    return CalibrationSettings(
        steps=s.steps if r.steps_source == "budget" else None,
        tf_rule="floor" if r.tf_rule == "floor" else "abs",
        tf_value=s.Tf if r.tf_rule == "explicit" else None,
        tf_floor=r.tf_floor, stability_fraction=r.stability_fraction, flat_if_cold=s.kind == "constant",
        warmup_steps=s.warmup_steps, min_lr=s.min_lr, epsilon=r.epsilon,
    )


def recalibrate(doc: ScheduleFile) -> tuple[ScheduleBase, CalibrationDetails | LossUnitCalibration, list[Diagnostic]]:
    """The schedule, calibration record and diagnostics the file's measurements give under its settings."""
    m, d = doc.measurements, doc.inputs.model.num_params
    if isinstance(doc, ScheduleFileV2):
        again = calibrate(m, d, doc.settings)
        return again.schedule, again.details, again.diagnostics
    made = literal.calibrate(m.gradient_noise, m.hessian, d, settings_of(doc))
    return made.schedule, made.details, literal_diagnostics.diagnose(made.schedule, made.details, m.gradient_noise,
                                                                      m.hessian, epsilon=doc.schedule.rules.epsilon)


def rederive(doc: ScheduleFile) -> list[Finding]:
    """[K2]: recompute schedule, calibration and diagnostics from measurements and settings."""
    try:
        schedule, details, diagnostics = recalibrate(doc)
    except (DegenerateError, ArithmeticError, ValueError) as exc:  # ValueError: pydantic's, on values out of range
        return [Finding("rederive", "fail", f"the file's measurements give no schedule: {first_line(exc)}")]
    mismatches = []
    for section, ours, theirs in (("schedule", doc.schedule, schedule), ("calibration", doc.calibration, details)):
        if type(ours) is not type(theirs):
            mismatches.append(f"{section} is a {type(ours).__name__}, its measurements give a {type(theirs).__name__}")
            continue
        for name, value in ours.model_dump().items():
            if value is None and (section, name) in LATER_OPTIONAL:  # a file written before the field existed
                continue
            other = getattr(theirs, name)
            if isinstance(value, (int, float)) and not isinstance(value, bool) or value is None:
                if not _close(value, other):
                    mismatches.append(f"{section}.{name} = {value!r} in the file, {other!r} from its measurements")
            elif value != (other.model_dump() if hasattr(other, "model_dump") else other):
                mismatches.append(f"{section}.{name} differs from what its measurements give")
    theirs = {d.name: d for d in diagnostics}
    for d in doc.diagnostics:
        fresh = theirs.pop(d.name, None)
        if fresh is None or not _close(d.value, fresh.value) or d.threshold != fresh.threshold \
                or (d.status, d.section, d.rule, d.advice) != (fresh.status, fresh.section, fresh.rule, fresh.advice):
            mismatches.append(f"diagnostic {printable(d.name)} differs from its recomputation")
    mismatches += [f"diagnostic {name} is missing" for name in theirs]
    if mismatches:
        return [Finding("rederive", "fail", "; ".join(mismatches))]
    return [Finding("rederive", "pass", "schedule, calibration and diagnostics follow from the measurements")]


def remedy(dtype: str) -> str:
    """What to do about an estimate that missed its tolerance (said by probe's warning and by check).
    A half-precision model's products cannot resolve the residual test at all: more iterations
    do not help, probing in float32 does."""
    if dtype in ("bfloat16", "float16"):
        return (f"re-probe with --dtype float32: Hessian-vector products in {dtype} are too coarse for the "
                "residual test, and more iterations do not help")
    return ("re-probe with a larger --max-iter/--max-probes or a looser --eig-rtol/--trace-rtol; "
            "float32 models of ~100M parameters may need --eig-rtol 1e-2")


def tolerances(doc: ScheduleFile) -> tuple[float, float]:
    """(eigenvalue, trace) tolerances the file's settings gave the probe (v1: its release's defaults)."""
    if isinstance(doc, ScheduleFileV2):
        return doc.settings.eigen_rtol, doc.settings.trace_rtol
    return V1_EIG_RTOL, V1_TRACE_RTOL


def _rederived(details: dict[str, EstimateRecord], eig: float, trace: float, where: str,
               looser: list[str]) -> dict[str, EstimateRecord]:
    """The records, each judged at the tighter of its own tolerance and the settings' (listing in
    `looser` those that claimed a looser one)."""
    out = {}
    for name, rec in details.items():
        wanted = trace if name == "trace" else eig
        if rec.tolerance > wanted * (1 + REL_TOL):
            looser.append(f"{where}.{name}.tolerance = {rec.tolerance:g} where the settings give {wanted:g}")
        out[name] = rec.model_copy(update={"tolerance": min(rec.tolerance, wanted)})
    return out


def rederived_measurements(doc: ScheduleFile, looser: list[str]) -> Measurements:
    """The file's curvature records with every tolerance re-derived from its settings ([K3])."""
    eig, trace = tolerances(doc)
    m = doc.measurements
    hessian = m.hessian
    blocks = [block.model_copy(update={"details": _rederived(block.details, eig, trace, f"hessian.blocks.{block.name}",
                                                             looser)})
              for block in hessian.blocks or []]
    hessian = hessian.model_copy(update={"details": _rederived(hessian.details, eig, trace, "hessian.details", looser),
                                         "blocks": blocks if hessian.blocks is not None else None})
    pc = m.preconditioned
    if pc is not None:
        pc = pc.model_copy(update={"details": _rederived(pc.details, eig, trace, "preconditioned.details", looser)})
    return m.model_copy(update={"hessian": hessian, "preconditioned": pc})


def convergence(doc: ScheduleFile) -> list[Finding]:
    """[K3], first half: a schedule resting on an estimate that missed its tolerance is not sound.
    Convergence is re-derived from each record's residual or standard error, not read off its flag,
    against the tolerance the settings give, not the one the record claims."""
    looser: list[str] = []
    measurements = rederived_measurements(doc, looser)
    out = [Finding("tolerance", "fail", "; ".join(f"measurements.{what}" for what in looser))] if looser else []
    missed = measurements.unconverged(doc.inputs.model.num_params)
    if missed or not measurements.hessian.converged:
        return out + [Finding("convergence", "fail", "estimates missed their tolerance: " + (", ".join(missed) or "hessian")
                              + f" ({remedy(doc.inputs.dtype)})")]
    return out + [Finding("convergence", "pass", "every curvature estimate met its tolerance")]


def code_settings(doc: ScheduleFile, strict: bool) -> list[Finding]:
    """[K5]: settings that re-running the file would take as code to run (refused by `probe --config`
    without --allow-code-from-config)."""
    if not isinstance(doc, ScheduleFileV2):
        return []
    named = [f"{name} {getattr(doc.settings, name)!r}" if name != "trust_checkpoint" else name
             for name in CODE_SETTINGS if runs_code(name, getattr(doc.settings, name))]
    if not named:
        return []
    return [Finding("settings", "fail" if strict else "warn",
                    f"re-running this file would run code: {', '.join(named)} (`probe --config` refuses them "
                    "without --allow-code-from-config)")]


def diagnostics_status(doc: ScheduleFile, strict: bool) -> list[Finding]:
    """[K3], second half."""
    out = []
    for d in doc.diagnostics:
        value = "none" if d.value is None else f"{d.value:.4g}"
        message = f"{d.name} ({d.section}) = {value}: {d.rule}" + (f"; {d.advice}" if d.advice else "")
        if d.status == "fail" or (d.status == "warn" and strict):
            out.append(Finding(f"diagnostic:{d.name}", "fail", message))
        elif d.status == "warn":
            out.append(Finding(f"diagnostic:{d.name}", "warn", message))
    return out or [Finding("diagnostics", "pass", "no diagnostic failed")]


def drift(doc: ScheduleFile, previous: ScheduleFile, max_drift: float) -> list[Finding]:
    """[K4]: relative change |new − old| / |old| of eta0, tau, T0 and Tf. Temperatures made by
    different rule sets are in different units: they are not compared (a warning says so)."""
    out = []
    ours, theirs = _rule_set(doc), _rule_set(previous)
    for name in DRIFT_FIELDS:
        if name in ("T0", "Tf") and ours != theirs:
            out.append(Finding(f"drift:{name}", "warn", f"{name} is not compared: the files use the {ours} and the "
                                                         f"{theirs} rules, whose temperatures have different units"))
            continue
        new, old = getattr(doc.schedule, name), getattr(previous.schedule, name)
        if new is None or old is None:
            if new is not old:
                out.append(Finding(f"drift:{name}", "fail", f"{name} is {new} now and was {old}"))
            continue
        change = abs(new - old) / abs(old)
        status = "fail" if change > max_drift else "pass"
        out.append(Finding(f"drift:{name}", status, f"{name} moved {change:.1%} ({old:.4g} -> {new:.4g}; allowed {max_drift:.0%})"))
    return out


def _rule_set(doc: ScheduleFile) -> str:
    return doc.schedule.rules.rule_set if isinstance(doc, ScheduleFileV2) else "literal"


def check(doc: ScheduleFile, *, strict: bool = False, previous: ScheduleFile | None = None, max_drift: float = 0.25) -> Report:
    findings = [Finding("validate", "pass", f"a valid {doc.format} file")]
    findings += rederive(doc)
    findings += convergence(doc)
    findings += code_settings(doc, strict)
    findings += diagnostics_status(doc, strict)
    if previous is not None:
        findings += drift(doc, previous, max_drift)
    return Report(findings)
