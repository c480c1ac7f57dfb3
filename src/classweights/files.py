"""Read the labels of a ``.npy`` file or ``.npz`` member whole, as :func:`count_labels` reads them.

Counting streams a file; a program that also needs the labels in memory (to
train on them) should read them with :func:`read_labels`, not ``np.load``:
the file is then checked the same way (a regular file, a header that matches
its size, a bounded decompressor), the same member is picked for a ``key``,
and the array comes back as stored, so its
:attr:`~classweights.LabelStats.fingerprint` equals the one counting the path
gives. The identity of the file read comes with it, for caches keyed by file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._errors import ClassWeightError
from ._files import FileIdentity
from ._npfiles import _open_path
from ._stream import DEFAULT_CHUNK_SIZE


@dataclass(frozen=True)
class LabelFile:
    """Labels read from a file, and which file and member they are.

    Attributes:
        labels: the array as stored: its dtype and shape (C order).
        path: the path given.
        key: the ``.npz`` member read (``None`` for a ``.npy`` file).
        identity: ``(st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns)`` of
            the open file that was read, unchanged from start to end of the read.
    """

    labels: np.ndarray
    path: str
    key: str | None
    identity: FileIdentity


def read_labels(path: str | os.PathLike[str], *, key: str | None = None) -> LabelFile:
    """Read the array of a ``.npy`` file, or of one member of a ``.npz`` file.

    Args:
        path: a ``.npy`` or ``.npz`` file.
        key: the ``.npz`` member; by default ``"labels"`` if present, else the
            only member (as :func:`count_labels` picks it).

    Returns:
        a :class:`LabelFile`.

    Raises:
        ClassWeightError: as :func:`count_labels` for the same path: a missing
            file, one that is not a regular file, a damaged or truncated file,
            a header that does not match the data, a dtype other than bool,
            integer or float, a missing or ambiguous key, or a file written
            while it was read.

    Example:
        >>> import tempfile, numpy as np, classweights
        >>> path = tempfile.mkdtemp() + "/masks.npz"
        >>> np.savez_compressed(path, train=np.array([[0, 1], [1, 1]], np.uint8))
        >>> read = classweights.read_labels(path, key="train")
        >>> read.labels, read.key
        (array([[0, 1],
               [1, 1]], dtype=uint8), 'train')
    """
    if not isinstance(path, (str, os.PathLike)):
        raise ClassWeightError(f"Expected a path to a .npy or .npz file, but got {type(path).__name__}")
    if key is not None and not isinstance(key, str):
        raise ClassWeightError(f"Expected key= to name a .npz member (a string), but got {key!r}")
    if Path(path).suffix.lower() == ".parquet":  # counting reads it, but it holds no array of one shape to return
        raise ClassWeightError(f"Expected a path to a .npy or .npz file, but got the Parquet file {os.fspath(path)!r}")
    stream = _open_path(Path(path), key, DEFAULT_CHUNK_SIZE)  # one file: a folder of images is refused as a directory
    assert stream.shape is not None and stream.dtype is not None and stream.identity is not None
    # Chunks are gathered, not written into an array of the header's shape: a .npz member's size is only
    # claimed by the zip directory, so memory follows the data that really arrives. The stream's end checks
    # that the file did not change while it was read.
    parts = [np.ascontiguousarray(chunk.data).reshape(-1) for chunk in stream.chunks]
    flat = np.concatenate(parts) if parts else np.empty(0, dtype=stream.dtype)
    labels = flat.astype(stream.dtype, copy=False).reshape(stream.shape)
    return LabelFile(labels, os.fspath(path), stream.member, stream.identity)
