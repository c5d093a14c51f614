"""Does the gradient noise's memory stay put as the sample grows? (method.md [N9]; the scale issue, item 1)

    python bench/noise_memory.py            # K = 10^3 and 10^5 minibatch gradients -> bench/noise_memory.json
    python bench/noise_memory.py --quick    # K = 10^2 and 10^3: keeps the script from rotting (a test runs it)

Each K runs in its own process: a 3k-parameter MLP on K minibatches of B = 4 examples of 40
features, `noise.gathered_gradients` then `noise.noise_statistics` (what the probe runs), and
reports the process's peak resident memory above what the model and the data alone took (the
data grows with K by construction: it is measured before and left out). Before [N9] the probe
kept all K gradients (K·d numbers) and a K×K Gram matrix (at K = 62,500, 31 GB). Measured,
never a timed test; one stamped JSON per run.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from provenance import stamp  # noqa: E402

BATCH, FEATURES = 4, 40


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(k: int) -> None:
    import torch

    from thermocal.noise import GradientSums, gathered_gradients, noise_statistics, split_batches

    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(FEATURES, 64), torch.nn.Tanh(), torch.nn.Linear(64, 10))
    x = torch.randn(k * BATCH, FEATURES, generator=generator)
    y = torch.randint(0, 10, (k * BATCH,), generator=generator)
    batches = split_batches(x, y, BATCH)
    params = list(model.parameters())
    base = _peak_mb()
    start = time.perf_counter()
    summary: GradientSums = gathered_gradients(model, torch.nn.functional.cross_entropy, batches, params, lambda: None,
                                               keep=8)
    noise = noise_statistics(summary, batch_size=BATCH, samples_dropped=0, resamples=1000, generator=generator)
    print(json.dumps({"k": k, "dim": sum(p.numel() for p in params), "groups": int(summary.sums.shape[0]),
                      "peak_above_data_mb": _peak_mb() - base, "seconds": time.perf_counter() - start,
                      "grad_var": noise.grad_var, "grad_var_stderr": noise.grad_var_stderr}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=HERE / "noise_memory.json")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    rows = []
    for k in ((100, 1000) if args.quick else (1000, 100_000)):
        done = subprocess.run([sys.executable, __file__, "--child", str(k)], capture_output=True, text=True, check=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"K = {k:>7,}: {rows[-1]['groups']} groups, peak {rows[-1]['peak_above_data_mb']:.1f} MB above the data, "
              f"{rows[-1]['seconds']:.1f} s", flush=True)
    ratio = rows[-1]["peak_above_data_mb"] / max(rows[0]["peak_above_data_mb"], 1.0)
    results = {"provenance": stamp(sys.argv, quick=args.quick, batch=BATCH, features=FEATURES), "rows": rows,
               "peak_ratio_largest_over_smallest_k": ratio}
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"peak memory at the largest K over the smallest: {ratio:.2f}")


if __name__ == "__main__":
    main()
