"""The synthetic corpus: 1-4 one-colour objects per 16x16 grid on black, about 93% black pixels.

Objects are drawn from a library of shapes built once from the seed (blobs,
rectangles, lines, patterns) and placed where they neither overlap nor touch
an earlier object of their grid; whole blocks of grids are drawn at once with
vectorised numpy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from .grids import BLOCK_SIZE, DEFAULT_NUM_IMAGES, DEFAULT_SEED, GRID, NUM_COLORS, check_count, split

# Object types and their probabilities.
OBJECT_TYPES = ("blob", "rectangle", "line", "pattern")
TYPE_PROBS = (0.4, 0.2, 0.2, 0.2)
# Object sizes (pixels) and the relative weight of each size, the same for every
# type: sizes 2..15 weighted (24 - size). With 2.5 objects per grid on
# average this gives 93.17% black pixels (100,000 grids, seed 42), the share of
# the ARC training set that docs/methods.md weighs.
MIN_OBJECT_SIZE = 2
MAX_OBJECT_SIZE = 15
SIZE_WEIGHT_OFFSET = 24
# Random blob shapes grown per size when the template library is built.
BLOBS_PER_SIZE = 150
# Placement attempts per object before it is dropped for want of room.
MAX_PLACEMENT_ATTEMPTS = 25


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
        rows: int64 ``[T, 32]``, each row of ``masks[:, :, :16]`` as 16 bits (bit j = column j).
    """

    masks: np.ndarray
    heights: np.ndarray
    widths: np.ndarray
    sizes: np.ndarray
    kinds: np.ndarray
    probs: np.ndarray
    rows: np.ndarray


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
    return _Templates(masks, heights, widths, sizes, kinds, probs, _row_bits(masks[:, :, :GRID]))


def _place_objects(
    canvas: np.ndarray,
    rows: np.ndarray,
    templates: _Templates,
    rng: np.random.Generator,
    occupied: np.ndarray | None = None,
) -> None:
    """Paint one object on each grid ``canvas[rows]`` in place, where it touches nothing.

    An object may not overlap or touch (even diagonally) the pixels already on
    its grid. Objects that collide are redrawn (shape, position, colour), up to
    :data:`MAX_PLACEMENT_ATTEMPTS` times; after that the object is dropped.

    Args:
        canvas: uint8 ``[B, 16, 16]``, modified in place.
        rows: int ``[K]``, the grids that get an object.
        templates: the shape library.
        rng: the random generator.
        occupied: int64 ``[B, 16]``, ``canvas != 0`` as row bits (:func:`_row_bits`), updated in place with
            the objects painted; computed from ``canvas`` if not given.
    """
    # Each grid row is 16 bits (bit j = column j), so a whole grid is 16 small integers: testing an object
    # against a grid is 16 ANDs instead of 256, and shifting a template right is a shift of its rows.
    if occupied is None:
        occupied = _row_bits(canvas != 0)
    taken = occupied[rows]
    blocked = taken | (taken << 1) | (taken >> 1)  # occupied pixels and their left/right neighbours
    blocked[:, 1:] |= blocked[:, :-1].copy()  # ... and the rows above and below them: the 8-neighbourhood
    blocked[:, :-1] |= blocked[:, 1:].copy()
    blocked &= 0xFFFF
    where = np.full(len(canvas), -1)
    where[rows] = np.arange(len(rows))  # a grid's row in ``blocked``

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
        # shift each template down by top (rows; a negative row wraps to the empty rows 16-31) and right by left (bits)
        placed = templates.rows[shape[:, None], (axis[None, :] - top[:, None]) % (2 * GRID)] << left[:, None]
        clash = (placed & blocked[where[pending]]).any(axis=1)
        ok = ~clash
        done = pending[ok]
        occupied[done] |= placed[ok]
        mask = np.unpackbits(placed[ok].astype("<u2").view(np.uint8).reshape(-1, GRID, 2), axis=2, bitorder="little")
        canvas[done] = np.where(mask.astype(bool), colour[ok, None, None], canvas[done])
        pending = pending[clash]


def _row_bits(grids: np.ndarray) -> np.ndarray:
    """bool ``[..., R, 16]`` -> int64 ``[..., R]``: each row's 16 cells as the bits of one integer (bit j = column j)."""
    return np.packbits(grids, axis=-1, bitorder="little").view("<u2")[..., 0].astype(np.int64)


def generate_corpus(
    num_images: int = DEFAULT_NUM_IMAGES,
    *,
    seed: int = DEFAULT_SEED,
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
        >>> [corpus[name].shape[0] for name in ("train", "val", "test")]
        [40, 5, 5]
        >>> corpus["train"].dtype, int(corpus["train"].max()) <= 9
        (dtype('uint8'), True)
    """
    check_count(num_images, seed)
    rng = np.random.default_rng(seed)
    templates = _build_templates(rng)
    grids = np.zeros((num_images, GRID, GRID), dtype=np.uint8)
    for start in range(0, num_images, BLOCK_SIZE):
        stop = min(start + BLOCK_SIZE, num_images)
        canvas = np.zeros((stop - start, GRID, GRID), dtype=np.uint8)
        occupied = np.zeros((stop - start, GRID), dtype=np.int64)  # the canvas's painted cells, as row bits
        num_objects = rng.integers(1, 5, size=stop - start)
        for slot in range(4):
            _place_objects(canvas, np.flatnonzero(num_objects > slot), templates, rng, occupied)
        grids[start:stop] = canvas
        if progress is not None:
            progress(stop, num_images)
    return split(grids)
