"""The cache folder of class weights: weights cached by content, and notes of data files' digests.

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

Digests are BLAKE3 (``DIGEST_ALGORITHM``). Notes and entries of earlier
versions hold sha256 digests: a note of another hash is stale, and an entry is
named by its digest, so both are recomputed once, never mistaken for the new.

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
from typing import Any, Literal

import torch

import classweights
from classweights import FORMAT_VERSION

from .distributed import SINGLE, Dist

DIGEST_ALGORITHM = "blake3"  # the hash of the content digests this version records (earlier ones: sha256)
QUIET_NS = 2_000_000_000  # a data file modified within the last 2 s may still change within its timestamp's tick
MAX_NOTE_BYTES = 1 << 16  # a digest note is a few hundred bytes


@dataclass(frozen=True)
class WeightSpec:
    """Everything besides the labels that decides class weights (and so the name of their cache entry)."""

    num_classes: int
    method: str
    smooth: float
    normalize: bool = True
    ignore_index: int | None = None

    def fingerprint(self, data_digest: str, key: str | None) -> str:
        """sha256 over the labels' digest, the split they are (``key``) and every parameter of the weights."""
        header = {
            "format_version": FORMAT_VERSION,
            "data": data_digest,
            "key": key,
            "num_classes": self.num_classes,
            "method": self.method,
            "smooth": float(self.smooth),
            "normalize": bool(self.normalize),
            "ignore_index": self.ignore_index,
        }
        return hashlib.sha256(json.dumps(header, sort_keys=True).encode()).hexdigest()

    def weigh(self, counts: torch.Tensor) -> torch.Tensor:
        """The weights of ``counts`` (:func:`classweights.weights_from_counts` with these parameters)."""
        return classweights.weights_from_counts(
            counts, self.method, smooth=self.smooth, normalize=self.normalize, ignore_index=self.ignore_index
        )


WeightsOrigin = Literal["full", "batch", "checkpoint"]


@dataclass(frozen=True)
class ClassWeights:
    """Weights and where they came from."""

    weights: torch.Tensor  # float32 [C]
    counts: torch.Tensor | None  # int64 [C]; None for the weights a resumed run takes from its checkpoint
    spec: WeightSpec
    num_samples: int
    fingerprint: str  # of the weights: data digest + every parameter
    data_digest: str  # of the labels alone (LabelStats.fingerprint)
    cache_path: Path | None = None  # the cache entry that holds them, if any
    from_cache: bool = False
    # What was counted: the labels given (a whole split), the overfit batch alone, or nothing (a resumed run's own)
    origin: WeightsOrigin = "full"


def save_weights_record(result: ClassWeights, path: str | os.PathLike[str], **extra: object) -> None:
    """Save ``result`` with its provenance (counts, method, fingerprints, ...) through classweights."""
    classweights.save_class_weights(
        result.weights,
        path,
        counts=result.counts,
        method=result.spec.method,
        smooth=result.spec.smooth,
        normalize=result.spec.normalize,
        ignore_index=result.spec.ignore_index,
        num_samples=result.num_samples,
        fingerprint=result.fingerprint,
        data_digest=result.data_digest,
        **extra,
    )


# -------------------------------------------------------------- data files ----


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
        return self.taken_ns - max(self.mtime_ns, self.ctime_ns) > QUIET_NS


class DigestNotes:
    """Remembered content digests of data files, keyed by the files' identity."""

    def __init__(self, cache_dir: Path | None) -> None:
        self.folder = None if cache_dir is None else cache_dir / "digests"

    def _path(self, stamp: FileStamp, key: str | None) -> Path | None:
        if self.folder is None:
            return None
        name = hashlib.sha256(json.dumps([stamp.path, key]).encode()).hexdigest()[:32]
        return self.folder / f"{name}.json"

    def lookup(
        self, stamp: FileStamp | None, key: str | None, warn: Callable[[str], None], algorithm: str = DIGEST_ALGORITHM
    ) -> str | None:
        """The ``algorithm`` digest noted for the file ``stamp`` describes; None if there is no note, or a stale one.

        A note of another hash (an earlier version's sha256) is stale too. A
        damaged note (not a regular file, oversized, not the JSON written
        here) is reported with ``warn``, ignored and later replaced.
        """
        path = None if stamp is None else self._path(stamp, key)
        if path is None or not os.path.lexists(path):
            return None
        try:
            note = json.loads(classweights.read_small_file(path, max_bytes=MAX_NOTE_BYTES, follow_symlinks=False))
            fields, noted_key, digest = note["stamp"], note["key"], note["digest"]
            if not (
                isinstance(fields, list) and (noted_key is None or isinstance(noted_key, str)) and _is_digest(digest)
            ):
                raise ValueError("unexpected fields")
        except (classweights.ClassWeightError, RecursionError, ValueError, KeyError, TypeError) as exc:
            warn(f"ignoring the damaged digest note {path} ({_reason(exc)}); the labels are hashed again")
            return None
        if (
            fields == _stamp_fields(stamp)
            and noted_key == key
            and classweights.fingerprint_algorithm(digest) == algorithm
        ):
            return str(digest)
        return None  # the file changed since, or the note is of another hash: the labels are hashed again

    def remember(self, stamp: FileStamp | None, key: str | None, digest: str) -> None:
        """Note ``digest`` for the file if it is still exactly as ``stamp`` saw it before it was read."""
        path = None if stamp is None else self._path(stamp, key)
        if path is None or FileStamp.of(stamp.path) != stamp or not stamp.settled():
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        note = {"stamp": _stamp_fields(stamp), "key": key, "digest": digest}
        classweights.atomic_write_bytes(path, json.dumps(note).encode())


def _stamp_fields(stamp: FileStamp) -> list[Any]:
    return [stamp.path, stamp.device, stamp.inode, stamp.size, stamp.mtime_ns, stamp.ctime_ns]


def _is_digest(value: Any) -> bool:
    """A content digest of this version (``blake3:`` and 64 hex digits) or of an earlier one (64 hex digits)."""
    try:
        return isinstance(value, str) and bool(classweights.fingerprint_algorithm(value))
    except classweights.ClassWeightError:
        return False


# -------------------------------------------------------------- the folder ----


@dataclass(frozen=True)
class WeightCache:
    """The cache folder as one command or run uses it.

    Under ``torchrun`` every rank calls the methods with its group: rank 0
    alone reads and writes the folder, and the others get what it found.
    """

    folder: Path | None  # None: a folder that cannot be written; nothing is read or cached
    read: bool = True  # False (--no-cache): nothing in the folder is read, but what is counted is still cached
    warn: Callable[[str], None] = print  # for a damaged file or a folder that cannot be written

    def noted_digest(
        self, stamp: FileStamp | None, key: str | None, group: Dist = SINGLE, algorithm: str = DIGEST_ALGORITHM
    ) -> str | None:
        """The digest a note gives for the file ``stamp`` describes, read as ``key``; None without a usable note."""
        notes = DigestNotes(self.folder)
        return group.broadcast(notes.lookup(stamp, key, self.warn, algorithm) if group.is_main and self.read else None)

    def digest(
        self,
        labels: Any,
        *,
        num_classes: int,
        key: str,
        stamp: FileStamp | None,
        group: Dist = SINGLE,
        algorithm: str = DIGEST_ALGORITHM,
    ) -> str:
        """The content digest of ``labels`` (read from ``stamp``'s file as ``key``): noted, or hashed now and noted.

        ``stamp`` must describe the file the labels were read from (see
        :meth:`FileStamp.read`). Under ``torchrun`` the ranks hash their shards together.
        ``algorithm="sha256"`` gives an earlier version's digest (to resume a run it recorded);
        only ``DIGEST_ALGORITHM`` digests are noted.
        """
        digest = self.noted_digest(stamp, key, group, algorithm)
        if digest is None:
            stats = classweights.count_label_stats(
                labels, num_classes, fingerprint=algorithm, distributed=group.enabled
            )
            digest = stats.fingerprint
            assert digest is not None
            if group.is_main and algorithm == DIGEST_ALGORITHM:
                _try(lambda: DigestNotes(self.folder).remember(stamp, key, digest), None)
        return digest

    def entry(self, fingerprint: str) -> Path | None:
        """Where the weights of ``fingerprint`` are cached."""
        return None if self.folder is None else self.folder / "weights" / f"{fingerprint[:32]}.json"

    def load(
        self, spec: WeightSpec, *, fingerprint: str, data_digest: str, group: Dist = SINGLE
    ) -> ClassWeights | None:
        """The cached weights of ``fingerprint``, if an intact entry holds them; a damaged one is reported and ignored."""
        path = self.entry(fingerprint)
        cached = None
        if path is not None and group.is_main and os.path.lexists(path):
            try:
                cached = _load_entry(path, spec, fingerprint, data_digest)
            except (classweights.ClassWeightError, KeyError, TypeError, ValueError) as exc:
                self.warn(f"ignoring the damaged cached weights at {path} ({_reason(exc)}); recomputing")
        return group.broadcast(cached)

    def store(
        self, result: ClassWeights, *, source: str, key: str | None, stamp: FileStamp | None, note: bool
    ) -> ClassWeights:
        """Cache ``result`` in its entry (and, with ``note``, its digest for the file ``stamp`` describes).

        Returns ``result``, without its ``cache_path`` if the folder could not be written.
        """
        path = result.cache_path
        if path is None:
            return result

        def write() -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            save_weights_record(result, path, source=source, key=key)
            if note:
                DigestNotes(self.folder).remember(stamp, key, result.data_digest)

        if not _try(write, self.warn, f"could not cache the class weights in {self.folder}"):
            return dataclasses.replace(result, cache_path=None)
        return result


def _load_entry(path: Path, spec: WeightSpec, fingerprint: str, data_digest: str) -> ClassWeights:
    """A cache entry, trusted only if it is intact (checksum), is the entry asked for (fingerprint) and its weights
    follow from its counts and parameters (so neither a forged entry nor a changed formula is served)."""
    weights, meta = classweights.load_class_weights(
        path, num_classes=spec.num_classes, with_metadata=True, require_checksum=True, follow_symlinks=False
    )
    if meta.get("fingerprint") != fingerprint:
        raise classweights.ClassWeightError("its fingerprint does not match the data and parameters")
    num_samples = meta.get("num_samples")
    if meta.get("counts") is None or not isinstance(num_samples, int) or isinstance(num_samples, bool):
        raise classweights.ClassWeightError("it lacks the counts and sample count it was computed from")
    counts = torch.tensor(meta["counts"], dtype=torch.int64)
    if not torch.allclose(weights, spec.weigh(counts), rtol=1e-6, atol=0.0):
        raise classweights.ClassWeightError(f"its weights do not follow from its counts with method={spec.method!r}")
    return ClassWeights(
        weights=weights,
        counts=counts,
        spec=spec,
        num_samples=num_samples,
        fingerprint=fingerprint,
        data_digest=data_digest,
        cache_path=path,
        from_cache=True,
    )


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
