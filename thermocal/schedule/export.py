"""The schedule in other frameworks' terms (`thermocal export --format ...`).

Every snippet takes its numbers from the file (printed with repr, so they round-trip exactly)
and its learning-rate law from the schedule's one `Law` tree (schedule/functions.py): torch's
lr_at is the file's `lr_expression` (the tree printed in Python), Keras' is the tree printed in
Keras ops, optax's is the tree composed of optax schedules, so none can drift from
`thermocal.load_schedule(path).lr(t)`. A law that is a bare exponential uses each framework's
exponential type (torch ExponentialLR, optax.exponential_decay, keras ExponentialDecay).
"""

from __future__ import annotations

from datetime import datetime
from typing import Callable, Iterable, Iterator

from thermocal.config import EXPORT_ENV_PREFIX
from thermocal.records import ScheduleBase
from thermocal.schedule.file import ScheduleFile, dumps
from thermocal.schedule.optimizer import optimizer_of
from thermocal.schedule.functions import (
    KERAS, Exponential, learning_rate, lr_expression, schedule_lr_law, temperature, timescale_source, total_steps,
)

SNIPPETS = ("torch", "hf", "lightning", "optax", "keras")
FORMATS = ("yaml", "json", "csv", *SNIPPETS, "env")


def _plain_exponential(s: ScheduleBase) -> bool:
    """The law is a bare exponential (no warmup, no floor): every framework has a type for it."""
    return isinstance(schedule_lr_law(s), Exponential)


def _constants(doc: ScheduleFile) -> str:
    """The header comment and the constants. Every value is rendered from a validated number or
    from a string re-made from its parsed value (the date), never copied raw into code."""
    s = doc.schedule
    created = datetime.fromisoformat(doc.created_at).isoformat()
    lines = [
        f"# thermocal schedule ({doc.format}); model sha256 {doc.inputs.model.sha256[:12]}, created {created}",
        f"ETA0 = {s.eta0!r}  # initial learning rate",
        f"GAMMA = {s.gamma!r}  # per-step factor exp(-1/{timescale_source(s.lr_law)})",
        f"TAU = {s.tau!r}  # cooling time in optimizer steps",
        f"WARMUP_STEPS = {s.warmup_steps!r}",
        f"MIN_LR = {s.min_lr!r}",
        f"TOTAL_STEPS = {total_steps(s)!r}  # warmup + cooling budget",
    ]
    if s.kind in ("linear", "cosine"):  # the path's ends and length ([C16])
        lines += [f"T0 = {s.T0!r}  # temperature at the start", f"TF = {s.Tf!r}  # temperature at the end",
                  f"STEPS = {s.steps!r}  # cooling budget"]
    return "\n".join(lines) + "\n"


def _lr_function(s: ScheduleBase) -> str:
    """`lr_at(t)`: the file's lr_expression with its field names bound to the constants above."""
    return (
        "\n\ndef lr_at(t):\n"
        f'    """The learning rate at optimizer step t: {s.lr_expression}"""\n'
        "    eta0, tau, warmup_steps, min_lr = ETA0, TAU, WARMUP_STEPS, MIN_LR\n"
        + ("    Tf, steps = TF, STEPS  # T0 is the constant above\n" if s.kind in ("linear", "cosine") else "")
        + f"    return {s.lr_expression}\n"
    )


def _torch_scheduler(s: ScheduleBase, optimizer: str) -> str:
    if _plain_exponential(s):
        return f"torch.optim.lr_scheduler.ExponentialLR({optimizer}, gamma=GAMMA)"
    return f"torch.optim.lr_scheduler.LambdaLR({optimizer}, lambda step: lr_at(step) / ETA0)"


def _torch_header(s: ScheduleBase) -> str:
    if s.kind == "cosine":
        return "import math\nfrom math import cos, exp, pi\n\nimport torch\n\n"
    return "import math\nfrom math import exp\n\nimport torch\n\n" if not _plain_exponential(s) else "import torch\n\n"


def _torch_prelude(doc: ScheduleFile) -> str:
    """Imports, the schedule's constants, and lr_at(t) when the closed form is needed."""
    s = doc.schedule
    return _torch_header(s) + _constants(doc) + ("" if _plain_exponential(s) else _lr_function(s))


def _optimizer_and_scheduler(doc: ScheduleFile, params: str) -> str:
    """The two lines every torch snippet builds its pair with: the file's optimizer at eta0 and the
    schedule's scheduler."""
    return (f"    optimizer = {optimizer_of(doc).torch(params)}\n"
            f"    scheduler = {_torch_scheduler(doc.schedule, 'optimizer')}\n")


def torch_snippet(doc: ScheduleFile) -> str:
    return _torch_prelude(doc) + (
        "\n\ndef thermocal_optimizer(params):\n"
        '    """The optimizer the schedule was calibrated for, at eta0, and its scheduler: call\n'
        f'    scheduler.step() after every optimizer.step(). {optimizer_of(doc).describe()}."""\n'
        + _optimizer_and_scheduler(doc, "params") + "    return optimizer, scheduler\n"
    )


def hf_snippet(doc: ScheduleFile) -> str:
    return torch_snippet(doc) + (
        "\n\n# Hand the Trainer the pair above (the file's optimizer and its scheduler). It steps\n"
        "# the scheduler after every optimizer step; args.learning_rate is then unused.\n"
        "#   from transformers import Trainer\n"
        "#   trainer = Trainer(model=model, args=args, train_dataset=train, optimizers=thermocal_optimizer(model.parameters()))\n"
    )


def lightning_snippet(doc: ScheduleFile) -> str:
    return _torch_prelude(doc) + (
        "\n\n# In your LightningModule:\ndef configure_optimizers(self):\n" + _optimizer_and_scheduler(doc, "self.parameters()")
        + '    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1}}\n'
    )


def optax_snippet(doc: ScheduleFile) -> str:
    lines: list[str] = []
    schedule = schedule_lr_law(doc.schedule).optax(lines)
    statements = "".join(f"{line}\n" for line in lines)
    return ("import jax.numpy as jnp\nimport optax\n\n" + _constants(doc) + "\n" + statements
            + f"schedule = {schedule}\noptimizer = {optimizer_of(doc).optax('schedule')}\n")


def keras_snippet(doc: ScheduleFile) -> str:
    s = doc.schedule
    text = ("import math\n\n" if s.kind == "cosine" else "") + "import keras\n\n" + _constants(doc) + "\n"
    if _plain_exponential(s):
        return text + (
            "schedule = keras.optimizers.schedules.ExponentialDecay(initial_learning_rate=ETA0, decay_steps=1, decay_rate=GAMMA)\n"
            f"optimizer = {optimizer_of(doc).keras('schedule')}\n"
        )
    lr = lr_expression(s.kind, s.warmup_steps, 0.0, s.lr_law, KERAS)  # the floor comes last, always
    return text + (
        "\n\nclass ThermocalSchedule(keras.optimizers.schedules.LearningRateSchedule):\n"
        f'    """{s.lr_expression}"""\n\n'
        "    def __call__(self, step):\n"
        "        dtype = keras.config.floatx()\n"
        "        step = keras.ops.cast(step, dtype)\n"
        f"        lr = {lr}\n"
        f"        return {KERAS.floor('MIN_LR', 'lr')}  # not ops.maximum: it drops float64 on torch\n\n"
        "    def get_config(self):\n"
        "        return {}\n\n\n"
        f"optimizer = {optimizer_of(doc).keras('ThermocalSchedule()')}\n"
    )


def env_lines(doc: ScheduleFile) -> str:
    """`THERMOCAL_SCHEDULE_<NAME>=value` lines; a value the schedule does not have (TAU of a flat
    schedule, STEPS and TOTAL_STEPS without a budget) is left out rather than set empty. The
    prefix is one no probe setting's variable has, so exporting these never changes a later probe."""
    s = doc.schedule
    values = {"ETA0": s.eta0, "GAMMA": s.gamma, "TAU": s.tau, "T0": s.T0, "TF": s.Tf, "STEPS": s.steps,
              "WARMUP_STEPS": s.warmup_steps, "MIN_LR": s.min_lr, "TOTAL_STEPS": total_steps(s), "KIND": s.kind,
              **optimizer_of(doc).env()}
    return "".join(f"{EXPORT_ENV_PREFIX}{key}={repr(value) if isinstance(value, float) else value}\n"
                   for key, value in values.items() if value is not None)


def csv_rows(doc: ScheduleFile, every: int = 1) -> Iterator[str]:
    """`step,lr,temperature,optimizer` lines for every `every`-th step of warmup + budget and the last
    one, one at a time (a budget of 10^7 steps is never held in memory)."""
    s = doc.schedule
    end = total_steps(s)
    if end is None:
        raise ValueError("a flat schedule without --steps has no budget to tabulate")
    lr, temp = learning_rate(s), temperature(s)
    name = optimizer_of(doc).name  # a Literal: safe in a CSV field
    yield "step,lr,temperature,optimizer\n"
    for t in range(0, end + 1, every):
        yield f"{t},{lr(t)!r},{temp(t)!r},{name}\n"
    if end % every:
        yield f"{end},{lr(end)!r},{temp(end)!r},{name}\n"


RENDERERS: dict[str, Callable[[ScheduleFile], str]] = {
    "yaml": lambda doc: dumps(doc, "yaml"), "json": lambda doc: dumps(doc, "json"),
    "torch": torch_snippet, "hf": hf_snippet, "lightning": lightning_snippet, "optax": optax_snippet,
    "keras": keras_snippet, "env": env_lines,
}


def render(doc: ScheduleFile, fmt: str, every: int = 1) -> Iterable[str]:
    """The export as pieces of text to write in turn (csv: a line at a time)."""
    if fmt == "csv":
        return csv_rows(doc, every)
    return [RENDERERS[fmt](doc)]
