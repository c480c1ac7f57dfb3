"""Files the commands write where the user says (``--out``): checked before any work, so nothing is lost.

A command may write ``--out`` only if its folder exists, it is none of the
command's own inputs (under any name: the path itself, a symbolic link or a
hard link to it), it is not one of a run folder's files, and it is either new
or an existing regular file with ``--force``. A symbolic link, FIFO, device,
socket or folder given as ``--out`` is refused rather than replaced by a
plain file. The write itself is atomic (a temporary file renamed over the
target), so a failure leaves the old file whole.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path

from .errors import ArcvaeError
from .rundir import is_run_file

_KINDS = {
    stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
    stat.S_IFDIR: "a folder",
    stat.S_IFLNK: "a symbolic link",
}


def check_output_file(
    path: Path,
    *,
    force: bool,
    inputs: Iterable[str | os.PathLike[str] | None] = (),
    option: str = "--out",
    suffix: str | None = None,
) -> Path:
    """Return ``path`` if a command may write it (see the module docstring); else raise an :class:`ArcvaeError`."""
    shown = f"{option} {str(path)!r}"
    if suffix is not None and path.suffix != suffix:
        raise ArcvaeError(f"Expected {option} to end in {suffix}, but got {str(path)!r}")
    folder = path.parent
    if not folder.is_dir():
        raise ArcvaeError(f"the folder of {shown}, {str(folder)!r}, does not exist")
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        info = None
    if info is not None and not stat.S_ISREG(info.st_mode):
        kind = _KINDS.get(stat.S_IFMT(info.st_mode), "not a regular file")
        raise ArcvaeError(f"{shown} is {kind}; expected a new file name or a regular file to replace")
    for source in inputs:
        if source is not None and _same_file(path, Path(source)):
            raise ArcvaeError(f"{shown} is the command's own input {str(source)!r}; choose another file to write")
    if is_run_file(Path(os.path.abspath(path))):
        raise ArcvaeError(
            f"{shown} is a file of the run folder {str(folder)!r}; choose a file outside the run's own files"
        )
    if info is not None and not force:
        raise ArcvaeError(f"{str(path)!r} already exists; pass --force to overwrite it")
    return path


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet): compare where they lead
        return os.path.realpath(a) == os.path.realpath(b)
