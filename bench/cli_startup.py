"""How long the commands that only read a file take, whole process (issue 17: `thermocal check
FILE` ≤ 1 s on this project's 2-core machine). Measured, never a timed test.

    python bench/cli_startup.py        # writes bench/cli_startup.json and prints the table

Each command runs 7 times in a fresh process; the table gives the median and the range, and
whether torch or pyhessian was imported (they must not be).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
GOLDEN = HERE.parent / "tests" / "golden" / "v2" / "digits_cooling.json"
RUNS = 7
COMMANDS = {
    "thermocal --help": ["--help"],
    "thermocal check FILE": ["check", str(GOLDEN)],
    "thermocal show FILE": ["show", str(GOLDEN)],
    "thermocal export FILE --format torch": ["export", str(GOLDEN), "--format", "torch"],
}
PROBE = ("import sys, json; sys.argv = ['thermocal'] + json.loads(sys.argv[1]); "
         "from thermocal.cli import main\ntry:\n main()\nexcept SystemExit:\n pass\n"
         "print(json.dumps({m: m in sys.modules for m in ('torch', 'pyhessian')}), file=sys.stderr)")


def main() -> None:
    sys.path.insert(0, str(HERE))
    from provenance import stamp  # the same stamp as every result file

    rows = []
    for name, args in COMMANDS.items():
        times = []
        for _ in range(RUNS):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "thermocal", *args], capture_output=True, check=False)
            times.append(time.perf_counter() - start)
        done = subprocess.run([sys.executable, "-c", PROBE, json.dumps(args)], capture_output=True, text=True)
        imported = json.loads(done.stderr.strip().splitlines()[-1])
        rows.append({"command": name, "median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
                     "imports_torch": imported["torch"], "imports_pyhessian": imported["pyhessian"]})
    out = {"provenance": stamp(sys.argv), "cpus": os.cpu_count(), "runs": RUNS, "rows": rows}
    (HERE / "cli_startup.json").write_text(json.dumps(out, indent=1) + "\n")
    print("| command | median s | range s | imports torch | imports pyhessian |\n| --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| `{r['command']}` | {r['median_s']:.2f} | {r['min_s']:.2f}–{r['max_s']:.2f} | {r['imports_torch']} | "
              f"{r['imports_pyhessian']} |")


if __name__ == "__main__":
    main()
