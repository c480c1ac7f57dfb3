"""Class weights for training: counted over the full training split, cached by content.

Two kinds of file live in the cache folder (see :func:`arcvae.data.default_cache_dir`):

``weights/<fingerprint>.json``
    Weights and counts, named by a fingerprint of everything that determines
    them: the labels' content digest, the split (or array key), ``num_classes``,
    ``ignore_index``, the method, smoothing and normalisation, and the file
    format version. A different dataset or parameter never reuses a stale file.
``digests/<path hash>.json``
    A note of a data file's content digest, keyed by the file's identity
    (device, inode, size, modification and change times in nanoseconds). While
    the file is unchanged the note lets a cache hit skip reading the labels;
    when the file changes, its change time changes with it, the note no longer
    matches and the labels are hashed again, in the same pass that counts them.

The cache folder is untrusted input. Its files are read only with the cache
in use (``--no-cache`` reads none), only if they are regular files (never
through a symbolic link) of bounded size, and parsed field by field. A weights
file must carry its checksum, match the fingerprint it is named by, and hold
weights that follow from its counts and parameters. A bad file is reported
once, ignored and replaced. Every file is written atomically under a unique
temporary name, so concurrent writers and crashes leave a complete file or
none, and a note or entry is written only for the file that was actually read
(its open descriptor's identity, not the path's). A cache that cannot be
written costs a warning, never the run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import classweights
from classweights.counting import count_label_stats
from classweights.pipeline import count_and_weigh
from classweights.storage import FORMAT_VERSION, atomic_write_bytes, read_small_file

from .distributed import SINGLE, Dist

_QUIET_NS = 2_000_000_000  # a data file modified within the last 2 s may still change within its timestamp's tick
_MAX_NOTE_BYTES = 1 << 16  # a digest note is a few hundred bytes


@dataclass(frozen=True)
class ClassWeights:
    """Weights and where they came from."""

    weights: torch.Tensor  # float32 [C]
    counts: torch.Tensor | None  # int64 [C]; None for the weights a resumed run takes from its checkpoint
    method: str
    smooth: float
    num_samples: int
    fingerprint: str  # of the weights: data digest + every parameter
    data_digest: str  # of the labels alone (LabelStats.fingerprint)
    cache_path: Path | None
    from_cache: bool
    normalize: bool = True
    ignore_index: int | None = None


@dataclass(frozen=True)
class FileStamp:
    """A data file's identity; any write to the file changes ``ctime_ns`` (which no program can set back)."""

    path: str
    device: int
    inode: int
    size: int
    mtime_ns: int
    ctime_ns: int
    taken_ns: int = dataclasses.field(default=0, compare=False)  # when the stamp was taken

    @classmethod
    def of(cls, path: str | os.PathLike[str]) -> FileStamp | None:
        try:
            real = os.path.realpath(path)
            taken = time.time_ns()
            st = os.stat(real)
        except OSError:
            return None
        return cls(real, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, taken)

    @classmethod
    def read(cls, path: str | os.PathLike[str], identity: tuple[int, int, int, int, int], read_ns: int) -> FileStamp:
        """The stamp of the file actually read: ``identity`` from its open descriptor, ``read_ns`` taken before opening."""
        return cls(os.path.realpath(path), *identity, read_ns)

    @property
    def identity(self) -> tuple[int, int, int, int, int]:
        return (self.device, self.inode, self.size, self.mtime_ns, self.ctime_ns)

    def settled(self) -> bool:
        """True if the file had been left alone for 2 s when the stamp was taken.

        File times advance in clock ticks (a few ms, up to 2 s on some file
        systems), so a write in the same tick as the last one may leave them
        unchanged. A file that was quiet for longer than a tick before it was
        read gets new times from any later write.
        """
        return self.taken_ns - max(self.mtime_ns, self.ctime_ns) > _QUIET_NS


def weights_fingerprint(data_digest: str, *, key: str | None, num_classes: int, method: str, smooth: float,
                        normalize: bool = True, ignore_index: int | None = None) -> str:  # fmt: skip
    """sha256 over the labels' digest and every parameter that determines the weights."""
    header = {"format_version": FORMAT_VERSION, "data": data_digest, "key": key, "num_classes": num_classes,
              "method": method, "smooth": float(smooth), "normalize": bool(normalize), "ignore_index": ignore_index}  # fmt: skip
    return hashlib.sha256(json.dumps(header, sort_keys=True).encode()).hexdigest()


class DigestNotes:
    """Remembered content digests of data files, keyed by the files' identity."""

    def __init__(self, cache_dir: Path | None) -> None:
        self.folder = None if cache_dir is None else cache_dir / "digests"

    def _path(self, stamp: FileStamp, key: str | None) -> Path | None:
        if self.folder is None:
            return None
        name = hashlib.sha256(json.dumps([stamp.path, key]).encode()).hexdigest()[:32]
        return self.folder / f"{name}.json"

    def lookup(self, stamp: FileStamp | None, key: str | None, warn: Callable[[str], None]) -> str | None:
        """The digest noted for the file ``stamp`` describes; None if there is no note, or a stale one.

        A damaged note (not a regular file, oversized, not the JSON written
        here) is reported with ``warn``, ignored and later replaced.
        """
        path = None if stamp is None else self._path(stamp, key)
        if path is None or not os.path.lexists(path):
            return None
        try:
            note = json.loads(read_small_file(path, max_bytes=_MAX_NOTE_BYTES, follow_symlinks=False))
            fields, noted_key, digest = note["stamp"], note["key"], note["digest"]
            if not (isinstance(fields, list) and (noted_key is None or isinstance(noted_key, str)) and _is_digest(digest)):
                raise ValueError("unexpected fields")
        except (classweights.ClassWeightError, RecursionError, ValueError, KeyError, TypeError) as exc:
            warn(f"ignoring the damaged digest note {path} ({_reason(exc)}); the labels are hashed again")
            return None
        if fields == _stamp_fields(stamp) and noted_key == key:
            return str(digest)
        return None  # the file changed since: the labels are hashed again

    def remember(self, stamp: FileStamp | None, key: str | None, digest: str) -> None:
        """Note ``digest`` for the file if it is still exactly as ``stamp`` saw it before it was read."""
        path = None if stamp is None else self._path(stamp, key)
        if path is None or FileStamp.of(stamp.path) != stamp or not stamp.settled():
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        note = {"stamp": _stamp_fields(stamp), "key": key, "digest": digest}
        atomic_write_bytes(path, json.dumps(note).encode())


def _stamp_fields(stamp: FileStamp) -> list[Any]:
    return [stamp.path, stamp.device, stamp.inode, stamp.size, stamp.mtime_ns, stamp.ctime_ns]


def _is_digest(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def split_digest(labels: Any, *, num_classes: int, key: str, stamp: FileStamp | None, cache_dir: Path | None,
                 use_cache: bool, warn: Callable[[str], None] = print, group: Dist = SINGLE) -> str:  # fmt: skip
    """The content digest of ``labels`` (read from ``stamp``'s file as ``key``): remembered, or hashed now.

    ``stamp`` must describe the file the labels were read from (see
    :meth:`FileStamp.read`). Notes are read only if ``use_cache``. Under
    ``torchrun`` every rank calls it: rank 0 reads and writes the note, and the
    ranks hash their shards together.
    """
    notes = DigestNotes(cache_dir)
    digest = group.broadcast(notes.lookup(stamp, key, warn) if group.is_main and use_cache else None)
    if digest is None:
        digest = count_label_stats(labels, num_classes, fingerprint=True, distributed=group.enabled).fingerprint
        assert digest is not None
        if group.is_main:
            _try(lambda: notes.remember(stamp, key, digest), None)
    return digest


def resolve_class_weights(
    labels: Any,
    *,
    key: str | None,
    num_classes: int,
    method: str,
    smooth: float,
    cache_dir: Path | None,
    use_cache: bool,
    source: str,
    stamp: FileStamp | None = None,
    normalize: bool = True,
    ignore_index: int | None = None,
    progress: Callable[[int, int | None], None] | None = None,
    warn: Callable[[str], None] = print,
    group: Dist = SINGLE,
) -> ClassWeights:
    """Load matching cached weights (if ``use_cache``) or count ``labels`` and weigh them.

    Args:
        labels: an array in memory, or a path ``count_labels`` can read.
        key: the split (array in a ``.npz`` file) the labels are; part of the
            fingerprint, and passed on to ``count_labels`` for a path.
        stamp: for a path, the file's identity taken *before* it is read (a
            cache hit then needs no pass over the labels); for labels in
            memory, the identity of the file they were read from.
        use_cache: read the cache (a note of the content digest, cached
            weights); without it nothing in the cache is read, but what is
            counted is still cached.
        warn: called at most once, for a damaged cache file or a cache that
            cannot be written.
        group: under ``torchrun``, every rank calls this with its group: rank 0
            alone reads and writes the cache, each rank counts its shard of the
            labels, and the weights are checked to be identical on every rank.

    On a miss the labels are counted and hashed in one pass; the weights are
    then cached atomically.
    """
    warn = _once(warn)
    notes = DigestNotes(cache_dir)
    known = group.broadcast(notes.lookup(stamp, key, warn) if group.is_main and use_cache else None)
    params = {"key": key, "num_classes": num_classes, "method": method, "smooth": smooth, "normalize": normalize, "ignore_index": ignore_index}
    if use_cache and known is not None and cache_dir is not None:
        fingerprint = weights_fingerprint(known, **params)
        cache_path = cache_dir / "weights" / f"{fingerprint[:32]}.json"
        cached = None
        if group.is_main and os.path.lexists(cache_path):
            try:
                cached = _load_cached(cache_path, fingerprint, known, num_classes, method, smooth, normalize, ignore_index)
            except (classweights.ClassWeightError, KeyError, TypeError, ValueError) as exc:
                warn(f"ignoring the damaged cached weights at {cache_path} ({_reason(exc)}); recomputing")
        cached = group.broadcast(cached)
        if cached is not None:
            return cached

    read_key = {"key": key} if isinstance(labels, (str, os.PathLike)) and key is not None else {}
    stats, weights = count_and_weigh(labels, num_classes, method, smooth=smooth, normalize=normalize, ignore_index=ignore_index,
                                     progress=progress, fingerprint=known is None, distributed=group.enabled, **read_key)  # fmt: skip
    group.check_identical(weights, "class weights")
    if stats.source_identity is not None and stamp is not None and stats.source_identity != stamp.identity:
        # The path led to another file by the time it was read (replaced, or a link re-pointed): the note
        # looked up for the stamp says nothing about what was counted, and no note may be written for it.
        if known is not None:
            raise classweights.ClassWeightError(f"{source!r} was replaced while it was being read; run the command again")
        stamp = None
    digest = known or stats.fingerprint
    assert digest is not None
    fingerprint = weights_fingerprint(digest, **params)
    cache_path = None if cache_dir is None else cache_dir / "weights" / f"{fingerprint[:32]}.json"
    result = ClassWeights(weights, stats.counts, method, smooth, stats.num_images, fingerprint, digest, cache_path, False, normalize, ignore_index)
    if cache_path is not None and group.is_main:

        def write() -> None:
            cache_path.parent.mkdir(parents=True, exist_ok=True)
            save_weights_record(result, cache_path, source=source, key=key)
            if known is None:
                notes.remember(stamp, key, digest)

        if not _try(write, warn, f"could not cache the class weights in {cache_dir}"):
            result = dataclasses.replace(result, cache_path=None)
    return group.broadcast(result) if group.enabled else result


def _load_cached(path: Path, fingerprint: str, digest: str, num_classes: int, method: str, smooth: float,
                 normalize: bool, ignore_index: int | None) -> ClassWeights:  # fmt: skip
    """A cache file, trusted only if it is intact (checksum), is the entry asked for (fingerprint) and its weights
    follow from its counts and parameters (so neither a forged entry nor a changed formula is served)."""
    weights, meta = classweights.load_class_weights(path, num_classes=num_classes, with_metadata=True, require_checksum=True,
                                                    follow_symlinks=False)  # fmt: skip
    if meta.get("fingerprint") != fingerprint:
        raise classweights.ClassWeightError("its fingerprint does not match the data and parameters")
    if meta.get("counts") is None or not isinstance(meta.get("num_samples"), int) or isinstance(meta.get("num_samples"), bool):
        raise classweights.ClassWeightError("it lacks the counts and sample count it was computed from")
    counts = torch.tensor(meta["counts"], dtype=torch.int64)
    expected = classweights.weights_from_counts(counts, method, smooth=smooth, normalize=normalize, ignore_index=ignore_index)
    if not torch.allclose(weights, expected, rtol=1e-6, atol=0.0):
        raise classweights.ClassWeightError(f"its weights do not follow from its counts with method={method!r}")
    return ClassWeights(weights, counts, method, smooth, int(meta["num_samples"]), fingerprint, digest, path, True, normalize, ignore_index)


def _once(warn: Callable[[str], None]) -> Callable[[str], None]:
    """``warn``, silenced after its first message."""
    said: list[str] = []

    def once(message: str) -> None:
        if not said:
            said.append(message)
            warn(message)

    return once


def _reason(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    return str(exc).splitlines()[0] if str(exc).strip() else type(exc).__name__


def _try(action: Callable[[], None], warn: Callable[[str], None] | None, what: str = "") -> bool:
    """Run a cache write; on a full, read-only or otherwise failing disk, warn (once) and carry on."""
    try:
        action()
        return True
    except (OSError, classweights.ClassWeightError) as exc:
        if warn is not None:
            warn(f"{what}: {getattr(exc, 'strerror', None) or exc}; continuing without the cache")
        return False


def save_weights_record(result: ClassWeights, path: str | os.PathLike[str], **extra: object) -> None:
    """Save ``result`` with its provenance (counts, method, fingerprints, ...) through classweights."""
    classweights.save_class_weights(
        result.weights,
        path,
        counts=result.counts,
        method=result.method,
        smooth=result.smooth,
        normalize=result.normalize,
        ignore_index=result.ignore_index,
        num_samples=result.num_samples,
        fingerprint=result.fingerprint,
        data_digest=result.data_digest,
        **extra,
    )
