"""Label images from a folder or a glob: PNG (palette, 8-bit, 16-bit), TIFF and per-file .npy, one sample per file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from forked import run_ranks
from hypothesis import given, settings
from hypothesis import strategies as st

import classweights
from classweights import (
    ClassWeightError,
    compute_class_weights,
    count_label_stats,
    count_labels,
    fingerprint_algorithm,
)

Image = pytest.importorskip("PIL.Image")
features = pytest.importorskip("PIL.features")


# ------------------------------------------------------------- helpers ----


def voc_palette() -> list[int]:
    """Pascal VOC's colour map: the bits of each index spread over the high bits of R, G and B."""
    colours = []
    for index in range(256):
        r = g = b = 0
        for bit in range(8):
            r |= ((index >> (3 * bit)) & 1) << (7 - bit)
            g |= ((index >> (3 * bit + 1)) & 1) << (7 - bit)
            b |= ((index >> (3 * bit + 2)) & 1) << (7 - bit)
        colours += [r, g, b]
    return colours


def save_palette_png(path: Path, labels: np.ndarray, palette: list[int] | None = None) -> None:
    image = Image.fromarray(labels.astype(np.uint8))
    image.putpalette(voc_palette() if palette is None else palette)  # an "L" image with a palette is a "P" image
    assert image.mode == "P"
    image.save(path)


def voc_like(rng: np.random.Generator, height: int, width: int, num_classes: int = 21) -> np.ndarray:
    """Background 0, one or two rectangles of a class 1..C-1, each with a 255 border."""
    labels = np.zeros((height, width), np.uint8)
    for _ in range(rng.integers(1, 3)):
        top, left = rng.integers(0, max(1, height - 4)), rng.integers(0, max(1, width - 4))
        bottom, right = min(height, top + rng.integers(3, 12)), min(width, left + rng.integers(3, 12))
        labels[top:bottom, left:right] = 255
        labels[top + 1 : bottom - 1, left + 1 : right - 1] = rng.integers(1, num_classes)
    return labels


def decoded(path: Path) -> np.ndarray:
    """What a user would write: the image's array as Pillow gives it."""
    if path.suffix == ".npy":
        return np.load(path)
    with Image.open(path) as image:
        return np.asarray(image)


def reference(paths: list[Path], num_classes: int, ignore_index: int | None = None) -> tuple[list[int], list[int]]:
    """Counts and image pixels (Eigen and Fergus) from ``np.bincount`` of each decoded image."""
    counts = np.zeros(num_classes, np.int64)
    pixels = np.zeros(num_classes, np.int64)
    for path in paths:
        values = decoded(path).astype(np.int64).reshape(-1)
        if ignore_index is not None:
            values = values[values != ignore_index]
        per_image = np.bincount(values, minlength=num_classes)
        counts += per_image
        pixels += (per_image > 0) * per_image.sum()
    return counts.tolist(), pixels.tolist()


@pytest.fixture
def voc(tmp_path) -> Path:
    """A VOC-like folder: 12 palette PNGs of different sizes with 255 borders, and a file that is not an image."""
    folder = tmp_path / "SegmentationClass"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        save_palette_png(
            folder / f"2007_{i:06d}.png", voc_like(rng, int(rng.integers(10, 40)), int(rng.integers(10, 40)))
        )
    (folder / "README.txt").write_text("not an image")
    return folder


def images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix in (".png", ".tif", ".tiff", ".npy"))


# ------------------------------------------------------ what is counted ----


def test_palette_pngs_count_their_indices_like_bincount(voc):
    paths = images_in(voc)
    with Image.open(paths[0]) as first:
        assert first.mode == "P"
    want_counts, want_pixels = reference(paths, 21, ignore_index=255)
    stats = count_label_stats(voc, 21, ignore_index=255, presence=True)
    assert stats.counts.tolist() == want_counts
    assert stats.image_pixels.tolist() == want_pixels  # presence per image (each file one sample)
    assert stats.num_images == 12 and stats.num_labels == sum(want_counts)
    assert stats.counts.dtype == torch.int64 and stats.source_identity is None


def test_folder_glob_and_str_give_the_same_result(voc):
    expected = count_labels(voc, 21, ignore_index=255)
    assert torch.equal(count_labels(str(voc), 21, ignore_index=255), expected)
    assert torch.equal(count_labels(voc / "*.png", 21, ignore_index=255), expected)
    assert torch.equal(count_labels(f"{voc}/2007_*.png", 21, ignore_index=255), expected)
    first_five = reference(images_in(voc)[:5], 21, 255)[0]
    assert count_labels(f"{voc}/2007_00000[0-4].png", 21, ignore_index=255).tolist() == first_five
    assert (
        count_labels(f"{voc}/2007_00000?.png", 21, ignore_index=255).tolist()
        == reference(images_in(voc)[:10], 21, 255)[0]
    )


def test_the_palette_index_is_the_label_never_its_colour(tmp_path):
    labels = np.array([[0, 1, 2], [2, 2, 255]], np.uint8)
    same_colour = [0, 0, 0] + [200, 0, 0] * 2 + [255, 255, 255] * 253  # indices 1 and 2 share one colour
    save_palette_png(tmp_path / "a.png", labels, same_colour)
    assert count_labels(tmp_path, 3, ignore_index=255).tolist() == [1, 1, 3]


def test_8_and_16_bit_greyscale_pngs(tmp_path):
    rng = np.random.default_rng(1)
    grey = rng.integers(0, 7, size=(9, 13), dtype=np.uint8)
    deep = rng.integers(0, 1000, size=(11, 5), dtype=np.uint16)
    deep[0, 0] = 999
    Image.fromarray(grey).save(tmp_path / "a.png")
    Image.fromarray(deep).save(tmp_path / "b.png")
    with Image.open(tmp_path / "a.png") as a, Image.open(tmp_path / "b.png") as b:
        assert (a.mode, b.mode) == ("L", "I;16")
    stats = count_label_stats(tmp_path, 1000, presence=True)
    counts, pixels = reference(images_in(tmp_path), 1000)
    assert stats.counts.tolist() == counts and stats.image_pixels.tolist() == pixels
    assert count_labels(tmp_path / "b.png", 1000).tolist() == np.bincount(deep.reshape(-1), minlength=1000).tolist()


def test_bilevel_pngs_count_0_and_1(tmp_path):
    mask = np.array([[True, False, False], [True, True, True]])
    Image.fromarray(mask).save(tmp_path / "m.png")
    with Image.open(tmp_path / "m.png") as image:
        assert image.mode == "1"
    assert count_labels(tmp_path, 2).tolist() == [2, 4]


@pytest.mark.parametrize("compression", [None, "tiff_lzw", "tiff_adobe_deflate", "packbits"])
def test_tiffs_8_and_16_bit(tmp_path, compression):
    if compression is not None and not features.check("libtiff"):
        pytest.skip("compressed TIFFs need Pillow built with libtiff")
    rng = np.random.default_rng(2)
    small = rng.integers(0, 5, size=(6, 7), dtype=np.uint8)
    large = rng.integers(0, 600, size=(4, 9), dtype=np.uint16)
    options = {} if compression is None else {"compression": compression}
    Image.fromarray(small).save(tmp_path / "a.tif", **options)
    Image.fromarray(large).save(tmp_path / "b.tiff", **options)
    stats = count_label_stats(tmp_path, 600, presence=True)
    counts, pixels = reference(images_in(tmp_path), 600)
    assert stats.counts.tolist() == counts and stats.image_pixels.tolist() == pixels


def test_integer_and_float_tiffs_go_through_the_checked_path(tmp_path):
    Image.fromarray(np.array([[0, 3], [3, 70000]], np.int32)).save(tmp_path / "a.tif")  # mode I
    Image.fromarray(np.array([[1.0, 2.0]], np.float32)).save(tmp_path / "b.tif")  # mode F, whole numbers
    assert count_labels(tmp_path, 70001).tolist()[:4] == [1, 1, 1, 2] and count_labels(tmp_path, 70001)[70000] == 1
    Image.fromarray(np.array([[1.0, 2.5]], np.float32)).save(tmp_path / "c.tif")
    with pytest.raises(ClassWeightError, match=r"c\.tif': label 2\.5 at flat index 1 is not a class index"):
        count_labels(tmp_path, 70001)
    (tmp_path / "c.tif").unlink()
    Image.fromarray(np.array([[0, -4]], np.int32)).save(tmp_path / "d.tif")
    with pytest.raises(ClassWeightError, match=r"d\.tif': label -4 at flat index 1 is out of range"):
        count_labels(tmp_path, 70001)


def test_npy_files_are_one_sample_each_whatever_their_shape(tmp_path):
    arrays = [
        np.array([[0, 1], [1, 1]], np.uint8),
        np.array([2, 2, 0], np.int64),
        np.zeros((2, 2, 2), np.uint16),
        np.array([1.0, 0.0]),
    ]
    for i, array in enumerate(arrays):
        np.save(tmp_path / f"{i}.npy", array)
    stats = count_label_stats(tmp_path, 3, presence=True)
    counts, pixels = reference(images_in(tmp_path), 3)
    assert stats.counts.tolist() == counts and stats.image_pixels.tolist() == pixels
    assert stats.num_images == 4


def test_a_mixed_folder_of_pngs_tiffs_and_npy_files(tmp_path):
    rng = np.random.default_rng(3)
    save_palette_png(tmp_path / "a.png", voc_like(rng, 20, 30))
    Image.fromarray(voc_like(rng, 8, 40)).save(tmp_path / "b.tif")
    np.save(tmp_path / "c.npy", voc_like(rng, 33, 3))
    Image.fromarray(voc_like(rng, 5, 5).astype(np.uint16)).save(tmp_path / "d.png")
    for threads in (1, 2, 3):
        stats = count_label_stats(tmp_path, 21, ignore_index=255, presence=True, num_threads=threads)
        counts, pixels = reference(images_in(tmp_path), 21, 255)
        assert stats.counts.tolist() == counts and stats.image_pixels.tolist() == pixels, threads


def test_ignore_index_inside_the_classes_is_reported_as_zero(voc):
    counts = count_labels(voc, 256, ignore_index=0)
    want = reference(images_in(voc), 256)[0]
    want[0] = 0
    assert counts.tolist() == want


@settings(max_examples=25, deadline=None)
@given(shapes=st.lists(st.tuples(st.integers(1, 9), st.integers(1, 9)), min_size=1, max_size=6), seed=st.integers(0, 2**32 - 1),
       threads=st.integers(1, 4))  # fmt: skip
def test_any_folder_of_palette_pngs_counts_like_bincount(tmp_path_factory, shapes, seed, threads):
    folder = tmp_path_factory.mktemp("prop")
    rng = np.random.default_rng(seed)
    for i, shape in enumerate(shapes):
        labels = rng.integers(0, 5, size=shape, dtype=np.uint8)
        labels[rng.random(shape) < 0.2] = 255
        labels[0, 0] = i % 5  # never all 255
        save_palette_png(folder / f"{i:03d}.png", labels)
    stats = count_label_stats(folder, 5, ignore_index=255, presence=True, num_threads=threads)
    counts, pixels = reference(images_in(folder), 5, 255)
    assert stats.counts.tolist() == counts and stats.image_pixels.tolist() == pixels
    assert stats.num_images == len(shapes)
    if any((decoded(p) == 255).any() for p in images_in(folder)):  # without ignore_index, 255 is a label out of range
        with pytest.raises(ClassWeightError, match=r"\.png': label 255 is out of range for num_classes=5"):
            count_labels(folder, 5, num_threads=threads)
    else:
        assert count_labels(folder, 5, num_threads=threads).tolist() == counts


def test_compute_class_weights_and_median_frequency_from_a_folder(voc):
    counts, pixels = reference(images_in(voc), 21, 255)
    expected = classweights.weights_from_counts(
        torch.tensor(counts), "median_frequency", image_pixels=torch.tensor(pixels), ignore_index=255
    )
    weights = compute_class_weights(voc, 21, "median_frequency", ignore_index=255)
    assert torch.allclose(weights, classweights.validate_weights(expected, 21))


# ----------------------------------------------------- which files, in what order ----


def test_files_are_read_in_sorted_order(tmp_path):
    from classweights._sources import open_source

    for name in ("b.png", "a.png", "10.png", "9.png"):  # created out of order
        save_palette_png(tmp_path / name, np.zeros((2, 2), np.uint8))
    for threads in (1, 2, 4):
        chunks = open_source(tmp_path, key=None, chunk_size=None, threads=threads).chunks
        assert [Path(eval(c.where)).name for c in chunks] == ["10.png", "9.png", "a.png", "b.png"]


def test_the_first_bad_file_in_sorted_order_is_named(tmp_path):
    for name, value in (("b.png", 9), ("a.png", 1), ("c.png", 8), ("0.png", 0)):
        save_palette_png(tmp_path / name, np.full((2, 3), value, np.uint8))
    for threads in (1, 2, 4):
        with pytest.raises(
            ClassWeightError,
            match=r"^'[^']*b\.png': label 9 is out of range for num_classes=5 \(expected 0 <= label < 5\); 6 labels have it$",
        ):
            count_labels(tmp_path, 5, num_threads=threads)


def test_progress_is_called_once_per_image(voc):
    seen = []
    count_labels(voc, 21, ignore_index=255, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(i, 12) for i in range(1, 13)]


def test_a_folder_is_not_recursive_but_a_recursive_glob_is(tmp_path):
    save_palette_png(tmp_path / "top.png", np.zeros((2, 2), np.uint8))
    (tmp_path / "sub").mkdir()
    save_palette_png(tmp_path / "sub" / "deep.png", np.ones((3, 3), np.uint8))
    (tmp_path / "folder.png").mkdir()  # a folder named like an image is not one
    assert count_labels(tmp_path, 2).tolist() == [4, 0]
    assert count_labels(f"{tmp_path}/**/*.png", 2).tolist() == [4, 9]
    assert count_labels(f"{tmp_path}/*/*.png", 2).tolist() == [0, 9]


def test_hidden_files_and_other_suffixes_are_skipped_in_a_folder(tmp_path):
    save_palette_png(tmp_path / "a.PNG", np.zeros((2, 2), np.uint8))  # suffixes in any case
    (tmp_path / "._a.png").write_bytes(b"\x00\x05junk")  # e.g. a macOS resource fork
    (tmp_path / "b.jpg").write_bytes(b"jpeg")
    np.savez(tmp_path / "c.npz", train=np.ones(3, np.uint8))
    assert count_labels(tmp_path, 2).tolist() == [4, 0]


def test_empty_folders_and_globs_are_clear_errors(tmp_path):
    with pytest.raises(
        ClassWeightError,
        match=r"^Expected a folder of label images \(\.png, \.tif, \.tiff or \.npy files\), but '.*' is a directory with none in it$",
    ):
        count_labels(tmp_path, 2)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ClassWeightError, match=r"is a directory with none in it \(1 file of other kinds\)$"):
        count_labels(tmp_path, 2)
    with pytest.raises(
        ClassWeightError, match=r"^Expected the glob pattern '.*\*\.png' to match label images .*, but it matches none$"
    ):
        count_labels(tmp_path / "*.png", 2)
    with pytest.raises(ClassWeightError, match=r"but it matches none \(it matches 1 file of other kinds\)$"):
        count_labels(tmp_path / "*", 2)


def test_key_is_refused_for_images(voc):
    with pytest.raises(
        ClassWeightError,
        match=r"^key='train' picks an array inside a \.npz file or a dataset item, but '.*' names label images, one sample per file",
    ):
        count_labels(voc, 21, key="train")


def test_a_folder_named_like_a_data_file_is_still_refused_as_a_directory(tmp_path):
    (tmp_path / "data.npz").mkdir()
    save_palette_png(tmp_path / "data.npz" / "a.png", np.zeros((2, 2), np.uint8))
    with pytest.raises(ClassWeightError, match="is a directory"):
        count_labels(tmp_path / "data.npz", 2)
    with pytest.raises(ClassWeightError, match="is a directory"):
        classweights.read_labels(tmp_path)  # read_labels reads one file


def test_an_existing_file_whose_name_has_glob_characters_is_that_file(tmp_path):
    np.save(tmp_path / "grids[1].npy", np.array([0, 1, 1], np.uint8))
    assert count_labels(tmp_path / "grids[1].npy", 2).tolist() == [1, 2]


# ---------------------------------------------------------------- errors ----


@pytest.mark.parametrize(("mode", "shape"), [("RGB", (4, 5, 3)), ("RGBA", (4, 5, 4)), ("LA", (4, 5, 2))])
def test_colour_images_are_refused_naming_the_file_and_mode(tmp_path, mode, shape):
    save_palette_png(tmp_path / "a.png", np.zeros((4, 5), np.uint8))
    Image.fromarray(np.zeros(shape, np.uint8)).save(tmp_path / "b.png")
    with pytest.raises(ClassWeightError) as err:
        count_labels(tmp_path, 2)
    message = str(err.value)
    assert "\n" not in message and "b.png" in message and f"is a {mode} image" in message
    assert "expected a single-channel or palette image" in message


@pytest.mark.parametrize("mode", ["RGB", "CMYK"])
def test_colour_tiffs_are_refused_too(tmp_path, mode):
    Image.new(mode, (3, 2)).save(tmp_path / "a.tif")
    with pytest.raises(
        ClassWeightError, match=rf"a\.tif' is a {mode} image; expected a single-channel or palette image"
    ):
        count_labels(tmp_path, 2)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "jpeg named .png", "empty", "bad crc"])
def test_damaged_images_name_the_file(tmp_path, damage):
    save_palette_png(tmp_path / "a.png", np.zeros((40, 40), np.uint8))
    path = tmp_path / "b.png"
    rng = np.random.default_rng(4)
    save_palette_png(path, rng.integers(0, 2, size=(40, 40)).astype(np.uint8))
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(rng.bytes(300))
    elif damage == "jpeg named .png":
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "c.jpg")
        path.write_bytes((tmp_path / "c.jpg").read_bytes())
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        start = data.index(b"IDAT") + 10
        path.write_bytes(data[:start] + bytes([data[start] ^ 0xFF]) + data[start + 1 :])
    for threads in (1, 2):
        with pytest.raises(ClassWeightError) as err:
            count_labels(tmp_path, 2, num_threads=threads)
        message = str(err.value)
        assert "\n" not in message and "b.png" in message, message
        assert message.startswith(f"could not read {str(path)!r} as a PNG label image: "), message


def test_a_multi_frame_tiff_is_refused(tmp_path):
    first, second = Image.fromarray(np.zeros((3, 3), np.uint8)), Image.fromarray(np.ones((3, 3), np.uint8))
    first.save(tmp_path / "stack.tif", save_all=True, append_images=[second])
    with pytest.raises(ClassWeightError, match=r"stack\.tif' holds 2 frames; expected one label image per file"):
        count_labels(tmp_path, 2)


def test_a_damaged_npy_file_is_named(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros(4, np.uint8))
    (tmp_path / "b.npy").write_bytes(b"\x93NUMPY\x01\x00garbage")
    with pytest.raises(ClassWeightError, match=r"b\.npy"):
        count_labels(tmp_path, 2)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are POSIX")
def test_a_fifo_named_like_an_image_is_refused_without_blocking(tmp_path):
    save_palette_png(tmp_path / "a.png", np.zeros((2, 2), np.uint8))
    os.mkfifo(tmp_path / "b.png")
    with pytest.raises(ClassWeightError, match=r"b\.png' is a FIFO"):
        count_labels(tmp_path, 2)


def test_an_unreadable_file_is_named(tmp_path):
    save_palette_png(tmp_path / "a.png", np.zeros((2, 2), np.uint8))
    (tmp_path / "b.png").symlink_to(tmp_path / "gone.png")  # listed, but nothing to open
    with pytest.raises(ClassWeightError, match=r"b\.png' does not exist"):
        count_labels(tmp_path, 2)


def test_missing_pillow_is_one_line_with_the_install_hint(voc, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "PIL", None)  # `from PIL import Image` now fails as if Pillow were not installed
    monkeypatch.setitem(sys.modules, "PIL.Image", None)
    with pytest.raises(
        ClassWeightError, match=r'^reading label images needs Pillow: pip install "classweights\[images\]"$'
    ):
        count_labels(voc, 21, ignore_index=255)
    np.save(tmp_path / "a.npy", np.array([0, 1, 1], np.uint8))  # .npy files need no Pillow
    assert count_labels(tmp_path / "*.npy", 2).tolist() == [1, 2]


def test_import_classweights_does_not_import_pillow():
    code = "import sys, classweights; print('PIL' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ----------------------------------------------------------- fingerprint ----


def test_the_fingerprint_follows_the_decoded_labels(tmp_path):
    rng = np.random.default_rng(5)
    masks = [voc_like(rng, 10 + i, 12) for i in range(4)]
    one, two, npy = tmp_path / "one", tmp_path / "two", tmp_path / "npy"
    for folder in (one, two, npy):
        folder.mkdir()
    for i, mask in enumerate(masks):
        save_palette_png(one / f"{i}.png", mask)
        Image.fromarray(mask).save(two / f"mask-{i}.tif")  # another format and other names, the same labels
        np.save(npy / f"{i}.npy", mask)

    def digest(source, **options):
        return count_label_stats(source, 21, ignore_index=255, fingerprint=True, **options).fingerprint

    reference_digest = digest(one)
    assert (
        digest(two)
        == digest(npy)
        == digest(one, num_threads=1)
        == digest(f"{one}/*.png", num_threads=3)
        == reference_digest
    )
    changed = masks[2].copy()
    changed[0, 0] = 7 if changed[0, 0] != 7 else 8
    save_palette_png(one / "2.png", changed)
    assert digest(one) != reference_digest
    save_palette_png(one / "2.png", masks[2])
    assert digest(one) == reference_digest
    save_palette_png(one / "2.png", masks[2].T.copy())  # the same labels, in another order
    assert digest(one) != reference_digest
    # moving labels from one image to the next (same bytes in all, other sizes) changes it
    joined = np.concatenate([m.reshape(-1) for m in masks])
    for folder, cuts in ((tmp_path / "cut-a", [10, 30]), (tmp_path / "cut-b", [20, 30])):
        folder.mkdir()
        for i, part in enumerate(np.split(joined, cuts)):
            np.save(folder / f"{i}.npy", part)
    assert digest(tmp_path / "cut-a") != digest(tmp_path / "cut-b")


def test_fingerprint_does_not_change_the_counts(voc):
    plain = count_label_stats(voc, 21, ignore_index=255, presence=True)
    hashed = count_label_stats(voc, 21, ignore_index=255, presence=True, fingerprint=True)
    assert torch.equal(plain.counts, hashed.counts) and torch.equal(plain.image_pixels, hashed.image_pixels)
    assert plain.fingerprint is None and fingerprint_algorithm(hashed.fingerprint) == "blake3"


# ---------------------------------------------- threads, memory, sharding ----


@pytest.mark.parametrize("threads", [2, 3])
def test_at_most_a_few_decoded_images_wait_at_once(tmp_path, monkeypatch, threads):
    import classweights._images as images

    for i in range(80):
        save_palette_png(tmp_path / f"{i:02d}.png", np.full((4, 4), i % 3, np.uint8))
    started = []
    real = images.read_image
    monkeypatch.setattr(
        images, "read_image", lambda name, keep_labels=True: started.append(name) or real(name, keep_labels)
    )
    ahead = []
    count_labels(tmp_path, 3, num_threads=threads, progress=lambda done, total: ahead.append(len(started) - done))
    assert len(started) == 80 and ahead[-1] == 0
    assert max(ahead) <= 2 * threads * images._MAX_BATCH  # 2 * num_threads tasks of at most _MAX_BATCH files


def test_one_task_reads_as_many_files_as_make_about_a_million_labels(tmp_path, monkeypatch):
    import threading

    import classweights._images as images

    monkeypatch.setattr(images, "_BATCH_LABELS", 3 * 16)  # three 4 x 4 images per task
    for i in range(20):
        save_palette_png(tmp_path / f"{i:02d}.png", np.full((4, 4), i % 3, np.uint8))
    runs = []
    real = images._read_batch
    monkeypatch.setattr(images, "_read_batch", lambda names, keep: runs.append(len(names)) or real(names, keep))
    before = threading.active_count()  # other tests in this process may have left threads of their own
    assert count_labels(tmp_path, 3, num_threads=2).tolist() == [7 * 16, 7 * 16, 6 * 16]
    assert (
        runs == [3] * 6 + [1] and threading.active_count() <= before
    )  # runs of 3 files; the reader's threads are gone


def test_an_unreadable_file_in_a_task_comes_after_the_files_before_it(tmp_path):
    for i in range(6):
        save_palette_png(tmp_path / f"{i}.png", np.full((2, 2), 1, np.uint8))
    save_palette_png(tmp_path / "2.png", np.full((2, 2), 7, np.uint8))  # out of range: found while counting
    (tmp_path / "4.png").write_bytes(b"broken")  # unreadable: found while decoding, in the same task
    with pytest.raises(ClassWeightError, match=r"2\.png': label 7 is out of range"):
        count_labels(tmp_path, 3, num_threads=2)


def test_the_labels_are_not_kept_unless_the_fingerprint_needs_them(voc):
    from classweights._sources import open_source

    lean = list(open_source(voc, key=None, chunk_size=None, threads=2, keep_labels=False).chunks)
    full = list(open_source(voc, key=None, chunk_size=None, threads=2).chunks)
    assert all(c.data is None and c.histogram is not None for c in lean)
    for a, b in zip(lean, full):
        assert a.where == b.where and np.array_equal(a.histogram, b.histogram)
        assert np.array_equal(np.bincount(b.data.reshape(-1), minlength=256), b.histogram.reshape(-1))


@given(n=st.integers(1, 12), world=st.integers(1, 5))
def test_shards_are_contiguous_runs_of_files(tmp_path_factory, n, world):
    from classweights._images import image_stream, list_images
    from classweights._stream import Shard

    folder = tmp_path_factory.mktemp("shards")
    for i in range(n):
        np.save(folder / f"{i:02d}.npy", np.array([i], np.int64))
    names = [repr(p) for p in list_images(folder)]
    parts = [
        [
            c.where
            for c in image_stream(folder, key=None, shard=Shard(r, world, 1 << 24), threads=1, keep_labels=True).chunks
        ]
        for r in range(world)
    ]
    assert [name for part in parts for name in part] == names
    assert all(
        image_stream(folder, key=None, shard=Shard(r, world), threads=1, keep_labels=True).sharded for r in range(world)
    )


def test_per_rank_fingerprints_combine_into_the_single_process_one(voc):
    """What the ranks of a process group do (see _ranks._reduce_across_ranks): each hashes its files, in rank order."""
    from classweights._fingerprint import _combine_digests, _LabelHasher
    from classweights._images import image_stream
    from classweights._stream import Shard

    whole = count_label_stats(voc, 21, ignore_index=255, fingerprint=True).fingerprint
    for world in (2, 3, 5):
        blocks = []
        for rank in range(world):
            hasher = _LabelHasher()
            for chunk in image_stream(
                voc, key=None, shard=Shard(rank, world, 1 << 24), threads=2, keep_labels=True
            ).chunks:
                hasher.update_file(chunk.data)
            blocks += hasher.finish().blocks
        assert _combine_digests(blocks, "per file", None, 12) == whole


@pytest.mark.slow
def test_two_ranks_count_a_folder_like_one_process(voc, tmp_path):
    worker = tmp_path / "worker.py"
    worker.write_text(
        "import json, sys, torch.distributed as dist, classweights\n"
        "dist.init_process_group('gloo')\n"
        "s = classweights.count_label_stats(sys.argv[1], 21, ignore_index=255, presence=True, fingerprint=True, distributed=True)\n"
        "open(f'{sys.argv[2]}/rank{dist.get_rank()}.json', 'w').write(json.dumps([s.counts.tolist(), s.image_pixels.tolist(), s.num_images, s.fingerprint]))\n"
        "dist.destroy_process_group()\n"
    )
    run_ranks(worker, str(voc), str(tmp_path))  # two ranks of a gloo group, as torchrun starts them
    single = count_label_stats(voc, 21, ignore_index=255, presence=True, fingerprint=True)
    want = [single.counts.tolist(), single.image_pixels.tolist(), 12, single.fingerprint]
    assert [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)] == [want, want]


# ------------------------------------------------------------------- CLI ----


def test_cli_weights_compute_a_folder_and_a_glob(voc, tmp_path):
    from typer.testing import CliRunner

    from arcvae.cli import app

    counts = reference(images_in(voc), 21, 255)[0]
    for data in (voc, f"{voc}/*.png"):
        result = CliRunner().invoke(
            app,
            ["weights", "compute", str(data), "--num-classes", "21", "--ignore-index", "255", "--json"],
            catch_exceptions=False,
        )
        assert result.exit_code == 0, result.output
        record = json.loads(result.stdout)
        assert record["counts"] == counts and record["source"] == str(data)
        assert record["weights"] == pytest.approx(compute_class_weights(voc, 21, ignore_index=255).tolist())
    out = tmp_path / "w.json"
    result = CliRunner().invoke(
        app,
        ["weights", "compute", str(voc), "--num-classes", "21", "--ignore-index", "255", "--out", str(out)],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert "(12 samples," in result.stdout and "Loaded from the cache" not in result.stdout
    assert (
        json.loads(out.read_text())["metadata"]["data_digest"]
        == count_label_stats(voc, 21, ignore_index=255, fingerprint=True).fingerprint
    )
    assert not (
        tmp_path / "xdg-cache" / "arcvae" / "weights"
    ).exists()  # a folder is counted every time: nothing cached


def test_cli_recounts_a_folder_after_an_image_changes(voc):
    from typer.testing import CliRunner

    from arcvae.cli import app

    def counts() -> list[int]:
        result = CliRunner().invoke(
            app,
            ["weights", "compute", str(voc), "--num-classes", "21", "--ignore-index", "255", "--json"],
            catch_exceptions=False,
        )
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)["counts"]

    before = counts()
    save_palette_png(images_in(voc)[0], np.full((3, 3), 20, np.uint8))  # the folder's own times need not change
    assert counts() != before and counts() == reference(images_in(voc), 21, 255)[0]


def test_cli_errors_are_one_line_naming_the_file(voc):
    from typer.testing import CliRunner

    from arcvae.cli import app

    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(voc / "2007_000003.png")
    result = CliRunner().invoke(
        app, ["weights", "compute", str(voc), "--num-classes", "21", "--ignore-index", "255"], catch_exceptions=False
    )
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "2007_000003.png' is a RGB image" in lines[0], (
        result.stderr
    )
