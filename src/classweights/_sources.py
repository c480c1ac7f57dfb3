"""Turn any supported label source into a stream of fixed-size 2-D chunks.

Every source becomes an iterator of :class:`Chunk` objects. A chunk holds a
``[B, P]`` array or tensor: ``B`` whole samples (images) of ``P`` labels each,
plus the flat index of its first label so errors can point at the culprit.
Array and file sources are sliced along their first axis, never visited one
sample at a time in Python; map-style datasets and iterables are stacked into
chunks of the same bounded size.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._checks import check_positive_int, shown_names
from ._errors import ClassWeightError
from ._npfiles import _open_path
from ._stream import (  # the names other modules take from here
    DEFAULT_CHUNK_SIZE,
    Chunk,
    Shard,
    Stream,
    _array_stream,
    _as_array,
    _balanced_chunk_size,
    _check_array,
    _is_scalar,
    _itemsize,
    _pick_key,
    _rows_per_chunk,
    _shard_rows,
)


def open_source(source: Any, *, key: str | int | None, chunk_size: int | None, parts: int = 1, shard: Shard | None = None,
                threads: int = 1, keep_labels: bool = True) -> Stream:  # fmt: skip
    """Dispatch ``source`` to the reader that knows its type.

    Without ``chunk_size``, an array already in memory is cut into a multiple of
    ``parts`` equal chunks (at most ``MAX_IN_MEMORY_CHUNK`` labels each), so
    ``parts`` threads get equal work; files and other sources use
    ``DEFAULT_CHUNK_SIZE``, which bounds the memory used.

    With ``shard=(rank, world)``, a sized source (array, tensor, file, map-style
    dataset) yields only the contiguous samples ``[n*rank//world, n*(rank+1)//world)``;
    ``Stream.sharded`` tells whether it did. Iterables are never sharded.

    A folder or a glob pattern is read as label images, one file per sample
    (see ``_images``), decoded on ``threads`` threads. With ``keep_labels``
    (for the fingerprint) each file's digest is taken on those threads too;
    without it their chunks may carry only the histogram.
    """
    size = DEFAULT_CHUNK_SIZE if chunk_size is None else check_positive_int(chunk_size, "chunk_size")
    if isinstance(source, (str, os.PathLike)):
        # Pillow and the image code load only when needed
        from ._images import image_stream, is_image_source

        if is_image_source(source):
            return image_stream(source, key=key, shard=shard, threads=threads, keep_labels=keep_labels)
        return _open_path(Path(source), key, size, shard)
    if isinstance(source, (torch.Tensor, np.ndarray)):
        _check_array(source, "labels")
        if chunk_size is None and not isinstance(source, np.memmap):
            n = source.shape[0] if source.ndim else 1
            per_row = math.prod(source.shape[1:])
            lo, hi = _shard_rows(n, shard, per_row * _itemsize(source))
            size = _balanced_chunk_size(per_row * (hi - lo), parts)
        return _array_stream(source, size, where="labels", shard=shard)
    # Tables, datasets and zarr arrays have __getitem__ and __len__ too: they must not be read as map-style datasets.
    from . import _chunked, _tables

    if _tables.is_arrow_table(source):
        return _tables.table_stream(source, key, size, shard)
    if _tables.is_hf_dataset(source):
        return _tables.dataset_stream(source, key, size, shard)
    if _chunked.is_zarr_array(source):
        return _chunked.zarr_stream(source, size, shard)
    if _chunked.is_dask_array(source):  # item by item it would compute each sample alone
        if key is not None:
            raise ClassWeightError(f"Expected key=None for a Dask array (it holds one array), but got {key!r}")
        return _chunked.dask_stream(source, size, shard)
    from . import _frames

    if _frames.is_pandas(source):  # a Series has __getitem__ and __len__: never read it label by label
        labels, where = _frames.frame_labels(source, key)
        return _array_stream(labels, size, where=where, shard=shard)
    if _frames.is_hf_container(source):  # a dict of splits
        raise _frames.refuse_splits(source)
    if _frames.is_hf_iterable(source):
        return Stream(_batch_chunks(_frames.iterable_batches(source, key), None, size), None, where="batches")
    if isinstance(source, Mapping):
        name = _pick_key(list(source.keys()), key, "mapping")
        return _array_stream(
            _as_array(source[name], f"mapping[{name!r}]"), size, where=f"mapping[{name!r}]", shard=shard
        )
    if isinstance(source, (list, tuple)) and source and all(_is_scalar(v) for v in source[:1]):
        return _array_stream(_as_array(source, "labels"), size, where="labels", shard=shard)
    tensors = getattr(source, "tensors", None)  # torch.utils.data.TensorDataset
    if isinstance(tensors, tuple) and tensors and all(isinstance(t, torch.Tensor) for t in tensors):
        if isinstance(key, str):  # a dataset of tensors has no names: a string would silently pick tensors[0]
            raise ClassWeightError(
                f"Expected key= to be an integer index into the {len(tensors)} tensors of the TensorDataset, but got {key!r}"
            )
        index = key if isinstance(key, int) and not isinstance(key, bool) else 0
        if not -len(tensors) <= index < len(tensors):
            raise ClassWeightError(
                f"Expected key= to index the {len(tensors)} tensors of the TensorDataset, but got {key!r}"
            )
        return _array_stream(tensors[index], size, where=f"TensorDataset.tensors[{index}]", shard=shard)
    if hasattr(source, "__getitem__") and hasattr(source, "__len__") and not isinstance(source, (str, bytes)):
        lo, hi = _shard_rows(len(source), shard, _item_bytes(source, key) if shard and shard.block_bytes else 0)
        return Stream(_dataset_chunks(source, key, size, lo, hi), hi - lo, where="dataset", sharded=shard is not None)
    if isinstance(source, Iterable):
        return Stream(_batch_chunks(source, key, size), None, where="batches")
    raise ClassWeightError(
        "Expected `source` to be a tensor, an array, a .npy/.npz/.parquet path, a table, a dataset or an iterable of "
        f"batches, but got {type(source).__name__}"
    )


# ------------------------------------------------- datasets and batches ----


def _labels_of(item: Any, key: str | int | None, where: str) -> np.ndarray | torch.Tensor:
    """The label grid of one dataset item or batch.

    A dict gives ``item[key]``. A tuple gives ``item[key]`` for an integer
    ``key``, else its first element; so does a list whose first element is an
    array or tensor (a collated ``[inputs, labels]`` batch). Anything else is
    the label grid itself.
    """
    if isinstance(item, Mapping):
        if key is None:
            raise ClassWeightError(f"{where} is a mapping; pass key= to pick the labels (keys: {shown_names(item)})")
        if key not in item:
            raise ClassWeightError(f"key {key!r} not found in {where}; available keys: {shown_names(item)}")
        item = item[key]
    elif isinstance(item, tuple) or (
        isinstance(item, list) and item and isinstance(item[0], (torch.Tensor, np.ndarray)) and item[0].ndim
    ):
        if isinstance(key, str):  # a sequence has no names: a string would silently pick its first element
            raise ClassWeightError(
                f"Expected key= to be an integer index into {where}, a sequence of {len(item)} elements, but got {key!r}"
            )
        index = key if isinstance(key, int) else 0
        if not -len(item) <= index < len(item):
            raise ClassWeightError(
                f"Expected key= to index {where}, a sequence of {len(item)} elements, but got {key!r}"
            )
        item = item[index]
    return _as_array(item, where)


def _stack(parts: list[np.ndarray | torch.Tensor]) -> np.ndarray | torch.Tensor:
    if isinstance(parts[0], torch.Tensor):
        return torch.stack([torch.as_tensor(p) for p in parts])
    return np.stack([np.asarray(p.cpu() if isinstance(p, torch.Tensor) else p) for p in parts])


def _dataset_chunks(
    dataset: Any, key: str | int | None, chunk_size: int, first: int = 0, end: int | None = None
) -> Iterator[Chunk]:
    """Stack consecutive same-shaped items ``first..end`` into chunks of about ``chunk_size`` labels.

    Flat indices (for errors) count from item 0, taking the items before
    ``first`` to be the size of item ``first``.
    """
    pending: list[np.ndarray | torch.Tensor] = []
    start = flat = -1
    for i in range(first, len(dataset) if end is None else end):
        item = _labels_of(dataset[i], key, f"dataset item {i}")
        if flat < 0:
            start = flat = first * _numel(item)
        if pending and (item.shape != pending[0].shape or len(pending) >= _rows_per_chunk(_numel(item), chunk_size)):
            block = _stack(pending)
            yield Chunk(block.reshape(len(pending), -1), start, tuple(pending[0].shape))
            start, pending = flat, []
        pending.append(item)
        flat += _numel(item)
    if pending:
        block = _stack(pending)
        yield Chunk(block.reshape(len(pending), -1), start, tuple(pending[0].shape))


def _item_bytes(dataset: Any, key: str | int | None) -> int:
    """Bytes of one dataset item's labels (the first; used to align shards to hash blocks)."""
    if len(dataset) == 0:
        return 1
    item = _labels_of(dataset[0], key, "dataset item 0")
    return _numel(item) * _itemsize(item)


def _numel(array: np.ndarray | torch.Tensor) -> int:
    return int(array.numel() if isinstance(array, torch.Tensor) else array.size)


def _batch_chunks(batches: Iterable[Any], key: str | int | None, chunk_size: int) -> Iterator[Chunk]:
    """Each batch is ``[B, ...]``: split along its first axis into bounded chunks."""
    start = 0
    for b, batch in enumerate(batches):
        labels = _labels_of(batch, key, f"batch {b}")
        stream = _array_stream(labels, chunk_size, where=f"batch {b}")
        for chunk in stream.chunks:
            yield Chunk(chunk.data, start + chunk.start, chunk.sample_shape)
        start += _numel(labels)
