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


def run_ranks(script: str | Path, *args: str, world: int = 2, timeout: float = 300) -> list[tuple[str, str]]:
    """Run ``script`` as the ``world`` ranks of a process group, in processes of :func:`forked_pool`.

    Each rank gets the variables torchrun would set (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``,
    ``MASTER_ADDR``, ``MASTER_PORT``), ``OMP_NUM_THREADS=1`` and ``sys.argv = [script, *args]``, and
    runs the script as ``__main__`` with its stdout and stderr in files. Returns each rank's stdout
    and stderr; a rank's exception is raised here, and a rank that waits for a failed one is
    stopped after ``timeout`` seconds.
    """
    import socket
    import tempfile

    with socket.socket() as probe:  # a free port for the rendezvous
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
           "WORLD_SIZE": str(world)}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="ranks-") as folder, forked_pool(world) as pool:
        tasks = [(str(script), list(args), env, rank, folder) for rank in range(world)]
        pool.starmap_async(_rank, tasks, chunksize=1).get(timeout)
        return [
            (Path(folder, f"{rank}.out").read_text(), Path(folder, f"{rank}.err").read_text()) for rank in range(world)
        ]


def _rank(script: str, args: list[str], env: dict[str, str], rank: int, folder: str) -> None:
    import runpy
    import sys

    os.environ.clear()
    os.environ.update(env, RANK=str(rank), LOCAL_RANK=str(rank))
    sys.argv = [script, *args]
    sys.stdout.flush()
    sys.stderr.flush()
    for fd, name in ((1, "out"), (2, "err")):
        target = os.open(Path(folder, f"{rank}.{name}"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(target, fd)
        os.close(target)
    try:
        runpy.run_path(script, run_name="__main__")
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
