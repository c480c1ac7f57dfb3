"""Reading ``.npy`` files and ``.npz`` members as streams of chunks, trusting nothing they claim."""

from __future__ import annotations

import ast
import dataclasses
import lzma
import math
import os
import struct
import sys
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ._errors import ClassWeightError
from ._files import FileIdentity, open_regular
from ._files import identity as file_identity
from ._stream import (
    DEFAULT_CHUNK_SIZE,
    Chunk,
    Shard,
    Stream,
    _array_stream,
    _one_line,
    _pick_key,
    _rows_per_chunk,
    _shard_rows,
    _short,
    check_label_dtype,
)
from ._zip import _read_up_to, _ZipMember

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


_KEPT_BUFFERS = 8  # read buffers a stream keeps for reuse; chunks in flight beyond that get fresh ones


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
                raise ClassWeightError(
                    f"key={key!r} picks an array inside a .npz file, but {str(path)!r} is a .npy file holding one array"
                )
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


def _npz_stream(
    file: _SourceFile, path: Path, key: str | int | None, chunk_size: int, shard: Shard | None = None
) -> Stream:
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
    nothing is memory-mapped (mapped pages would count as resident memory, and
    a file cut short while mapped kills the process). The buffers are reused
    once their chunks are done (``_Buffers``). Fortran-ordered arrays, whose
    samples lie apart on disk, are read whole.
    """
    try:
        header = _read_header(handle, where, unreadable)
        shape, dtype = header.shape, header.dtype
        n = shape[0] if shape else 1
        payload = _checked_payload(header, available, where)
        if payload == 0:  # no labels at all, however many rows the header claims: never step through them
            return Stream(_finished(finish, close), 0, where, sharded=shard is not None, identity=identity,
                          shape=shape, dtype=dtype)  # fmt: skip
        if header.fortran_order and len(shape) > 1:
            buffer, filled = _read_into_buffer(handle, payload, trusted)
            if filled < payload:
                raise ClassWeightError(
                    f"{where} is truncated: expected {n} samples ({payload} bytes of data), but it holds {filled} bytes"
                )
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
        # A claimed size is allocated only as data arrives: reused buffers hold at most what one read allocates.
        buffers = _Buffers(min(step * row_bytes, step * row_bytes if trusted else _FIRST_READ))
        try:
            if first:
                _skip(handle, first * row_bytes)
            for lo in range(first, end, step):
                rows = min(step, end - lo)
                buffer, filled = _read_into_buffer(handle, rows * row_bytes, trusted, buffers.take())
                if filled < rows * row_bytes:
                    raise ClassWeightError(
                        f"{where} is truncated: expected {n} samples, data ends in sample {lo + filled // row_bytes}"
                    )
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


def _checked_payload(header: _Header, available: int, where: str) -> int:
    """The bytes of data ``header`` describes, if the ``available`` bytes after it are exactly that many."""
    shape, dtype = header.shape, header.dtype
    payload = math.prod(shape) * dtype.itemsize  # Python ints: a claim of 2**62 rows cannot overflow
    present = available - header.offset
    if present < payload:
        n = shape[0] if shape else 1
        raise ClassWeightError(
            f"{where} is truncated: expected {n} samples ({payload} bytes of data), but it holds {max(0, present)} bytes"
        )
    if present > payload:
        raise ClassWeightError(
            f"{where} holds {present} bytes of data, but its header (shape {list(shape)}, dtype {dtype}) describes {payload}; expected exactly that many"
        )
    return payload


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
        raise ClassWeightError(
            f"{unreadable}: unsupported .npy format version {version[0]}.{version[1]} (expected 1.0, 2.0 or 3.0)"
        )
    width, encoding = _NPY_VERSIONS[version]
    raw_length = _read_up_to(handle, width)
    length = int.from_bytes(raw_length, "little")
    if len(raw_length) < width or length > _MAX_HEADER_BYTES:
        raise ClassWeightError(
            f"{unreadable}: expected a header of at most {_MAX_HEADER_BYTES} bytes, but got a length of {length}"
        )
    text = _read_up_to(handle, length)
    if len(text) < length:
        raise ClassWeightError(f"{unreadable}: the header is truncated ({len(text)} of {length} bytes)")
    try:
        header = ast.literal_eval(text.decode(encoding))
    except (UnicodeDecodeError, ValueError, TypeError, SyntaxError, MemoryError, RecursionError) as exc:
        raise ClassWeightError(
            f"{unreadable}: its header is not a valid dictionary literal ({type(exc).__name__})"
        ) from None
    if not isinstance(header, dict) or set(header) != {"descr", "fortran_order", "shape"}:
        raise ClassWeightError(
            f"{unreadable}: expected a header with the keys 'descr', 'fortran_order' and 'shape', but got {_short(header)}"
        )
    shape = header["shape"]
    if not isinstance(shape, tuple) or len(shape) > _MAX_DIMS or not all(type(d) is int and d >= 0 for d in shape):
        raise ClassWeightError(
            f"{unreadable}: expected the shape to be a tuple of at most {_MAX_DIMS} non-negative integers, but got {_short(shape)}"
        )
    if not isinstance(header["fortran_order"], bool):
        raise ClassWeightError(
            f"{unreadable}: expected fortran_order to be True or False, but got {_short(header['fortran_order'])}"
        )
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


class _Buffers:
    """The read buffers of one stream, each reused once no chunk refers to it any more.

    A chunk's array, the tensor made of it, the views the counting threads and
    the hasher take: each holds a reference to the buffer under it until it is
    done. So a buffer whose reference count equals that of the first buffer in
    the list, a spare that is never lent, is referred to by nothing but the
    list, and is free. Measuring against the spare instead of a fixed number
    keeps the test exact whatever the interpreter counts. Reuse spares the page
    faults and zeroing of fresh memory, and keeps the memory of a stream to the
    chunks in flight.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._kept = [np.empty(0, dtype=np.uint8)]  # the spare, then buffers lent before

    def take(self) -> np.ndarray:
        unused = 0
        for i, buffer in enumerate(self._kept):
            if i == 0:
                unused = sys.getrefcount(buffer)
            elif sys.getrefcount(buffer) == unused:
                return buffer
        fresh = np.empty(self.size, dtype=np.uint8)
        if len(self._kept) <= _KEPT_BUFFERS:
            self._kept.append(fresh)
        return fresh


def _read_into_buffer(
    handle: BinaryIO, count: int, trusted: bool, buffer: np.ndarray | None = None
) -> tuple[np.ndarray, int]:
    """Read up to ``count`` bytes into a buffer; return it (``count`` bytes long) and how many were read.

    A ``trusted`` count (checked against the file's size) is allocated at once.
    An untrusted one (a zip directory's claim) gets ``_FIRST_READ`` bytes first
    and twice as much each time data keeps coming, so a false claim costs no
    more memory than the data that is really there. ``buffer``, if given, is
    used for the first of these (up to its size) instead of new memory.
    """
    first = count if trusted else min(count, _FIRST_READ)
    buffer = np.empty(first, dtype=np.uint8) if buffer is None or len(buffer) < first else buffer[:first]
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
