"""Issue 17: the layering holds, and the commands that only read a file never import torch.

The torch math (thermocal/curvature/, measure.py, noise.py, losses.py) never imports io/ (no disk,
no user code); reading, checking, showing and exporting a schedule never imports torch (only the
torch scheduler, `thermocal.ThermocalLR`, does), and pyhessian is imported only when its engine runs.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import ROOT, SAMPLES

PACKAGE = ROOT / "thermocal"
MATH = [*sorted((PACKAGE / "curvature").glob("*.py")), PACKAGE / "measure.py", PACKAGE / "noise.py", PACKAGE / "losses.py",
        PACKAGE / "prepare.py"]
# The estimators: pure functions over an Operator (curvature/operator.py), one per file.
ESTIMATORS = ["power", "lanczos", "hutchinson", "hutchpp", "density"]
ESTIMATOR_IMPORTS = {"thermocal.curvature.operator", "thermocal.records",
                     *(f"thermocal.curvature.{name}" for name in ESTIMATORS)}
ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_the_torch_math_never_imports_io() -> None:
    for path in MATH:
        bad = sorted(name for name in imports(path) if name.startswith("thermocal.io") or name.startswith("thermocal.cli"))
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_the_estimators_see_only_operators() -> None:
    """No estimator knows a model, a loss, an engine or a setting: each takes an Operator."""
    for name in ESTIMATORS:
        path = PACKAGE / "curvature" / f"{name}.py"
        ours = {module for module in imports(path) if module.startswith("thermocal")}
        assert ours <= ESTIMATOR_IMPORTS, f"{path.relative_to(ROOT)} imports {sorted(ours - ESTIMATOR_IMPORTS)}"
        assert "thermocal.curvature.operator" in ours, path


def loaded_after(code: str) -> dict:
    script = f"import sys, json\n{code}\nprint(json.dumps({{m: m in sys.modules for m in ('torch', 'pyhessian')}}))"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=ENV)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_reading_a_schedule_imports_neither_torch_nor_pyhessian() -> None:
    golden = ROOT / "tests" / "golden" / "v1" / "digits_plain.json"
    code = (f"import thermocal, thermocal.cli, thermocal.check, thermocal.monitor, thermocal.report\n"
            f"from thermocal.schedule.runtime import load_schedule\n"
            f"from thermocal.cli import app\n"
            f"from typer.testing import CliRunner\n"
            f"for args in (['check', {str(golden)!r}], ['show', {str(golden)!r}], ['export', {str(golden)!r}, '--format', 'torch'],\n"
            f"             ['--help']):\n"
            f"    assert CliRunner().invoke(app, args).exit_code in (0, 1), args\n"
            f"load_schedule({str(golden)!r}).lr(10)")
    assert loaded_after(code) == {"torch": False, "pyhessian": False}


def test_pyhessian_is_imported_only_by_its_engine(tmp_path: Path) -> None:
    model, data = SAMPLES / "digits_mlp" / "model.pt", SAMPLES / "digits_mlp" / "data"
    probe = (f"from thermocal.cli import app\nfrom typer.testing import CliRunner\n"
             f"r = CliRunner().invoke(app, ['probe', {str(model)!r}, {str(data)!r}, '-q', '-o', {str(tmp_path / 'a.json')!r}"
             "{extra}])\nassert r.exit_code == 0, r.output")
    assert loaded_after(probe.format(extra="")) == {"torch": True, "pyhessian": False}
    assert loaded_after(probe.format(extra=f", '--engine', 'pyhessian', '--force'")) == {"torch": True, "pyhessian": True}
