"""Run the shell examples of ``README.md`` and ``docs/*.md``, so the docs cannot go stale.

The ``>>>`` examples of the Markdown files are doctests (``--doctest-glob=*.md``
in ``pyproject.toml``); this module runs the shell examples. It makes one
test per Markdown file that has at least one runnable block, found anew on
every run: a new ``docs/*.md`` file is picked up without any change here.
These tests train models and take minutes in all; they carry the ``slow``
marker (``-m "not slow"`` leaves them out).

Conventions
===========

Blocks
------
``console`` block
    A line starting with ``$ `` is a command; a command line ending in ``\\``
    continues on the next line. The lines after a command, up to the next
    ``$ `` line, are its expected output: stdout and stderr merged, in the
    order they were written. A command with no expected output (no lines, or
    only blank ones) has its output not checked. Any other text before the
    first ``$ `` line is an error.

    Matching is doctest-like: ``...`` matches any text, including newlines
    (a line that is only ``...`` also matches no line at all); trailing
    whitespace on each line and trailing blank lines are ignored; everything
    else is compared exactly, line by line.

    The exit code must be 0, unless the expected output contains ``error:``;
    then it must be non-zero.

``bash`` or ``sh`` block
    Every command is run: each line that is neither blank nor a ``#`` comment
    starts one (the same ``\\`` continuation). Output is not checked; the exit
    code must be 0.

Any other block
    ``text``, ``python``, ``pycon``, ``json``, ``toml``, ... is not run, unless
    a ``file`` directive says otherwise.

Directives
----------
HTML comments on a line of their own, invisible in the rendered page, placed
directly before a block (only blank lines, or other directives, may come
between). Every directive applies to the next block; a directive followed by
prose, an unknown directive or a missing argument is an error, so typos do
not go unnoticed.

``<!-- docs-test: file NAME -->``
    The block's content (typically ``python``) is written to ``NAME``,
    relative to the sandbox folder, at that point of the document, for later
    commands such as ``torchrun ... NAME``. Not allowed on a shell block.

``<!-- docs-test: skip REASON -->``
    The block is not run. ``REASON`` is required (GPUs, several machines,
    very long runs, commands that would run this very test suite).

``<!-- docs-test: setup CMD -->``
    ``CMD`` runs in the file's shell just before the block (output ignored
    unless it fails; exit code 0 required). Several ``setup`` directives run
    in order. Not run when the block is skipped.

``<!-- docs-test: needs-module NAME [NAME ...] -->``
    The block (and its ``setup``) is skipped when one of the named optional
    packages (e.g. ``wandb``) cannot be imported.

``<!-- docs-test: vary REGEX -->``
    For a ``console`` block whose output depends on float kernels (losses
    and accuracies of training runs differ in the last bits between CPUs,
    and visibly after a few epochs): a line of shown or actual output that
    ``REGEX`` finds (``re.search``) *varies*. Each run of consecutive varying
    lines in the shown output (a line of only ``...`` between two varying
    lines belongs to the run) matches a run of one or more varying lines in
    the actual output, whatever their number and content; every other line is
    compared as usual. So the page keeps real output of one machine, and the
    test checks exactly what every machine prints the same (data, counts,
    weights, messages, file names) and loosely what it cannot. Several
    ``vary`` directives on one block combine (any of them makes a line vary).

``<!-- docs-test: runs-in FILE [FILE ...] -->``
    A shell block that is not run here because every one of its commands
    runs, output checked, in one of the named Markdown files (paths from the
    repository root): ``test_runs_in_blocks_are_run_elsewhere`` checks that
    each command (without its trailing ``# comment``) is the text of a
    command of a run block of one of those files. For summaries such as the
    README's tour, which would otherwise repeat minutes of training.

``<!-- docs-test: needs-shared-corpus -->``
    The block (and its ``setup``) is skipped when
    ``../shared/data/simplified_dataset_100k.npz``, relative to the repository
    root, is absent. When it is present, every sandbox has ``$SHARED_CORPUS``
    set to its absolute path. The convention for using it: a ``setup``
    symlink, so the shown commands use the path a reader in the repository
    root would type::

        <!-- docs-test: needs-shared-corpus -->
        <!-- docs-test: setup mkdir -p ../shared/data && ln -sfn "$SHARED_CORPUS" ../shared/data/ -->
        ```console
        $ arcvae data info ../shared/data/simplified_dataset_100k.npz
        ```

    (The sandbox's parent folder is private to the test, so ``../shared``
    there is too.)

Where and how the commands run
------------------------------
Each Markdown file gets its own fresh sandbox folder (the starting working
directory) and one ``bash`` session: its blocks run in document order, and
the shell's state (current folder, variables, ``$?`` for ``echo $?``)
carries over from one command to the next. Commands read no input
(``/dev/null``). The environment is the test run's, with:

- ``XDG_CACHE_HOME=<sandbox>/cache`` and ``HOME=<sandbox>/home`` (both
  created empty; no other ``XDG_*``, ``WANDB_*``, ``MPLCONFIGDIR`` or
  ``TORCH_HOME``, so those folders are under that ``HOME``),
  ``COLUMNS=100``, ``TERM=dumb``, ``NO_COLOR=1``, ``LC_ALL=C.UTF-8`` and
  ``PYTHONIOENCODING=utf-8``;
- ``PATH`` starting with the folder of the running Python, so ``python``,
  ``arcvae`` and ``torchrun`` are those of this environment, and
  ``PYTHONPATH`` starting with the repository's ``src``;
- no ``BASH_ENV``/``ENV``, and none of torchrun's ``RANK``, ``WORLD_SIZE``,
  ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``.

``arcvae`` itself is, on that ``PATH``, a client of a server started for
the file that has already imported torch (``tests/docs_warm.py``): each
command runs in a child forked from it, with the command's arguments,
folder, environment, standard streams and signals, and its exit code. This
saves 1.5 s of start-up per command and 1.2 s per training run, without
changing what runs or what it prints. ``torchrun`` is such a client too, and
so are the processes it starts (through ``PYTHON_EXEC``). ``DOCS_TEST_COLD=1``
runs each command as a new process instead.

Each command (and each setup) may take at most ``COMMAND_TIMEOUT`` seconds
(300); then the whole session is killed and the test fails. Otherwise the
file runs to its end (a failing ``setup`` stops it), and the failure message
lists every failing command: file and line, the command, the expected and
the actual output, and their diff.

Writing examples that pass
--------------------------
- Replace what varies between runs or machines (timings, dates, run folders
  named after the clock, absolute paths, speeds) with ``...``; keep what is
  deterministic (counts, weights, parameter counts, messages, file lists).
- The losses and accuracies of a training run are deterministic on one CPU
  only: another CPU (or ``ATEN_CPU_CAPABILITY=default``, which CI sets)
  differs in the last bits from the first steps on, and visibly after a few
  epochs. Show them as captured, and declare their lines with ``vary``; a
  qualitative outcome that holds on every CPU (a run that collapses to
  black and stays there) may be shown exactly.
- A usage error (exit code 2) prints a boxed ``Error`` message, not
  ``error:``; show its code with ``$ arcvae ... || echo "exit code $?"``.
- A command started in the background (``&``) must have its output
  redirected, and be waited for (``wait``) before its results are used.

To see what the commands of a file print now (to write or re-capture its
examples), run this module as a script; it prints each command and its
output in ``console`` form (and, on stderr, its exit code and duration)::

    python tests/test_docs.py docs/cli.md
"""

from __future__ import annotations

import difflib
import importlib.util
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import docs_warm  # tests/ is on sys.path: pytest puts it there, and so does running this file
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_CORPUS = (REPO / ".." / "shared" / "data" / "simplified_dataset_100k.npz").resolve()
COMMAND_TIMEOUT = 300.0
WARM = os.environ.get("DOCS_TEST_COLD") != "1"
SHELL_LANGUAGES = {"bash", "sh"}
RUNNABLE_LANGUAGES = SHELL_LANGUAGES | {"console"}
DIRECTIVES = {"file", "skip", "setup", "needs-shared-corpus", "needs-module", "vary", "runs-in"}
ELLIPSIS = "..."

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`]*?)[ \t]*$")
_DIRECTIVE = re.compile(r"^[ \t]*<!--[ \t]*docs-test:[ \t]*(?P<name>[\w-]*)(?:[ \t]+(?P<arg>.*?))?[ \t]*-->[ \t]*$")


class DocFormatError(Exception):
    """A Markdown file breaks the conventions (bad directive, stray text in a console block, ...)."""


@dataclass
class Command:
    line: int  # 1-based line of the command in the Markdown file
    text: str  # as bash gets it; continuation lines keep their backslash-newline
    expected: list[str] | None  # None: output not checked (bash blocks, or nothing shown)


@dataclass
class Block:
    line: int  # 1-based line of the opening fence
    language: str
    content: str
    file: str | None = None
    skip: str | None = None
    setup: list[tuple[int, str]] = field(default_factory=list)  # (line of the directive, command)
    needs_shared_corpus: bool = False
    needs_modules: list[str] = field(default_factory=list)  # optional packages the block needs
    vary: list[str] = field(default_factory=list)  # regexes of lines whose content depends on float kernels
    runs_in: list[str] = field(default_factory=list)  # files whose run blocks hold every command of this block
    commands: list[Command] = field(default_factory=list)

    @property
    def runnable(self) -> bool:
        return self.language in RUNNABLE_LANGUAGES or self.file is not None

    @property
    def varying(self) -> re.Pattern[str] | None:
        return re.compile("|".join(f"(?:{pattern})" for pattern in self.vary)) if self.vary else None


# --------------------------------------------------------------------------- parsing


def parse_markdown(text: str, name: str = "<markdown>") -> list[Block]:
    """Every fenced block of ``text`` with its directives; shell blocks get their commands."""
    lines = text.splitlines()
    blocks: list[Block] = []
    pending: list[tuple[int, str, str]] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.lstrip().startswith("<!--") and "docs-test" in line:
            match = _DIRECTIVE.match(line)
            if not match or match["name"] not in DIRECTIVES:
                raise DocFormatError(
                    f"{name}:{i + 1}: not a docs-test directive (expected one of {sorted(DIRECTIVES)}): {line.strip()}"
                )
            pending.append((i + 1, match["name"], (match["arg"] or "").strip()))
            i += 1
            continue
        fence = _FENCE.match(line)
        if fence:
            indent, marker, info = fence["indent"], fence["fence"], fence["info"]
            body: list[str] = []
            j = i + 1
            while j < len(lines):
                stripped = lines[j].strip()
                if stripped.startswith(marker[0] * len(marker)) and set(stripped) == {marker[0]}:
                    break
                body.append(lines[j][len(indent) :] if lines[j].startswith(indent) else lines[j].lstrip())
                j += 1
            else:
                raise DocFormatError(f"{name}:{i + 1}: code block is never closed")
            language = info.split()[0].lower() if info else ""
            block = Block(line=i + 1, language=language, content="\n".join(body) + ("\n" if body else ""))
            _apply_directives(block, pending, name)
            pending = []
            if block.language in RUNNABLE_LANGUAGES and block.file is None:
                block.commands = (
                    _console_commands(body, i + 2, name)
                    if block.language == "console"
                    else _shell_commands(body, i + 2)
                )
            blocks.append(block)
            i = j + 1
            continue
        if pending and line.strip():
            first = pending[0][0]
            raise DocFormatError(
                f"{name}:{first}: docs-test directive is not directly before a code block (text follows at line {i + 1})"
            )
        i += 1
    if pending:
        raise DocFormatError(
            f"{name}:{pending[0][0]}: docs-test directive at the end of the file, with no code block after it"
        )
    return blocks


def _apply_directives(block: Block, directives: list[tuple[int, str, str]], name: str) -> None:
    for line, directive, arg in directives:
        where = f"{name}:{line}"
        if directive == "needs-shared-corpus":
            if arg:
                raise DocFormatError(f"{where}: needs-shared-corpus takes no argument, got {arg!r}")
            block.needs_shared_corpus = True
        elif not arg:
            raise DocFormatError(f"{where}: docs-test {directive} needs an argument")
        elif directive == "skip":
            block.skip = arg
        elif directive == "setup":
            block.setup.append((line, arg))
        elif directive == "needs-module":
            block.needs_modules += arg.split()
        elif directive == "vary":
            if block.language != "console":
                raise DocFormatError(
                    f"{where}: docs-test vary applies to a console block, not to a {block.language or 'plain'} block"
                )
            try:
                re.compile(arg)
            except re.error as exc:
                raise DocFormatError(
                    f"{where}: docs-test vary needs a regular expression, got {arg!r} ({exc})"
                ) from None
            block.vary.append(arg)
        elif directive == "runs-in":
            if block.language not in SHELL_LANGUAGES:
                raise DocFormatError(
                    f"{where}: docs-test runs-in applies to a bash or sh block, not to a {block.language or 'plain'} block"
                )
            block.runs_in = arg.split()
            block.skip = "every command runs, output checked, in " + ", ".join(block.runs_in)
        elif directive == "file":
            if block.language in RUNNABLE_LANGUAGES:
                raise DocFormatError(f"{where}: docs-test file cannot apply to a {block.language} block")
            if Path(arg).is_absolute() or ".." in Path(arg).parts:
                raise DocFormatError(f"{where}: docs-test file needs a relative path inside the sandbox, got {arg!r}")
            block.file = arg


def _join_continued(lines: list[str], start: int) -> tuple[str, int]:
    """The command starting at ``lines[start]`` with its ``\\`` continuations, and the index after it."""
    parts = [lines[start]]
    k = start
    while parts[-1].rstrip().endswith("\\") and k + 1 < len(lines):
        k += 1
        parts.append(lines[k])
    return "\n".join(parts), k + 1


def _shell_commands(body: list[str], first_line: int) -> list[Command]:
    commands = []
    k = 0
    while k < len(body):
        stripped = body[k].strip()
        if not stripped or stripped.startswith("#"):
            k += 1
            continue
        text, nxt = _join_continued(body, k)
        commands.append(Command(line=first_line + k, text=text, expected=None))
        k = nxt
    return commands


def _console_commands(body: list[str], first_line: int, name: str) -> list[Command]:
    commands: list[Command] = []
    k = 0
    while k < len(body):
        if not body[k].startswith("$ "):
            if body[k].strip():
                raise DocFormatError(
                    f"{name}:{first_line + k}: console block has text before its first '$ ' command: {body[k]!r}"
                )
            k += 1
            continue
        lines = [body[k][2:]] + body[k + 1 :]
        text, used = _join_continued(lines, 0)
        line = first_line + k
        k += used
        output = []
        while k < len(body) and not body[k].startswith("$ "):
            output.append(body[k])
            k += 1
        shown = any(o.strip() for o in output)
        commands.append(Command(line=line, text=text, expected=output if shown else None))
    return commands


# --------------------------------------------------------------------------- matching


def normalize(text: str) -> str:
    """Trailing whitespace of every line and trailing blank lines removed; CRLF as LF."""
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines)


_VARIES = "\x00varies\x00"  # what a run of varying lines becomes before matching


def collapse_varying(text: str, varying: re.Pattern[str] | None) -> str:
    """``text`` (normalized) with each run of lines that ``varying`` finds replaced by one marker line.

    A line of only ``...`` between two varying lines is part of the run.
    """
    lines = normalize(text).split("\n")
    if varying is None:
        return "\n".join(lines)
    kinds = ["vary" if varying.search(line) else "ellipsis" if line.strip() == ELLIPSIS else "other" for line in lines]
    out: list[str] = []
    for index, (line, kind) in enumerate(zip(lines, kinds)):
        if kind == "ellipsis" and out and out[-1] == _VARIES:
            following = next((k for k in kinds[index + 1 :] if k != "ellipsis"), "other")
            if following == "vary":
                continue  # inside a run: absorbed
        if kind != "vary":
            out.append(line)
        elif not out or out[-1] != _VARIES:
            out.append(_VARIES)
    return "\n".join(out)


def output_matches(expected: str, actual: str, varying: re.Pattern[str] | None = None) -> bool:
    """doctest-like: ``...`` matches any text (a line of only ``...`` also matches zero lines).

    With ``varying``, runs of lines it finds are compared by position only (see ``collapse_varying``).
    """
    if varying is not None:
        expected, actual = collapse_varying(expected, varying), collapse_varying(actual, varying)
    lines = normalize(expected).split("\n")
    pieces: list[str] = []  # the text between standalone "..." lines
    current: list[str] = []
    last = len(lines) - 1
    for index, line in enumerate(lines):
        if line.strip() != ELLIPSIS:
            current.append(line)
            continue
        # a line that is only "..." takes one neighbouring newline with it, so that it may match no line at all
        pieces.append("\n".join(current) + ("\n" if current and index < last else ""))
        current = []
        if index == last:
            pieces.append("")
    if current or not pieces:
        pieces.append("\n".join(current))
    # consecutive pieces are separated by an ellipsis, and a piece may hold inline ones
    runs = [run for piece in pieces for run in piece.split(ELLIPSIS)]
    return _ellipsis_match(runs, normalize(actual))


def _ellipsis_match(runs: list[str], actual: str) -> bool:
    """Whether ``actual`` is runs[0] + any + runs[1] + any + ... + runs[-1] (leftmost-first search, linear)."""
    if len(runs) == 1:
        return runs[0] == actual
    head, tail = runs[0], runs[-1]
    if not actual.startswith(head) or len(head) + len(tail) > len(actual) or not actual.endswith(tail):
        return False
    position, end = len(head), len(actual) - len(tail)
    for run in runs[1:-1]:
        found = actual.find(run, position, end)
        if found < 0:
            return False
        position = found + len(run)
    return True


# --------------------------------------------------------------------------- running


@dataclass
class Result:
    command: str
    output: str
    returncode: int
    seconds: float


class Session:
    """One bash process per Markdown file; each command is sourced from a file, its output and code kept."""

    def __init__(
        self, sandbox: Path, harness: Path, env: dict[str, str], timeout: float = COMMAND_TIMEOUT, *, warm: bool = WARM
    ) -> None:
        self.sandbox, self.harness, self.timeout = sandbox, harness, timeout
        self.count = 0
        self.proc = subprocess.Popen(
            ["bash", "--noprofile", "--norc"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            cwd=sandbox, env=env, start_new_session=True, text=True,
        )  # fmt: skip
        self._send("__docs_rc=0")
        self.warm = warm  # arcvae and torchrun commands start in children of a server that has imported torch

    def _start_warm(self) -> None:
        """Start the server before the first command (a file whose blocks are all skipped never pays for it)."""
        self.warm = False
        try:
            bindir = docs_warm.start(self._send, self.harness)
        except BaseException:
            self.close()
            raise
        self._send(f'PATH={shlex.quote(str(bindir))}:"$PATH"')

    def _send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def run(self, command: str) -> Result:
        if self.warm:
            self._start_warm()
        self.count += 1
        n = self.count
        script, out, rc = (self.harness / f"{n}.{suffix}" for suffix in ("sh", "out", "rc"))
        script.write_text(command + "\n", encoding="utf-8")
        q = shlex.quote
        # (exit $__docs_rc) gives the command the previous command's $?, for "echo $?"
        self._send(f"(exit $__docs_rc); . {q(str(script))} > {q(str(out))} 2>&1 < /dev/null; __docs_rc=$?; "
                   f"echo $__docs_rc > {q(str(rc))}.part && mv {q(str(rc))}.part {q(str(rc))}")  # fmt: skip
        start = time.monotonic()
        while not rc.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"the shell exited (code {self.proc.returncode}) during:\n{command}\n{_read(out)}")
            if time.monotonic() - start > self.timeout:
                self.close()
                raise TimeoutError(f"timed out after {self.timeout:.0f} s:\n$ {command}\n{_read(out)}")
            time.sleep(0.02)
        return Result(command, _read(out), int(rc.read_text().strip() or "-1"), time.monotonic() - start)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self._send("exit")
                self.proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                pass
        try:  # anything the commands left behind in the session's process group
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait()


def _read(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""


def sandbox_env(sandbox: Path) -> dict[str, str]:
    env = dict(os.environ)
    for name in ("BASH_ENV", "ENV", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR",
                 "MASTER_PORT", "TORCHELASTIC_RUN_ID", "SHARED_CORPUS", "PYTEST_CURRENT_TEST", "MPLCONFIGDIR", "TORCH_HOME"):  # fmt: skip
        env.pop(name, None)
    for name in [name for name in env if name.startswith(("XDG_", "WANDB_"))]:  # as a user has them: under HOME
        env.pop(name)
    bindir = str(Path(sys.executable).parent)
    env.update(
        XDG_CACHE_HOME=str(sandbox / "cache"),
        HOME=str(sandbox / "home"),
        COLUMNS="100",
        TERM="dumb",
        NO_COLOR="1",
        LC_ALL="C.UTF-8",
        PYTHONIOENCODING="utf-8",
        PATH=os.pathsep.join([bindir, env.get("PATH", "")]),
        PYTHONPATH=os.pathsep.join(p for p in [str(REPO / "src"), env.get("PYTHONPATH", "")] if p),
    )
    if SHARED_CORPUS.exists():
        env["SHARED_CORPUS"] = str(SHARED_CORPUS)
    return env


@dataclass
class Failure(Exception):
    message: str

    def __str__(self) -> str:
        return self.message


def run_document(path: Path, workdir: Path, *, echo: bool = False) -> tuple[list[str], list[Result]]:
    """Run every runnable block of ``path`` in a fresh sandbox under ``workdir``.

    Returns the reasons of skipped blocks and the results of the commands.
    Raises ``Failure`` listing every command that failed its check (after
    running them all; a failing setup stops at once), unless ``echo`` (then
    every command's output is printed and nothing is checked).
    """
    name = _display(path)
    blocks = parse_markdown(path.read_text(encoding="utf-8"), name)
    sandbox, harness = workdir / "sandbox", workdir / "harness"
    for folder in (sandbox / "cache", sandbox / "home", harness):
        folder.mkdir(parents=True, exist_ok=True)
    session = Session(sandbox, harness, sandbox_env(sandbox))
    skipped: list[str] = []
    results: list[Result] = []
    failures: list[str] = []  # every failing command is reported; a failing setup stops the file
    try:
        for block in blocks:
            if not block.runnable:
                continue
            if block.skip is not None:
                skipped.append(f"{name}:{block.line}: {block.skip}")
                continue
            if block.needs_shared_corpus and not SHARED_CORPUS.exists():
                skipped.append(f"{name}:{block.line}: needs {SHARED_CORPUS}, which is absent")
                continue
            missing = [module for module in block.needs_modules if importlib.util.find_spec(module) is None]
            if missing:
                skipped.append(
                    f"{name}:{block.line}: needs the optional package(s) {', '.join(missing)}, not installed"
                )
                continue
            for line, setup in block.setup:
                result = session.run(setup)
                if result.returncode != 0 and not echo:
                    raise Failure(
                        f"{name}:{line}: setup failed with exit code {result.returncode}\n$ {setup}\n{result.output}"
                    )
            if block.file is not None:
                target = sandbox / block.file
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(block.content, encoding="utf-8")
                continue
            for command in block.commands:
                result = session.run(command.text)
                results.append(result)
                if echo:
                    print(
                        f"$ {command.text}\n{result.output}",
                        end="" if result.output.endswith("\n") or not result.output else "\n",
                    )
                    print(f"[exit code {result.returncode}, {result.seconds:.1f} s]", file=sys.stderr, flush=True)
                    continue
                problem = _check(name, command, result, block.varying)
                if problem:
                    failures.append(problem)
    finally:
        session.close()
    if failures:
        raise Failure(f"{len(failures)} example(s) of {name} failed\n\n" + "\n\n".join(failures))
    return skipped, results


def _check(name: str, command: Command, result: Result, varying: re.Pattern[str] | None = None) -> str | None:
    """``None`` if ``result`` is what ``command`` shows, else the failure message."""
    expected = None if command.expected is None else "\n".join(command.expected)
    wants_error = expected is not None and "error:" in expected
    problems = []
    if wants_error and result.returncode == 0:
        problems.append("the shown output contains 'error:', so a non-zero exit code was expected, but it was 0")
    elif not wants_error and result.returncode != 0:
        problems.append(f"exit code {result.returncode}, expected 0")
    if expected is not None and not output_matches(expected, result.output, varying):
        problems.append("the output does not match")
    if not problems:
        return None
    want, got = normalize(expected or ""), normalize(result.output)
    message = [f"{name}:{command.line}: {'; '.join(problems)}", "", "command:", f"$ {command.text}", ""]
    if expected is not None:
        note = "lines with '...' in the expected output match any text"
        if varying is not None:  # the diff of what is compared: each run of varying lines as one marker
            want, got = (collapse_varying(text, varying).replace(_VARIES, "<lines that vary>") for text in (want, got))
            note += f"; runs of lines that vary (docs-test vary {varying.pattern!r}) are shown as one marker"
        diff = difflib.unified_diff(want.split("\n"), got.split("\n"), "expected", "actual", lineterm="", n=2)
        message += ["expected:", want, "", "actual:", got, "", f"diff ({note}):", *diff]
    else:
        message += ["actual output:", got]
    return "\n".join(message)


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)


# --------------------------------------------------------------------------- tests


def markdown_files() -> list[Path]:
    return sorted((REPO / "docs").glob("*.md")) + [REPO / "README.md"]


def _has_runnable_block(path: Path) -> bool:
    try:
        return any(block.runnable for block in parse_markdown(path.read_text(encoding="utf-8"), _display(path)))
    except DocFormatError:
        return True  # let the test report it


DOCUMENTS = [path for path in markdown_files() if _has_runnable_block(path)]


@pytest.mark.slow
@pytest.mark.parametrize("path", DOCUMENTS, ids=[_display(p) for p in DOCUMENTS])
def test_shell_examples(path: Path, tmp_path: Path) -> None:
    try:
        skipped, results = run_document(path, tmp_path)
        failure = None
    except (Failure, DocFormatError, TimeoutError, RuntimeError) as exc:
        failure = str(exc)
    if failure is not None:  # outside the except block, so the message is shown once
        pytest.fail(failure, pytrace=False)
    if skipped and not results:
        pytest.skip("every runnable block is skipped: " + "; ".join(skipped))


def _tokens(command: str) -> list[str]:
    return shlex.split(command.replace("\\\n", " "), comments=True)


def test_runs_in_blocks_are_run_elsewhere() -> None:
    """Every command of a ``runs-in`` block is a command of a run (not skipped) block of a file it names."""
    problems = []
    for path in markdown_files():
        for block in parse_markdown(path.read_text(encoding="utf-8"), _display(path)):
            if not block.runs_in:
                continue
            run_elsewhere: set[tuple[str, ...]] = set()
            for other in block.runs_in:
                target = REPO / other
                if not target.is_file():
                    problems.append(f"{_display(path)}:{block.line}: runs-in names {other!r}, which is not a file")
                    continue
                for candidate in parse_markdown(target.read_text(encoding="utf-8"), other):
                    if candidate.runnable and candidate.skip is None:
                        run_elsewhere.update(tuple(_tokens(command.text)) for command in candidate.commands)
            problems += [f"{_display(path)}:{command.line}: not run in {' or '.join(block.runs_in)}: {command.text}"
                         for command in block.commands if tuple(_tokens(command.text)) not in run_elsewhere]  # fmt: skip
    assert not problems, "\n".join(problems)


def test_warm_commands_behave_like_new_processes(tmp_path: Path) -> None:
    """What a command prints, its exit code, folder and environment are the same warm (docs_warm.py) and cold,
    for arcvae and for the processes torchrun starts."""
    commands = [
        "arcvae --version",
        'mkdir -p sub && cd sub && arcvae weights compute ../missing.npz; echo "exit $?"; cd ..',
        "python -c \"import numpy as np; np.save('m.npy', np.array([[0, 1], [1, 2]], np.uint8))\"",
        # the environment: the cache goes where this command's XDG_CACHE_HOME says
        'XDG_CACHE_HOME="$PWD/other" arcvae weights compute m.npy --num-classes 3 --json | tail -1; ls other/arcvae/weights',
        'arcvae train --epochs 0 > out.txt 2>&1; echo "exit $?"; wc -l < out.txt',  # a usage error, on stderr
        # torchrun's processes: their environment, arguments, import path and exit code (a script and -m)
        (
            "printf 'import os, sys\\nprint(os.environ[\"RANK\"], sys.argv[1:], sys.path[0] == os.getcwd())\\n' > ranks.py"
        ),
        'torchrun --standalone --nproc_per_node=2 ranks.py a "b c" 2> /dev/null | sort; echo "exit ${PIPESTATUS[0]}"',
        "torchrun --standalone --nproc_per_node=1 -m arcvae --version 2> /dev/null",
        'torchrun --standalone --nproc_per_node=1 -m arcvae train --epochs 0 2> /dev/null; echo "exit $?"',  # a failure
    ]
    outputs, found = {}, {}
    for warm in (True, False):
        sandbox, harness = tmp_path / str(warm) / "sandbox", tmp_path / str(warm) / "harness"
        for folder in (sandbox / "cache", sandbox / "home", harness):
            folder.mkdir(parents=True)
        session = Session(sandbox, harness, sandbox_env(sandbox), warm=warm)
        try:
            outputs[warm] = [
                (r.output.replace(str(sandbox), "<sandbox>"), r.returncode) for r in map(session.run, commands)
            ]
            found[warm] = session.run("command -v arcvae torchrun").output
        finally:
            session.close()
    assert found[True].count("warm-bin") == 2 and "warm-bin" not in found[False]
    assert outputs[True] == outputs[False]
    assert outputs[True][1][0].endswith("exit 1\n") and "exit 2" in outputs[True][4][0]  # the commands did run
    assert outputs[True][3][0].rstrip().endswith(".json")  # and the cache file is in the folder it named
    assert outputs[True][6][0] == "0 ['a', 'b c'] True\n1 ['a', 'b c'] True\nexit 0\n"  # both ranks ran
    assert outputs[True][7][0].startswith("arcvae ") and outputs[True][8][0] == "exit 1\n"


def test_output_matching() -> None:
    assert output_matches("a\n...\nb", "a\nb")
    assert output_matches("a\n...\nb", "a\nx\ny\nb  \n\n")
    assert not output_matches("a\n...\nb", "ab")
    assert output_matches("a\n...", "a")
    assert output_matches("...\nb", "x\nb")
    assert output_matches("took ... s", "took 1.5 s")
    assert not output_matches("took ... s", "took 1.5 ms")
    assert output_matches("x ... y ... z", "x 1 y 2 z")
    assert not output_matches("a\nb", "a\nb\nc")
    assert not output_matches(" a", "a")


def test_varying_lines_match_by_position() -> None:
    epochs = re.compile(r"^Epoch |^  acc=")
    shown = "start\nEpoch 1 loss=0.3\n  acc=0.1\n...\nEpoch 5 loss=0.1\n\ndone (...)"
    assert output_matches(shown, "start\nEpoch 1 loss=0.29\nEpoch 2 loss=0.2\n\ndone (95.1%)", epochs)
    assert output_matches(shown, "start\nEpoch 1 loss=0.29\n\ndone (x)", epochs)  # any number of lines in the run
    assert not output_matches(shown, "start\n\ndone (x)", epochs)  # but at least one
    assert not output_matches(
        shown, "start\nEpoch 1\nwarning: NaN\nEpoch 2\n\ndone (x)", epochs
    )  # other lines stay exact
    assert not output_matches(shown, "begin\nEpoch 1\n\ndone (x)", epochs)
    assert not output_matches(shown, "start\nEpoch 1 loss=0.29\n\ndone (95.1%)")  # without the directive: exact
    assert collapse_varying("a\n...\nEpoch 1\n...\nEpoch 2\n...\nb", epochs) == f"a\n...\n{_VARIES}\n...\nb"


def test_parsing_conventions() -> None:
    blocks = parse_markdown(
        "<!-- docs-test: setup touch x -->\n\n```console\n$ echo a \\\n  b\na b\n$ true\n```\n"
        "<!-- docs-test: file s.py -->\n```python\nprint(1)\n```\n"
        "```bash\n# comment\nls \\\n  -l\necho hi  # trailing\n```\n",
    )
    console, script, shell = blocks
    assert console.setup == [(1, "touch x")]
    assert [(c.text, c.expected) for c in console.commands] == [("echo a \\\n  b", ["a b"]), ("true", None)]
    assert script.file == "s.py" and script.runnable
    assert [c.text for c in shell.commands] == ["ls \\\n  -l", "echo hi  # trailing"]
    for bad in ("<!-- docs-test: skip -->\n```bash\nx\n```\n", "<!-- docs-test: file a.py -->\ntext\n```python\n```\n",
                "<!-- docs-test: skipp why -->\n```bash\nx\n```\n", "```console\nstray\n$ x\n```\n",
                "<!-- docs-test: vary ( -->\n```console\n$ x\n```\n", "<!-- docs-test: vary x -->\n```bash\nx\n```\n",
                "<!-- docs-test: runs-in a.md -->\n```console\n$ x\n```\n"):  # fmt: skip
        with pytest.raises(DocFormatError):
            parse_markdown(bad)


if __name__ == "__main__":
    import tempfile

    for arg in sys.argv[1:]:
        with tempfile.TemporaryDirectory(prefix="docs-test-") as tmp:
            print(f"# {arg} (sandbox {tmp}/sandbox)")
            skipped, _ = run_document(Path(arg), Path(tmp), echo=True)
            for reason in skipped:
                print(f"# skipped {reason}")
