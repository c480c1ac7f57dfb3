"""What a corpus is: 16x16 grids of colours 0-9, split 80/10/10 into train, val and test.

Both corpus makers (:mod:`.synthetic`, :mod:`.arc`) and the file reader
(:mod:`.files`) share these sizes and checks.
"""

from __future__ import annotations

import numpy as np

from ..errors import ArcvaeError

GRID = 16
NUM_COLORS = 10
SPLITS = ("train", "val", "test")

# Fractions of the corpus that go to validation and test; the rest is training.
VAL_FRACTION = 0.1
TEST_FRACTION = 0.1
# Grids generated (or sampled) per block; ``progress`` is called after each block.
BLOCK_SIZE = 10_000
# The size and seed of a corpus made without saying (and of the default corpus).
DEFAULT_NUM_IMAGES = 100_000
DEFAULT_SEED = 42


def check_count(num_images: int, seed: int) -> None:
    """Reject a corpus size below 3 (one grid per split) and a bad seed."""
    if isinstance(num_images, bool) or not isinstance(num_images, (int, np.integer)):
        raise ArcvaeError(f"Expected `num_images` to be an integer >= 3, but got {num_images!r}")
    if num_images < len(SPLITS):
        raise ArcvaeError(f"Expected `num_images` to be >= {len(SPLITS)} (one grid per split), but got {num_images}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ArcvaeError(f"Expected `seed` to be a non-negative integer, but got {seed!r}")


def split_sizes(num_images: int) -> tuple[int, int, int]:
    """Sizes of train, val and test: val and test are floor(10%), at least 1 each.

    Example:
        >>> split_sizes(50)
        (40, 5, 5)
    """
    n_val = max(1, int(num_images * VAL_FRACTION))
    n_test = max(1, int(num_images * TEST_FRACTION))
    return num_images - n_val - n_test, n_val, n_test


def split(grids: np.ndarray) -> dict[str, np.ndarray]:
    """Cut ``grids`` ``[N, 16, 16]`` into consecutive train/val/test parts (copies)."""
    n_train, n_val, _ = split_sizes(len(grids))
    bounds = (0, n_train, n_train + n_val, len(grids))
    return {name: grids[bounds[i] : bounds[i + 1]].copy() for i, name in enumerate(SPLITS)}


def validate_grids(array: np.ndarray, where: str) -> np.ndarray:
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
