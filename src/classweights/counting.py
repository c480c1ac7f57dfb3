"""Count labels per class: labels -> counts.

The public entry points are :func:`count_labels` (counts only) and
:func:`count_label_stats` (counts plus the per-image presence statistic that
``median_frequency`` needs). Both stream the source in fixed-size chunks (see
``_sources``) and count each chunk with one vectorised ``torch.bincount``, so
memory stays bounded however large the dataset is.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch

from ._checks import (
    check_flag,
    check_ignore_index,
    check_num_classes,
    check_positive_int,
    is_int,
    shown,
)
from ._errors import ClassWeightError
from ._files import FileIdentity
from ._sources import RAGGED_HASH_ROWS, Chunk, Shard, check_label_dtype, open_source

ProgressCallback = Callable[[int, "int | None"], None]

_NATIVE = {torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64}
MAX_THREADS = 256  # each thread may hold two chunks; far more threads than cores only costs memory
_DENSE_PRESENCE = 1 << 16  # per-image tables up to this many cells (beyond 4 per label) are dense; larger ones sparse
_T = TypeVar("_T")
_R = TypeVar("_R")


@dataclass(frozen=True)
class LabelStats:
    """What one pass over the labels gathers.

    Attributes:
        counts: int64 ``[C]``, labels of each class (``ignore_index`` excluded).
        image_pixels: int64 ``[C]``, total labels of the images that contain class
            ``c`` (Eigen and Fergus' denominator), or ``None`` if not gathered.
        num_images: samples (first-axis entries) seen.
        num_labels: labels counted, i.e. ``counts.sum()``.
        fingerprint: sha256 (hex) of the labels' content, or ``None`` if not
            asked for; see :func:`count_label_stats`.
        source_identity: for a ``.npy``/``.npz``/``.parquet`` path, the identity of the file
            actually read, ``(st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns)``,
            taken from the open file before its first read (and checked to be
            unchanged after the last one); ``None`` for other sources. Compare it
            with the path's current ``os.stat`` before caching anything derived
            from the counts under the path's name: if the path was replaced or
            re-pointed meanwhile, they differ. With ``distributed=True`` it is
            the file this rank read.
    """

    counts: torch.Tensor
    image_pixels: torch.Tensor | None
    num_images: int
    num_labels: int
    fingerprint: str | None = None
    source_identity: FileIdentity | None = None


def count_labels(
    source: Any,
    num_classes: int,
    *,
    ignore_index: int | None = None,
    key: str | int | None = None,
    chunk_size: int | None = None,
    num_threads: int | None = None,
    device: str | torch.device | None = None,
    progress: ProgressCallback | None = None,
    distributed: bool = False,
) -> torch.Tensor:
    """Count how many labels of each class ``source`` holds.

    Args:
        source: integer labels of any shape as a ``torch.Tensor`` or ``np.ndarray``
            (``np.memmap`` included); a path to a ``.npy`` file, or to a ``.npz``
            file whose array ``key`` is read; a folder or glob pattern of label
            images (``.png``, ``.tif``, ``.tiff``, ``.npy``; one sample per file,
            read in sorted order, decoded on ``num_threads`` threads; needs
            Pillow for PNG and TIFF); a map-style dataset whose items are
            label arrays, or tuples/lists with the label array first, or dicts
            (``key`` picks the labels); or any iterable of such batches, e.g. a
            ``DataLoader``. With the optional packages: a ``.parquet`` path, a
            ``pyarrow.Table`` or a ``datasets.Dataset`` (column ``key``; scalar or
            list-valued, one sample per row), a zarr array, or a Dask array
            (counted on its scheduler; see docs/api.md, "Tables, Dask and zarr
            arrays"). Float labels are accepted only if every value is a whole
            number.
        num_classes: number of classes ``C``; every label must lie in ``[0, C)``.
        ignore_index: a label value to skip (e.g. ``255`` or ``-100``); it may lie
            outside ``[0, C)``.
        key: array name inside a ``.npz`` file (default ``"train"``, or the only
            array); the labels' key in dict items; the label column of a table
            (required if it has several); or, as an integer, their index in tuple
            items such as ``(image, mask)`` (default 0).
        chunk_size: labels per chunk. By default an in-memory array is split into
            equal chunks for the threads (at most ``2**24`` labels each), and
            files and datasets are read ``4 * 2**20`` labels at a time, which
            bounds the memory used.
        num_threads: chunks counted in parallel, or label images decoded in
            parallel (default: ``torch.get_num_threads()``, at most 8). ``torch``
            and Pillow release the GIL while they work.
        device: where to count (default: the device of a tensor source, else CPU).
        progress: optional callback ``progress(done, total)`` called after every
            chunk with the samples done so far and the total (``None`` if unknown).
            With ``distributed=True`` both count this rank's samples.
        distributed: count across the processes of the initialised default
            ``torch.distributed`` process group. Each rank reads only its
            contiguous shard of a sized source (array, tensor, ``.npy``/``.npz``
            path, map-style dataset, the sorted files of a folder or glob of
            label images), or everything an iterable gives it (e.g. a
            ``DataLoader`` with a ``DistributedSampler``); the counts are then
            summed with ``all_reduce``, so every rank returns the global counts.
            Every rank must call it. An error on any rank is raised on all.

    Returns:
        int64 tensor of shape ``[C]`` on the CPU.

    Raises:
        ClassWeightError: for an empty source, labels out of range, negative,
            non-integer or NaN labels, unsupported dtypes, missing files or keys,
            paths that are not regular files, damaged or inconsistent files, a
            file that changes while it is read, colour images, a folder or
            glob without label images, a missing Pillow for PNG or TIFF files,
            ``num_classes`` above :data:`~classweights.MAX_CLASSES`; and for
            ``distributed=True`` without an initialised process group. For tables also: missing or
            ambiguous columns, nulls, non-numeric columns, and a missing optional
            package (with the ``pip install`` line that brings it).

    Example:
        >>> import torch
        >>> count_labels(torch.tensor([[0, 0, 1], [2, 0, 1]]), num_classes=3)
        tensor([3, 2, 1])
    """
    return count_label_stats(
        source,
        num_classes,
        ignore_index=ignore_index,
        key=key,
        chunk_size=chunk_size,
        num_threads=num_threads,
        device=device,
        progress=progress,
        distributed=distributed,
    ).counts


def count_label_stats(
    source: Any,
    num_classes: int,
    *,
    ignore_index: int | None = None,
    key: str | int | None = None,
    chunk_size: int | None = None,
    num_threads: int | None = None,
    device: str | torch.device | None = None,
    progress: ProgressCallback | None = None,
    presence: bool = False,
    fingerprint: bool = False,
    distributed: bool = False,
) -> LabelStats:
    """Like :func:`count_labels`, but returns a :class:`LabelStats`.

    With ``presence=True`` it also gathers ``image_pixels``: for each class, the
    total number of (non-ignored) labels in the samples that contain it. The
    first axis of an array source, each dataset item, and each file of a folder
    or glob of label images is one sample.

    With ``fingerprint=True`` it also hashes the labels as it reads them (one
    pass, no second read of the data): sha256 over their bytes in order, their
    dtype, the number of samples and the labels per sample. Equal labels give
    equal fingerprints whatever the source type; changing any one label, the
    dtype or the shape gives another. Use it as a cache key for anything
    derived from the labels. With ``distributed=True`` each rank hashes whole
    blocks of about 16 MiB of samples and the ranks combine their digests: the
    fingerprint is the same whatever the number of processes (iterables, which
    are not sharded, are the exception). Label images, which may differ in size
    and dtype, are hashed one file per block, each with its dtype and size: the
    same labels in the same files give the same fingerprint whatever their
    format, but not the fingerprint of the same labels stacked in one array.

    With ``distributed=True`` (see :func:`count_labels`), ``image_pixels``,
    ``num_images`` and ``num_labels`` are global too.

    Example:
        >>> import torch
        >>> stats = count_label_stats(torch.tensor([[0, 0, 1], [0, 0, 0]]), 2, presence=True)
        >>> stats.counts.tolist(), stats.image_pixels.tolist()
        ([5, 1], [6, 3])
    """
    num_classes = check_num_classes(num_classes)
    ignore_index = check_ignore_index(ignore_index)
    if key is not None and not isinstance(key, str) and not is_int(key):
        raise ClassWeightError(f"Expected `key` to be a string, an integer or None, but got {shown(key)}")
    if progress is not None and not callable(progress):
        raise ClassWeightError(f"Expected `progress` to be a callable or None, but got {shown(progress)}")
    presence, fingerprint, distributed = (check_flag(v, n) for v, n in ((presence, "presence"), (fingerprint, "fingerprint"), (distributed, "distributed")))
    workers = _resolve_threads(num_threads)
    from ._dask import count_dask_stats, is_dask_array

    if is_dask_array(source):  # counted block by block on Dask's scheduler, not streamed through this process
        return count_dask_stats(source, num_classes, ignore_index=ignore_index, key=key, device=device, progress=progress,
                                presence=presence, fingerprint=fingerprint, distributed=distributed)  # fmt: skip
    shard = _process_group_shard(HASH_BLOCK_BYTES if fingerprint else None) if distributed else None
    target = _resolve_device(device, source)
    counts = torch.zeros(num_classes, dtype=torch.int64)
    image_pixels = torch.zeros(num_classes, dtype=torch.int64) if presence else None
    images = labels = 0
    where = "labels"
    identity: FileIdentity | None = None
    hasher = _LabelHasher() if fingerprint else None
    failure: BaseException | None = None
    try:
        # Presence statistics widen each chunk to int64, so they keep the bounded default chunks.
        stream = open_source(source, key=key, chunk_size=chunk_size, parts=1 if presence else workers, shard=shard,
                             threads=workers, keep_labels=fingerprint)  # fmt: skip
        where, identity = stream.where, stream.identity

        def work(chunk: Chunk) -> tuple[torch.Tensor, torch.Tensor | None, int, int]:
            if chunk.histogram is not None:
                return _count_histogram(chunk, num_classes, ignore_index, presence, chunk.where or stream.where)
            return _count_chunk(chunk, num_classes, ignore_index, presence, chunk.where or stream.where)

        # Chunks are read and moved to the device in this thread; only counting runs in the pool.
        chunks = stream.chunks if hasher is None else _hashed(stream.chunks, hasher)
        on_device = (_on_device(chunk, target, num_classes, stream.where) for chunk in chunks)
        # Chunks their reader counted (label images) are only added up here: threads would cost more than they save.
        for chunk_counts, chunk_pixels, chunk_images, chunk_labels in _ordered_map(work, on_device, 1 if stream.counted else workers):
            counts += chunk_counts
            if image_pixels is not None and chunk_pixels is not None:
                image_pixels += chunk_pixels
            images += chunk_images
            labels += chunk_labels
            if progress is not None:
                progress(images, stream.total)
    except Exception as exc:  # with other ranks waiting in all_reduce, an error must reach them first
        if shard is None:
            raise
        failure = exc
    hashed = None if hasher is None else hasher.finish()
    if shard is not None:
        counts, image_pixels, images, labels, hashed = _reduce_across_ranks(counts, image_pixels, images, labels, hashed, failure)
        if shard.world > 1:
            where = f"{where} (all {shard.world} ranks)"
    digest = None if hashed is None else _combine_digests(hashed.blocks, hashed.dtype, hashed.per_sample, images)

    if labels == 0:  # no samples, or samples that hold no labels
        raise ClassWeightError(f"Expected at least one label, but {where} is empty")
    total = int(counts.sum())
    if total == 0:
        raise ClassWeightError(f"Expected at least one label to count, but every label in {where} equals ignore_index={ignore_index}")
    return LabelStats(counts, image_pixels, images, total, digest, identity)


# --------------------------------------------------------- distributed ----


def _process_group_shard(block_bytes: int | None) -> Shard:
    """This rank's shard in the default process group, or a clear error if there is none."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        raise ClassWeightError(
            "Expected an initialised torch.distributed process group for distributed=True, but there is none "
            "(call torch.distributed.init_process_group first, e.g. under torchrun, or pass distributed=False)"
        )
    return Shard(dist.get_rank(), dist.get_world_size(), block_bytes)


def _reduce_across_ranks(
    counts: torch.Tensor, image_pixels: torch.Tensor | None, images: int, labels: int, hashed: _LabelHasher | None,
    failure: BaseException | None,
) -> tuple[torch.Tensor, torch.Tensor | None, int, int, _LabelHasher | None]:
    """Sum this rank's statistics with every other rank's; raise on all ranks if any rank failed."""
    import torch.distributed as dist

    c = counts.numel()
    parts = [counts, image_pixels if image_pixels is not None else torch.zeros(0, dtype=torch.int64),
             torch.tensor([labels, images, failure is not None], dtype=torch.int64)]  # fmt: skip
    packed = torch.cat(parts)
    if dist.get_backend() == "nccl":  # NCCL reduces CUDA tensors only
        packed = packed.to(torch.device("cuda", torch.cuda.current_device()))
    dist.all_reduce(packed)
    packed = packed.cpu()
    if int(packed[-1]):
        messages: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(messages, None if failure is None else str(failure))
        if failure is not None:
            raise failure
        rank, message = next((r, m) for r, m in enumerate(messages) if m is not None)
        raise ClassWeightError(f"counting failed on rank {rank}: {message}")
    if hashed is not None:  # every rank's block digests, in rank order: the single-process fingerprint
        shards: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(shards, (hashed.blocks, hashed.dtype, hashed.per_sample))
        hashed = _LabelHasher()
        hashed.blocks = [block for blocks, _, _ in shards for block in blocks]
        hashed.dtype, hashed.per_sample = next(((d, p) for _, d, p in shards if d is not None), (None, None))
    pixels = packed[c : 2 * c] if image_pixels is not None else None
    return packed[:c], pixels, int(packed[-2]), int(packed[-3]), hashed


# --------------------------------------------------------- fingerprint ----


HASH_BLOCK_BYTES = 1 << 24  # labels are hashed in blocks of whole samples of about 16 MiB


class _LabelHasher:
    """The labels' fingerprint: sha256 over the sha256 of each block of samples, then dtype and shape.

    Hashing block by block lets ranks that read whole blocks each (see
    ``_sources.Shard``) combine their digests into the same fingerprint a
    single process computes. Fed in the reading thread while the pool counts
    the previous chunk; hashlib releases the GIL on large buffers.

    Samples of different lengths (ragged chunks) are hashed ``RAGGED_HASH_ROWS``
    samples per block, their lengths beside their labels, and ``per_sample``
    is ``"ragged"``.
    """

    def __init__(self) -> None:
        self.blocks: list[str] = []
        self.dtype: str | None = None
        self.per_sample: int | str | None = None
        self._block = hashlib.sha256()
        self._lengths = hashlib.sha256()
        self._rows_in_block = 0
        self._block_rows = 0

    def update(self, data: Any, lengths: np.ndarray | None = None) -> None:
        if isinstance(data, torch.Tensor):
            data = data.detach().cpu().contiguous()
            dtype = str(data.dtype).replace("torch.", "")
            raw = data.view(torch.uint8).numpy() if data.numel() else np.empty((data.shape[0], 0), np.uint8)
        else:
            data = np.ascontiguousarray(data)
            dtype = data.dtype.newbyteorder("=").name if data.dtype.kind in "biuf" else str(data.dtype)
            raw = data.astype(data.dtype.newbyteorder("<"), copy=False).view(np.uint8).reshape(data.shape[0], -1)
        if lengths is not None:
            self._update_ragged(dtype, raw.reshape(-1), np.asarray(lengths, dtype=np.int64))
            return
        if self.dtype is None:
            self.dtype, self.per_sample = dtype, int(data.shape[1])
            self._block_rows = max(1, HASH_BLOCK_BYTES // max(1, raw.shape[1]))
        i = 0
        while i < raw.shape[0]:
            take = min(raw.shape[0] - i, self._block_rows - self._rows_in_block)
            self._block.update(memoryview(raw[i : i + take]))
            self._rows_in_block += take
            i += take
            if self._rows_in_block == self._block_rows:
                self._close_block()

    def _update_ragged(self, dtype: str, raw: np.ndarray, lengths: np.ndarray) -> None:
        if self.dtype is None:
            self.dtype, self.per_sample, self._block_rows = dtype, "ragged", RAGGED_HASH_ROWS
        total = int(lengths.sum())
        ends = np.cumsum(lengths) * (raw.size // total if total else 0)  # the byte after each sample
        i = 0
        while i < len(lengths):
            take = min(len(lengths) - i, self._block_rows - self._rows_in_block)
            lo, hi = int(ends[i - 1]) if i else 0, int(ends[i + take - 1])
            self._lengths.update(memoryview(lengths[i : i + take].astype("<i8", copy=False)))
            self._block.update(memoryview(raw[lo:hi]))
            self._rows_in_block += take
            i += take
            if self._rows_in_block == self._block_rows:
                self._close_block()

    def update_file(self, data: np.ndarray | None, digest: str | None = None) -> None:
        """One file of its own size (a label image): one block, its dtype and label count hashed with its labels.

        Files may differ in size and dtype, so none of them sets ``dtype`` and
        ``per_sample`` for the whole; a file is a block of its own, so shards
        of whole files combine into the single-process fingerprint. ``digest``
        is the block's digest if the reader already took it (``file_digest``).
        """
        self.blocks.append(digest if digest is not None else file_digest(data))
        self.dtype = "per file"

    def _close_block(self) -> None:
        if self.per_sample == "ragged":  # the block's labels, and how they split into samples
            self.blocks.append(hashlib.sha256(self._lengths.digest() + self._block.digest()).hexdigest())
        else:
            self.blocks.append(self._block.hexdigest())
        self._block, self._lengths, self._rows_in_block = hashlib.sha256(), hashlib.sha256(), 0

    def finish(self) -> _LabelHasher:
        if self._rows_in_block:
            self._close_block()
        return self


def file_digest(data: np.ndarray) -> str:
    """The fingerprint block of one file's labels: sha256 of their dtype and number, then their bytes (little-endian)."""
    data = np.ascontiguousarray(data)
    dtype = data.dtype.newbyteorder("=").name if data.dtype.kind in "biuf" else str(data.dtype)
    block = hashlib.sha256(json.dumps({"dtype": dtype, "labels": int(data.size)}, sort_keys=True).encode())
    block.update(memoryview(data.astype(data.dtype.newbyteorder("<"), copy=False).reshape(-1).view(np.uint8)))
    return block.hexdigest()


def _combine_digests(blocks: list[str], dtype: str | None, per_sample: int | str | None, samples: int) -> str:
    sha = hashlib.sha256(b"classweights-labels-v1\0")
    for block in blocks:
        sha.update(bytes.fromhex(block))
    sha.update(json.dumps({"dtype": dtype, "samples": samples, "per_sample": per_sample}, sort_keys=True).encode())
    return sha.hexdigest()


def _hashed(chunks: Iterator[Chunk], hasher: _LabelHasher) -> Iterator[Chunk]:
    for chunk in chunks:
        yield chunk
        # after the consumer has handed the chunk to a counting thread
        if chunk.where is None:
            hasher.update(chunk.data, chunk.lengths)
        else:
            hasher.update_file(chunk.data, chunk.digest)


# ------------------------------------------------------------- helpers ----


def _resolve_device(device: str | torch.device | None, source: Any) -> torch.device:
    if device is None:
        if not isinstance(source, torch.Tensor) or source.is_meta:  # a meta tensor is refused when it is read
            return torch.device("cpu")
        return source.device
    try:
        target = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise ClassWeightError(f"Expected `device` to be a torch device such as 'cpu' or 'cuda', but got {shown(device)} ({exc})") from None
    if target.type == "meta":
        raise ClassWeightError(f"Expected `device` to be a device that holds data, but got {shown(device)}")
    try:  # a device this build or machine lacks fails here, not halfway through the data
        torch.empty(0, device=target)
    except Exception as exc:  # noqa: BLE001 - torch raises RuntimeError, AssertionError or others per backend
        raise ClassWeightError(f"Expected `device` to be available, but {device!r} is not: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}") from None
    return target


def _resolve_threads(num_threads: int | None) -> int:
    if num_threads is None:
        return max(1, min(8, torch.get_num_threads(), os.cpu_count() or 1))
    return check_positive_int(num_threads, "num_threads", maximum=MAX_THREADS, allow_none=True) or 1


def _ordered_map(fn: Callable[[_T], _R], items: Iterator[_T] | Iterable[_T], workers: int) -> Iterator[_R]:
    """``map(fn, items)`` on ``workers`` threads, in order, with at most ``2 * workers`` items in flight."""
    if workers == 1:
        yield from map(fn, items)
        return
    pool = _thread_pool(workers, os.getpid())
    window: list[Future[_R]] = []
    for item in items:
        window.append(pool.submit(fn, item))
        if len(window) >= 2 * workers:
            yield window.pop(0).result()
    for future in window:
        yield future.result()


@functools.lru_cache(maxsize=4)
def _thread_pool(workers: int, pid: int) -> ThreadPoolExecutor:
    """One pool per size, kept for the process: starting threads costs ~10% of counting 20M labels.

    Keyed by ``pid`` too, so a forked child (a DataLoader worker) makes its own
    pool instead of waiting on threads that did not survive the fork.
    """
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"classweights-{pid}")


def _on_device(chunk: Chunk, device: torch.device, num_classes: int, where: str) -> Chunk:
    """The chunk with its data as a tensor on ``device``; a chunk its reader counted stays as it is."""
    if chunk.histogram is not None:
        return chunk
    return dataclasses.replace(chunk, data=_to_tensor(chunk, device, num_classes, chunk.where or where))


def _to_tensor(chunk: Chunk, device: torch.device, num_classes: int, where: str) -> torch.Tensor:
    data = chunk.data
    if isinstance(data, np.ndarray):
        check_label_dtype(data.dtype, where)
        if not data.dtype.isnative:  # big-endian files: torch reads native byte order only
            data = data.astype(data.dtype.newbyteorder("="))
        if data.dtype.kind == "u" and data.dtype.itemsize > 1:
            data = _widen_unsigned(data, chunk, num_classes, where)
        data = np.ascontiguousarray(data)
        if data.flags.writeable:
            data = torch.from_numpy(data)
        else:  # memory maps and file buffers: read-only, and never written here
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
                data = torch.from_numpy(data)
    return data.to(device, non_blocking=True) if data.device != device else data


def _widen_unsigned(data: np.ndarray, chunk: Chunk, num_classes: int, where: str) -> np.ndarray:
    """uint16/32/64 -> int64, which torch can bincount; uint64 values past int64 are out of range anyway."""
    if data.dtype.itemsize == 8:
        big = data > np.iinfo(np.int64).max
        if big.any():
            i = int(np.flatnonzero(big.reshape(-1))[0])
            raise _out_of_range(int(data.reshape(-1)[i]), _position(chunk, i), num_classes, where)
    return data.astype(np.int64)


def _position(chunk: Chunk, i: int) -> str:
    """Where the ``i``-th label of ``chunk`` lies, for errors."""
    return _located(chunk.start, chunk.locate, i)


def _located(start: int, locate: Callable[[int], str] | None, i: int) -> str:
    return locate(i) if locate is not None else f"flat index {start + i}"


def _out_of_range(value: int, position: str, num_classes: int, where: str) -> ClassWeightError:
    return ClassWeightError(
        f"{where}: label {value} at {position} is out of range for "
        f"num_classes={num_classes} (expected 0 <= label < {num_classes})"
    )


def _as_labels(x: torch.Tensor, start: int, num_classes: int, where: str, locate: Callable[[int], str] | None = None) -> torch.Tensor:
    """Return an integer tensor torch can bincount, rejecting non-integer values (``locate``: see ``Chunk``)."""
    if x.dtype in _NATIVE:
        return x
    if x.dtype == torch.bool:
        return x.to(torch.uint8)
    if x.is_floating_point():
        flat = x.reshape(-1)
        bad = ~torch.isfinite(flat) | (flat != torch.trunc(flat))
        if bool(bad.any()):
            i = int(bad.nonzero()[0])
            value = float(flat[i])
            raise ClassWeightError(
                f"{where}: label {value!r} at {_located(start, locate, i)} is not a class index "
                f"(expected an integer in [0, {num_classes}))"
            )
        return x.to(torch.int64)
    if x.dtype in (torch.uint16, torch.uint32):
        return x.to(torch.int64)
    if x.dtype == torch.uint64:
        # torch has few kernels for uint64; a value past the int64 maximum has its top bit set, so its int64 view is negative
        signed = x.view(torch.int64)
        big = signed.reshape(-1) < 0
        if bool(big.any()):
            i = int(big.nonzero()[0])
            raise _out_of_range(int(signed.reshape(-1)[i]) + (1 << 64), _located(start, locate, i), num_classes, where)
        return signed
    raise ClassWeightError(f"{where}: expected integer labels, but got dtype {str(x.dtype).replace('torch.', '')}")


def _count_chunk(
    chunk: Chunk,
    num_classes: int,
    ignore_index: int | None,
    presence: bool,
    where: str,
) -> tuple[torch.Tensor, torch.Tensor | None, int, int]:
    """Counts, image pixels (with ``presence``), samples and labels of one chunk."""
    x = _as_labels(chunk.data, chunk.start, num_classes, where, chunk.locate)
    images, per_image = x.shape
    if chunk.lengths is not None:  # samples of different lengths, side by side in one row
        images = len(chunk.lengths)
    if x.numel() == 0:
        empty = torch.zeros(num_classes, dtype=torch.int64)
        return empty, (empty.clone() if presence else None), images, 0
    flat = x.reshape(-1)
    if not presence and flat.dtype in (torch.uint8, torch.int8) and flat.device.type == "cpu":
        counts = _count_bytes(flat, num_classes, ignore_index)
        if counts is not None:
            return counts, None, images, flat.numel()
        # else: some label is out of range; the general path below finds and reports it

    keep: torch.Tensor | None = None
    lo, hi = (int(v) for v in torch.aminmax(flat))
    if lo < 0 or hi >= num_classes:
        # Compare only with values the dtype can hold: torch would wrap 128 to -128 for int8.
        info = torch.iinfo(flat.dtype)
        bad = flat < 0
        if num_classes <= info.max:
            bad |= flat >= num_classes
        if ignore_index is not None and info.min <= ignore_index <= info.max:
            keep = flat != ignore_index
            bad &= keep
        if bool(bad.any()):
            i = int(bad.nonzero()[0])
            raise _out_of_range(int(flat[i]), _position(chunk, i), num_classes, where)
    drop_bin = ignore_index if ignore_index is not None and 0 <= ignore_index < num_classes else None

    if not presence:
        values = flat if keep is None else flat[keep]
        counts = torch.bincount(values, minlength=num_classes)
        if drop_bin is not None:
            counts[drop_bin] = 0
        return counts.cpu(), None, images, flat.numel()

    # Per-image histogram: bin (row * C + label), so one bincount gives [images, C].
    if chunk.lengths is None:
        rows = torch.arange(images, device=flat.device).repeat_interleave(per_image)
    else:
        rows = torch.arange(images, device=flat.device).repeat_interleave(torch.as_tensor(chunk.lengths, device=flat.device))
    ids = rows * num_classes + flat.to(torch.int64)
    if keep is not None:
        ids = ids[keep]
    if images * num_classes > 4 * flat.numel() + _DENSE_PRESENCE:
        # Many samples of few labels (1-D labels) and many classes: a dense [images, C] table would dwarf
        # the chunk, so count only the (sample, class) pairs that occur.
        counts, image_pixels = _sparse_presence(ids, images, num_classes, drop_bin)
        return counts.cpu(), image_pixels.cpu(), images, flat.numel()
    per_image_counts = torch.bincount(ids, minlength=images * num_classes).view(images, num_classes)
    if drop_bin is not None:
        per_image_counts[:, drop_bin] = 0
    totals = per_image_counts.sum(dim=1, keepdim=True)
    image_pixels = ((per_image_counts > 0) * totals).sum(dim=0)
    return per_image_counts.sum(dim=0).cpu(), image_pixels.cpu(), images, flat.numel()


def _count_histogram(
    chunk: Chunk,
    num_classes: int,
    ignore_index: int | None,
    presence: bool,
    where: str,
) -> tuple[torch.Tensor, torch.Tensor | None, int, int]:
    """:func:`_count_chunk` for a chunk whose reader took the histogram of each row (``chunk.histogram``).

    Runs once per image in the reading thread, so it keeps to a few numpy calls on ``[B, K]``.
    """
    histogram = chunk.histogram
    images, values = histogram.shape
    if values > num_classes:
        ignored = num_classes <= (ignore_index if ignore_index is not None else -1) < values
        stray = int(histogram[:, num_classes:].sum()) - (int(histogram[:, ignore_index].sum()) if ignored else 0)
        if stray:  # the labels themselves may not be at hand: name the value and how often it occurs
            seen = np.flatnonzero(histogram[:, num_classes:].any(axis=0)) + num_classes
            value = int(seen[seen != ignore_index][0])
            raise ClassWeightError(
                f"{where}: label {value} is out of range for num_classes={num_classes} (expected 0 <= label < {num_classes}); "
                f"{int(histogram[:, value].sum())} labels have it"
            )
    kept = histogram[:, :num_classes]
    if ignore_index is not None and 0 <= ignore_index < kept.shape[1]:
        kept = kept.copy()
        kept[:, ignore_index] = 0
    counts = np.zeros(num_classes, np.int64)
    counts[: kept.shape[1]] = kept.sum(axis=0)
    image_pixels = None
    if presence:
        image_pixels = np.zeros(num_classes, np.int64)
        image_pixels[: kept.shape[1]] = ((kept > 0) * kept.sum(axis=1, keepdims=True)).sum(axis=0)
    labels = int(histogram.sum())
    return torch.from_numpy(counts), None if image_pixels is None else torch.from_numpy(image_pixels), images, labels


def _sparse_presence(ids: torch.Tensor, images: int, num_classes: int, drop_bin: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Counts and image pixels from the ids ``row * C + label``, in memory proportional to the labels."""
    pairs, occurrences = torch.unique(ids, return_counts=True)
    rows, classes = pairs // num_classes, pairs % num_classes
    if drop_bin is not None:
        kept = classes != drop_bin
        rows, classes, occurrences = rows[kept], classes[kept], occurrences[kept]
    totals = torch.zeros(images, dtype=torch.int64, device=ids.device).index_add_(0, rows, occurrences)
    counts = torch.zeros(num_classes, dtype=torch.int64, device=ids.device).index_add_(0, classes, occurrences)
    image_pixels = torch.zeros(num_classes, dtype=torch.int64, device=ids.device).index_add_(0, classes, totals[rows])
    return counts, image_pixels


# ----------------------------------------------------- one-byte labels ----
# uint8/int8 labels (ARC grids, most segmentation masks) take a faster path.
#
# torch.bincount is slow on such data not for lack of bandwidth but because
# consecutive labels are mostly the same (93% background): every increment of
# the same bin waits for the previous one. So the bytes are read as int64 words
# of four int16 pairs, and while every label is below 64 (bits 6 and 7 of each
# byte are free) each pair position in the word gets its own tag in those bits
# by one XOR. A run of background then spreads over four bins, one bincount over
# 2**15 bins handles two labels per element, and the tags and pairs fold back
# into a histogram of byte values. Labels of 64-127 use pairs without tags;
# anything else uses a plain bincount of bytes. The byte histogram also shows
# every out-of-range value, so no separate min/max pass is needed.

_PAIR_TAGS = 0x40C0_4080_4040_0000  # XOR tags of the four int16 pairs of a little-endian word
_TAG_BLOCK = 1 << 19  # int64 words tagged at a time (4 MiB): one buffer, reused
_LITTLE_ENDIAN = sys.byteorder == "little"


def _byte_histogram(flat: torch.Tensor) -> torch.Tensor:
    """How often each byte value 0-255 occurs in the 1-D uint8 tensor ``flat``."""
    histogram = torch.zeros(256, dtype=torch.int64)
    if flat.numel() == 0:
        return histogram
    top = int(flat.max())  # a read-only reduction: cheaper than masking the words
    done = 0
    words = _as_words(flat) if _LITTLE_ENDIAN and top < 64 else None
    if words is not None:  # every label < 64: bits 6-7 of each byte are free for the tags
        table = torch.zeros(1 << 15, dtype=torch.int64)
        tagged = torch.empty(min(words.numel(), _TAG_BLOCK), dtype=torch.int64)  # reused: no page faults per block
        for lo in range(0, words.numel(), _TAG_BLOCK):
            block = tagged[: min(_TAG_BLOCK, words.numel() - lo)]
            torch.bitwise_xor(words[lo : lo + block.numel()], _PAIR_TAGS, out=block)
            table += torch.bincount(block.view(torch.int16), minlength=1 << 15)[: 1 << 15]
        # [bit 14, high byte bits 0-5, low byte bits 6-7, low byte bits 0-5]: drop the tag axes
        pairs = table.view(2, 64, 4, 64).sum(dim=(0, 2))
        histogram[:64] += pairs.sum(dim=0) + pairs.sum(dim=1)
        done = words.numel() * 8
    rest = flat[done:]
    if rest.numel() >= 2:
        even = rest.numel() - rest.numel() % 2
        pairs16 = _as_pairs(rest[:even]) if top < 128 else None
        if pairs16 is not None:  # every high byte < 128, so the int16 values are >= 0
            table = torch.bincount(pairs16, minlength=1 << 15)[: 1 << 15].view(128, 256)
            histogram += table.sum(dim=0)
            histogram[:128] += table.sum(dim=1)
        else:
            histogram += torch.bincount(rest[:even], minlength=256)
        done += even
    if done < flat.numel():
        histogram[int(flat[-1])] += 1
    return histogram


def _as_words(flat: torch.Tensor) -> torch.Tensor | None:
    """The leading multiple of 8 bytes of ``flat`` as int64, or None (too short, or misaligned)."""
    n = flat.numel() - flat.numel() % 8
    if n == 0:
        return None
    try:
        return flat[:n].view(torch.int64)
    except RuntimeError:
        return None


def _as_pairs(flat: torch.Tensor) -> torch.Tensor | None:
    try:
        return flat.view(torch.int16)
    except RuntimeError:  # an odd storage offset cannot be viewed as int16
        return None


def _count_bytes(flat: torch.Tensor, num_classes: int, ignore_index: int | None) -> torch.Tensor | None:
    """Counts of uint8/int8 labels, or ``None`` if some label is out of range (and not ignored)."""
    signed = flat.dtype == torch.int8
    histogram = _byte_histogram(flat.view(torch.uint8) if signed else flat)
    valid = min(num_classes, 128 if signed else 256)  # byte values that are class labels
    stray = histogram.clone()
    stray[:valid] = 0
    if ignore_index is not None and (-128 if signed else 0) <= ignore_index < (128 if signed else 256):
        stray[ignore_index & 0xFF] = 0
    if bool(stray.any()):
        return None
    counts = torch.zeros(num_classes, dtype=torch.int64)
    counts[:valid] = histogram[:valid]
    if ignore_index is not None and 0 <= ignore_index < num_classes:
        counts[ignore_index] = 0
    return counts
