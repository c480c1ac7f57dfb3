"""Read a zarr array in row blocks aligned to its storage chunks, like a memory map but decompressed.

``z[lo:hi]`` decodes every storage chunk it touches; blocks that start and end
on chunk (or shard) boundaries along the first axis decode each chunk once,
so memory stays bounded by the block and nothing is read twice. zarr is
never imported here: an array is recognised only if zarr is already loaded.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np

from ._errors import ClassWeightError
from ._stream import Chunk, Shard, Stream, _one_line, _rows_per_chunk, _shard_rows, check_label_dtype


def is_zarr_array(source: Any) -> bool:
    """True for a ``zarr.Array`` (zarr 2 or 3), without importing zarr."""
    zarr = sys.modules.get("zarr")
    return zarr is not None and isinstance(source, getattr(zarr, "Array", ()))


def zarr_stream(array: Any, chunk_size: int, shard: Shard | None) -> Stream:
    """Stream ``array`` along its first axis in blocks of whole storage chunks of about ``chunk_size`` labels."""
    name = getattr(array, "name", None)
    where = f"zarr array {name!r}" if name and name != "/" else "zarr array"
    dtype = np.dtype(array.dtype)
    check_label_dtype(dtype, where)
    shape = tuple(int(d) for d in array.shape)
    n = shape[0] if shape else 1
    per_row = math.prod(shape[1:])
    if n * per_row == 0:
        return Stream(iter(()), 0, where, sharded=shard is not None)
    lo, hi = _shard_rows(n, shard, per_row * dtype.itemsize)
    stored = (getattr(array, "shards", None) or array.chunks) if shape else (1,)  # zarr 3 reads a shard at once
    align = max(1, int(stored[0]))
    step = max(1, _rows_per_chunk(per_row, chunk_size) // align) * align

    def chunks() -> Iterator[Chunk]:
        a = lo
        while a < hi:
            b = min(hi, (a // step + 1) * step)  # the next multiple of step: blocks stay on chunk boundaries
            try:
                block = np.asarray(array[a:b] if shape else array[...])
            except ClassWeightError:
                raise
            except Exception as exc:  # noqa: BLE001 - codecs and stores raise many types for damaged data
                raise ClassWeightError(f"could not read rows {a}-{b - 1} of {where}: {_one_line(exc)}") from None
            yield Chunk(block.reshape(b - a, per_row), a * per_row, shape[1:])
            a = b

    return Stream(chunks(), hi - lo, where, sharded=shard is not None)
