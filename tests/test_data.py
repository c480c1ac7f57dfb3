"""Tests of arcvae.data: corpus generation, ARC-AGI sampling, atomic saving, validated loading."""

from __future__ import annotations

import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from arcvae.data import (
    GRID,
    NUM_COLORS,
    SPLITS,
    arc_corpus,
    default_cache_dir,
    default_corpus_path,
    generate_corpus,
    load_corpus,
    load_split,
    save_corpus,
)
from arcvae.data.arc import arc_sources, sample_splits, split_tasks
from arcvae.errors import ArcvaeError


@pytest.fixture(scope="module")
def corpus() -> dict[str, np.ndarray]:
    """5,000 synthetic grids, seed 42."""
    return generate_corpus(5_000, seed=42)


@pytest.fixture(scope="module")
def all_grids(corpus: dict[str, np.ndarray]) -> np.ndarray:
    return np.concatenate([corpus[name] for name in SPLITS])


@pytest.fixture(scope="module")
def arc() -> dict[str, np.ndarray]:
    return arc_corpus(2_000, seed=3)


def _write_npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


def _valid(n: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, NUM_COLORS, size=(n, GRID, GRID), dtype=np.uint8)


# --------------------------------------------------------------------------- #
# generate_corpus
# --------------------------------------------------------------------------- #
def test_generate_shapes_dtype_and_splits(corpus: dict[str, np.ndarray]) -> None:
    assert tuple(corpus) == SPLITS
    assert [corpus[name].shape for name in SPLITS] == [(4_000, 16, 16), (500, 16, 16), (500, 16, 16)]
    for grids in corpus.values():
        assert grids.dtype == np.uint8
        assert grids.flags.c_contiguous


@pytest.mark.parametrize(
    ("num_images", "sizes"),
    [(3, (1, 1, 1)), (9, (7, 1, 1)), (10, (8, 1, 1)), (19, (17, 1, 1)), (20, (16, 2, 2)), (105, (85, 10, 10))],
)
def test_split_sizes_floor_with_one_each(num_images: int, sizes: tuple[int, int, int]) -> None:
    corpus = generate_corpus(num_images, seed=0)
    assert tuple(len(corpus[name]) for name in SPLITS) == sizes


def test_split_sizes_for_100k_are_80_10_10() -> None:
    """Checked through the arc corpus, which is the cheaper of the two at this size."""
    corpus = arc_corpus(100_000, seed=0)
    assert [len(corpus[name]) for name in SPLITS] == [80_000, 10_000, 10_000]


def test_values_are_colours(all_grids: np.ndarray) -> None:
    assert int(all_grids.max()) <= 9


def test_every_grid_has_an_object_and_at_most_four_colours(all_grids: np.ndarray) -> None:
    foreground = (all_grids != 0).reshape(len(all_grids), -1).sum(axis=1)
    assert foreground.min() >= 2
    assert foreground.max() <= 4 * 15
    present = np.zeros((len(all_grids), NUM_COLORS), dtype=bool)
    present[np.arange(len(all_grids))[:, None], all_grids.reshape(len(all_grids), -1)] = True
    assert present[:, 1:].sum(axis=1).max() <= 4


def test_black_fraction_matches_spec(all_grids: np.ndarray) -> None:
    black = float((all_grids == 0).mean())
    assert 0.92 <= black <= 0.945, black


def test_colours_are_roughly_uniform(all_grids: np.ndarray) -> None:
    counts = np.bincount(all_grids.ravel(), minlength=NUM_COLORS)[1:]
    ratio = counts / counts.mean()
    assert ratio.min() > 0.85 and ratio.max() < 1.15, ratio


def test_object_count_is_uniform_1_to_4(all_grids: np.ndarray) -> None:
    """Colours per grid <= objects per grid; its mean comes close to the 2.5 objects expected."""
    present = np.zeros((len(all_grids), NUM_COLORS), dtype=bool)
    present[np.arange(len(all_grids))[:, None], all_grids.reshape(len(all_grids), -1)] = True
    colours = present[:, 1:].sum(axis=1)
    # with 9 colours, repeats lower the mean below 2.5 only a little
    assert 2.2 < colours.mean() < 2.5
    assert np.bincount(colours, minlength=5)[1:5].min() > 0.1 * len(all_grids)


def test_objects_neither_overlap_nor_touch(all_grids: np.ndarray) -> None:
    """Each 8-connected foreground component is one colour and at most 15 pixels."""
    ndimage = pytest.importorskip("scipy.ndimage")
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = True  # connect within a grid only
    labels, count = ndimage.label(all_grids != 0, structure=structure)
    flat_labels = labels.ravel()
    fg = flat_labels > 0
    sizes = np.bincount(flat_labels[fg], minlength=count + 1)[1:]
    assert sizes.max() <= 15
    colours = all_grids.ravel()[fg].astype(np.int64)
    lo = np.full(count + 1, 99)
    hi = np.full(count + 1, -1)
    np.minimum.at(lo, flat_labels[fg], colours)
    np.maximum.at(hi, flat_labels[fg], colours)
    assert (lo[1:] == hi[1:]).all()


def test_generation_is_deterministic_per_seed() -> None:
    a = generate_corpus(300, seed=7)
    b = generate_corpus(300, seed=7)
    c = generate_corpus(300, seed=8)
    for name in SPLITS:
        assert a[name].tobytes() == b[name].tobytes()
    assert a["train"].tobytes() != c["train"].tobytes()


def test_progress_reports_blocks() -> None:
    calls: list[tuple[int, int]] = []
    generate_corpus(25_000, seed=1, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(10_000, 25_000), (20_000, 25_000), (25_000, 25_000)]


@pytest.mark.parametrize("num_images", [0, 1, 2, -5])
def test_too_few_images_raise(num_images: int) -> None:
    with pytest.raises(ArcvaeError, match="num_images"):
        generate_corpus(num_images)
    with pytest.raises(ArcvaeError, match="num_images"):
        arc_corpus(num_images)


@pytest.mark.parametrize("bad", [2.5, "10", True, None])
def test_non_integer_count_raises(bad: object) -> None:
    with pytest.raises(ArcvaeError, match="num_images"):
        generate_corpus(bad)  # type: ignore[arg-type]


def test_negative_seed_raises() -> None:
    with pytest.raises(ArcvaeError, match="seed"):
        generate_corpus(10, seed=-1)


# --------------------------------------------------------------------------- #
# arc_corpus
# --------------------------------------------------------------------------- #
def test_arc_shapes_and_values(arc: dict[str, np.ndarray]) -> None:
    assert tuple(arc) == SPLITS
    assert [arc[name].shape for name in SPLITS] == [(1_600, 16, 16), (200, 16, 16), (200, 16, 16)]
    for grids in arc.values():
        assert grids.dtype == np.uint8
        assert int(grids.max()) <= 9


def test_arc_grids_are_not_all_black(arc: dict[str, np.ndarray]) -> None:
    grids = arc["train"]
    foreground = (grids != 0).reshape(len(grids), -1).any(axis=1)
    assert foreground.mean() > 0.5
    assert 0.3 < float((grids == 0).mean()) < 0.95
    # colours 1-9 are permuted per grid, so all of them show up
    assert (np.bincount(grids.ravel(), minlength=NUM_COLORS) > 0).all()


def test_arc_is_deterministic_per_seed(arc: dict[str, np.ndarray]) -> None:
    again = arc_corpus(2_000, seed=3)
    other = arc_corpus(2_000, seed=4)
    for name in SPLITS:
        assert again[name].tobytes() == arc[name].tobytes()
    assert other["train"].tobytes() != arc["train"].tobytes()


def test_arc_tasks_split_disjoint_covering_and_seeded() -> None:
    tasks = arc_sources()[3]
    parts = split_tasks(tasks, seed=3)
    assert tuple(parts) == SPLITS
    every = set(tasks.tolist())
    assert len(every) == 1_120
    assert sorted(parts["train"] + parts["val"] + parts["test"]) == sorted(every)  # disjoint and covering
    assert [len(parts[name]) for name in SPLITS] == [896, 112, 112]
    assert split_tasks(tasks, seed=3) == parts
    assert split_tasks(tasks[::-1], seed=3) == parts  # order of the sources does not matter
    assert split_tasks(tasks, seed=4)["val"] != parts["val"]


def test_split_tasks_needs_three_tasks() -> None:
    with pytest.raises(ArcvaeError, match="distinct tasks"):
        split_tasks(["a", "b", "a"], seed=0)


def test_each_split_samples_only_its_own_tasks() -> None:
    """Synthetic sources whose task survives augmentation: task k's grids have k+1 coloured pixels.

    Cropping never happens (sources are at most 16x16), and padding, turning
    and recolouring 1-9 keep the number of non-zero pixels.
    """
    num_tasks, per_task = 40, 3
    sources = np.zeros((num_tasks * per_task, 30, 30), dtype=np.uint8)
    heights = np.zeros(len(sources), dtype=np.int64)
    widths = np.zeros(len(sources), dtype=np.int64)
    tasks = []
    for k in range(num_tasks):
        for j in range(per_task):
            i = k * per_task + j
            side = 7 + j  # 7x7 .. 9x9 boxes hold the k+1 <= 40 pixels
            flat = np.zeros(side * side, dtype=np.uint8)
            flat[: k + 1] = 1 + (np.arange(k + 1) % 9)
            sources[i, :side, :side] = flat.reshape(side, side)
            heights[i] = widths[i] = side
            tasks.append(f"task{k:02d}")
    corpus = sample_splits(sources, heights, widths, np.array(tasks), 2_000, seed=11)
    parts = split_tasks(tasks, seed=11)
    assert [len(corpus[name]) for name in SPLITS] == [1_600, 200, 200]
    seen_all = set()
    for name in SPLITS:
        grids = corpus[name]
        assert grids.dtype == np.uint8
        seen = {f"task{n - 1:02d}" for n in (grids != 0).reshape(len(grids), -1).sum(axis=1).tolist()}
        assert seen <= set(parts[name]), name
        assert seen_all.isdisjoint(seen)
        seen_all |= seen
    assert len(seen_all) > 0.9 * num_tasks  # every split really drew from its pool
    again = sample_splits(sources, heights, widths, np.array(tasks), 2_000, seed=11)
    assert all(again[name].tobytes() == corpus[name].tobytes() for name in SPLITS)


def test_arc_progress_reports_blocks_per_split() -> None:
    calls: list[tuple[int, int]] = []
    arc_corpus(25_000, seed=1, progress=lambda done, total: calls.append((done, total)))
    # train 20,000 in two blocks, then val and test 2,500 each
    assert calls == [(10_000, 25_000), (20_000, 25_000), (22_500, 25_000), (25_000, 25_000)]


# --------------------------------------------------------------------------- #
# save_corpus / load_split / load_corpus
# --------------------------------------------------------------------------- #
def test_round_trip(tmp_path: Path) -> None:
    corpus = generate_corpus(40, seed=5)
    path = save_corpus(corpus, tmp_path / "nested" / "corpus.npz")
    assert path == tmp_path / "nested" / "corpus.npz"
    loaded = load_corpus(path)
    assert tuple(loaded) == SPLITS
    for name in SPLITS:
        assert loaded[name].dtype == np.uint8
        np.testing.assert_array_equal(loaded[name], corpus[name])
        np.testing.assert_array_equal(load_split(str(path), name), corpus[name])
    assert [p.name for p in path.parent.iterdir()] == ["corpus.npz"]


@given(
    n=st.integers(1, 6),
    seed=st.integers(0, 2**32 - 1),
    dtype=st.sampled_from([np.uint8, np.int16, np.int64, np.uint32, np.float32, np.float64]),
)
def test_round_trip_any_integer_dtype(n: int, seed: int, dtype: type) -> None:
    grids = _valid(n, seed).astype(dtype)
    with tempfile.TemporaryDirectory() as folder:
        path = save_corpus({"train": grids}, Path(folder) / "c.npz")
        loaded = load_split(path)
    assert loaded.dtype == np.uint8
    np.testing.assert_array_equal(loaded, grids.astype(np.uint8))


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_saved_file_honours_umask(tmp_path: Path, umask: int, mode: int) -> None:
    previous = os.umask(umask)
    try:
        path = save_corpus({"train": _valid(2, 0)}, tmp_path / "c.npz")
        assert os.umask(umask) == umask  # save_corpus left the umask as it found it
    finally:
        os.umask(previous)
    assert path.stat().st_mode & 0o777 == mode


def test_save_overwrites_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "c.npz"
    save_corpus({"train": _valid(2, 0)}, path)
    save_corpus({"train": _valid(3, 1)}, path)
    np.testing.assert_array_equal(load_split(path), _valid(3, 1))


@pytest.mark.parametrize("target", ["os.replace", "os.fsync"])
def test_failed_save_leaves_old_file_and_no_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: str) -> None:
    path = tmp_path / "c.npz"
    save_corpus({"train": _valid(2, 0)}, path)
    before = path.read_bytes()

    def boom(*args: object, **kwargs: object) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(target, boom)
    with pytest.raises(OSError, match="disk on fire"):
        save_corpus({"train": _valid(5, 1)}, path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.npz"]


def test_failed_serialisation_leaves_no_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("no space")

    monkeypatch.setattr(np.lib.format, "write_array", boom)  # fails inside the archive, after the temporary file exists
    with pytest.raises(RuntimeError, match="no space"):
        save_corpus({"train": _valid(2, 0)}, tmp_path / "c.npz")
    assert list(tmp_path.iterdir()) == []


def test_save_validates_arrays(tmp_path: Path) -> None:
    bad = _valid(2, 0)
    bad[1, 2, 3] = 10
    with pytest.raises(ArcvaeError, match=r"'val'.*value 10 at index \[1, 2, 3\]"):
        save_corpus({"train": _valid(2, 0), "val": bad}, tmp_path / "c.npz")
    with pytest.raises(ArcvaeError):
        save_corpus({}, tmp_path / "c.npz")
    assert list(tmp_path.iterdir()) == []


def _assert_names(err: pytest.ExceptionInfo[ArcvaeError], path: Path, key: str) -> str:
    message = str(err.value)
    assert "\n" not in message
    assert path.name in message
    assert repr(key) in message
    return message


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "x.npz"
    with pytest.raises(ArcvaeError, match="does not exist") as err:
        load_split(path, "val")
    _assert_names(err, path, "val")
    with pytest.raises(ArcvaeError, match="does not exist") as err:
        load_corpus(path)
    _assert_names(err, path, "train")


def test_directory_is_not_a_file(tmp_path: Path) -> None:
    with pytest.raises(ArcvaeError, match="is a directory") as err:
        load_split(tmp_path)
    _assert_names(err, tmp_path, "train")


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "it is empty"),
        (b"this is not a zip file at all", "not a zip file"),
        (b"\x80\x04\x95\x05\x00", "not a zip file"),  # a pickle
        (b"PK\x03\x04broken", "not a zip file"),
    ],
)
def test_unreadable_file(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "x.npz"
    path.write_bytes(content)
    with pytest.raises(ArcvaeError, match="could not read") as err:
        load_split(path)
    assert reason in _assert_names(err, path, "train")


def test_truncated_npz(tmp_path: Path) -> None:
    path = tmp_path / "x.npz"
    save_corpus({"train": _valid(50, 0)}, path)
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(ArcvaeError, match="could not read") as err:
        load_split(path)
    _assert_names(err, path, "train")


def test_corrupt_member(tmp_path: Path) -> None:
    """A zip whose member data is garbage: opening works, reading the array fails."""
    path = tmp_path / "x.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("train.npy", b"\x93NUMPY garbage")
    with pytest.raises(ArcvaeError, match="could not read") as err:
        load_split(path)
    _assert_names(err, path, "train")


def test_single_npy_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "x.npy"
    np.save(path, _valid(2))
    with pytest.raises(ArcvaeError, match="is a .npy file holding one array") as err:
        load_split(path)
    _assert_names(err, path, "train")


def test_pickled_object_array_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.npz"
    np.savez(path, train=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ArcvaeError) as err:
        load_split(path)
    _assert_names(err, path, "train")


def test_missing_key_lists_available(tmp_path: Path) -> None:
    path = _write_npz(tmp_path / "x.npz", images=_valid(2), labels=_valid(1))
    with pytest.raises(ArcvaeError, match="key 'train' not found") as err:
        load_split(path, "train")
    message = _assert_names(err, path, "train")
    assert "available keys: 'images', 'labels'" in message
    with pytest.raises(ArcvaeError, match="key 'val' not found") as err:
        load_corpus(_write_npz(tmp_path / "y.npz", train=_valid(2)))


@pytest.mark.parametrize(
    ("shape", "text"),
    [
        ((5, 8, 8), "[5, 8, 8]"),
        ((16, 16), "[16, 16]"),
        ((2, 16, 16, 1), "[2, 16, 16, 1]"),
        ((3, 16, 15), "[3, 16, 15]"),
    ],
)
def test_wrong_shape(tmp_path: Path, shape: tuple[int, ...], text: str) -> None:
    path = _write_npz(tmp_path / "x.npz", train=np.zeros(shape, dtype=np.uint8))
    with pytest.raises(ArcvaeError) as err:
        load_split(path)
    message = _assert_names(err, path, "train")
    assert f"has shape {text}; expected [N, 16, 16]" in message


def test_empty_split(tmp_path: Path) -> None:
    path = _write_npz(tmp_path / "x.npz", test=np.zeros((0, 16, 16), dtype=np.uint8))
    with pytest.raises(ArcvaeError, match="empty") as err:
        load_split(path, "test")
    _assert_names(err, path, "test")


@pytest.mark.parametrize("dtype", [bool, np.complex64, "U1"])
def test_non_numeric_dtype(tmp_path: Path, dtype: object) -> None:
    path = _write_npz(tmp_path / "x.npz", train=np.zeros((2, 16, 16), dtype=dtype))
    with pytest.raises(ArcvaeError, match="dtype") as err:
        load_split(path)
    _assert_names(err, path, "train")


@given(flat=st.integers(0, 3 * 256 - 1), bad=st.sampled_from([0.5, float("nan"), float("inf"), -2.25]))
def test_non_integer_float_names_flat_index(flat: int, bad: float) -> None:
    grids = _valid(3).astype(np.float64)
    grids.reshape(-1)[flat] = bad
    with tempfile.TemporaryDirectory() as folder:
        path = _write_npz(Path(folder) / "x.npz", val=grids)
        with pytest.raises(ArcvaeError, match="non-integer") as err:
            load_split(path, "val")
    message = _assert_names(err, path, "val")
    assert f"value {bad!r} at flat index {flat};" in message


@given(
    index=st.tuples(st.integers(0, 2), st.integers(0, 15), st.integers(0, 15)),
    value=st.one_of(st.integers(10, 30_000), st.integers(-30_000, -1)),
)
def test_out_of_range_names_value_and_index(index: tuple[int, int, int], value: int) -> None:
    grids = _valid(3).astype(np.int32)
    grids[index] = value
    with tempfile.TemporaryDirectory() as folder:
        path = _write_npz(Path(folder) / "x.npz", train=grids)
        with pytest.raises(ArcvaeError) as err:
            load_split(path)
    message = _assert_names(err, path, "train")
    assert f"value {value} at index [{index[0]}, {index[1]}, {index[2]}]" in message


def test_whole_floats_out_of_range_rejected(tmp_path: Path) -> None:
    grids = _valid(2).astype(np.float32)
    grids[1, 0, 5] = 12.0
    path = _write_npz(tmp_path / "x.npz", train=grids)
    with pytest.raises(ArcvaeError, match=r"value 12.0 at index \[1, 0, 5\]"):
        load_split(path)


def test_load_corpus_reports_the_failing_split(tmp_path: Path) -> None:
    bad = _valid(2)
    bad[0, 0, 0] = 200
    path = _write_npz(tmp_path / "x.npz", train=_valid(2), val=_valid(2), test=bad)
    with pytest.raises(ArcvaeError) as err:
        load_corpus(path)
    assert "'test'" in _assert_names(err, path, "test")


def test_load_corpus_ignores_extra_keys(tmp_path: Path) -> None:
    path = _write_npz(tmp_path / "x.npz", train=_valid(3), val=_valid(1), test=_valid(1), extra=np.arange(3))
    assert tuple(load_corpus(path)) == SPLITS


# --------------------------------------------------------------------------- #
# default paths
# --------------------------------------------------------------------------- #
def test_cache_dir_honours_xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "arcvae"
    assert default_corpus_path() == tmp_path / "arcvae" / "synthetic-n100000-seed42-v1.npz"
    assert default_corpus_path(500, 3) == tmp_path / "arcvae" / "synthetic-n500-seed3-v1.npz"


@pytest.mark.parametrize("value", [None, "", "relative/cache"])
def test_cache_dir_falls_back_to_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str | None) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    if value is None:
        monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    else:
        monkeypatch.setenv("XDG_CACHE_HOME", value)
    assert default_cache_dir() == tmp_path / ".cache" / "arcvae"
    assert os.fspath(default_corpus_path(10, 1)).endswith(
        os.path.join(".cache", "arcvae", "synthetic-n10-seed1-v1.npz")
    )


def _place_objects_reference(canvas, rows, templates, rng):
    """Placement with boolean grids and no bit tricks: every cell tested against the 8-neighbourhood of the objects."""
    from arcvae.data.synthetic import GRID, MAX_PLACEMENT_ATTEMPTS, NUM_COLORS

    occupied = np.pad(canvas != 0, ((0, 0), (1, 1), (1, 1)))
    blocked = np.zeros_like(canvas, dtype=bool)
    for dr in (0, 1, 2):
        for dc in (0, 1, 2):
            blocked |= occupied[:, dr : dr + GRID, dc : dc + GRID]
    cumulative = np.cumsum(templates.probs)
    pending = rows
    for _ in range(MAX_PLACEMENT_ATTEMPTS):
        if pending.size == 0:
            break
        shape = np.minimum(np.searchsorted(cumulative, rng.random(pending.size), side="right"), len(cumulative) - 1)
        top = rng.integers(0, GRID - templates.heights[shape] + 1)
        left = rng.integers(0, GRID - templates.widths[shape] + 1)
        colour = rng.integers(1, NUM_COLORS, size=pending.size, dtype=np.uint8)
        still = []
        for k, grid in enumerate(pending):
            mask = np.zeros((GRID, GRID), dtype=bool)
            h, w = templates.heights[shape[k]], templates.widths[shape[k]]
            mask[top[k] : top[k] + h, left[k] : left[k] + w] = templates.masks[shape[k], :h, :w]
            if (mask & blocked[grid]).any():
                still.append(grid)
            else:
                canvas[grid][mask] = colour[k]
        pending = np.array(still, dtype=np.int64)


def test_object_placement_paints_what_a_cell_by_cell_reference_paints():
    from arcvae.data import synthetic

    templates = synthetic._build_templates(np.random.default_rng(3))
    fast, slow = np.zeros((400, 16, 16), dtype=np.uint8), np.zeros((400, 16, 16), dtype=np.uint8)
    rng_fast, rng_slow = np.random.default_rng(11), np.random.default_rng(11)
    for slot in range(4):  # crowded grids, so that objects clash and are redrawn
        rows = np.flatnonzero(np.arange(400) % 4 >= slot - 1)
        synthetic._place_objects(fast, rows, templates, rng_fast)
        _place_objects_reference(slow, rows, templates, rng_slow)
    assert np.array_equal(fast, slow) and (fast != 0).any()
    assert rng_fast.random() == rng_slow.random()  # the same number of draws


def test_a_saved_corpus_is_a_standard_npz(tmp_path: Path) -> None:
    splits = {"train": _valid(5, 1), "val": _valid(2, 2)}
    save_corpus(splits, tmp_path / "c.npz")
    with np.load(tmp_path / "c.npz", allow_pickle=False) as stored:
        assert sorted(stored.files) == ["train", "val"]
        assert all(np.array_equal(stored[k], v) and stored[k].dtype == np.uint8 for k, v in splits.items())
    with zipfile.ZipFile(tmp_path / "c.npz") as archive:
        assert {info.compress_type for info in archive.infolist()} == {zipfile.ZIP_DEFLATED}
