"""Several arcvae commands at once, in processes forked from a server that has imported arcvae and torch once.

A new interpreter takes 2-3 s to import them; the tests that need several processes start them here. This
module has no side effects on import (the forked processes import it to find their task).
"""

from __future__ import annotations

import multiprocessing
import os
import time
from multiprocessing.pool import Pool
from pathlib import Path


def forked_pool(processes: int) -> Pool:
    """A pool of processes forked from a server that has imported arcvae's CLI, its trainer and torch once.

    A new interpreter takes 2-3 s to import them; tests that need several processes at once start them here.
    The server's environment is the one it started with: tasks take the test's (:func:`invoke_together`).
    """
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["arcvae.cli", "arcvae.trainer", "torch._dynamo", "typer.testing"])
    return context.Pool(processes)


def invoke_together(
    args: list[str], env: dict[str, str], barrier: str, name: str, together: int
) -> tuple[int, str, str]:
    """A task of :func:`forked_pool`: wait until ``together`` tasks are ready, then run ``arcvae ARGS``.

    Returns the exit code, stdout and stderr. Each task touches ``barrier/name`` and waits for the others,
    so that all start at (nearly) the same moment.
    """
    from typer.testing import CliRunner

    from arcvae.cli import app

    os.environ.clear()
    os.environ.update(env)
    folder = Path(barrier)
    (folder / name).touch()
    deadline = time.time() + 100
    while len(list(folder.iterdir())) < together and time.time() < deadline:
        time.sleep(0.005)
    result = CliRunner().invoke(app, args)
    return result.exit_code, result.stdout, result.stderr
