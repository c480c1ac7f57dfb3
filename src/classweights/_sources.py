"""Turn any supported label source into a stream of fixed-size 2-D chunks.

Every source becomes an iterator of :class:`Chunk` objects. A chunk holds a
``[B, P]`` array or tensor: ``B`` whole samples (images) of ``P`` labels each,
plus the flat index of its first label so errors can point at the culprit.
Array and file sources are sliced along their first axis, never visited one
sample at a time in Python; map-style datasets and iterables are stacked into
chunks of the same bounded size.
"""

from __future__ import annotations

import ast
import bz2
import dataclasses
import io
import lzma
import math
import numbers
import os
import struct
import sys
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from ._checks import check_dense_tensor, check_positive_int
from ._errors import ClassWeightError
from ._files import FileIdentity, open_regular
from ._files import identity as file_identity

DEFAULT_CHUNK_SIZE = 1 << 22  # labels per chunk (4 Mi): ~4 MiB of uint8, 32 MiB as int64
MAX_IN_MEMORY_CHUNK = 1 << 24  # labels per chunk of an in-memory array (16 Mi)
DEFAULT_NPZ_KEY = "train"


@dataclass(frozen=True)
class Chunk:
    """``data`` is ``[B, P]`` (numpy array or torch tensor); ``start`` its first flat index.

    ``sample_shape`` is the shape of one sample before it was flattened to its
    ``P`` labels (``()`` for one label per sample), when the reader knows it.
    Samples of different lengths (the rows of a list column) come as one ``[1, L]``
    row of their labels with ``lengths``, the labels of each sample (summing to
    ``L``). ``locate``, if given, names the position of the chunk's ``i``-th label
    (e.g. ``"row 7, position 2"``) in errors instead of its flat index.

    A chunk that is one file of its own (a label image) has a ``where`` naming
    it: errors name that file, ``start`` counts from its first label, and the
    fingerprint hashes it with its size (``digest``, if set, is that block's
    digest, taken by the reader on its own thread). ``histogram``, if set, is
    int64 ``[B, K]``: how often each value ``0..K-1`` occurs in each row of
    the labels (every value is below ``K``), counted by the reader as it
    decoded them; ``data`` may then be None if the labels were not asked for.
    """

    data: Any
    start: int
    sample_shape: tuple[int, ...] | None = None
    lengths: np.ndarray | None = None
    locate: Callable[[int], str] | None = None
    where: str | None = None
    histogram: np.ndarray | None = None
    digest: str | None = None


RAGGED_HASH_ROWS = 1 << 16  # samples of different lengths are fingerprinted in blocks of this many samples


@dataclass(frozen=True)
class Stream:
    """Chunks of one source, with its sample count when known and a name for errors."""

    chunks: Iterator[Chunk]
    total: int | None
    where: str
    sharded: bool = False  # True if only this rank's shard of the samples is read
    identity: FileIdentity | None = None  # (dev, inode, size, mtime_ns, ctime_ns) of the file read, if any
    shape: tuple[int, ...] | None = None  # a file's array: its shape and dtype as stored (from the checked header)
    dtype: np.dtype | None = None
    member: str | None = None  # the .npz member read (its key)
    counted: bool = False  # the reader decodes on threads of its own and counts chunks as it goes (Chunk.histogram): no counting pool


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
    dask_array = sys.modules.get("dask.array")
    if dask_array is not None and isinstance(source, dask_array.Array):  # item by item it would compute each sample alone
        raise ClassWeightError("a Dask array is read only by count_labels, count_label_stats and compute_class_weights (on its scheduler); compute it (.compute()) or save it to .npy first")
    if isinstance(source, Mapping):
        name = _pick_key(list(source.keys()), key, "mapping")
        return _array_stream(_as_array(source[name], f"mapping[{name!r}]"), size, where=f"mapping[{name!r}]", shard=shard)
    if isinstance(source, (list, tuple)) and source and all(_is_scalar(v) for v in source[:1]):
        return _array_stream(_as_array(source, "labels"), size, where="labels", shard=shard)
    tensors = getattr(source, "tensors", None)  # torch.utils.data.TensorDataset
    if isinstance(tensors, tuple) and tensors and all(isinstance(t, torch.Tensor) for t in tensors):
        if isinstance(key, str):  # a dataset of tensors has no names: a string would silently pick tensors[0]
            raise ClassWeightError(f"Expected key= to be an integer index into the {len(tensors)} tensors of the TensorDataset, but got {key!r}")
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
        "Expected `source` to be a tensor, an array, a .npy/.npz/.parquet path, a table, a dataset or an iterable of "
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


def _check_array(array: np.ndarray | torch.Tensor, where: str) -> None:
    """Refuse arrays whose values are not all labels as they stand."""
    if isinstance(array, torch.Tensor):
        check_dense_tensor(array, where)
    elif isinstance(array, np.ma.MaskedArray):  # counting would include the masked values
        raise ClassWeightError(f"{where}: expected a plain array, but got a masked array; pass .compressed() or .filled(ignore_index)")


def _as_array(value: Any, where: str) -> np.ndarray | torch.Tensor:
    if isinstance(value, (torch.Tensor, np.ndarray)):
        _check_array(value, where)
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
    _check_array(array, where)
    shape = tuple(array.shape)
    n = shape[0] if shape else 1
    per_row = math.prod(shape[1:])
    if n * per_row == 0:  # no labels at all: never step through rows that hold none
        return Stream(iter(()), 0, where, sharded=shard is not None)
    first, end = _shard_rows(n, shard, per_row * _itemsize(array))
    step = _rows_per_chunk(per_row, chunk_size)
    rows = array.reshape(1) if not shape else array

    def chunks() -> Iterator[Chunk]:
        for lo in range(first, end, step):
            part = rows[lo : min(lo + step, end)]
            yield Chunk(part.reshape(part.shape[0], per_row), lo * per_row, shape[1:])

    return Stream(chunks(), end - first, where, sharded=shard is not None)


# ----------------------------------------------------------------- files ----
#
# A data file is untrusted: its header may claim any shape, and a zip directory
# any size. So a path is opened only if it is a regular file (see ``_files``),
# the header is parsed and checked before anything is allocated, the size it
# implies must equal the bytes that are there, and every read goes through the
# descriptor that was checked.

_NPY_MAGIC = b"\x93NUMPY"
_NPY_VERSIONS = {(1, 0): (2, "latin1"), (2, 0): (4, "latin1"), (3, 0): (4, "utf8")}  # header length bytes, encoding
_MAX_HEADER_BYTES = 1 << 16  # numpy writes a few hundred bytes; a format 1.0 header cannot exceed 64 KiB
_MAX_DIMS = 64  # numpy's own limit
_FIRST_READ = 1 << 22  # bytes allocated up front when a size is only claimed (zip members); more as data arrives
# What reading a damaged file or zip member may raise besides ClassWeightError (zipfile, zlib, bz2, lzma, struct).
_READ_ERRORS = (OSError, EOFError, ValueError, zipfile.BadZipFile, NotImplementedError, RuntimeError, zlib.error,
                lzma.LZMAError, struct.error, OverflowError, KeyError, IndexError)  # fmt: skip


@dataclass(frozen=True)
class _Header:
    shape: tuple[int, ...]
    fortran_order: bool
    dtype: np.dtype
    offset: int  # bytes from the start of the .npy data to its array data


class _SourceFile:
    """A regular file open for reading, and its identity when it was opened."""

    def __init__(self, fd: int, info: os.stat_result, shown: str) -> None:
        self.handle = open(fd, "rb")  # noqa: SIM115 - closed by close(), when the stream is done
        self.identity = file_identity(info)
        self.shown = shown

    def check_unchanged(self) -> None:
        """Raise if the file was written while it was read (its size, mtime or ctime moved)."""
        now = file_identity(os.fstat(self.handle.fileno()))
        if now[2:] != self.identity[2:]:
            raise ClassWeightError(f"{self.shown} changed while it was being read; read it again")

    def close(self) -> None:
        self.handle.close()


def _open_path(path: Path, key: str | int | None, chunk_size: int, shard: Shard | None = None) -> Stream:
    suffix = path.suffix.lower()
    kind = "a .parquet file" if suffix == ".parquet" else "a .npy or .npz file"
    fd, info = open_regular(path, what=kind, existing=kind.replace("a ", "an existing ", 1))
    file = _SourceFile(fd, info, repr(str(path)))
    try:
        if info.st_size == 0 and suffix in (".npy", ".npz"):
            raise ClassWeightError(f"could not read {str(path)!r} as a {suffix} file: it is empty (0 bytes)")
        if suffix == ".npy":
            if isinstance(key, str):
                raise ClassWeightError(f"key={key!r} picks an array inside a .npz file, but {str(path)!r} is a .npy file holding one array")
            return _npy_stream(file.handle, str(path), chunk_size, shard=shard, close=file.close, available=info.st_size,
                               trusted=True, unreadable=f"could not read {str(path)!r} as a .npy file",
                               finish=file.check_unchanged, identity=file.identity)  # fmt: skip
        if suffix == ".npz":
            return _npz_stream(file, path, key, chunk_size, shard)
        if suffix == ".parquet":
            from ._tables import parquet_stream

            return parquet_stream(file, path, key, chunk_size, shard)
        raise ClassWeightError(f"Expected a path ending in .npy or .npz (or .parquet), but got {str(path)!r}")
    except BaseException:
        file.close()
        raise


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


def _npz_stream(file: _SourceFile, path: Path, key: str | int | None, chunk_size: int, shard: Shard | None = None) -> Stream:
    """Stream one member of an ``.npz`` (compressed or not) without loading it whole."""
    try:
        with zipfile.ZipFile(file.handle) as archive:  # only for the directory: the member is read by _ZipMember
            members = {info.filename[:-4]: info for info in archive.infolist() if info.filename.endswith(".npy")}
    except _READ_ERRORS as exc:
        raise ClassWeightError(f"could not read {str(path)!r} as a .npz file: {_one_line(exc)}") from None
    name = _pick_key(list(members), key, repr(str(path)))
    where = f"{str(path)!r}[{name!r}]"
    try:
        member = _ZipMember(file.handle, members[name], where)
    except _READ_ERRORS as exc:
        raise ClassWeightError(f"could not read {where}: {_one_line(exc)}") from None
    # The directory's sizes are claims: the reader allocates only as data arrives and never reads past them.
    stream = _npy_stream(member, where, chunk_size, shard=shard, close=file.close, available=members[name].file_size,
                         trusted=False, unreadable=f"could not read {where}", finish=file.check_unchanged,
                         identity=file.identity)  # fmt: skip
    return dataclasses.replace(stream, member=name)


_ZIP_STEP = 1 << 16  # compressed bytes decompressed at a time
_LZMA_DICT_FLOOR = 1 << 23  # 8 MiB, the dictionary of Python's (and numpy's) LZMA zip members
_LZMA_RATIO = 1 << 16  # a dictionary larger than 65536 bytes per compressed byte can serve no real data


class _ZipMember(io.RawIOBase):
    """One member of a zip archive, decompressed with a bound on the output of every step.

    ``zipfile`` decompresses bzip2 and LZMA members without such a bound, so a
    few damaged or hostile bytes could expand to gigabytes in one call; an
    LZMA header could also claim a dictionary of gigabytes. Here each step
    yields at most what the caller asked for, the dictionary must fit the
    data, and the CRC-32 is checked when the member's last byte is read.
    """

    def __init__(self, file: BinaryIO, info: zipfile.ZipInfo, where: str) -> None:
        super().__init__()
        if info.flag_bits & 0x41:  # bits 0 and 6: encrypted
            raise ClassWeightError(f"could not read {where}: it is encrypted (expected a plain .npz member)")
        if info.flag_bits & 0x20:  # bit 5: patch data, which needs a file to patch
            raise ClassWeightError(f"could not read {where}: it holds compressed patch data (expected a plain .npz member)")
        self._file, self._where = file, where
        file.seek(info.header_offset)
        local = _read_up_to(file, 30)
        if len(local) < 30 or local[:4] != b"PK\x03\x04":
            raise ClassWeightError(f"could not read {where}: its local header is damaged")
        name_length, extra_length = struct.unpack("<HH", local[26:30])
        name = _read_up_to(file, name_length)
        if name.decode("utf-8" if info.flag_bits & 0x800 else "cp437", "replace") != info.orig_filename:
            raise ClassWeightError(f"could not read {where}: its local header names another file (a damaged archive)")
        self._position = info.header_offset + 30 + name_length + extra_length
        self._compressed_left = info.compress_size
        self._left, self._crc, self._expected_crc = info.file_size, 0, info.CRC
        self._method = info.compress_type
        self._decompressor: Any = None
        if self._method == zipfile.ZIP_DEFLATED:
            self._decompressor = zlib.decompressobj(-15)
        elif self._method == zipfile.ZIP_BZIP2:
            self._decompressor = bz2.BZ2Decompressor()
        elif self._method == zipfile.ZIP_LZMA:
            file.seek(0, os.SEEK_END)
            self._decompressor = self._lzma(min(info.compress_size, file.tell()), info.file_size)
        elif self._method != zipfile.ZIP_STORED:
            raise ClassWeightError(f"could not read {where}: compression method {self._method} is not supported (expected stored, deflate, bzip2 or LZMA)")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        want = min(len(buffer), self._left)
        if want <= 0:
            return 0
        if self._method == zipfile.ZIP_STORED:
            data = self._read_raw(want)
        elif self._method == zipfile.ZIP_DEFLATED:
            data = self._inflate(want)
        else:
            data = self._unpack(want)
        buffer[: len(data)] = data
        self._crc = zlib.crc32(data, self._crc)
        self._left -= len(data)
        if self._left == 0 and self._crc != self._expected_crc:
            raise ClassWeightError(f"could not read {self._where}: its CRC-32 does not match its data (a damaged file)")
        return len(data)

    def _read_raw(self, count: int) -> bytes:
        count = min(count, self._compressed_left)
        if count <= 0:
            return b""
        self._file.seek(self._position)
        data = self._file.read(count)
        self._position += len(data)
        self._compressed_left -= len(data) if data else self._compressed_left  # the archive ended early
        return data

    def _inflate(self, want: int) -> bytes:
        while True:
            data = self._decompressor.unconsumed_tail or self._read_raw(_ZIP_STEP)
            out = self._decompressor.decompress(data, want)
            if out or self._decompressor.eof or not data:
                return out

    def _unpack(self, want: int) -> bytes:
        """bzip2 and LZMA: both decompressors buffer input and honour ``max_length``."""
        while not self._decompressor.eof:
            data = b""
            if self._decompressor.needs_input:
                data = self._read_raw(_ZIP_STEP)
                if not data:
                    return b""
            out = self._decompressor.decompress(data, want)
            if out:
                return out
            if not data and not self._decompressor.needs_input:
                return b""
        return b""

    def _lzma(self, compressed: int, size: int) -> Any:
        """A raw LZMA1 decoder for the member's properties (zip's LZMA header: version, size, 5 property bytes)."""
        header = self._read_raw(4)
        properties = self._read_raw(5) if len(header) == 4 and header[2:4] == b"\x05\x00" else b""
        if len(properties) != 5 or properties[0] >= 9 * 5 * 5:
            raise ClassWeightError(f"could not read {self._where}: its LZMA header is damaged")
        dictionary = int.from_bytes(properties[1:], "little")
        limit = max(_LZMA_DICT_FLOOR, min(size, _LZMA_RATIO * compressed))
        if dictionary > limit:
            raise ClassWeightError(
                f"could not read {self._where}: its LZMA dictionary of {dictionary} bytes exceeds the {limit} bytes its size can need"
            )
        pb, rest = divmod(properties[0], 45)
        lp, lc = divmod(rest, 9)
        lzma1 = {"id": lzma.FILTER_LZMA1, "dict_size": dictionary, "lc": lc, "lp": lp, "pb": pb}
        return lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=[lzma1])


def _npy_stream(
    handle: BinaryIO,
    where: str,
    chunk_size: int,
    *,
    shard: Shard | None = None,
    close: Callable[[], None],
    available: int,
    trusted: bool,
    unreadable: str,
    finish: Callable[[], None] | None = None,
    identity: FileIdentity | None = None,
) -> Stream:
    """Stream the array of an open ``.npy`` file or ``.npz`` member in chunks of whole samples.

    ``available`` is the size of the ``.npy`` data (header included): the
    file's size, or the member's size in the zip directory. ``trusted`` says
    whether it was measured (a file) or only claimed (a zip member); claimed
    sizes are never allocated up front. ``finish`` runs after the last read.

    ``read`` calls fill one buffer per chunk, so memory stays bounded and
    nothing is memory-mapped (mapped pages would count as resident memory).
    Fortran-ordered arrays, whose samples lie apart on disk, are read whole.
    """
    try:
        header = _read_header(handle, where, unreadable)
        shape, dtype = header.shape, header.dtype
        n = shape[0] if shape else 1
        payload = math.prod(shape) * dtype.itemsize  # Python ints: a claim of 2**62 rows cannot overflow
        present = available - header.offset
        if present < payload:
            raise ClassWeightError(f"{where} is truncated: expected {n} samples ({payload} bytes of data), but it holds {max(0, present)} bytes")
        if present > payload:
            raise ClassWeightError(
                f"{where} holds {present} bytes of data, but its header (shape {list(shape)}, dtype {dtype}) describes {payload}; expected exactly that many"
            )
        if payload == 0:  # no labels at all, however many rows the header claims: never step through them
            return Stream(_finished(finish, close), 0, where, sharded=shard is not None, identity=identity, shape=shape, dtype=dtype)
        if header.fortran_order and len(shape) > 1:
            buffer, filled = _read_into_buffer(handle, payload, trusted)
            if filled < payload:
                raise ClassWeightError(f"{where} is truncated: expected {n} samples ({payload} bytes of data), but it holds {filled} bytes")
            if finish is not None:
                finish()
            close()
            stream = _array_stream(buffer.view(dtype).reshape(shape, order="F"), chunk_size, where=where, shard=shard)
            return dataclasses.replace(stream, identity=identity, shape=shape, dtype=dtype)
    except ClassWeightError:
        close()
        raise
    except _READ_ERRORS as exc:
        close()
        raise ClassWeightError(f"{unreadable}: {_one_line(exc)}") from None

    per_row = math.prod(shape[1:])
    step = _rows_per_chunk(per_row, chunk_size)
    row_bytes = per_row * dtype.itemsize
    first, end = _shard_rows(n, shard, row_bytes)

    def chunks() -> Iterator[Chunk]:
        try:
            if first:
                _skip(handle, first * row_bytes)
            for lo in range(first, end, step):
                rows = min(step, end - lo)
                buffer, filled = _read_into_buffer(handle, rows * row_bytes, trusted)
                if filled < rows * row_bytes:
                    raise ClassWeightError(f"{where} is truncated: expected {n} samples, data ends in sample {lo + filled // row_bytes}")
                yield Chunk(buffer.view(dtype).reshape(rows, per_row), lo * per_row, shape[1:])
            if finish is not None:
                finish()
        except ClassWeightError:
            raise
        except _READ_ERRORS as exc:
            raise ClassWeightError(f"{unreadable}: {_one_line(exc)}") from None
        finally:
            close()

    return Stream(chunks(), end - first, where, sharded=shard is not None, identity=identity, shape=shape, dtype=dtype)


def _finished(finish: Callable[[], None] | None, close: Callable[[], None]) -> Iterator[Chunk]:
    """No chunks; the file's checks and closing still run when the stream is consumed."""
    try:
        if finish is not None:
            finish()
    finally:
        close()
    yield from ()


def _read_header(handle: BinaryIO, where: str, unreadable: str) -> _Header:
    """Parse and check a ``.npy`` header (format 1.0, 2.0 or 3.0) without trusting any of it."""
    start = _read_up_to(handle, 8)
    if len(start) < 8 or not start.startswith(_NPY_MAGIC):
        raise ClassWeightError(f"{unreadable}: it does not start with the .npy magic string")
    version = (start[6], start[7])
    if version not in _NPY_VERSIONS:
        raise ClassWeightError(f"{unreadable}: unsupported .npy format version {version[0]}.{version[1]} (expected 1.0, 2.0 or 3.0)")
    width, encoding = _NPY_VERSIONS[version]
    raw_length = _read_up_to(handle, width)
    length = int.from_bytes(raw_length, "little")
    if len(raw_length) < width or length > _MAX_HEADER_BYTES:
        raise ClassWeightError(f"{unreadable}: expected a header of at most {_MAX_HEADER_BYTES} bytes, but got a length of {length}")
    text = _read_up_to(handle, length)
    if len(text) < length:
        raise ClassWeightError(f"{unreadable}: the header is truncated ({len(text)} of {length} bytes)")
    try:
        header = ast.literal_eval(text.decode(encoding))
    except (UnicodeDecodeError, ValueError, TypeError, SyntaxError, MemoryError, RecursionError) as exc:
        raise ClassWeightError(f"{unreadable}: its header is not a valid dictionary literal ({type(exc).__name__})") from None
    if not isinstance(header, dict) or set(header) != {"descr", "fortran_order", "shape"}:
        raise ClassWeightError(f"{unreadable}: expected a header with the keys 'descr', 'fortran_order' and 'shape', but got {_short(header)}")
    shape = header["shape"]
    if not isinstance(shape, tuple) or len(shape) > _MAX_DIMS or not all(type(d) is int and d >= 0 for d in shape):
        raise ClassWeightError(f"{unreadable}: expected the shape to be a tuple of at most {_MAX_DIMS} non-negative integers, but got {_short(shape)}")
    if not isinstance(header["fortran_order"], bool):
        raise ClassWeightError(f"{unreadable}: expected fortran_order to be True or False, but got {_short(header['fortran_order'])}")
    descr = header["descr"]
    if not isinstance(descr, str):
        raise ClassWeightError(f"{where}: expected integer labels, but got a structured dtype {_short(descr)}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # numpy's deprecation notes on old type codes
            dtype = np.dtype(descr)
    except Exception:  # noqa: BLE001 - numpy raises several types for unknown type strings
        raise ClassWeightError(f"{unreadable}: its dtype {_short(descr)} is not a numpy dtype") from None
    check_label_dtype(dtype, where)
    return _Header(shape, header["fortran_order"], dtype, 8 + width + length)


def check_label_dtype(dtype: np.dtype, where: str) -> None:
    """Accept bool, integer and float (up to 64-bit) arrays; name any other dtype."""
    if dtype.hasobject:
        raise ClassWeightError(f"{where}: expected integer labels, but got dtype {dtype} (object arrays are never loaded)")
    if dtype.kind not in "biuf" or dtype.itemsize == 0 or (dtype.kind == "f" and dtype.itemsize > 8):
        raise ClassWeightError(f"{where}: expected integer labels, but got an array of dtype {dtype} (expected bool, integer or float up to 64 bits)")


def _read_up_to(handle: BinaryIO, count: int) -> bytes:
    """At most ``count`` bytes; fewer only at the end of the data."""
    parts: list[bytes] = []
    while count > 0:
        part = handle.read(count)
        if not part:
            break
        parts.append(part)
        count -= len(part)
    return b"".join(parts)


def _read_into_buffer(handle: BinaryIO, count: int, trusted: bool) -> tuple[np.ndarray, int]:
    """Read up to ``count`` bytes into a new buffer; return it (``count`` bytes long) and how many were read.

    A ``trusted`` count (checked against the file's size) is allocated at once.
    An untrusted one (a zip directory's claim) gets ``_FIRST_READ`` bytes first
    and twice as much each time data keeps coming, so a false claim costs no
    more memory than the data that is really there.
    """
    buffer = np.empty(count if trusted else min(count, _FIRST_READ), dtype=np.uint8)
    filled = 0
    while filled < count:
        if filled == len(buffer):
            bigger = np.empty(min(count, 2 * len(buffer)), dtype=np.uint8)
            bigger[:filled] = buffer
            buffer = bigger
        got = handle.readinto(memoryview(buffer)[filled:])
        if not got:
            return buffer, filled
        filled += got
    return buffer, filled


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


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
        if isinstance(key, str):  # a sequence has no names: a string would silently pick its first element
            raise ClassWeightError(f"Expected key= to be an integer index into {where}, a sequence of {len(item)} elements, but got {key!r}")
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
            yield Chunk(block.reshape(len(pending), -1), start, tuple(pending[0].shape))
            start, pending = flat, []
        pending.append(item)
        flat += _numel(item)
    if pending:
        block = _stack(pending)
        yield Chunk(block.reshape(len(pending), -1), start, tuple(pending[0].shape))


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
            yield Chunk(chunk.data, start + chunk.start, chunk.sample_shape)
        start += _numel(labels)
