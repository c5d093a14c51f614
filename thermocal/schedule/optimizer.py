"""Which optimizer a schedule file is for (method.md [O1]-[O4]), in every framework's words.

A v2 file names it in `settings` (`optimizer` and its hyperparameters); a file without the field,
and every v1 file, was calibrated for plain SGD. The exports build exactly this optimizer, and
`ThermocalLR` refuses another one. No torch here: the check of a torch optimizer reads only its
class name and its parameter groups' hyperparameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from thermocal.schedule.file import ScheduleFile, ScheduleFileV2


@dataclass(frozen=True)
class OptimizerSpec:
    """The optimizer and the hyperparameters it was calibrated with (torch.optim's meanings)."""

    name: Literal["sgd", "momentum", "adamw"] = "sgd"
    momentum: float = 0.0
    nesterov: bool = False
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0

    def torch(self, params: str) -> str:
        """`torch.optim.SGD(params, lr=ETA0, ...)` or `torch.optim.AdamW(...)`, from validated numbers."""
        decay = f", weight_decay={self.weight_decay!r}" if self.weight_decay else ""
        if self.name == "adamw":
            return (f"torch.optim.AdamW({params}, lr=ETA0, betas=({self.beta1!r}, {self.beta2!r}), eps={self.eps!r}, "
                    f"weight_decay={self.weight_decay!r})")
        if self.name == "momentum":
            return f"torch.optim.SGD({params}, lr=ETA0, momentum={self.momentum!r}, nesterov={self.nesterov!r}{decay})"
        return f"torch.optim.SGD({params}, lr=ETA0{decay})"

    def optax(self, schedule: str) -> str:
        """The optax transformation with `schedule` as its learning rate."""
        if self.name == "adamw":
            return (f"optax.adamw(learning_rate={schedule}, b1={self.beta1!r}, b2={self.beta2!r}, eps={self.eps!r}, "
                    f"weight_decay={self.weight_decay!r})")
        sgd = f"optax.sgd(learning_rate={schedule}" + \
            (f", momentum={self.momentum!r}, nesterov={self.nesterov!r})" if self.name == "momentum" else ")")
        # torch's SGD adds weight_decay·θ to the gradient before momentum: add_decayed_weights first
        return f"optax.chain(optax.add_decayed_weights({self.weight_decay!r}), {sgd})" if self.weight_decay else sgd

    def keras(self, schedule: str) -> str:
        """The Keras optimizer with `schedule` as its learning rate (Keras' weight decay is decoupled)."""
        if self.name == "adamw":
            return (f"keras.optimizers.AdamW(learning_rate={schedule}, weight_decay={self.weight_decay!r}, "
                    f"beta_1={self.beta1!r}, beta_2={self.beta2!r}, epsilon={self.eps!r})")
        momentum = f", momentum={self.momentum!r}, nesterov={self.nesterov!r}" if self.name == "momentum" else ""
        decay = f", weight_decay={self.weight_decay!r}" if self.weight_decay else ""
        return f"keras.optimizers.SGD(learning_rate={schedule}{momentum}{decay})"

    def env(self) -> dict[str, Any]:
        """The variables `export --format env` writes beside the schedule's."""
        out: dict[str, Any] = {"OPTIMIZER": self.name}
        if self.name == "momentum":
            out |= {"MOMENTUM": self.momentum, "NESTEROV": int(self.nesterov)}
        if self.name == "adamw":
            out |= {"BETA1": self.beta1, "BETA2": self.beta2, "EPS": self.eps}
        return out | {"WEIGHT_DECAY": self.weight_decay}

    def describe(self) -> str:
        if self.name == "adamw":
            return f"AdamW (betas ({self.beta1:g}, {self.beta2:g}), eps {self.eps:g}, weight decay {self.weight_decay:g})"
        if self.name == "momentum":
            return f"SGD with momentum {self.momentum:g}" + (" (Nesterov)" if self.nesterov else "")
        return "Plain SGD (no momentum)"

    def mismatch(self, optimizer: Any) -> str | None:
        """Why a torch optimizer is not this one (its class and first group's hyperparameters), or None."""
        kind = type(optimizer).__name__
        group = optimizer.param_groups[0] if getattr(optimizer, "param_groups", None) else {}
        if self.name == "adamw":
            if kind != "AdamW":
                return f"a {kind}"
            if tuple(group.get("betas", ())) != (self.beta1, self.beta2):
                return f"an AdamW with betas {tuple(group.get('betas', ()))}"
            return None
        if kind != "SGD":
            return f"a {kind}"
        momentum = float(group.get("momentum", 0.0))
        if momentum != self.momentum or bool(group.get("nesterov", False)) != self.nesterov:
            return f"an SGD with momentum {momentum:g}" + (" (Nesterov)" if group.get("nesterov") else "")
        return None


def optimizer_of(doc: ScheduleFile) -> OptimizerSpec:
    """The optimizer a file's schedule is for: its settings' (v2), plain SGD otherwise."""
    if not isinstance(doc, ScheduleFileV2):
        return OptimizerSpec()
    s = doc.settings
    if s.optimizer == "momentum":
        return OptimizerSpec("momentum", momentum=s.momentum, nesterov=s.nesterov, weight_decay=s.decay)
    if s.optimizer == "adamw":
        return OptimizerSpec("adamw", beta1=s.beta1, beta2=s.beta2, eps=s.adam_eps, weight_decay=s.decay)
    return OptimizerSpec(weight_decay=s.decay)
