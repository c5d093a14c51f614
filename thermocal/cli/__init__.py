"""The command line: `thermocal probe|export|check|show|plot|monitor|schema`.

main.py holds the app, the error map and the output helpers; each command lives in its own
module (probe.py imports torch when it runs; the others never do).
"""

from thermocal.cli import files, monitor, probe  # noqa: F401  (each registers its commands)
from thermocal.cli.main import app, main

__all__ = ["app", "main"]
