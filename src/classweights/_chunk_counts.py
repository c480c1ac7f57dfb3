"""Counting one chunk: its labels checked (range, whole numbers, dtype) and counted with one bincount.

One-byte labels take a faster path (``_count_bytes``): see the note in its section.
"""

from __future__ import annotations

import dataclasses
import sys
import threading
import warnings
from collections.abc import Callable

import numpy as np
import torch

from ._errors import ClassWeightError
from ._stream import Chunk, check_label_dtype

_NATIVE = {torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64}
_DENSE_PRESENCE = 1 << 16  # per-image tables up to this many cells (beyond 4 per label) are dense; larger ones sparse


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


def _as_labels(
    x: torch.Tensor, start: int, num_classes: int, where: str, locate: Callable[[int], str] | None = None
) -> torch.Tensor:
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
        rows = torch.arange(images, device=flat.device).repeat_interleave(
            torch.as_tensor(chunk.lengths, device=flat.device)
        )
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


def _sparse_presence(
    ids: torch.Tensor, images: int, num_classes: int, drop_bin: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
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
#
# The passes around each bincount (max, XOR, the folds) run in numpy, on the
# counting thread itself: torch would split each over its own threads, on top
# of the counting threads, and wait for all of them at its end, which costs
# a time slice whenever other work holds a core.

_PAIR_TAGS = 0x40C0_4080_4040_0000  # XOR tags of the four int16 pairs of a little-endian word
_TAG_BLOCK = 1 << 17  # int64 words tagged at a time (1 MiB): one buffer per thread, kept
_THREAD = threading.local()
_LITTLE_ENDIAN = sys.byteorder == "little"


def _byte_histogram(flat: torch.Tensor) -> torch.Tensor:
    """How often each byte value 0-255 occurs in the 1-D uint8 CPU tensor ``flat``."""
    histogram = np.zeros(256, dtype=np.int64)
    if flat.numel() == 0:
        return torch.from_numpy(histogram)
    data = flat.numpy()
    top = int(data.max())  # a read-only reduction: cheaper than masking the words
    done = 0
    words = _as_words(flat) if _LITTLE_ENDIAN and top < 64 else None
    if words is not None:  # every label < 64: bits 6-7 of each byte are free for the tags
        source = words.numpy()
        tagged = _tag_buffer()
        table: torch.Tensor | None = None
        for lo in range(0, source.size, _TAG_BLOCK):
            block = tagged[: min(_TAG_BLOCK, source.size - lo)]
            np.bitwise_xor(source[lo : lo + block.size], _PAIR_TAGS, out=block)
            pairs = torch.bincount(torch.from_numpy(block.view(np.int16)), minlength=1 << 15)  # bit 15 is never set
            table = pairs if table is None else table.add_(pairs)
        assert table is not None
        # rows: the high byte (tag bit 14, label bits 8-13); columns: the low byte (tag bits 6-7, label bits 0-5)
        by_bytes = table.numpy().reshape(128, 256)
        histogram[:64] += by_bytes.sum(axis=0).reshape(4, 64).sum(axis=0) + by_bytes.sum(axis=1).reshape(2, 64).sum(
            axis=0
        )
        done = source.size * 8
    rest = flat[done:]
    if rest.numel() >= 2:
        even = rest.numel() - rest.numel() % 2
        pairs16 = _as_pairs(rest[:even]) if top < 128 else None
        if pairs16 is not None:  # every high byte < 128, so the int16 values are >= 0
            by_bytes = torch.bincount(pairs16, minlength=1 << 15)[: 1 << 15].numpy().reshape(128, 256)
            histogram += by_bytes.sum(axis=0)
            histogram[:128] += by_bytes.sum(axis=1)
        else:
            histogram += torch.bincount(rest[:even], minlength=256).numpy()
        done += even
    if done < flat.numel():
        histogram[int(data[-1])] += 1
    return torch.from_numpy(histogram)


def _tag_buffer() -> np.ndarray:
    """This thread's buffer for tagged words, kept from chunk to chunk: a new one each time costs page faults."""
    tagged = getattr(_THREAD, "tagged", None)
    if tagged is None or tagged.size < _TAG_BLOCK:
        tagged = _THREAD.tagged = np.empty(_TAG_BLOCK, dtype=np.int64)
    return tagged


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
