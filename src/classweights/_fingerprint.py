"""The labels' fingerprint: hashed block by block, so shards of whole blocks combine into one process's value.

The hash is BLAKE3 (the ``blake3`` package: SIMD, and it releases the GIL), and
its fingerprints read ``"blake3:<64 hex digits>"``. Earlier versions used
sha256 and wrote the bare 64 hex digits; ``algorithm="sha256"`` still
computes those, so a record made with them can be checked against the data.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from ._errors import ClassWeightError
from ._stream import RAGGED_HASH_ROWS, Chunk

HASH_BLOCK_BYTES = 1 << 24  # labels are hashed in blocks of whole samples of about 16 MiB

ALGORITHM = "blake3"  # what fingerprint=True uses
ALGORITHMS = ("blake3", "sha256")  # sha256: the fingerprints of earlier versions, bare hex without a prefix
_DOMAIN = {"blake3": b"classweights-labels-v2\0", "sha256": b"classweights-labels-v1\0"}
_BLAKE3 = re.compile(r"blake3:[0-9a-f]{64}")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _new_hash(algorithm: str) -> Any:
    if algorithm == "sha256":
        return hashlib.sha256()
    try:
        import blake3
    except ImportError:  # a dependency of classweights, but an environment may lack it
        raise ClassWeightError(
            "fingerprints need the blake3 package, which is missing; pip install blake3 (or reinstall classweights)"
        ) from None
    return blake3.blake3()


def _labelled(algorithm: str, hexdigest: str) -> str:
    """The fingerprint as written: ``blake3:`` before the digits; sha256's bare, as earlier versions wrote it."""
    return hexdigest if algorithm == "sha256" else f"{algorithm}:{hexdigest}"


def algorithm_of(fingerprint: Any) -> str | None:
    """``"blake3"`` or ``"sha256"`` for a fingerprint string of that algorithm, else None."""
    if isinstance(fingerprint, str):
        if _BLAKE3.fullmatch(fingerprint):
            return "blake3"
        if _SHA256.fullmatch(fingerprint):
            return "sha256"
    return None


class _LabelHasher:
    """The labels' fingerprint: a hash over the hash of each block of samples, then dtype and shape.

    Hashing block by block lets ranks that read whole blocks each (see
    ``_sources.Shard``) combine their digests into the same fingerprint a
    single process computes. Fed in the reading thread while the pool counts
    the previous chunk; blake3 and hashlib release the GIL on large buffers.

    Samples of different lengths (ragged chunks) are hashed ``RAGGED_HASH_ROWS``
    samples per block, their lengths beside their labels, and ``per_sample``
    is ``"ragged"``.
    """

    def __init__(self, algorithm: str = ALGORITHM) -> None:
        self.algorithm = algorithm
        self.blocks: list[str] = []
        self.dtype: str | None = None
        self.per_sample: int | str | None = None
        self._block = _new_hash(algorithm)
        self._lengths = _new_hash(algorithm)
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
            self._lengths.update(memoryview(lengths[i : i + take].astype("<i8", copy=False).view(np.uint8)))
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
        self.blocks.append(digest if digest is not None else file_digest(data, self.algorithm))
        self.dtype = "per file"

    def _close_block(self) -> None:
        if self.per_sample == "ragged":  # the block's labels, and how they split into samples
            both = _new_hash(self.algorithm)
            both.update(self._lengths.digest() + self._block.digest())
            self.blocks.append(both.hexdigest())
        else:
            self.blocks.append(self._block.hexdigest())
        self._block, self._lengths, self._rows_in_block = _new_hash(self.algorithm), _new_hash(self.algorithm), 0

    def finish(self) -> _LabelHasher:
        if self._rows_in_block:
            self._close_block()
        return self


def file_digest(data: np.ndarray, algorithm: str = ALGORITHM) -> str:
    """The fingerprint block of one file's labels: the hash of their dtype and number, then their bytes (little-endian)."""
    data = np.ascontiguousarray(data)
    dtype = data.dtype.newbyteorder("=").name if data.dtype.kind in "biuf" else str(data.dtype)
    block = _new_hash(algorithm)
    block.update(json.dumps({"dtype": dtype, "labels": int(data.size)}, sort_keys=True).encode())
    block.update(memoryview(data.astype(data.dtype.newbyteorder("<"), copy=False).reshape(-1).view(np.uint8)))
    return block.hexdigest()


def _combine_digests(
    blocks: list[str], dtype: str | None, per_sample: int | str | None, samples: int, algorithm: str = ALGORITHM
) -> str:
    whole = _new_hash(algorithm)
    whole.update(_DOMAIN[algorithm])
    for block in blocks:
        whole.update(bytes.fromhex(block))
    whole.update(json.dumps({"dtype": dtype, "samples": samples, "per_sample": per_sample}, sort_keys=True).encode())
    return _labelled(algorithm, whole.hexdigest())


def _hashed(chunks: Iterator[Chunk], hasher: _LabelHasher) -> Iterator[Chunk]:
    for chunk in chunks:
        yield chunk
        # after the consumer has handed the chunk to a counting thread
        if chunk.where is None:
            hasher.update(chunk.data, chunk.lengths)
        else:  # a reader's own digest is the current algorithm's
            hasher.update_file(chunk.data, chunk.digest if hasher.algorithm == ALGORITHM else None)
