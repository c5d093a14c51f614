"""The schedule as a torch learning-rate scheduler (method.md [C5], [C8]).

    scheduler = thermocal.ThermocalLR(optimizer, "thermocal.json")   # or a LoadedSchedule
    ... optimizer.step(); scheduler.step()                           # once per optimizer step

Like torch's own schedulers it holds plain data only, so `state_dict()` round-trips through
`torch.save` and a resumed run continues at the saved step. Each parameter group's learning
rate is its initial lr times lr(t)/eta0: build the optimizer with lr=eta0 to follow the file.
The optimizer must be the one the file was calibrated for (plain SGD, momentum SGD or AdamW):
another is refused (ValueError, one line).
"""

from __future__ import annotations

from pathlib import Path

import torch

from thermocal.records import ScheduleBase
from thermocal.schedule.functions import learning_rate
from thermocal.schedule.optimizer import optimizer_of
from thermocal.schedule.runtime import LoadedSchedule, load_schedule


class ThermocalLR(torch.optim.lr_scheduler.LRScheduler):
    def __init__(self, optimizer: torch.optim.Optimizer, schedule: LoadedSchedule | str | Path, last_epoch: int = -1) -> None:
        loaded = schedule if isinstance(schedule, LoadedSchedule) else load_schedule(schedule)
        wanted = optimizer_of(loaded.document)
        wrong = wanted.mismatch(optimizer)
        if wrong is not None:
            raise ValueError(f"this schedule was calibrated for {wanted.describe()}, not {wrong}: build that optimizer "
                             "(`thermocal export --format torch` shows how) or re-probe with --optimizer")
        self.schedule = loaded.document.schedule.model_dump(mode="json")  # plain data: state_dict-safe
        super().__init__(optimizer, last_epoch)

    def _factor(self, step: int) -> float:
        # The lr law reads only the fields v1 and v2 schedules share; the rules are not needed.
        s = ScheduleBase.model_validate({k: v for k, v in self.schedule.items() if k != "rules"})
        return learning_rate(s)(step) / s.eta0

    def get_lr(self) -> list[float]:
        factor = self._factor(self.last_epoch)
        return [base * factor for base in self.base_lrs]

    _get_closed_form_lr = get_lr
