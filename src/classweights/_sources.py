"""Turn any supported label source into a stream of fixed-size 2-D chunks.

Every source becomes an iterator of :class:`Chunk` objects. A chunk holds a
``[B, P]`` array or tensor: ``B`` whole samples (images) of ``P`` labels each,
plus the flat index of its first label so errors can point at the culprit.
Array and file sources are sliced along their first axis, never visited one
sample at a time in Python; map-style datasets and iterables are stacked into
chunks of the same bounded size.
"""

from __future__ import annotations

import numbers
import os
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from ._errors import ClassWeightError

DEFAULT_CHUNK_SIZE = 1 << 22  # labels per chunk (4 Mi): ~4 MiB of uint8, 32 MiB as int64
MAX_IN_MEMORY_CHUNK = 1 << 24  # labels per chunk of an in-memory array (16 Mi)
DEFAULT_NPZ_KEY = "train"


@dataclass(frozen=True)
class Chunk:
    """``data`` is ``[B, P]`` (numpy array or torch tensor); ``start`` its first flat index."""

    data: Any
    start: int


@dataclass(frozen=True)
class Stream:
    """Chunks of one source, with its sample count when known and a name for errors."""

    chunks: Iterator[Chunk]
    total: int | None
    where: str
    sharded: bool = False  # True if only this rank's shard of the samples is read


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


def open_source(source: Any, *, key: str | int | None, chunk_size: int | None, parts: int = 1, shard: Shard | None = None) -> Stream:
    """Dispatch ``source`` to the reader that knows its type.

    Without ``chunk_size``, an array already in memory is cut into a multiple of
    ``parts`` equal chunks (at most ``MAX_IN_MEMORY_CHUNK`` labels each), so
    ``parts`` threads get equal work; files and other sources use
    ``DEFAULT_CHUNK_SIZE``, which bounds the memory used.

    With ``shard=(rank, world)``, a sized source (array, tensor, file, map-style
    dataset) yields only the contiguous samples ``[n*rank//world, n*(rank+1)//world)``;
    ``Stream.sharded`` tells whether it did. Iterables are never sharded.
    """
    size = DEFAULT_CHUNK_SIZE if chunk_size is None else chunk_size
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ClassWeightError(f"Expected `chunk_size` to be a positive integer, but got {chunk_size!r}")
    if isinstance(source, (str, os.PathLike)):
        return _open_path(Path(source), key, size, shard)
    if isinstance(source, (torch.Tensor, np.ndarray)):
        if chunk_size is None and not isinstance(source, np.memmap):
            n = source.shape[0] if source.ndim else 1
            per_row = int(np.prod(source.shape[1:], dtype=np.int64))
            lo, hi = _shard_rows(n, shard, per_row * _itemsize(source))
            size = _balanced_chunk_size(per_row * (hi - lo), parts)
        return _array_stream(source, size, where="labels", shard=shard)
    if isinstance(source, Mapping):
        name = _pick_key(list(source.keys()), key, "mapping")
        return _array_stream(_as_array(source[name], f"mapping[{name!r}]"), size, where=f"mapping[{name!r}]", shard=shard)
    if isinstance(source, (list, tuple)) and source and all(_is_scalar(v) for v in source[:1]):
        return _array_stream(_as_array(source, "labels"), size, where="labels", shard=shard)
    tensors = getattr(source, "tensors", None)  # torch.utils.data.TensorDataset
    if isinstance(tensors, tuple) and tensors and all(isinstance(t, torch.Tensor) for t in tensors):
        index = key if isinstance(key, int) and not isinstance(key, bool) else 0
        if not -len(tensors) <= index < len(tensors):
            raise ClassWeightError(f"Expected key= to index the {len(tensors)} tensors of the TensorDataset, but got {key!r}")
        return _array_stream(tensors[index], size, where=f"TensorDataset.tensors[{index}]", shard=shard)
    if hasattr(source, "__getitem__") and hasattr(source, "__len__") and not isinstance(source, (str, bytes)):
        lo, hi = _shard_rows(len(source), shard, _item_bytes(source, key) if shard and shard.block_bytes else 0)
        return Stream(_dataset_chunks(source, key, size, lo, hi), hi - lo, where="dataset", sharded=shard is not None)
    if isinstance(source, Iterable):
        return Stream(_batch_chunks(source, key, size), None, where="batches")
    raise ClassWeightError(
        "Expected `source` to be a tensor, an array, a .npy/.npz path, a dataset or an iterable of "
        f"batches, but got {type(source).__name__}"
    )


# ---------------------------------------------------------------- arrays ----


def _balanced_chunk_size(numel: int, parts: int) -> int:
    chunks = parts * max(1, -(-numel // (parts * MAX_IN_MEMORY_CHUNK)))
    return max(1, -(-numel // chunks))


def _rows_per_chunk(labels_per_row: int, chunk_size: int) -> int:
    return max(1, chunk_size // max(1, labels_per_row))


def _is_scalar(value: Any) -> bool:
    return isinstance(value, numbers.Number) or (isinstance(value, (np.ndarray, torch.Tensor)) and value.ndim == 0)


def _as_array(value: Any, where: str) -> np.ndarray | torch.Tensor:
    if isinstance(value, (torch.Tensor, np.ndarray)):
        return value
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise ClassWeightError(f"{where}: expected an array of integer labels, but got {type(value).__name__} ({exc})") from None
    if array.dtype == object:
        raise ClassWeightError(f"{where}: expected an array of integer labels, but got a ragged or object sequence")
    return array


def _array_stream(array: np.ndarray | torch.Tensor, chunk_size: int, *, where: str, shard: Shard | None = None) -> Stream:
    """Slice ``array`` along its first axis; a 1-D array is one label per sample, a scalar one sample."""
    shape = tuple(array.shape)
    n = shape[0] if shape else 1
    per_row = int(np.prod(shape[1:], dtype=np.int64))
    first, end = _shard_rows(n, shard, per_row * _itemsize(array))
    step = _rows_per_chunk(per_row, chunk_size)
    rows = array.reshape(1) if not shape else array

    def chunks() -> Iterator[Chunk]:
        for lo in range(first, end, step):
            part = rows[lo : min(lo + step, end)]
            yield Chunk(part.reshape(part.shape[0], per_row), lo * per_row)

    return Stream(chunks(), end - first, where, sharded=shard is not None)


# ----------------------------------------------------------------- files ----


def _open_path(path: Path, key: str | int | None, chunk_size: int, shard: Shard | None = None) -> Stream:
    if not path.exists():
        raise ClassWeightError(f"Expected an existing .npy or .npz file, but {str(path)!r} does not exist")
    if path.is_dir():
        raise ClassWeightError(f"Expected a .npy or .npz file, but {str(path)!r} is a directory")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        if isinstance(key, str):
            raise ClassWeightError(f"key={key!r} picks an array inside a .npz file, but {str(path)!r} is a .npy file holding one array")
        try:
            handle = path.open("rb")
        except OSError as exc:
            raise ClassWeightError(f"could not read {str(path)!r}: {exc.strerror or exc}") from None
        return _npy_stream(handle, str(path), chunk_size, shard=shard, close=handle.close,
                           load_whole=lambda: np.load(path, mmap_mode="r", allow_pickle=False),
                           unreadable=f"could not read {str(path)!r} as a .npy file")  # fmt: skip
    if suffix == ".npz":
        return _npz_stream(path, key, chunk_size, shard)
    raise ClassWeightError(f"Expected a path ending in .npy or .npz, but got {str(path)!r}")


def _pick_key(keys: list[str], key: str | int | None, where: str) -> str:
    if key is not None:
        if key not in keys:
            raise ClassWeightError(f"key {key!r} not found in {where}; available keys: {', '.join(keys) or '(none)'}")
        return key
    if DEFAULT_NPZ_KEY in keys:
        return DEFAULT_NPZ_KEY
    if len(keys) == 1:
        return keys[0]
    raise ClassWeightError(
        f"{where} holds several arrays and none is called {DEFAULT_NPZ_KEY!r}; pass key= one of: {', '.join(keys)}"
    )


def _npz_stream(path: Path, key: str | int | None, chunk_size: int, shard: Shard | None = None) -> Stream:
    """Stream one member of an ``.npz`` (compressed or not) without loading it whole."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ClassWeightError(f"could not read {str(path)!r} as a .npz file: {exc}") from None
    members = {name[:-4]: name for name in archive.namelist() if name.endswith(".npy")}
    try:
        name = _pick_key(list(members), key, repr(str(path)))
    except ClassWeightError:
        archive.close()
        raise
    where = f"{str(path)!r}[{name!r}]"
    try:
        member = archive.open(members[name])
    except (OSError, zipfile.BadZipFile, RuntimeError) as exc:
        archive.close()
        raise ClassWeightError(f"could not read {where}: {exc}") from None

    def close() -> None:
        member.close()
        archive.close()

    return _npy_stream(member, where, chunk_size, shard=shard, close=close,
                       load_whole=lambda: np.load(path, allow_pickle=False)[name], unreadable=f"could not read {where}")  # fmt: skip


def _npy_stream(
    handle: BinaryIO,
    where: str,
    chunk_size: int,
    *,
    shard: Shard | None = None,
    close: Callable[[], None],
    load_whole: Callable[[], np.ndarray],
    unreadable: str,
) -> Stream:
    """Stream the array of an open ``.npy`` file or ``.npz`` member in chunks of whole samples.

    ``read`` calls fill one buffer per chunk, so memory stays bounded and
    nothing is memory-mapped (mapped pages would count as resident memory).
    Rare layouts (header version 3, Fortran order) fall back to ``load_whole``.
    """
    try:
        version = np.lib.format.read_magic(handle)
        if version == (1, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(handle)
        elif version == (2, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(handle)
        else:
            shape, fortran_order, dtype = (), True, np.dtype(np.uint8)  # read whole below
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        close()
        raise ClassWeightError(f"{unreadable}: {exc}") from None
    if dtype.hasobject:
        close()
        raise ClassWeightError(f"{where}: expected integer labels, but got dtype {dtype} (object arrays are never loaded)")
    if fortran_order and len(shape) != 1:
        # Column-major arrays keep whole samples apart on disk; read whole (rare for label data).
        close()
        try:
            array = load_whole()
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
            raise ClassWeightError(f"{unreadable}: {exc}") from None
        return _array_stream(array, chunk_size, where=where, shard=shard)

    n = shape[0] if shape else 1
    per_row = int(np.prod(shape[1:], dtype=np.int64)) if len(shape) > 1 else 1
    step = _rows_per_chunk(per_row, chunk_size)
    row_bytes = per_row * dtype.itemsize
    first, end = _shard_rows(n, shard, row_bytes)

    def chunks() -> Iterator[Chunk]:
        try:
            if first:
                _skip(handle, first * row_bytes)
            for lo in range(first, end, step):
                rows = min(step, end - lo)
                buffer = np.empty(rows * row_bytes, dtype=np.uint8)  # not zero-filled: read() fills it
                view = memoryview(buffer)
                filled = 0
                while filled < len(buffer):
                    got = handle.readinto(view[filled:])
                    if not got:
                        raise ClassWeightError(f"{where} is truncated: expected {n} samples, data ends in sample {lo + filled // max(1, row_bytes)}")
                    filled += got
                yield Chunk(buffer.view(dtype).reshape(rows, per_row), lo * per_row)
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise ClassWeightError(f"{unreadable}: {exc}") from None
        finally:
            close()

    return Stream(chunks(), end - first, where, sharded=shard is not None)


def _skip(handle: BinaryIO, count: int) -> None:
    """Move ``count`` bytes forward: a seek for files and stored zip members, else read and drop."""
    if handle.seekable():
        handle.seek(count, os.SEEK_CUR)
        return
    while count:
        got = len(handle.read(min(count, DEFAULT_CHUNK_SIZE)))
        if not got:
            return  # the truncation is reported by the first read
        count -= got


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
            raise ClassWeightError(f"{where} is a mapping; pass key= to pick the labels (keys: {', '.join(map(str, item))})")
        if key not in item:
            raise ClassWeightError(f"key {key!r} not found in {where}; available keys: {', '.join(map(str, item))}")
        item = item[key]
    elif isinstance(item, tuple) or (isinstance(item, list) and item and isinstance(item[0], (torch.Tensor, np.ndarray)) and item[0].ndim):
        index = key if isinstance(key, int) else 0
        if not -len(item) <= index < len(item):
            raise ClassWeightError(f"Expected key= to index {where}, a sequence of {len(item)} elements, but got {key!r}")
        item = item[index]
    return _as_array(item, where)


def _stack(parts: list[np.ndarray | torch.Tensor]) -> np.ndarray | torch.Tensor:
    if isinstance(parts[0], torch.Tensor):
        return torch.stack([torch.as_tensor(p) for p in parts])
    return np.stack([np.asarray(p.cpu() if isinstance(p, torch.Tensor) else p) for p in parts])


def _dataset_chunks(dataset: Any, key: str | int | None, chunk_size: int, first: int = 0, end: int | None = None) -> Iterator[Chunk]:
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
            yield Chunk(block.reshape(len(pending), -1), start)
            start, pending = flat, []
        pending.append(item)
        flat += _numel(item)
    if pending:
        block = _stack(pending)
        yield Chunk(block.reshape(len(pending), -1), start)


def _itemsize(array: np.ndarray | torch.Tensor) -> int:
    return int(array.element_size() if isinstance(array, torch.Tensor) else array.dtype.itemsize)


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
            yield Chunk(chunk.data, start + chunk.start)
        start += _numel(labels)
