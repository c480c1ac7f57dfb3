"""Count a Dask array where its blocks live: on the Dask scheduler in use.

Each block is counted by a task (``map_blocks``) into one small int64 vector,
``[counts (C), image pixels (C, with presence), labels]``, and Dask sums the
vectors in a tree (``sum``): only ``C``-sized vectors travel, whatever the size
of the array, and whether the scheduler is the threaded one, processes or a
``distributed`` cluster. A block is counted by the same code as a local chunk,
so its errors read the same, naming the block and the label's index in the
whole array. dask is never imported here unless a Dask array is given.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import torch

from ._checks import shown
from ._chunk_counts import _count_chunk, _to_tensor
from ._errors import ClassWeightError
from ._stream import Chunk, check_label_dtype
from .counting import LabelStats, ProgressCallback, _resolve_device

_WHERE = "dask array"


def count_dask_stats(
    array: Any,
    num_classes: int,
    *,
    ignore_index: int | None,
    key: str | int | None,
    device: Any,
    progress: ProgressCallback | None,
    presence: bool,
) -> LabelStats:
    """:func:`~classweights.count_label_stats` of a Dask array (options already checked by the caller).

    Only without ``fingerprint`` or ``distributed``: a fingerprint needs the
    labels' bytes in order here, and ranks read their own rows, so those two
    stream the array through this process like a zarr array instead.
    """
    if key is not None:
        raise ClassWeightError(f"Expected key=None for a Dask array (it holds one array), but got {shown(key)}")
    if device is not None and _resolve_device(device, None).type != "cpu":
        raise ClassWeightError(
            f"Expected device=None or 'cpu' for a Dask array (its blocks are counted by the workers), but got {shown(device)}"
        )
    check_label_dtype(np.dtype(array.dtype), _WHERE)
    if any(math.isnan(d) for d in array.shape):
        raise ClassWeightError(
            f"{_WHERE}: expected known chunk sizes, but got shape {array.shape}; call .compute_chunk_sizes() first"
        )

    import dask
    import dask.array as da

    shape = tuple(int(d) for d in array.shape)
    samples = shape[0] if shape else 1
    if math.prod(shape) == 0:
        raise ClassWeightError(f"Expected at least one label, but {_WHERE} is empty")
    if not shape:
        array = array.reshape(1)
    elif presence and array.ndim > 1:
        array = array.rechunk({axis: -1 for axis in range(1, array.ndim)})  # presence needs whole samples per block
    size = 2 * num_classes + 1 if presence else num_classes + 1
    parts = da.map_blocks(
        _count_block,
        array,
        num_classes=num_classes,
        ignore_index=ignore_index,
        presence=presence,
        size=size,
        token="classweights-count",
        new_axis=array.ndim,
        chunks=(*((1,) * len(c) for c in array.chunks), (size,)),
        dtype=np.int64,
        meta=np.empty((0,) * (array.ndim + 1), dtype=np.int64),
    )
    try:
        (packed,) = dask.compute(parts.sum(axis=tuple(range(array.ndim))))
    except ClassWeightError as exc:  # raised in a worker: one line, without the remote traceback
        raise ClassWeightError(str(exc)) from None
    packed = torch.from_numpy(np.asarray(packed, dtype=np.int64))
    counts = packed[:num_classes].clone()
    image_pixels = packed[num_classes : 2 * num_classes].clone() if presence else None
    if progress is not None:
        progress(samples, samples)  # once: the scheduler reports no progress back here
    total = int(counts.sum())
    if total == 0:
        raise ClassWeightError(
            f"Expected at least one label to count, but every label in {_WHERE} equals ignore_index={ignore_index}"
        )
    return LabelStats(counts, image_pixels, samples, total)


def _count_block(
    block: Any, *, num_classes: int, ignore_index: int | None, presence: bool, size: int, block_info: Any = None
) -> np.ndarray:
    """Count one block in a worker: ``[counts, image pixels (with presence), labels]``, shaped ``[1, ..., 1, size]``."""
    data = np.asarray(block)
    ones = (1,) * data.ndim
    if block_info is None:  # dask's meta inference calls it on an empty block
        return np.zeros((*ones, size), dtype=np.int64)
    info = block_info[0]
    origin = [lo for lo, _ in info["array-location"]]
    where = f"{_WHERE} block {tuple(info['chunk-location'])}"

    def locate(i: int) -> str:
        index = np.unravel_index(i, data.shape)
        return f"index {tuple(int(o + j) for o, j in zip(origin, index))}"

    chunk = Chunk(data.reshape(data.shape[0], -1), 0, locate=locate)
    chunk = dataclasses.replace(chunk, data=_to_tensor(chunk, torch.device("cpu"), num_classes, where))
    counts, pixels, _, labels = _count_chunk(chunk, num_classes, ignore_index, presence, where)
    parts = [counts, pixels] if presence else [counts]
    return torch.cat([*parts, torch.tensor([labels])]).numpy().reshape(*ones, size)
