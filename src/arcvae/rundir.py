"""A run folder: which files are a run's, and who may write it.

A run owns its folder for as long as it trains: it holds an exclusive lock
on ``<run>/.lock`` (``flock``, or ``msvcrt.locking`` on Windows). The lock
goes with the process, however it ends, so a folder left by a killed run is
free again at once: there is no stale claim to clean up by hand.

A new run may use a folder that does not exist, is empty, or holds only what
a run stopped before its first checkpoint leaves (its own ``config.json``,
``metrics.jsonl``, ... and temporary files of interrupted writes). A folder
holding anything else, or files of the same names that are not a run's, is
never written to.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import time
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ArcvaeError

if TYPE_CHECKING:
    from typing_extensions import Self

    from .distributed import Dist

LOCK_NAME = ".lock"
RUN_FILES = frozenset(
    {
        "config.json",
        "class_weights.json",
        "metrics.jsonl",
        "result.json",
        "checkpoints",
        "reconstructions.png",
        "curves.png",
        "wandb",
        LOCK_NAME,
    }
)
"""The names a run writes in its folder."""

_TEMPORARY = re.compile(r"^\.(?P<name>[^/]+)\.[A-Za-z0-9_]+\.tmp$")  # what an interrupted atomic write leaves behind
_CONFIG_KEYS = {
    "data",
    "out",
    "overfit_batch",
    "epochs",
    "seed",
    "weights_method",
}  # present in every run's config.json
_MAX_CONFIG_BYTES = 1 << 20


def new_run_dir(out: str | None, *, overfit: bool) -> Path:
    """``out``, or ``runs/<time>[-overfit]`` (with ``-2``, ``-3``, ... if the name is taken)."""
    if out is not None:
        return Path(out)
    base = Path("runs") / (time.strftime("%Y%m%d-%H%M%S") + ("-overfit" if overfit else ""))
    candidate, n = base, 1
    while candidate.exists() or candidate.is_symlink():
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate


def is_run_file(path: Path) -> bool:
    """Whether ``path`` is (or would be) one of the files of a run folder: a name of :data:`RUN_FILES` in a run
    folder, or anything under its ``checkpoints`` or ``wandb`` folder."""
    parts = [path.parent, *path.parent.parents]
    for folder in parts[:3]:
        if looks_like_run(folder):
            first = path.relative_to(folder).parts[0]
            return first in RUN_FILES or _TEMPORARY.match(first) is not None
    return False


def looks_like_run(folder: Path) -> bool:
    """A folder with a run's checkpoints, or with a run's ``config.json``."""
    return (folder / "checkpoints").is_dir() or _is_run_config(folder / "config.json")


def _as_argument(path: Path) -> str:
    """``path`` as one would type it in a shell; quoted as Python does if it holds a newline or another control."""
    text = str(path)
    return shlex.quote(text) if text.isprintable() else repr(text)


def check_fresh(run_dir: Path) -> None:
    """Raise unless a new run may write ``run_dir`` (see the module docstring)."""
    if not os.path.lexists(run_dir):
        return
    if not run_dir.is_dir():
        raise ArcvaeError(f"--out {str(run_dir)!r} is not a folder; expected a new or empty folder for the run")
    if (run_dir / "checkpoints" / "last.pt").exists():
        raise ArcvaeError(
            f"run folder {str(run_dir)!r} already holds a run; pass --resume {_as_argument(run_dir)} to continue it, "
            "or another --out"
        )
    names = sorted(p.name for p in run_dir.iterdir())
    foreign = [n for n in names if n not in RUN_FILES and not _is_leftover(n)]
    if foreign:
        raise ArcvaeError(
            f"run folder {str(run_dir)!r} holds other files ({', '.join(map(repr, foreign[:3]))}); "
            "choose an empty or new --out"
        )
    if "config.json" in names and not _is_run_config(run_dir / "config.json"):
        raise ArcvaeError(
            f"run folder {str(run_dir)!r} holds a config.json that is not a run's; choose an empty or new --out"
        )
    if "metrics.jsonl" in names and "config.json" not in names:
        raise ArcvaeError(
            f"run folder {str(run_dir)!r} holds a metrics.jsonl without a run's config.json; choose an empty or new --out"
        )


def remove_leftovers(run_dir: Path) -> None:
    """Delete the temporary files that writes interrupted by a crash or a kill left in the run folder."""
    for folder in (run_dir, run_dir / "checkpoints"):
        if folder.is_dir():
            for path in folder.iterdir():
                if _is_leftover(path.name) and path.is_file() and not path.is_symlink():
                    path.unlink(missing_ok=True)


def _is_leftover(name: str) -> bool:
    match = _TEMPORARY.match(name)
    return match is not None and match["name"] in RUN_FILES | {"last.pt", "best.pt"}


def _is_run_config(path: Path) -> bool:
    try:
        if path.is_symlink() or not path.is_file() or path.stat().st_size > _MAX_CONFIG_BYTES:
            return False
        record = json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(record, dict) and _CONFIG_KEYS <= set(record)


# --------------------------------------------------------------- the claim ----


class RunClaim:
    """This process's exclusive hold on a run folder, until :meth:`release` (or the process ends)."""

    def __init__(self, folder: Path, fd: int, *, made_folder: bool, made_lock: bool) -> None:
        self.folder, self._fd = folder, fd
        self._made = (made_folder, made_lock)

    @classmethod
    def take(cls, folder: Path, *, create: bool) -> RunClaim:
        """Claim ``folder`` (created first when ``create``); raise if another live run holds it."""
        made_folder = False
        if create:
            folder.parent.mkdir(parents=True, exist_ok=True)
            try:
                folder.mkdir()
                made_folder = True
            except FileExistsError:
                pass  # an existing folder: whoever holds the lock decides below
        if not folder.is_dir():
            raise ArcvaeError(f"run folder {str(folder)!r} is not a folder")
        lock = folder / LOCK_NAME
        made_lock = not os.path.lexists(lock)
        try:
            fd = os.open(
                lock, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0), 0o666
            )
        except OSError as exc:
            raise ArcvaeError(f"could not claim run folder {str(folder)!r}: {exc.strerror or exc} ({lock})") from None
        if not _try_lock(fd):
            holder = _read_holder(fd)
            os.close(fd)
            raise ArcvaeError(
                f"run folder {str(folder)!r} is in use by another arcvae run{holder}; wait for it, or choose another --out"
            )
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        return cls(folder, fd, made_folder=made_folder, made_lock=made_lock)

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing the descriptor releases the lock
            self._fd = -1

    def abandon(self) -> None:
        """Release the claim and remove what taking it created (a folder that turned out not to be usable)."""
        made_folder, made_lock = self._made
        if made_lock:
            (self.folder / LOCK_NAME).unlink(missing_ok=True)
        self.release()
        if made_folder:
            try:
                self.folder.rmdir()
            except OSError:
                pass

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def claim_run_dir(run_dir: Path, *, new: bool, group: Dist) -> RunClaim | contextlib.nullcontext[None]:
    """Rank 0 claims the run folder and removes the temporary files of interrupted writes; an error reaches every rank.

    A new run checks again, under the claim, that it may use the folder. The
    other ranks hold no claim (an empty context).
    """
    claim, error = None, None
    if group.is_main:
        try:
            claim = RunClaim.take(run_dir, create=new)
            if new:
                check_fresh(run_dir)
            remove_leftovers(run_dir)
        except ArcvaeError as exc:
            if claim is not None:
                claim.abandon()
                claim = None
            error = str(exc)
    error = group.broadcast(error)
    if error is not None:
        raise ArcvaeError(error)
    return claim or contextlib.nullcontext()


def _try_lock(fd: int) -> bool:
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined]
            return True
        except OSError:
            return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _read_holder(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except (OSError, AttributeError):
        return ""
    return f" (process {text})" if text.isdigit() else ""
