"""The library stays standalone and the distribution is wired up."""

from __future__ import annotations

import subprocess
import sys


def test_classweights_imports_neither_cli_libraries_nor_arcvae():
    code = "import sys, classweights; print(sorted(m for m in ('typer', 'rich', 'arcvae') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_public_names():
    import classweights

    for name in classweights.__all__:
        assert getattr(classweights, name).__doc__, name
    assert issubclass(classweights.ClassWeightError, ValueError)


def test_console_script_is_installed():
    out = subprocess.run([sys.executable, "-m", "arcvae", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "arcvae" in out.stdout
