"""The README's promises that a test can hold: CI runs its test command, and its flags exist."""

from __future__ import annotations

import re

from typer.testing import CliRunner

from conftest import ROOT
from thermocal.cli import app

README = (ROOT / "README.md").read_text()


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()
    assert ci[-1] in README
    assert "pytest" in ci[-1]


def test_every_documented_flag_exists() -> None:
    for command in ("probe", "export"):
        help_text = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200"}).stdout
        section = README.split(f"### `thermocal {command}")[1].split("\n## ")[0].split("\n### ")[0]
        for flag in set(re.findall(r"(--[a-z][a-z-]+)", section)):
            assert flag in help_text, f"{command} {flag}"
