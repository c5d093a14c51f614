"""Train the bundled digits MLP with a thermocal schedule and the §6.2 cooling monitor.

    thermocal probe sample_models/digits_mlp/model.pt sample_models/digits_mlp/data/ --steps 300
    python examples/train_with_monitor.py --schedule thermocal.json --log train_log.csv
    thermocal monitor train_log.csv --schedule thermocal.json    # the same check, replayed offline

Plain SGD at eta0 (the schedule assumes it), ThermocalLR stepping once per optimizer step, and
CoolingMonitor fed each step's loss and squared gradient norm. The log has the columns
`thermocal monitor` reads: step, loss, grad_norm, lr.
"""

from __future__ import annotations

import argparse
import csv
import warnings
from pathlib import Path

import torch

import thermocal

SAMPLE = Path(__file__).resolve().parents[1] / "sample_models" / "digits_mlp"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schedule", type=Path, default=Path("thermocal.json"))
    parser.add_argument("--log", type=Path, default=Path("train_log.csv"))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    schedule = thermocal.load_schedule(args.schedule)
    steps = schedule.total_steps
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit's deprecation notice
        model = torch.jit.load(str(SAMPLE / "model.pt"))
    model.train()
    data = torch.load(next(iter(sorted((SAMPLE / "data").glob("*.pt")))), weights_only=True)
    inputs, targets = data["inputs"], data["targets"]

    optimizer = torch.optim.SGD(model.parameters(), lr=schedule.eta0)
    scheduler = thermocal.ThermocalLR(optimizer, schedule)
    monitor = thermocal.CoolingMonitor(schedule)
    generator = torch.Generator().manual_seed(args.seed)
    losses = []
    with open(args.log, "w", newline="") as handle:
        log = csv.writer(handle)
        log.writerow(["step", "loss", "grad_norm", "lr"])
        for step in range(steps):
            batch = torch.randint(0, len(inputs), (args.batch_size,), generator=generator)
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(inputs[batch]), targets[batch])
            loss.backward()
            grad_sq = sum(float(p.grad.pow(2).sum()) for p in model.parameters() if p.grad is not None)
            lr = optimizer.param_groups[0]["lr"]
            reading = monitor.update(step, loss.item(), grad_sq)
            if reading.fired and reading.sustained == monitor.window:
                print(f"step {step}: cooling faster than the noise relaxes (ratio {reading.ratio:.3g}); "
                      f"stretch tau by {reading.stretch:.3g}")
            log.writerow([step, loss.item(), grad_sq ** 0.5, lr])
            losses.append(loss.item())
            optimizer.step()
            scheduler.step()
    head, tail = sum(losses[:20]) / 20, sum(losses[-20:]) / 20
    print(f"{steps} steps: mean loss {head:.4f} over the first 20, {tail:.4f} over the last 20; log in {args.log}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
