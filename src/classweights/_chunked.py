"""Read a chunked array (zarr, or Dask through :mod:`._dask`) in row blocks aligned to its storage chunks, like a memory map but decompressed.

``z[lo:hi]`` decodes every storage chunk it touches; blocks that start and end
on chunk (or shard) boundaries along the first axis decode each chunk once,
so memory stays bounded by the block and nothing is read twice. zarr is
never imported here: an array is recognised only if zarr is already loaded.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from ._errors import ClassWeightError
from ._stream import Chunk, Shard, Stream, _one_line, _rows_per_chunk, _shard_rows, check_label_dtype


def is_zarr_array(source: Any) -> bool:
    """True for a ``zarr.Array`` (zarr 2 or 3), without importing zarr."""
    zarr = sys.modules.get("zarr")
    return zarr is not None and isinstance(source, getattr(zarr, "Array", ()))


def is_dask_array(source: Any) -> bool:
    """True for a ``dask.array.Array``, without importing dask."""
    da = sys.modules.get("dask.array")
    return da is not None and isinstance(source, getattr(da, "Array", ()))


def dask_stream(array: Any, chunk_size: int, shard: Shard | None) -> Stream:
    """Stream a Dask array into this process block by block, each block of rows computed on Dask's scheduler.

    For the readers that need the labels here (per-sample weights, multi-label
    counts, fingerprints); :func:`~classweights.count_labels` without a
    fingerprint counts a Dask array where it lives instead (see ``_dask.py``).
    """
    if any(math.isnan(d) for d in array.shape):
        raise ClassWeightError(
            f"dask array: expected known chunk sizes, but got shape {array.shape}; call .compute_chunk_sizes() first"
        )
    shape = tuple(int(d) for d in array.shape)

    def read(lo: int, hi: int) -> np.ndarray:
        return np.asarray((array[lo:hi] if shape else array).compute())

    align = int(array.chunks[0][0]) if shape and array.chunks[0] else 1
    return row_block_stream(read, shape, np.dtype(array.dtype), align, "dask array", chunk_size, shard)


def zarr_stream(array: Any, chunk_size: int, shard: Shard | None) -> Stream:
    """Stream ``array`` along its first axis in blocks of whole storage chunks of about ``chunk_size`` labels."""
    name = getattr(array, "name", None)
    where = f"zarr array {name!r}" if name and name != "/" else "zarr array"
    shape = tuple(int(d) for d in array.shape)
    stored = (getattr(array, "shards", None) or array.chunks) if shape else (1,)  # zarr 3 reads a shard at once

    def read(lo: int, hi: int) -> np.ndarray:
        return np.asarray(array[lo:hi] if shape else array[...])

    return row_block_stream(read, shape, np.dtype(array.dtype), int(stored[0]), where, chunk_size, shard)


def row_block_stream(
    read: Callable[[int, int], np.ndarray],
    shape: tuple[int, ...],
    dtype: np.dtype,
    align: int,
    where: str,
    chunk_size: int,
    shard: Shard | None,
) -> Stream:
    """Stream a chunked array's rows ``read(lo, hi)`` in blocks of about ``chunk_size`` labels on multiples of ``align`` rows."""
    check_label_dtype(dtype, where)
    n = shape[0] if shape else 1
    per_row = math.prod(shape[1:])
    if n * per_row == 0:
        return Stream(iter(()), 0, where, sharded=shard is not None)
    lo, hi = _shard_rows(n, shard, per_row * dtype.itemsize)
    align = max(1, align)
    step = max(1, _rows_per_chunk(per_row, chunk_size) // align) * align

    def chunks() -> Iterator[Chunk]:
        a = lo
        while a < hi:
            b = min(hi, (a // step + 1) * step)  # the next multiple of step: blocks stay on chunk boundaries
            try:
                block = read(a, b)
            except ClassWeightError:
                raise
            except Exception as exc:  # noqa: BLE001 - codecs, stores and schedulers raise many types
                raise ClassWeightError(f"could not read rows {a}-{b - 1} of {where}: {_one_line(exc)}") from None
            yield Chunk(block.reshape(b - a, per_row), a * per_row, shape[1:])
            a = b

    return Stream(chunks(), hi - lo, where, sharded=shard is not None)
