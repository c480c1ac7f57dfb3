"""Label images from a folder or a glob pattern: one sample per file, decoded on parallel threads.

Segmentation masks are often stored one image per file: Pascal VOC's
``SegmentationClass`` folder holds palette ("P") PNGs whose palette *index*
is the class, with 255 on object borders. A folder (its ``.png``, ``.tif``,
``.tiff`` and ``.npy`` files; not its sub-folders, not hidden files) or a glob
pattern (``masks/*.png``, or ``masks/**/*.png`` to descend) becomes a stream
of one chunk per file, in sorted path order.

Pillow releases the GIL while it decompresses, so files are decoded on
``threads`` threads, a few consecutive files per task, with at most
``2 * threads`` tasks (``16 * threads`` images, about ``2 * threads`` Mi
labels) waiting to be counted. Each chunk carries its file's name, for errors, and the histogram of
its values, taken on the decoding thread: Pillow counts an 8-bit image in C
several times faster than a bincount of its array, so the counting loop only
adds up histograms. Pixel values are never converted (a palette image is read
as its indices, never as colours), and Pillow is imported only when images
are read, so that it stays an optional dependency.
"""

from __future__ import annotations

import glob
import io
import os
import struct
import zlib
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from ._errors import ClassWeightError
from ._files import identity as file_identity
from ._files import open_regular
from ._fingerprint import file_digest
from ._npfiles import _open_path
from ._stream import DEFAULT_CHUNK_SIZE, Chunk, Shard, Stream, _one_line, _shard_rows
from ._zip import _read_up_to

SUFFIXES = (".png", ".tif", ".tiff", ".npy")
_FORMATS = {".png": ["PNG"], ".tif": ["TIFF"], ".tiff": ["TIFF"]}  # a file is decoded only as what its name says
# Pillow modes whose pixel values are labels: palette indices, grey levels, bits, 16/32-bit integers, floats.
LABEL_MODES = ("P", "L", "1", "I;16", "I;16L", "I;16B", "I;16N", "I", "F")
_GLOB_CHARS = "*?["
_HISTOGRAM_LIMIT = 1 << 16  # larger label values are counted by the general path, which names them
_BATCH_LABELS = 1 << 20  # labels one decoding task reads (about): several small images, one large one
_MAX_BATCH = 8  # files one decoding task reads at most
_LISTED = ".png, .tif, .tiff or .npy files"
# What Pillow may raise for a damaged file besides OSError (its truncated-data and unknown-format errors).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, TypeError, struct.error, zlib.error)


def is_image_source(path: str | os.PathLike[str]) -> bool:
    """True for a path read as label images: a folder, a glob pattern, or one ``.png``/``.tif``/``.tiff`` file.

    A single ``.npy`` file is not (its first axis holds the samples), nor a
    folder named like a ``.npy``, ``.npz`` or ``.parquet`` file (a mistake, not a data set), nor
    an existing file whose name happens to hold glob characters.
    """
    text = os.fspath(path)
    return isinstance(text, str) and _kind(text) is not None


def _kind(text: str) -> str | None:
    suffix = os.path.splitext(text)[1].lower()
    if os.path.isdir(text):
        return None if suffix in (".npy", ".npz", ".parquet") else "folder"
    if any(c in text for c in _GLOB_CHARS) and not os.path.lexists(text):
        return "pattern"
    return "image" if suffix in _FORMATS else None


def list_images(path: str | os.PathLike[str]) -> list[str]:
    """The label image files of a folder or glob pattern, sorted; an error if there are none. One image file is itself."""
    text = os.fspath(path)
    kind = _kind(text)
    if kind == "image":
        return [text]  # read (and refused if missing or not a regular file) like any listed file
    if kind == "folder":
        try:
            with os.scandir(text) as entries:
                names = [e.path for e in entries if not e.name.startswith(".") and not _is_dir(e)]
        except OSError as exc:
            raise ClassWeightError(f"could not list the folder {text!r}: {exc.strerror or exc}") from None
    else:
        names = [n for n in glob.glob(text, recursive=True) if not os.path.isdir(n)]
    found = sorted(n for n in names if os.path.splitext(n)[1].lower() in SUFFIXES)
    if found:
        return found
    if kind == "folder":
        others = f" ({_files(len(names))} of other kinds)" if names else ""
        raise ClassWeightError(
            f"Expected a folder of label images ({_LISTED}), but {text!r} is a directory with none in it{others}"
        )
    others = f" (it matches {_files(len(names))} of other kinds)" if names else ""
    raise ClassWeightError(
        f"Expected the glob pattern {text!r} to match label images ({_LISTED}), but it matches none{others}"
    )


def _files(n: int) -> str:
    return f"{n} file{'' if n == 1 else 's'}"


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


def image_stream(
    path: str | os.PathLike[str], *, key: str | int | None, shard: Shard | None, threads: int, keep_labels: bool
) -> Stream:
    """One chunk ``[1, H*W]`` per file of the folder or pattern ``path``; this rank's contiguous files with ``shard``.

    Without ``keep_labels``, an 8-bit image's chunk holds only its histogram
    (``data`` is None): copying its pixels out of Pillow would cost about as
    much as decoding them.
    """
    text = os.fspath(path)
    if key is not None:
        raise ClassWeightError(
            f"key={key!r} picks an array inside a .npz file or a dataset item, but {text!r} names label images, one sample per file"
        )
    files = list_images(text)
    # Every file is a hash block of its own (see _fingerprint._LabelHasher.update_file), so shards of whole files suffice.
    lo, hi = _shard_rows(len(files), None if shard is None else Shard(shard.rank, shard.world), 0)
    mine = files[lo:hi]
    if any(not name.lower().endswith(".npy") for name in mine):
        pillow()  # a missing Pillow is reported before any file is read
    return Stream(_decoded(mine, threads, keep_labels), len(mine), repr(text), sharded=shard is not None, counted=True)


def pillow() -> Any:
    """The ``PIL.Image`` module, or a one-line error saying how to install it."""
    try:
        from PIL import Image
    except ImportError:
        raise ClassWeightError('reading label images needs Pillow: pip install "classweights[images]"') from None
    return Image


def _decoded(files: list[str], threads: int, keep_labels: bool) -> Iterator[Chunk]:
    """Decode ``files`` on ``threads`` threads and yield their chunks in order.

    Each task reads a run of consecutive files (as many as make about
    ``_BATCH_LABELS`` labels, going by the first file, at most ``_MAX_BATCH``):
    handing every small image over between threads on its own would cost a
    fifth of the time. At most ``2 * threads`` tasks are ahead of the consumer.
    """
    if threads <= 1 or len(files) <= 1:
        for name in files:
            yield read_image(name, keep_labels)
        return
    first = read_image(files[0], keep_labels)
    yield first
    size = first.data.shape[1] if first.data is not None else int(first.histogram.sum())
    batch = max(1, min(_MAX_BATCH, _BATCH_LABELS // max(1, size)))
    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="classweights-images")
    window: deque[Future[tuple[list[Chunk], ClassWeightError | None]]] = deque()
    try:
        for lo in range(1, len(files), batch):
            window.append(pool.submit(_read_batch, files[lo : lo + batch], keep_labels))
            if len(window) >= 2 * threads:
                yield from _unpacked(window.popleft())
        while window:
            yield from _unpacked(window.popleft())
    finally:  # also when the consumer stops early (an error elsewhere): no decoding goes on after the call
        for future in window:
            future.cancel()
        pool.shutdown(wait=True)


def _read_batch(names: list[str], keep_labels: bool) -> tuple[list[Chunk], ClassWeightError | None]:
    """The chunks of ``names`` up to the first that cannot be read, and that file's error."""
    chunks = []
    for name in names:
        try:
            chunks.append(read_image(name, keep_labels))
        except ClassWeightError as exc:
            return chunks, exc
    return chunks, None


def _unpacked(future: Future[tuple[list[Chunk], ClassWeightError | None]]) -> Iterator[Chunk]:
    """A task's chunks, then its error: the files before a bad one are counted first, as on one thread."""
    chunks, error = future.result()
    yield from chunks
    if error is not None:
        raise error


def read_image(name: str, keep_labels: bool = True) -> Chunk:
    """One file as a chunk: its labels as ``[1, H*W]``, its name, and the histogram of its values when cheap.

    The labels are left out (None) if not ``keep_labels`` and the histogram was taken without them;
    with ``keep_labels`` the chunk carries their fingerprint block (``Chunk.digest``).
    """
    if name.lower().endswith(".npy"):
        labels, histogram = _read_npy(name), None
    else:
        labels, histogram = _read_picture(name, keep_labels)
    if histogram is None:
        assert labels is not None
        histogram = _histogram(labels)
    # The fingerprint wants the labels: hash them here, on a decoding thread, rather than in the counting loop.
    digest = file_digest(labels) if keep_labels and labels is not None else None
    return Chunk(
        None if labels is None else labels.reshape(1, -1), 0, where=repr(name), histogram=histogram, digest=digest
    )


def _read_npy(name: str) -> np.ndarray:
    """A ``.npy`` file through the checked file reader, whole: the file is one sample, whatever its shape."""
    stream = _open_path(Path(name), None, DEFAULT_CHUNK_SIZE)
    parts = [np.ascontiguousarray(chunk.data).reshape(-1) for chunk in stream.chunks]
    assert stream.dtype is not None
    return np.concatenate(parts) if parts else np.empty(0, dtype=stream.dtype)


def _read_picture(name: str, keep_labels: bool) -> tuple[np.ndarray | None, np.ndarray | None]:
    """A PNG or TIFF image as the 2-D array of its pixel values (palette indices for a palette image).

    For 8-bit images, also their histogram ``[1, 256]``, which Pillow takes in C;
    then the array only if ``keep_labels``.
    """
    image_module = pillow()
    suffix = os.path.splitext(name)[1].lower()
    fd, info = open_regular(name, what="a label image file", existing="an existing label image file", blocking=False)
    # The file is read whole through the descriptor that was checked, then decoded from memory: decoding from
    # the file would release and retake the GIL at every read, and those hand-overs cost more than the copy.
    with open(fd, "rb", buffering=0) as handle:
        try:
            encoded = _read_up_to(handle, info.st_size + 1)
        except OSError as exc:
            raise ClassWeightError(f"could not read {name!r}: {exc.strerror or exc}") from None
        if len(encoded) != info.st_size or file_identity(os.fstat(handle.fileno()))[2:] != file_identity(info)[2:]:
            raise ClassWeightError(f"{name!r} changed while it was being read; read it again")
    try:
        with image_module.open(io.BytesIO(encoded), formats=_FORMATS[suffix]) as image:
            if image.mode not in LABEL_MODES:
                raise ClassWeightError(
                    f"{name!r} is a {image.mode} image; expected a single-channel or palette image whose pixel values "
                    f"are the labels (mode P, L, 1, I;16, I or F), not colours"
                )
            frames = getattr(image, "n_frames", 1)
            if frames != 1:
                raise ClassWeightError(f"{name!r} holds {frames} frames; expected one label image per file")
            image.load()
            histogram = np.asarray(image.histogram(), np.int64).reshape(1, -1) if image.mode in ("P", "L") else None
            labels = np.asarray(image) if keep_labels or histogram is None else None
            if labels is not None and labels.dtype == np.bool_:  # a bilevel image: Pillow's True is byte 255, not 1
                labels = labels.view(np.uint8) != 0
    except ClassWeightError:
        raise
    except (*_DECODE_ERRORS, image_module.DecompressionBombError) as exc:
        kind = _FORMATS[suffix][0]
        if not encoded:
            reason = "it is empty (0 bytes)"
        elif isinstance(exc, image_module.UnidentifiedImageError):  # its message shows a file object, not the file
            reason = f"it is not a {kind} file"
        else:
            reason = _one_line(exc)
        raise ClassWeightError(f"could not read {name!r} as a {kind} label image: {reason}") from None
    return labels, histogram


def _histogram(labels: np.ndarray) -> np.ndarray | None:
    """``[1, K]`` int64: how often each value ``0..K-1`` occurs; None where the general counting path must decide."""
    flat = labels.reshape(-1)
    if flat.size == 0:
        return np.zeros((1, 0), dtype=np.int64)
    if flat.dtype == np.bool_:
        flat = (flat.view(np.uint8) != 0).view(np.uint8)  # a file's bool bytes may be other than 0 and 1
    elif flat.dtype.kind == "i" and flat.dtype.itemsize <= 4:  # a mode "I" image: 16-bit labels as int32
        lo, hi = int(flat.min()), int(flat.max())
        if lo < 0 or hi >= _HISTOGRAM_LIMIT:
            return None  # negative or huge labels: the general path reports them
    elif not (flat.dtype.kind == "u" and flat.dtype.itemsize <= 2):
        return None  # floats and wide integers: checked and counted by the general path
    return np.bincount(flat).astype(np.int64, copy=False).reshape(1, -1)
