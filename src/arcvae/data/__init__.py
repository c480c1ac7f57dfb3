"""Corpora of 16x16 colour grids: generate them, save them atomically, load them validated.

A corpus is a mapping ``{"train": ..., "val": ..., "test": ...}`` of ``uint8``
arrays of shape ``[N, 16, 16]`` whose values are colours 0-9 (0 is the black
background). On disk it is one ``.npz`` file with those three keys. Two
makers, both deterministic for a seed and split 80/10/10:
:func:`generate_corpus` (:mod:`.synthetic`) and :func:`arc_corpus` (:mod:`.arc`).

Example:
    >>> import os, tempfile
    >>> corpus = generate_corpus(20, seed=0)
    >>> {name: grids.shape for name, grids in corpus.items()}
    {'train': (16, 16, 16), 'val': (2, 16, 16), 'test': (2, 16, 16)}
    >>> path = save_corpus(corpus, os.path.join(tempfile.mkdtemp(), "tiny.npz"))
    >>> bool((load_split(path, "val") == corpus["val"]).all())
    True
"""

from .arc import arc_corpus
from .default import Narrator, default_cache_dir, default_corpus_path, resolve_data_path
from .files import Split, load_corpus, load_split, read_split, save_corpus
from .grids import GRID, NUM_COLORS, SPLITS
from .synthetic import generate_corpus

__all__ = [
    "GRID",
    "NUM_COLORS",
    "SPLITS",
    "Narrator",
    "Split",
    "arc_corpus",
    "default_cache_dir",
    "default_corpus_path",
    "generate_corpus",
    "load_corpus",
    "load_split",
    "read_split",
    "resolve_data_path",
    "save_corpus",
]
