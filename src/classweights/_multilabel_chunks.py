"""Positives per class of one chunk of multi-label targets: multi-hot rows or label-index lists.

:func:`~classweights.count_multilabel` reads multi-hot rows through the
chunks of ``_sources`` and hands each chunk to :func:`count_multi_hot`;
label-index lists get their own chunks (:func:`index_list_stream`) and
:func:`count_index_lists`. Both return the chunk's positives per class (int64
numpy ``[C]``) and its number of samples, and raise a one-line
``ClassWeightError`` naming the sample of any bad value.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from ._checks import check_positive_int, is_int, shown
from ._errors import ClassWeightError
from ._stream import DEFAULT_CHUNK_SIZE, Chunk, Shard, Stream, _shard_rows

_INDEX_ROW = (list, tuple, set, frozenset, range)  # what a sample of a label-index source may be
_CHECK_BLOCK_BYTES = 1 << 20  # values wider than a byte are checked this many bytes at a time (cache-sized)
_ONE_BITS = {("f", 2): 0x3C00, ("f", 4): 0x3F80_0000, ("f", 8): 0x3FF0_0000_0000_0000}  # 1.0; integers: 1


# ------------------------------------------------------------ multi-hot ----


def check_shape(shape: tuple[int, ...], where: str, num_classes: int) -> None:
    """Refuse an array or file whose shape is not ``[N, C]`` before any of it is read."""
    if len(shape) != 2 or shape[1] != num_classes:
        raise ClassWeightError(
            f"{where}: expected multi-hot targets of shape [N, {num_classes}] (num_classes={num_classes}), but got shape {list(shape)}"
        )


def release(stream: Stream) -> None:
    """Close the file behind a stream that will not be read.

    A file's reader closes it when its chunks are done or dropped, but only
    once it has started; so start it (one bounded chunk) and stop it.
    """
    with contextlib.suppress(ClassWeightError):
        next(stream.chunks, None)
    close = getattr(stream.chunks, "close", None)
    if close is not None:
        close()


def count_multi_hot(chunk: Chunk, num_classes: int, where: str) -> tuple[np.ndarray, int]:
    """Positives per class and samples of one chunk of multi-hot rows."""
    if chunk.lengths is not None:  # rows of a list column: multi-hot only if every row holds num_classes values
        wrong = chunk.lengths[chunk.lengths != num_classes]
        if wrong.size:
            raise ClassWeightError(
                f"{where}: expected multi-hot rows of num_classes={num_classes} values, but a row holds {int(wrong[0])}"
            )
        chunk = Chunk(chunk.data.reshape(len(chunk.lengths), num_classes), chunk.start)
    if chunk.sample_shape is not None and tuple(chunk.sample_shape) != (num_classes,):
        raise ClassWeightError(
            f"{where}: expected samples of shape [{num_classes}] (multi-hot rows of num_classes={num_classes} values), "
            f"but got samples of shape {list(chunk.sample_shape)}"
        )
    rows = _as_numpy(chunk.data, where)
    if rows.shape[1] != num_classes:  # a reader that does not know the samples' shape
        raise ClassWeightError(f"{where}: expected samples of {num_classes} values, but got {rows.shape[1]}")
    return _positives(rows, chunk.start // num_classes, where), rows.shape[0]


def _as_numpy(data: np.ndarray | torch.Tensor, where: str) -> np.ndarray:
    """A chunk as a C-contiguous, native-endian numpy array of bool, integer or float values."""
    if isinstance(data, torch.Tensor):
        tensor = data.detach()
        if tensor.device.type != "cpu":
            tensor = tensor.cpu()
        if tensor.is_floating_point() and tensor.dtype not in (torch.float16, torch.float32, torch.float64):
            tensor = tensor.to(torch.float32)  # bfloat16 and float8 hold 0 and 1 exactly; numpy has no such dtypes
        try:
            data = tensor.numpy()
        except (TypeError, RuntimeError):
            raise ClassWeightError(
                f"{where}: expected multi-hot targets of dtype bool, integer or float, but got dtype {str(tensor.dtype).replace('torch.', '')}"
            ) from None
    dtype = data.dtype
    if dtype.hasobject or dtype.kind not in "biuf" or dtype.itemsize not in (1, 2, 4, 8):
        raise ClassWeightError(
            f"{where}: expected multi-hot targets of dtype bool, integer or float (up to 64 bits), but got dtype {dtype}"
        )
    if not dtype.isnative:
        data = data.astype(dtype.newbyteorder("="))
    return np.ascontiguousarray(data)


def _positives(rows: np.ndarray, first_sample: int, where: str) -> np.ndarray:
    """Column sums of the ``[B, C]`` multi-hot ``rows``, after checking that every value is 0 or 1.

    One-byte values are checked with one ``max`` of their unsigned view (a
    negative ``int8`` becomes a large value) and summed as they are. Wider
    values are compared, as unsigned integers, with the bits of 1 (``1.0`` for
    floats), a cache-sized block at a time, and the resulting bytes are added
    cell by cell into a one-byte tally whose column sums are the positives.
    The values whose bits are not all 0 are counted in the same look at each
    block; there must be exactly as many of them as there are ones.
    """
    unsigned = rows.view(f"u{rows.itemsize}")
    if rows.itemsize == 1:
        if unsigned.size and int(unsigned.max()) > 1:
            if rows.dtype.kind == "b":  # a bool stored as another nonzero byte (a file, a view) is True
                return column_sums(np.not_equal(unsigned, 0).view(np.uint8))
            raise _bad_value(rows, int(np.flatnonzero(unsigned.reshape(-1) > 1)[0]), first_sample, where)
        return column_sums(unsigned)
    one = _ONE_BITS.get((rows.dtype.kind, rows.itemsize), 1)
    samples, classes = rows.shape
    step = max(1, _CHECK_BLOCK_BYTES // (classes * rows.itemsize))
    is_one = np.empty((min(step, samples), classes), dtype=np.uint8)
    tally = np.zeros_like(is_one)  # ones per cell of a block, over up to 255 blocks
    positives = np.zeros(classes, dtype=np.int64)
    nonzero = 0
    for block, lo in enumerate(range(0, samples, step)):
        bits = unsigned[lo : lo + step]
        ones, cells = is_one[: len(bits)], tally[: len(bits)]
        np.equal(bits, one, out=ones.view(bool))
        nonzero += int(np.count_nonzero(bits))  # the block is still in the cache
        np.add(cells, ones, out=cells)
        if block % 255 == 254:
            positives += np.add.reduce(tally, axis=0, dtype=np.int64)
            tally[:] = 0
    positives += np.add.reduce(tally, axis=0, dtype=np.int64)
    if nonzero != int(positives.sum()):  # some value besides 0 and 1, or a float -0.0
        bad = (unsigned != one) & (rows != 0)
        if bad.any():
            raise _bad_value(rows, int(np.flatnonzero(bad)[0]), first_sample, where)
    return positives


def _bad_value(rows: np.ndarray, index: int, first_sample: int, where: str) -> ClassWeightError:
    classes = rows.shape[1]
    value = rows.reshape(-1)[index].item()
    return ClassWeightError(
        f"{where}: expected multi-hot targets holding only 0 and 1, but sample {first_sample + index // classes}, "
        f"class {index % classes} holds {value!r}"
    )


def column_sums(values: np.ndarray) -> np.ndarray:
    """Column sums (int64 ``[C]``) of ``[B, C]`` uint8 ``values`` that are all 0 or 1.

    Summing bytes that are 0 or 1 needs no wide counter per value: the rows,
    laid end to end, are read as uint64 words of eight bytes each, and the
    words are added as plain integers. No byte can carry into the next while
    it counts at most 255 ones, so blocks of 255 words are added at once and
    only their sums are widened to int64. A group of ``lcm(C, 8) / C`` rows
    fills whole words, with the same columns at the same places in every
    group, so the bytes of the sums fold back into columns. This reads the
    data once, several times faster than ``values.sum(0)``.
    """
    samples, classes = values.shape
    total = np.zeros(classes, dtype=np.int64)
    if samples == 0 or classes == 0:
        return total
    head = _rows_to_alignment(values, classes)  # whole uint64 words add fastest when aligned
    if head:
        total += values[:head].sum(axis=0, dtype=np.int64)
        values = values[head:]
        samples -= head
    group = math.lcm(classes, 8) // classes  # rows per group of whole words
    width = group * classes // 8  # words per group
    groups = samples // group
    if groups:
        words = values[: groups * group].reshape(-1).view(np.uint64).reshape(groups, width)
        blocks = groups // 255
        if blocks:
            sums = np.add.reduce(words[: blocks * 255].reshape(blocks, 255, width), axis=1)
            total += sums.view(np.uint8).reshape(blocks * group, classes).sum(axis=0, dtype=np.int64)
        if groups > blocks * 255:
            sums = np.add.reduce(words[blocks * 255 :], axis=0)
            total += sums.view(np.uint8).reshape(group, classes).sum(axis=0, dtype=np.int64)
    if samples > groups * group:
        total += values[groups * group :].sum(axis=0, dtype=np.int64)
    return total


def _rows_to_alignment(values: np.ndarray, row_bytes: int) -> int:
    """Leading rows to skip so the rest starts on an 8-byte boundary (0 if none of the first 8 does)."""
    address = values.__array_interface__["data"][0]
    return next((rows for rows in range(min(8, values.shape[0])) if (address + rows * row_bytes) % 8 == 0), 0)


# -------------------------------------------------------- label indices ----


def is_index_lists(source: Any) -> bool:
    return isinstance(source, (list, tuple)) and len(source) > 0 and isinstance(source[0], _INDEX_ROW)


def index_list_stream(source: Sequence[Any], chunk_size: int | None, shard: Shard | None) -> Stream:
    """Chunks of whole samples holding about ``chunk_size`` label indices; ``Chunk.start`` is the first sample."""
    size = DEFAULT_CHUNK_SIZE if chunk_size is None else check_positive_int(chunk_size, "chunk_size")
    first, end = _shard_rows(len(source), shard, 0)
    for i in range(first, end):
        if not isinstance(source[i], _INDEX_ROW):
            raise ClassWeightError(
                f"labels: expected sample {i} to be a list of label indices like sample 0, but got {type(source[i]).__name__}"
            )
    ends = np.cumsum(np.fromiter(map(len, source[first:end]), dtype=np.int64, count=end - first))

    def chunks() -> Iterator[Chunk]:
        lo = 0
        while lo < end - first:
            before = int(ends[lo - 1]) if lo else 0
            hi = max(lo + 1, int(np.searchsorted(ends, before + size, side="right")))
            yield Chunk(source[first + lo : first + hi], first + lo)
            lo = hi

    return Stream(chunks(), end - first, "labels", sharded=shard is not None)


def count_index_lists(chunk: Chunk, num_classes: int, where: str) -> tuple[np.ndarray, int]:
    """Positives per class and samples of a chunk of label-index lists; a repeated index counts once."""
    rows = chunk.data
    lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
    flat = list(itertools.chain.from_iterable(rows))
    if not flat:
        return np.zeros(num_classes, dtype=np.int64), len(rows)
    if not set(map(type, flat)) <= {int}:  # numpy would take True for 1 and 2.0 for 2
        i = next((i for i, v in enumerate(flat) if not is_int(v)), None)
        if i is not None:
            raise ClassWeightError(
                f"{where}: expected integer label indices, but sample {_sample_of(i, lengths, chunk.start)} holds {shown(flat[i])}"
            )
    try:
        indices = np.array(flat, dtype=np.int64)
    except OverflowError:  # beyond int64: out of range, found below
        indices = np.array(flat, dtype=object)
    outside = np.flatnonzero((indices < 0) | (indices >= num_classes))
    if outside.size:
        i = int(outside[0])
        raise ClassWeightError(
            f"{where}: sample {_sample_of(i, lengths, chunk.start)} holds label index {shown(flat[i])}, "
            f"out of range for num_classes={num_classes} (expected 0 <= index < {num_classes})"
        )
    samples = np.repeat(np.arange(len(rows), dtype=np.int64), lengths)
    pairs = np.unique(samples * num_classes + indices.astype(np.int64))  # a (sample, class) pair counts once
    return np.bincount(pairs % num_classes, minlength=num_classes).astype(np.int64), len(rows)


def _sample_of(index: int, lengths: np.ndarray, first_sample: int) -> int:
    return first_sample + int(np.searchsorted(np.cumsum(lengths), index, side="right"))
