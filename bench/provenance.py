"""The stamp every bench result file carries: which commit (and whether the tree was clean), which
versions, which command, when, and the settings the script passes in."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else "unknown"


def stamp(argv: list[str], **settings: object) -> dict:
    """Commit, dirty flag (tracked files only), thermocal/torch/Python versions, machine, argv,
    UTC time, then `settings`."""
    import torch

    import thermocal

    return {"commit": _git("rev-parse", "HEAD"), "dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
            "thermocal": thermocal.__version__, "torch": torch.__version__, "python": platform.python_version(),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
            "argv": argv, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **settings}
