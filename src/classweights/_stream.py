"""What every label source yields: chunks of whole samples (``Chunk``), a ``Stream`` of them, and
the row arithmetic of shards and chunks; arrays in memory are streamed here too.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ._checks import check_dense_tensor, shown_names
from ._errors import ClassWeightError
from ._files import FileIdentity

DEFAULT_CHUNK_SIZE = 1 << 22  # labels per chunk (4 Mi): ~4 MiB of uint8, 32 MiB as int64


MAX_IN_MEMORY_CHUNK = 1 << 24  # labels per chunk of an in-memory array (16 Mi)


DEFAULT_NPZ_KEY = "train"


@dataclass(frozen=True)
class Chunk:
    """``data`` is ``[B, P]`` (numpy array or torch tensor); ``start`` its first flat index.

    ``sample_shape`` is the shape of one sample before it was flattened to its
    ``P`` labels (``()`` for one label per sample), when the reader knows it.
    Samples of different lengths (the rows of a list column) come as one ``[1, L]``
    row of their labels with ``lengths``, the labels of each sample (summing to
    ``L``). ``locate``, if given, names the position of the chunk's ``i``-th label
    (e.g. ``"row 7, position 2"``) in errors instead of its flat index.

    A chunk that is one file of its own (a label image) has a ``where`` naming
    it: errors name that file, ``start`` counts from its first label, and the
    fingerprint hashes it with its size (``digest``, if set, is that block's
    digest, taken by the reader on its own thread). ``histogram``, if set, is
    int64 ``[B, K]``: how often each value ``0..K-1`` occurs in each row of
    the labels (every value is below ``K``), counted by the reader as it
    decoded them; ``data`` may then be None if the labels were not asked for.
    """

    data: Any
    start: int
    sample_shape: tuple[int, ...] | None = None
    lengths: np.ndarray | None = None
    locate: Callable[[int], str] | None = None
    where: str | None = None
    histogram: np.ndarray | None = None
    digest: str | None = None


RAGGED_HASH_ROWS = 1 << 16  # samples of different lengths are fingerprinted in blocks of this many samples


@dataclass(frozen=True)
class Stream:
    """Chunks of one source, with its sample count when known and a name for errors."""

    chunks: Iterator[Chunk]
    total: int | None
    where: str
    sharded: bool = False  # True if only this rank's shard of the samples is read
    identity: FileIdentity | None = None  # (dev, inode, size, mtime_ns, ctime_ns) of the file read, if any
    shape: tuple[int, ...] | None = None  # a file's array: its shape and dtype as stored (from the checked header)
    dtype: np.dtype | None = None
    member: str | None = None  # the .npz member read (its key)
    counted: bool = False  # the reader decodes on threads of its own and counts chunks as it goes (Chunk.histogram): no counting pool


@dataclass(frozen=True)
class Shard:
    """This process's part of a sized source: ``rank`` of ``world``.

    With ``block_bytes``, shard boundaries fall on whole blocks of that many
    bytes of samples (the fingerprint's hash blocks), so per-shard digests
    combine into the single-process fingerprint.
    """

    rank: int
    world: int
    block_bytes: int | None = None


def _shard_rows(n: int, shard: Shard | None, row_bytes: int) -> tuple[int, int]:
    """The contiguous samples ``[lo, hi)`` of ``shard`` among ``n`` (all of them without a shard)."""
    if shard is None:
        return 0, n
    if shard.block_bytes is None:
        return n * shard.rank // shard.world, n * (shard.rank + 1) // shard.world
    rows = max(1, shard.block_bytes // max(1, row_bytes))
    blocks = -(-n // rows)
    return min(n, blocks * shard.rank // shard.world * rows), min(n, blocks * (shard.rank + 1) // shard.world * rows)


# ---------------------------------------------------------------- arrays ----


def _balanced_chunk_size(numel: int, parts: int) -> int:
    chunks = parts * max(1, -(-numel // (parts * MAX_IN_MEMORY_CHUNK)))
    return max(1, -(-numel // chunks))


def _rows_per_chunk(labels_per_row: int, chunk_size: int) -> int:
    return max(1, chunk_size // max(1, labels_per_row))


def _is_scalar(value: Any) -> bool:
    return isinstance(value, numbers.Number) or (isinstance(value, (np.ndarray, torch.Tensor)) and value.ndim == 0)


def _check_array(array: np.ndarray | torch.Tensor, where: str) -> None:
    """Refuse arrays whose values are not all labels as they stand."""
    if isinstance(array, torch.Tensor):
        check_dense_tensor(array, where)
    elif isinstance(array, np.ma.MaskedArray):  # counting would include the masked values
        raise ClassWeightError(
            f"{where}: expected a plain array, but got a masked array; pass .compressed() or .filled(ignore_index)"
        )


def _as_array(value: Any, where: str) -> np.ndarray | torch.Tensor:
    if isinstance(value, (torch.Tensor, np.ndarray)):
        _check_array(value, where)
        return value
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise ClassWeightError(
            f"{where}: expected an array of integer labels, but got {type(value).__name__} ({exc})"
        ) from None
    if array.dtype == object:
        raise ClassWeightError(f"{where}: expected an array of integer labels, but got a ragged or object sequence")
    return array


def _array_stream(
    array: np.ndarray | torch.Tensor, chunk_size: int, *, where: str, shard: Shard | None = None
) -> Stream:
    """Slice ``array`` along its first axis; a 1-D array is one label per sample, a scalar one sample."""
    _check_array(array, where)
    shape = tuple(array.shape)
    n = shape[0] if shape else 1
    per_row = math.prod(shape[1:])
    if n * per_row == 0:  # no labels at all: never step through rows that hold none
        return Stream(iter(()), 0, where, sharded=shard is not None)
    first, end = _shard_rows(n, shard, per_row * _itemsize(array))
    step = _rows_per_chunk(per_row, chunk_size)
    rows = array.reshape(1) if not shape else array

    def chunks() -> Iterator[Chunk]:
        for lo in range(first, end, step):
            part = rows[lo : min(lo + step, end)]
            yield Chunk(part.reshape(part.shape[0], per_row), lo * per_row, shape[1:])

    return Stream(chunks(), end - first, where, sharded=shard is not None)


# ------------------------------------------------------------- helpers ----


def check_label_dtype(dtype: np.dtype, where: str) -> None:
    """Accept bool, integer and float (up to 64-bit) arrays; name any other dtype."""
    if dtype.hasobject:
        raise ClassWeightError(
            f"{where}: expected integer labels, but got dtype {dtype} (object arrays are never loaded)"
        )
    if dtype.kind not in "biuf" or dtype.itemsize == 0 or (dtype.kind == "f" and dtype.itemsize > 8):
        raise ClassWeightError(
            f"{where}: expected integer labels, but got an array of dtype {dtype} (expected bool, integer or float up to 64 bits)"
        )


def _pick_key(keys: list[str], key: str | int | None, where: str) -> str:
    if key is not None:
        if key not in keys:
            raise ClassWeightError(f"key {key!r} not found in {where}; available keys: {shown_names(keys)}")
        return key
    if DEFAULT_NPZ_KEY in keys:
        return DEFAULT_NPZ_KEY
    if len(keys) == 1:
        return keys[0]
    raise ClassWeightError(
        f"{where} holds several arrays and none is called {DEFAULT_NPZ_KEY!r}; pass key= one of: {shown_names(keys)}"
    )


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _itemsize(array: np.ndarray | torch.Tensor) -> int:
    return int(array.element_size() if isinstance(array, torch.Tensor) else array.dtype.itemsize)
