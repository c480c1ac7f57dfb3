"""The default corpus: the synthetic corpus in the cache folder, generated there on first use."""

from __future__ import annotations

import os
import tempfile
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol

from .files import save_corpus
from .grids import DEFAULT_NUM_IMAGES, DEFAULT_SEED
from .synthetic import generate_corpus

CORPUS_FORMAT_VERSION = 1  # part of the file name: a new generator never reuses an old file


def default_cache_dir() -> Path:
    """Folder for generated corpora: ``$XDG_CACHE_HOME/arcvae``, else ``~/.cache/arcvae``.

    ``XDG_CACHE_HOME`` is ignored when empty or relative, as the XDG base
    directory specification asks.
    """
    base = os.environ.get("XDG_CACHE_HOME", "")
    root = Path(base) if base and os.path.isabs(base) else Path.home() / ".cache"
    return root / "arcvae"


def default_corpus_path(num_images: int = DEFAULT_NUM_IMAGES, seed: int = DEFAULT_SEED) -> Path:
    """Where the synthetic corpus for ``num_images`` and ``seed`` is cached.

    Example:
        >>> default_corpus_path(1000, 7).name
        'synthetic-n1000-seed7-v1.npz'
    """
    return default_cache_dir() / f"synthetic-n{num_images}-seed{seed}-v{CORPUS_FORMAT_VERSION}.npz"


class Narrator(Protocol):
    """What finding the corpus tells the user, and how (:class:`arcvae.report.Reporter` is one)."""

    def print(self, text: str = "", *, style: str | None = None) -> None: ...

    def warn(self, text: str) -> None: ...

    def epoch_bar(self, description: str, total: int) -> AbstractContextManager[Any]: ...


def resolve_data_path(data: str | None, report: Narrator) -> tuple[Path, Path | None]:
    """The corpus to train on and the cache folder to use.

    ``data`` if given, else the default corpus (generated on first use). The
    cache folder is ``None`` when it cannot be written: the default corpus then
    lives in a temporary folder, with one warning.
    """
    import classweights

    cache_dir = default_cache_dir()
    if data is not None:
        return Path(data), cache_dir
    path = default_corpus_path()
    if path.exists():
        report.print(f"[DATA] No --data given: using the default corpus at {path}")
        return path, cache_dir
    report.print(f"[DATA] No --data given and no default corpus yet: generating it at {path}")
    with report.epoch_bar("Generating grids", DEFAULT_NUM_IMAGES) as bar:
        done = [0]

        def advance(n: int, total: int) -> None:
            bar.advance(n - done[0])
            done[0] = n

        splits = generate_corpus(DEFAULT_NUM_IMAGES, seed=DEFAULT_SEED, progress=advance)
    try:
        save_corpus(splits, path)
    except (
        OSError,
        classweights.ClassWeightError,
    ) as exc:  # a cache that cannot be written costs a warning, not the run
        fallback = Path(tempfile.mkdtemp(prefix="arcvae-corpus-")) / path.name
        reason = getattr(exc, "strerror", None) or exc
        report.warn(
            f"could not write the default corpus to the cache folder {cache_dir} ({reason}); "
            f"this run uses a copy in {fallback.parent} and no cache"
        )
        return save_corpus(splits, fallback), None
    return path, cache_dir
