"""Corpus files: one ``.npz`` with ``train``, ``val`` and ``test``, written atomically, read validated.

Reading goes through :func:`classweights.read_labels`, the reader counting
uses, so training and ``arcvae weights compute`` see one content with one
digest.
"""

from __future__ import annotations

import os
import time
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO, NamedTuple

import numpy as np

from ..errors import ArcvaeError
from .grids import SPLITS, validate_grids


def save_corpus(splits: Mapping[str, np.ndarray], path: str | os.PathLike[str]) -> Path:
    """Write the ``splits`` to a compressed ``.npz`` at ``path`` (zlib level 1), atomically.

    Every array is validated (``[N, 16, 16]``, N >= 1, colours 0-9) and stored
    as uint8 under its key. The file is written to a temporary file in the same
    folder, flushed to disk, then renamed over ``path``: readers see the old
    file or the new one, never a partial one. The file gets the permissions a
    plain ``open()`` would give it (``0o666`` minus the umask). On any error
    the temporary file is removed and an existing ``path`` is left untouched.
    Missing parent folders are created. The file is written exactly at ``path`` (no ``.npz``
    suffix is added).

    Args:
        splits: split name -> grids ``[N, 16, 16]``, usually train/val/test.
        path: destination file.

    Returns:
        ``Path(path)``.

    Raises:
        ArcvaeError: ``splits`` empty, a key not a string, or an array invalid.
    """
    target = Path(path)
    if not splits:
        raise ArcvaeError(f"Expected at least one split to save to '{target}', but got none")
    arrays = {}
    for key, grids in splits.items():
        if not isinstance(key, str) or not key:
            raise ArcvaeError(f"Expected split names to be non-empty strings, but got {key!r} for '{target}'")
        arrays[key] = validate_grids(grids, f"'{target}'[{key!r}]")
    target.parent.mkdir(parents=True, exist_ok=True)
    import classweights  # imported here: it brings torch

    with classweights.atomic_open(target) as handle:
        _write_npz(handle, arrays)
    return target


def _write_npz(handle: BinaryIO, arrays: Mapping[str, np.ndarray]) -> None:
    """What ``np.savez_compressed`` writes, at zlib level 1: grids that are mostly black compress 4-5 times
    faster than at its level 6, into a file about 1.5 times as large (still about 14x smaller than the grids)."""
    with zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for key, grids in arrays.items():
            with archive.open(f"{key}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.ascontiguousarray(grids), allow_pickle=False)


class Split(NamedTuple):
    """One split of a corpus file, read once: the grids to train on and what the file holds."""

    grids: np.ndarray  # uint8 [N, 16, 16], validated
    stored: np.ndarray  # the same labels as stored in the file (dtype included): what its content digest covers
    identity: tuple[int, int, int, int, int]  # (st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns) of the file read
    read_ns: int  # time.time_ns() just before the file was opened


def read_split(path: str | os.PathLike[str], key: str = "train") -> Split:
    """Read one split through ``classweights.read_labels``, the reader counting uses, and validate it.

    The same member is read, with the same checks, as when ``classweights``
    counts the path with ``key``, so ``weights compute --key train`` and
    ``train`` see one content with one digest.

    Raises:
        ArcvaeError: as :func:`load_split`.
    """
    return _read_keys(path, (key,))[key]


def _read_keys(path: str | os.PathLike[str], keys: tuple[str, ...]) -> dict[str, Split]:
    import classweights  # imported here: it brings torch

    name = os.fspath(path)
    wanted = ", ".join(repr(k) for k in keys)
    label = f"key {wanted}" if len(keys) == 1 else f"keys {wanted}"
    if not os.path.lexists(name):
        raise ArcvaeError(f"data file {name!r} does not exist (wanted {label})")
    out: dict[str, Split] = {}
    for key in keys:
        read_ns = time.time_ns()
        try:
            read = classweights.read_labels(name, key=key)
        except classweights.ClassWeightError as err:  # the library's line, and what was wanted if it does not say
            message = str(err)
            raise ArcvaeError(message if repr(key) in message else f"{message} (wanted {label})") from None
        where = f"{name!r}[{key!r}]"
        out[key] = Split(validate_grids(read.labels, where), read.labels, read.identity, read_ns)
    return out


def _load_keys(path: str | os.PathLike[str], keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    return {key: split.grids for key, split in _read_keys(path, keys).items()}


def load_split(path: str | os.PathLike[str], key: str = "train") -> np.ndarray:
    """Load one split of a corpus file, validated.

    Args:
        path: a ``.npz`` file (read with ``allow_pickle=False``).
        key: the array to load, e.g. ``"train"``.

    Returns:
        uint8 ``[N, 16, 16]``, N >= 1, values 0-9 (whole-valued floats are cast).

    Raises:
        ArcvaeError: the file is missing or unreadable, lacks ``key``, or the
            array has the wrong shape, is empty, is not integer or holds a
            value outside 0-9. The one-line message names the file and the key.
    """
    return _load_keys(path, (key,))[key]


def load_corpus(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Load the train, val and test splits of a corpus file, each validated as in :func:`load_split`.

    Args:
        path: a ``.npz`` file with keys ``train``, ``val`` and ``test``
            (other keys are ignored).

    Returns:
        ``{"train": ..., "val": ..., "test": ...}``, uint8 ``[N, 16, 16]`` each.

    Raises:
        ArcvaeError: as :func:`load_split`, for the first split that fails.
    """
    return _load_keys(path, SPLITS)
