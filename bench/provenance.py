"""The stamp every bench result file carries: which commit (and whether the tree was clean), which
versions, which command, when, and the settings the script passes in."""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else "unknown"


def _cpu(torch) -> str:
    """The CPU's model name and the vector kernels torch dispatches to on it. Results of the same
    code differ between machines: evidence.json's shapes_cnn grid cell (lr 0.316, constant) had
    validation loss 0.16644 in the three evidence runs of 2026-12-03 and 0.16136 in that of
    2026-12-06, whose machine gives 0.16136 with either day's code, the same to the bit run after
    run (CPU kernels' rounding, amplified by an lr near the edge of stability; without oneDNN it
    is 0.17401). The machine string said the same both days, so it now names the CPU too."""
    name, flags = platform.processor(), ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            fields = dict(line.split(":", 1) for line in info.read().split("\n\n")[0].splitlines() if ":" in line)
        fields = {key.strip(): value.strip() for key, value in fields.items()}
        name = fields.get("model name", name)
        # a virtual CPU's name can be the same on different hosts; its feature flags tell them apart
        flags = f", flags {hashlib.sha256(fields.get('flags', '').encode()).hexdigest()[:8]}" if "flags" in fields else ""
    except OSError:
        pass
    return f"{name or 'unknown CPU'}, torch kernels {torch.backends.cpu.get_cpu_capability()}{flags}"


def stamp(argv: list[str], **settings: object) -> dict:
    """Commit, dirty flag (tracked files only), thermocal/torch/Python versions, machine (with its
    CPU and torch's kernels for it), argv, UTC time, then `settings`."""
    import torch

    import thermocal

    return {"commit": _git("rev-parse", "HEAD"), "dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
            "thermocal": thermocal.__version__, "torch": torch.__version__, "python": platform.python_version(),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs ({_cpu(torch)}), {platform.platform()}",
            "argv": argv, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **settings}
