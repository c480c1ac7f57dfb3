"""Start-up time of the command line against `python -c "import torch"`.

Run: python benchmarks/bench_startup.py
Targets (2-core CPU): `arcvae --help` <= 0.3x the import of torch (it must not
import torch); `arcvae weights compute` on the default corpus <= 1.5x it (the
counting must be invisible next to the import).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

from _common import machine, table, verdict


def arcvae_command() -> list[str]:
    """The installed console script beside this interpreter, else ``python -m arcvae``."""
    script = Path(sysconfig.get_path("scripts")) / "arcvae"
    if script.exists():
        return [str(script)]
    found = shutil.which("arcvae")
    return [found] if found else [sys.executable, "-m", "arcvae"]


def best_wall(cmd: list[str], env: dict[str, str], repeats: int = 7) -> float:
    subprocess.run(cmd, env=env, capture_output=True, check=True)  # warm the page cache
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(cmd, env=env, capture_output=True, check=True)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    from arcvae import data

    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "XDG_CACHE_HOME": cache}
        os.environ["XDG_CACHE_HOME"] = cache
        corpus = data.default_corpus_path()
        data.save_corpus(data.generate_corpus(100_000, seed=42), corpus)
        arcvae = arcvae_command()
        torch_import = best_wall([sys.executable, "-c", "import torch"], env)
        help_time = best_wall(arcvae + ["--help"], env)
        compute = best_wall(arcvae + ["weights", "compute", str(corpus)], env)
        imported = subprocess.run([sys.executable, "-c", "import sys; from arcvae.cli import main; sys.argv=['arcvae','--help']\ntry: main()\nexcept SystemExit: pass\nprint('torch' in sys.modules, file=sys.stderr)"],
                                  env=env, capture_output=True, text=True, check=True).stderr.strip()  # fmt: skip
    rows = [
        ['python -c "import torch"', f"{torch_import:.3f} s", "1.00x", "", ""],
        ["arcvae --help", f"{help_time:.3f} s", f"{help_time / torch_import:.2f}x", "<= 0.3x", verdict(help_time / torch_import, 0.3, higher_is_better=False)],
        ["arcvae weights compute <default corpus>", f"{compute:.3f} s", f"{compute / torch_import:.2f}x", "<= 1.5x", verdict(compute / torch_import, 1.5, higher_is_better=False)],
    ]  # fmt: skip
    print(machine())
    print(f"command: {' '.join(arcvae)}; torch imported by --help: {imported}")
    print(table(rows, ["command", "best wall time", "vs import torch", "target", ""]))


if __name__ == "__main__":
    main()
