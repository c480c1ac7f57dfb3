"""One ``.npz`` member read through a bounded decompressor: memory follows the data, not the sizes claimed."""

from __future__ import annotations

import bz2
import io
import lzma
import os
import struct
import zipfile
import zlib
from typing import Any, BinaryIO

from ._errors import ClassWeightError

# ----------------------------------------------------------------- files ----
#
# A data file is untrusted: its header may claim any shape, and a zip directory
# any size. So a path is opened only if it is a regular file (see ``_files``),
# the header is parsed and checked before anything is allocated, the size it
# implies must equal the bytes that are there, and every read goes through the
# descriptor that was checked.


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
            raise ClassWeightError(
                f"could not read {where}: it holds compressed patch data (expected a plain .npz member)"
            )
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
            raise ClassWeightError(
                f"could not read {where}: compression method {self._method} is not supported (expected stored, deflate, bzip2 or LZMA)"
            )

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
        if self._left == 0:
            if self._crc != self._expected_crc:
                raise ClassWeightError(
                    f"could not read {self._where}: its CRC-32 does not match its data (a damaged file)"
                )
            self._decode_the_rest()
        return len(data)

    def _decode_the_rest(self) -> None:
        """Decode what follows the last byte of data too (an end marker): ``zipfile``, and so numpy, refuse a member
        whose stream is damaged there, so it is refused here as well. At most ``_ZIP_STEP`` bytes may come out."""
        if self._method == zipfile.ZIP_STORED:
            return
        extra = 0
        while not self._decompressor.eof and extra <= _ZIP_STEP:
            tail = getattr(self._decompressor, "unconsumed_tail", b"")
            needs_input = getattr(self._decompressor, "needs_input", not tail)
            data = tail or (self._read_raw(_ZIP_STEP) if needs_input else b"")
            if not data and needs_input:
                return  # the compressed bytes are used up: as zipfile, content without an end marker
            extra += len(self._decompressor.decompress(data, _ZIP_STEP + 1))
        if extra:
            raise ClassWeightError(
                f"could not read {self._where}: it decompresses to more than its size (a damaged file)"
            )

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
