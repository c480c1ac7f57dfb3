"""Open a path for reading only if it is a regular file, without ever blocking on one that is not.

Opening a FIFO for reading waits for a writer, and reading a device such as
``/dev/zero`` never ends. So paths are opened with ``O_NONBLOCK`` (a FIFO
then opens at once), and the status of the open descriptor decides: what is
checked is what is read, even if the path is replaced in between.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import Any

from ._errors import ClassWeightError

try:
    import fcntl
except ImportError:  # Windows: no FIFOs or devices to open by path there, and no O_NONBLOCK
    fcntl = None  # type: ignore[assignment]

FileIdentity = tuple[int, int, int, int, int]
"""``(st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns)`` of an open file."""

_KINDS = [
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISLNK, "a symbolic link"),
]


def describe(mode: int) -> str:
    """What a file of ``mode`` is, for error messages."""
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def identity(info: os.stat_result) -> FileIdentity:
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


def open_regular(
    path: Any, *, what: str, existing: str, follow_symlinks: bool = True, blocking: bool = True
) -> tuple[int, os.stat_result]:
    """Open ``path`` read-only and return its descriptor and ``fstat``; raise unless it is a regular file.

    ``what`` names the file expected (``"a .npy or .npz file"``), ``existing``
    the same for a missing path (``"an existing .npy or .npz file"``). With
    ``follow_symlinks=False`` a symbolic link is refused (``O_NOFOLLOW``). With
    ``blocking=False`` the descriptor keeps ``O_NONBLOCK``, which changes
    nothing for reading a regular file and saves two system calls per file.
    """
    shown = repr(os.fspath(path)) if isinstance(path, (str, bytes, os.PathLike)) else repr(path)
    try:
        # A first look without opening: opening some devices (a terminal, a tape) has effects of its own.
        info = os.stat(path) if follow_symlinks else os.lstat(path)
    except FileNotFoundError:
        raise ClassWeightError(f"Expected {existing}, but {shown} does not exist") from None
    except (OSError, ValueError, TypeError) as exc:  # ValueError: a NUL byte in the path
        raise ClassWeightError(f"could not read {shown}: {getattr(exc, 'strerror', None) or exc}") from None
    _require_regular(info, shown, what)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    if not follow_symlinks:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise ClassWeightError(f"Expected {existing}, but {shown} does not exist") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP and not follow_symlinks:
            raise ClassWeightError(
                f"Expected {what}, but {shown} is a symbolic link (links are not followed here)"
            ) from None
        raise ClassWeightError(f"could not read {shown}: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
        _require_regular(info, shown, what)  # the path may have been replaced since the first look
        if blocking and fcntl is not None and getattr(os, "O_NONBLOCK", 0):
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    except BaseException:
        os.close(fd)
        raise
    return fd, info


def _require_regular(info: os.stat_result, shown: str, what: str) -> None:
    if not stat.S_ISREG(info.st_mode):
        kind = describe(info.st_mode)
        tail = "" if kind == "a directory" or "regular" in what else ", not a regular file"
        if stat.S_ISLNK(info.st_mode):
            tail = " (symbolic links are not followed here)"
        raise ClassWeightError(f"Expected {what}, but {shown} is {kind}{tail}")
