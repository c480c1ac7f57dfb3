"""Count labels per class: labels -> counts.

The public entry points are :func:`count_labels` (counts only) and
:func:`count_label_stats` (counts plus the per-image presence statistic that
``median_frequency`` needs). Both stream the source in fixed-size chunks (see
``_sources``) and count each chunk with one vectorised ``torch.bincount``, so
memory stays bounded however large the dataset is.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from . import _fingerprint
from ._checks import (
    check_flag,
    check_ignore_index,
    check_key_and_progress,
    check_num_classes,
    check_positive_int,
    shown,
)
from ._chunk_counts import _count_chunk, _count_histogram, _on_device
from ._chunked import is_dask_array
from ._errors import ClassWeightError
from ._files import FileIdentity
from ._fingerprint import ALGORITHM, ALGORITHMS, _combine_digests, _hashed, _LabelHasher, algorithm_of
from ._ranks import _process_group_shard, _reduce_across_ranks
from ._sources import open_source
from ._stream import Chunk
from ._threads import _ordered_map

ProgressCallback = Callable[[int, "int | None"], None]

MAX_THREADS = 256  # each thread may hold a chunk; far more threads than cores only costs memory


@dataclass(frozen=True)
class LabelStats:
    """What one pass over the labels gathers.

    Attributes:
        counts: int64 ``[C]``, labels of each class (``ignore_index`` excluded).
        image_pixels: int64 ``[C]``, total labels of the images that contain class
            ``c`` (Eigen and Fergus' denominator), or ``None`` if not gathered.
        num_images: samples (first-axis entries) seen.
        num_labels: labels counted, i.e. ``counts.sum()``.
        fingerprint: the labels' content digest, ``"blake3:"`` and 64 hex digits
            (bare hex digits for ``fingerprint="sha256"``), or ``None`` if not
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
    fingerprint: bool | str = False,
    distributed: bool = False,
) -> LabelStats:
    """Like :func:`count_labels`, but returns a :class:`LabelStats`.

    With ``presence=True`` it also gathers ``image_pixels``: for each class, the
    total number of (non-ignored) labels in the samples that contain it. The
    first axis of an array source, each dataset item, and each file of a folder
    or glob of label images is one sample.

    With ``fingerprint=True`` it also hashes the labels as it reads them (one
    pass, no second read of the data): BLAKE3 over their bytes in order, their
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
    ``fingerprint="sha256"`` computes the fingerprint of earlier versions (64
    hex digits, no prefix) instead, to check a record made with them against
    the data; :func:`fingerprint_algorithm` tells which a record holds.

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
    check_key_and_progress(key, progress)
    presence, distributed = (check_flag(v, n) for v, n in ((presence, "presence"), (distributed, "distributed")))
    algorithm = _fingerprint_option(fingerprint)
    workers = _resolve_threads(num_threads)
    if is_dask_array(source) and not (algorithm or distributed):  # counted where its blocks live, on Dask's scheduler
        from ._dask import count_dask_stats  # it imports this module

        return count_dask_stats(source, num_classes, ignore_index=ignore_index, key=key, device=device,
                                progress=progress, presence=presence)  # fmt: skip
    block = _fingerprint.HASH_BLOCK_BYTES if algorithm else None  # read here, not imported: tests vary it
    shard = _process_group_shard(block) if distributed else None
    target = _resolve_device(device, source)
    tally = _Tally(num_classes, presence)
    hasher = _LabelHasher(algorithm) if algorithm is not None else None
    where, identity = "labels", None
    failure: BaseException | None = None
    try:
        # Presence statistics widen each chunk to int64, so they keep the bounded default chunks.
        stream = open_source(source, key=key, chunk_size=chunk_size, parts=1 if presence else workers, shard=shard,
                             threads=workers, keep_labels=hasher is not None)  # fmt: skip
        where, identity = stream.where, stream.identity
        tally.count(stream, hasher, target, ignore_index, workers, progress)
    except Exception as exc:  # with other ranks waiting in all_reduce, an error must reach them first
        if shard is None:
            raise
        failure = exc
    hashed = None if hasher is None else hasher.finish()
    counts, image_pixels, images, labels = tally.counts, tally.image_pixels, tally.images, tally.labels
    if shard is not None:
        counts, image_pixels, images, labels, hashed = _reduce_across_ranks(
            counts, image_pixels, images, labels, hashed, failure
        )
        if shard.world > 1:
            where = f"{where} (all {shard.world} ranks)"
    digest = (
        None
        if hashed is None
        else _combine_digests(hashed.blocks, hashed.dtype, hashed.per_sample, images, hashed.algorithm)
    )
    if labels == 0:  # no samples, or samples that hold no labels
        raise ClassWeightError(f"Expected at least one label, but {where} is empty")
    total = int(counts.sum())
    if total == 0:
        raise ClassWeightError(
            f"Expected at least one label to count, but every label in {where} equals ignore_index={ignore_index}"
        )
    return LabelStats(counts, image_pixels, images, total, digest, identity)


class _Tally:
    """The running totals of one pass: counts, presence pixels, samples and labels."""

    def __init__(self, num_classes: int, presence: bool) -> None:
        self.num_classes = num_classes
        self.counts = torch.zeros(num_classes, dtype=torch.int64)
        self.image_pixels = torch.zeros(num_classes, dtype=torch.int64) if presence else None
        self.images = self.labels = 0

    def count(
        self,
        stream: Any,
        hasher: _LabelHasher | None,
        target: torch.device,
        ignore_index: int | None,
        workers: int,
        progress: ProgressCallback | None,
    ) -> None:
        """Count every chunk of ``stream`` (hashing it first if ``hasher``), ``workers`` chunks at a time."""
        num_classes, presence = self.num_classes, self.image_pixels is not None

        def work(chunk: Chunk) -> tuple[torch.Tensor, torch.Tensor | None, int, int]:
            if chunk.histogram is not None:
                return _count_histogram(chunk, num_classes, ignore_index, presence, chunk.where or stream.where)
            return _count_chunk(chunk, num_classes, ignore_index, presence, chunk.where or stream.where)

        # Chunks are read and moved to the device in this thread; only counting runs in the pool.
        chunks = stream.chunks if hasher is None else _hashed(stream.chunks, hasher)
        on_device = (_on_device(chunk, target, num_classes, stream.where) for chunk in chunks)
        # Chunks their reader counted (label images) are only added up here: threads would cost more than they save.
        for chunk_counts, chunk_pixels, chunk_images, chunk_labels in _ordered_map(
            work, on_device, 1 if stream.counted else workers
        ):
            self.counts += chunk_counts
            if self.image_pixels is not None and chunk_pixels is not None:
                self.image_pixels += chunk_pixels
            self.images += chunk_images
            self.labels += chunk_labels
            if progress is not None:
                progress(self.images, stream.total)


def fingerprint_algorithm(fingerprint: str) -> str:
    """The hash a :attr:`LabelStats.fingerprint` was made with: ``"blake3"``, or ``"sha256"`` for earlier versions'.

    Use it to check a stored fingerprint against the data with the same
    algorithm: ``count_label_stats(..., fingerprint=fingerprint_algorithm(stored))``.

    Args:
        fingerprint: a fingerprint as ``count_label_stats`` returns it:
            ``"blake3:"`` and 64 hex digits, or the bare 64 hex digits of sha256.

    Returns:
        ``"blake3"`` or ``"sha256"``.

    Raises:
        ClassWeightError: if ``fingerprint`` is not a fingerprint string.

    Example:
        >>> fingerprint_algorithm(count_label_stats([0, 1, 1], 2, fingerprint=True).fingerprint)
        'blake3'
        >>> fingerprint_algorithm("ab" * 32)
        'sha256'
    """
    algorithm = algorithm_of(fingerprint)
    if algorithm is None:
        raise ClassWeightError(
            f"Expected a label fingerprint ('blake3:' and 64 hex digits, or 64 hex digits of sha256), but got {shown(fingerprint)}"
        )
    return algorithm


# ------------------------------------------------------------- helpers ----


def _fingerprint_option(value: Any) -> str | None:
    """The hash ``fingerprint=`` asks for: True is the current one, a name picks one, False none."""
    if isinstance(value, (bool, np.bool_)):
        return ALGORITHM if value else None
    if isinstance(value, str) and value in ALGORITHMS:
        return value
    raise ClassWeightError(
        f"Expected `fingerprint` to be True, False or one of {', '.join(map(repr, ALGORITHMS))}, but got {shown(value)}"
    )


def _resolve_device(device: str | torch.device | None, source: Any) -> torch.device:
    if device is None:
        if not isinstance(source, torch.Tensor) or source.is_meta:  # a meta tensor is refused when it is read
            return torch.device("cpu")
        return source.device
    try:
        target = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise ClassWeightError(
            f"Expected `device` to be a torch device such as 'cpu' or 'cuda', but got {shown(device)} ({exc})"
        ) from None
    if target.type == "meta":
        raise ClassWeightError(f"Expected `device` to be a device that holds data, but got {shown(device)}")
    try:  # a device this build or machine lacks fails here, not halfway through the data
        torch.empty(0, device=target)
    except Exception as exc:  # noqa: BLE001 - torch raises RuntimeError, AssertionError or others per backend
        raise ClassWeightError(
            f"Expected `device` to be available, but {device!r} is not: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}"
        ) from None
    return target


def _resolve_threads(num_threads: int | None) -> int:
    if num_threads is None:
        return max(1, min(8, torch.get_num_threads(), os.cpu_count() or 1))
    return check_positive_int(num_threads, "num_threads", maximum=MAX_THREADS, allow_none=True) or 1
