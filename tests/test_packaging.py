"""The library stays standalone and the distribution is wired up."""

from __future__ import annotations

import subprocess
import sys


# What `import classweights` must never import: the CLI's libraries, the trainer, and every optional
# dependency of a label source (each is imported by the reader that needs it, when it is used).
NEVER_AT_IMPORT = ("typer", "rich", "arcvae", "PIL", "pyarrow", "datasets", "pandas", "dask", "distributed", "zarr",
                   "matplotlib", "sklearn", "scipy")  # fmt: skip


def test_import_classweights_stays_light():
    code = f"import sys, classweights; print(sorted(m for m in {NEVER_AT_IMPORT!r} if m in sys.modules))"
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
