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
    out = subprocess.run([sys.executable, "-m", "arcvae", "--help"], capture_output=True, text=True, check=False)
    assert out.returncode == 0 and "arcvae" in out.stdout


def test_arcvae_uses_only_what_classweights_exports():
    """arcvae is a program built on the library's public face: every name it takes from classweights (an import,
    an attribute, or a name in a string such as a ``sys.modules`` key) is in ``classweights.__all__``."""
    import ast
    import re
    from pathlib import Path

    import classweights

    public = set(classweights.__all__)
    used: list[tuple[str, str]] = []  # (file, name)
    for path in sorted((Path(__file__).parents[1] / "src" / "arcvae").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Import):
                used += [(path.name, alias.name) for alias in node.names if alias.name.startswith("classweights.")]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "classweights":
                if node.module != "classweights":
                    used.append((path.name, node.module))  # a submodule: never public
                used += [(path.name, alias.name) for alias in node.names]
        used += [(path.name, name) for name in re.findall(r"\bclassweights\.(\w+)", text)]  # attributes, strings, docs
    assert used, "no use of classweights found: the scan is broken"
    outside = sorted({(file, name) for file, name in used if name not in public})
    assert not outside, f"arcvae takes names classweights does not export: {outside}"
