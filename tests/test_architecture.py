"""docs/architecture.md matches the code: its map names every arcvae module, in an order the imports follow."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).parents[1]
PACKAGE = REPO / "src" / "arcvae"


def map_rows() -> list[list[str]]:
    """The first column of the arcvae table, top row first: the module names of each row (``data/`` for a package)."""
    text = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    table = text[text.index("## `arcvae`") : text.index("## Where to add")]
    rows = [line.split("|")[1] for line in table.splitlines() if line.startswith("| `")]
    return [[name.removesuffix(".py") for name in re.findall(r"`([a-z_]+(?:\.py|/))`", row)] for row in rows]


def room(path: Path) -> str:
    """The map's name of a source file: ``loop`` for loop.py, ``data/`` for anything in the data package."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return f"{parts[0]}/" if len(parts) > 1 else parts[0]


def arcvae_imports(path: Path) -> set[str]:
    """The map's names of every arcvae module ``path`` imports: at the top, inside functions, or for annotations."""
    found = set()
    depth = len(path.relative_to(PACKAGE).parts) - 1  # 0 for a module of the package, 1 inside a subpackage
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level:
            up = node.level - 1 - depth  # < 0: the import stays inside the subpackage
            if up < 0 and node.level == 1:
                continue
            names = [node.module] if node.module else [alias.name for alias in node.names]
            for first in (name.split(".")[0] for name in names):
                if (PACKAGE / first).is_dir():
                    found.add(f"{first}/")
                elif (PACKAGE / f"{first}.py").is_file():  # not a name of the package itself, e.g. __version__
                    found.add(first)
    return found


def test_the_map_names_every_module_once():
    named = [name for row in map_rows() for name in row]
    modules = {room(path) for path in PACKAGE.rglob("*.py")} - {"__init__", "__main__"}
    assert sorted(named) == sorted(modules)


def test_every_module_imports_only_modules_below_its_row():
    level = {name: i for i, row in enumerate(map_rows()) for name in row}
    for path in PACKAGE.rglob("*.py"):
        if path.name in ("__init__.py", "__main__.py"):
            continue
        here = room(path)
        for imported in arcvae_imports(path) - {here, "errors"}:
            assert level[imported] > level[here], (
                f"{path.relative_to(PACKAGE)} imports {imported}, which the map puts above"
            )
