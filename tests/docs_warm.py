"""A warm start for the ``arcvae`` commands of the executed docs.

Every ``arcvae`` command starts by importing torch (about 1.5 s on one core
here) and every training run then imports ``torch._dynamo`` when it makes its
optimizer (another 1.2 s); the docs run about 80 such commands. So the docs
tests start one *server* per Markdown file that has imported those once and
put a small *client* named ``arcvae`` first on the shell's ``PATH``. The
client hands the server its arguments, working folder, environment and its
stdin, stdout and stderr (the file descriptors themselves); the server forks a
child that takes them over and runs ``arcvae.cli.main`` as the console script
would, and the client ends with the child's exit code (or is killed by the
same signal). Signals sent to the client (``kill $!`` in the docs) go to the
child. So each command runs the real code on the real files and prints its
real output; only the interpreter's start-up and those imports are shared.

``torchrun`` gets a client too: its child runs ``python -m
torch.distributed.run`` with ``PYTHON_EXEC`` (the interpreter torchrun starts
its processes with) naming a third client, ``python-warm``, that runs ``python
[-u] -m MODULE ...`` or ``python [-u] SCRIPT ...`` in a child of the server in
the same way (any other form runs the real interpreter). So the processes of a
``torchrun`` command start warm as well.

What this does not check, other tests do: that the installed console script
starts (``tests/test_packaging.py``) and that ``--help`` imports no torch
(``tests/test_cli.py``). ``DOCS_TEST_COLD=1`` runs every command in a process
of its own instead.

Only the standard library is imported at the top: the client runs with
``python -IS`` and must start in milliseconds.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import sys
import time
from pathlib import Path

_FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
_LENGTH = 8  # bytes of the request's length prefix


# ------------------------------------------------------------------ the client


def client(address: str, program: str = "arcvae") -> None:
    """Run ``program`` with this process's arguments in a child of the server at ``address``; exit as it did.

    ``program`` is ``arcvae``, ``torchrun`` or ``python`` (the ``python-warm`` client).
    """
    argv, env = list(sys.argv), dict(os.environ)
    if program == "torchrun":
        env.setdefault("PYTHON_EXEC", str(Path(argv[0]).with_name("python-warm")))
        argv, program = [argv[0], "-m", "torch.distributed.run", *argv[1:]], "python"
    if program == "python" and python_form(argv[1:]) is None:  # a form the server does not run: the real interpreter
        os.execv(sys.executable, [sys.executable, *argv[1:]])
    pending: list[int] = []
    child: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        if child:
            os.kill(child[0], signum)
        else:
            pending.append(signum)

    for signum in _FORWARDED:
        signal.signal(signum, forward)
    request = json.dumps({"program": program, "argv": argv, "cwd": os.getcwd(), "env": env}).encode()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.connect(address)
        socket.send_fds(conn, [len(request).to_bytes(_LENGTH, "little")], [0, 1, 2])
        conn.sendall(request)
        replies = conn.makefile("r", encoding="ascii")
        child.append(int(replies.readline()))
        for signum in pending:
            os.kill(child[0], signum)
        status = int(replies.readline())
    if os.WIFSIGNALED(status):  # die of the same signal, as the shell expects ($? = 128 + n)
        signum = os.WTERMSIG(status)
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
    sys.exit(os.waitstatus_to_exitcode(status))


def python_form(args: list[str]) -> tuple[bool, list[str]] | None:
    """``(unbuffered, rest)`` for ``[-u] -m MODULE ...`` or ``[-u] SCRIPT ...``; ``None`` for any other form."""
    unbuffered = args[:1] == ["-u"]
    rest = args[1:] if unbuffered else args
    if (rest[:1] == ["-m"] and len(rest) > 1) or (rest and not rest[0].startswith("-")):
        return unbuffered, rest
    return None


def write_client(path: Path, address: str, program: str = "arcvae") -> None:
    """An executable at ``path`` that runs :func:`client` for ``program`` and the server at ``address``."""
    here = str(Path(__file__).resolve().parent)
    path.write_text(
        f"#!{sys.executable} -IS\n"
        f"import sys\nsys.path.insert(0, {here!r})\n"
        f"from docs_warm import client\nclient({address!r}, {program!r})\n",
        encoding="utf-8",
    )
    path.chmod(0o755)


# ------------------------------------------------------------------ the server


def serve(address: str, ready: str) -> None:
    """Import what every command imports, then fork a child per request; ``ready`` appears once it listens."""
    import torch
    import torch._dynamo  # what torch.optim imports when a run makes its optimizer

    import arcvae.cli  # noqa: F401

    del torch
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(address)
    listener.listen(64)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the watchers below are reaped by the kernel
    Path(ready).write_text(str(os.getpid()), encoding="ascii")
    while True:
        conn, _ = listener.accept()
        if os.fork() == 0:
            listener.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            _watch(conn)  # returns only in the command's process, to run it
            return
        conn.close()


def _watch(conn: socket.socket) -> None:
    """Fork the command's process, tell the client its pid, wait for it and send its wait status."""
    head, fds, _, _ = socket.recv_fds(conn, _LENGTH, 3)
    while len(head) < _LENGTH:
        head += conn.recv(_LENGTH - len(head))
    size = int.from_bytes(head, "little")
    body = b""
    while len(body) < size:
        part = conn.recv(size - len(body))
        if not part:
            os._exit(1)
        body += part
    request = json.loads(body)
    pid = os.fork()
    if pid == 0:
        conn.close()
        _take_over(request, fds)
        return
    for fd in fds:
        os.close(fd)
    conn.sendall(f"{pid}\n".encode())
    _, status = os.waitpid(pid, 0)
    conn.sendall(f"{status}\n".encode())
    os._exit(0)


def _take_over(request: dict, fds: list[int]) -> None:
    """Become the client's command: its stdio, folder, environment, arguments, fresh random seeds."""
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    for signum in _FORWARDED + (signal.SIGCHLD,):
        signal.signal(signum, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a new Python process
    random.seed()
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed()
    sys.argv = list(request["argv"])
    global _PROGRAM
    _PROGRAM = request.get("program", "arcvae")


_PROGRAM = "arcvae"  # what the command's process runs: set by _take_over


def _run_python(args: list[str]) -> None:
    """``python [-u] -m MODULE ...`` or ``python [-u] SCRIPT ...``, as the interpreter runs them."""
    import io
    import runpy

    form = python_form(args)
    assert form is not None  # the client sends no other form
    unbuffered, rest = form
    if unbuffered:  # -u: the standard streams write through to their file descriptors
        for name, fd in (("stdout", 1), ("stderr", 2)):
            old = getattr(sys, name)
            setattr(sys, name, io.TextIOWrapper(io.FileIO(fd, "w", closefd=False), encoding=old.encoding,
                                                errors=old.errors, write_through=True))  # fmt: skip
    if rest[0] == "-m":
        sys.argv = [rest[1], *rest[2:]]
        sys.path[0] = os.getcwd()
        runpy.run_module(rest[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = list(rest)
        sys.path[0] = os.path.dirname(os.path.abspath(rest[0]))
        runpy.run_path(rest[0], run_name="__main__")


def _run_server(address: str, ready: str) -> None:
    serve(address, ready)
    _run_command()  # only the command's process gets here


def _run_command() -> None:
    """Run the command (arcvae as its console script does, or a ``python`` form) and end as the
    interpreter would, minus its teardown.

    The teardown (freeing every object) would write to every page the child shares with the server
    and copy them all: 0.9 s. What a normal exit does that a program can notice is done here: other
    threads are joined, ``atexit`` functions run, the standard streams are flushed.
    """
    import atexit
    import threading

    from arcvae.cli import main

    code = 0
    try:
        if _PROGRAM == "python":
            _run_python(sys.argv[1:])
        else:
            main()
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            code = exc.code or 0
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    except BaseException as exc:  # noqa: BLE001  (what the interpreter does with an uncaught exception)
        sys.excepthook(type(exc), exc, exc.__traceback__)
        code = -signal.SIGINT if isinstance(exc, KeyboardInterrupt) else 1
    threading._shutdown()  # type: ignore[attr-defined]  # what Python's exit runs first
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    if code < 0:  # an uncaught KeyboardInterrupt ends the process by SIGINT
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    os._exit(code)


def start(shell_send, harness: Path, timeout: float = 120.0) -> Path:
    """Start a server from the shell (so it is in the shell's process group), wait until it listens.

    ``shell_send`` writes one line to the shell. Returns the folder to put first on the shell's ``PATH``.
    """
    import shlex

    address, ready, log, bindir = (harness / name for name in ("warm.socket", "warm.ready", "warm.log", "warm-bin"))
    if len(os.fsencode(address)) > 100:  # the limit of a socket's path (104 or 108 bytes)
        raise RuntimeError(f"the harness folder's path is too long for a socket: {address}")
    bindir.mkdir()
    for program, name in (("arcvae", "arcvae"), ("torchrun", "torchrun"), ("python", "python-warm")):
        write_client(bindir / name, str(address), program)
    q = shlex.quote
    # a subshell starts it, so it is not one of the shell's jobs (a "wait" in the docs must not wait for it)
    shell_send(
        f"( {q(sys.executable)} {q(__file__)} {q(str(address))} {q(str(ready))} > {q(str(log))} 2>&1 < /dev/null & )"
    )
    deadline = time.monotonic() + timeout
    while not ready.exists():
        failed = log.exists() and "Traceback" in log.read_text(errors="replace")
        if failed or time.monotonic() > deadline:
            raise RuntimeError(f"the warm-start server did not start:\n{log.read_text(errors='replace')}")
        time.sleep(0.02)
    return bindir


if __name__ == "__main__":
    _run_server(sys.argv[1], sys.argv[2])
