"""Parquet files, Arrow tables, Hugging Face datasets, Dask and zarr arrays as label sources.

Every count is checked against ``np.bincount`` of the same labels in memory,
and every presence statistic against a per-sample loop. Each optional package
is skipped when it is not installed.
"""

from __future__ import annotations

import builtins
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from forked import run_ranks
from hypothesis import given
from hypothesis import strategies as st

import classweights as cw
from classweights import ClassWeightError
from classweights._fingerprint import HASH_BLOCK_BYTES, _combine_digests, _LabelHasher
from classweights._sources import open_source
from classweights._stream import RAGGED_HASH_ROWS, Shard


def bincount(labels, num_classes: int) -> list[int]:
    return np.bincount(np.asarray(labels, dtype=np.int64).reshape(-1), minlength=num_classes).tolist()


def presence_reference(rows, num_classes: int, ignore_index: int | None = None) -> list[int]:
    """Eigen and Fergus' denominator, one sample at a time: the labels of every sample that holds class c."""
    pixels = np.zeros(num_classes, dtype=np.int64)
    for row in rows:
        row = np.asarray(row, dtype=np.int64).reshape(-1)
        kept = row[row != ignore_index] if ignore_index is not None else row
        for c in np.unique(kept):
            pixels[c] += kept.size
    return pixels.tolist()


def ragged_rows(seed: int, n: int, num_classes: int, longest: int = 12) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, num_classes, rng.integers(0, longest + 1)).tolist() for _ in range(n)]


def test_importing_classweights_imports_no_optional_package():
    code = ("import sys, numpy as np, classweights; classweights.count_labels(np.array([0, 1]), 2); "
            "print(sorted(m for m in ('pyarrow', 'datasets', 'dask', 'distributed', 'zarr') if m in sys.modules))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------- Parquet ----

try:
    import pyarrow as pa
    import pyarrow.parquet as pq
except ImportError:  # the Parquet, Arrow and datasets tests are skipped; Dask and zarr ones still run
    pa = pq = None
needs_arrow = pytest.mark.skipif(pa is None, reason="needs pyarrow")


@needs_arrow
@pytest.mark.parametrize(
    "dtype", ["int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64"]
)
def test_parquet_scalar_column_of_several_row_groups(tmp_path, dtype):
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 7, 5000).astype(dtype)
    path = tmp_path / "labels.parquet"
    pq.write_table(pa.table({"label": labels, "image_id": np.arange(5000)}), path, row_group_size=700)
    assert pq.ParquetFile(path).metadata.num_row_groups == 8
    for chunk_size in (97, 10**6):
        stats = cw.count_label_stats(path, 7, key="label", chunk_size=chunk_size, presence=True)
        assert stats.counts.tolist() == bincount(labels, 7)
        assert stats.num_images == 5000 and stats.num_labels == 5000
        assert stats.image_pixels.tolist() == stats.counts.tolist()  # one label per sample


@needs_arrow
def test_parquet_bool_column(tmp_path):
    flags = np.random.default_rng(2).random(1000) < 0.3
    pq.write_table(pa.table({"positive": flags}), tmp_path / "b.parquet", row_group_size=128)
    assert cw.count_labels(tmp_path / "b.parquet", 2).tolist() == bincount(flags, 2)


@needs_arrow
def test_parquet_list_column_counts_and_presence(tmp_path):
    rows = ragged_rows(3, 2000, 6)
    path = tmp_path / "tokens.parquet"
    pq.write_table(
        pa.table({"tokens": pa.array(rows, pa.list_(pa.uint8())), "n": [len(r) for r in rows]}),
        path,
        row_group_size=300,
    )
    flat = [label for row in rows for label in row]
    for chunk_size in (1, 17, 4096):
        stats = cw.count_label_stats(path, 6, key="tokens", presence=True, chunk_size=chunk_size)
        assert stats.counts.tolist() == bincount(flat, 6)
        assert stats.image_pixels.tolist() == presence_reference(rows, 6)
        assert stats.num_images == 2000 and stats.num_labels == len(flat)


@needs_arrow
def test_parquet_masks_as_fixed_size_and_nested_lists(tmp_path):
    masks = np.random.default_rng(4).integers(0, 4, (300, 8, 8)).astype(np.uint8)
    fixed = pa.FixedSizeListArray.from_arrays(pa.array(masks.reshape(-1)), 64)
    nested = pa.array(masks.tolist(), pa.list_(pa.list_(pa.uint8())))
    pq.write_table(pa.table({"fixed": fixed, "nested": nested}), tmp_path / "m.parquet", row_group_size=64)
    expected = cw.count_label_stats(masks, 4, presence=True)
    for key in ("fixed", "nested"):
        stats = cw.count_label_stats(tmp_path / "m.parquet", 4, key=key, presence=True, chunk_size=200)
        assert torch.equal(stats.counts, expected.counts) and torch.equal(stats.image_pixels, expected.image_pixels), (
            key
        )
        assert stats.num_images == 300


@needs_arrow
def test_parquet_ignore_index_and_progress(tmp_path):
    rows = [[0, 255, 1], [255], [2, 2, 255, 0]]
    pq.write_table(pa.table({"y": pa.array(rows, pa.list_(pa.int32()))}), tmp_path / "y.parquet", row_group_size=2)
    seen = []
    stats = cw.count_label_stats(tmp_path / "y.parquet", 3, ignore_index=255, presence=True, chunk_size=2,
                                 progress=lambda done, total: seen.append((done, total)))  # fmt: skip
    assert stats.counts.tolist() == [2, 1, 2]
    assert stats.image_pixels.tolist() == presence_reference(rows, 3, ignore_index=255)
    assert seen[-1] == (3, 3) and [d for d, _ in seen] == sorted(d for d, _ in seen)


@needs_arrow
def test_parquet_stream_reports_the_file_it_read(tmp_path):
    path = tmp_path / "l.parquet"
    pq.write_table(pa.table({"label": [0, 1, 1]}), path)
    stats = cw.count_label_stats(path, 2)
    info = path.stat()
    assert stats.source_identity == (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


@needs_arrow
def test_compute_class_weights_reads_parquet(tmp_path):
    labels = np.random.default_rng(5).integers(0, 5, 3000)
    pq.write_table(pa.table({"label": labels, "x": np.zeros(3000)}), tmp_path / "d.parquet", row_group_size=1000)
    weights = cw.compute_class_weights(
        tmp_path / "d.parquet", 5, method="balanced", smooth=0, normalize=False, key="label"
    )
    expected = cw.weights_from_counts(torch.tensor(bincount(labels, 5)), "balanced", smooth=0, normalize=False)
    assert torch.allclose(weights, expected)


# ------------------------------------------------------ fingerprints ----


@needs_arrow
def test_fingerprint_of_a_scalar_or_fixed_column_equals_the_arrays(tmp_path):
    rng = np.random.default_rng(6)
    labels = rng.integers(0, 9, 4000).astype(np.int16)
    masks = rng.integers(0, 9, (500, 16)).astype(np.uint8)
    pq.write_table(pa.table({"label": labels}), tmp_path / "s.parquet", row_group_size=999)
    fixed = pa.table({"mask": pa.FixedSizeListArray.from_arrays(pa.array(masks.reshape(-1)), 16)})
    assert (
        cw.count_label_stats(tmp_path / "s.parquet", 9, fingerprint=True, chunk_size=77).fingerprint
        == cw.count_label_stats(labels, 9, fingerprint=True).fingerprint
    )
    assert (
        cw.count_label_stats(fixed, 9, fingerprint=True, chunk_size=50).fingerprint
        == cw.count_label_stats(masks, 9, fingerprint=True).fingerprint
    )


@needs_arrow
def test_fingerprint_of_a_list_column_covers_where_rows_end(tmp_path):
    one = pa.table({"y": pa.array([[0, 1], [2]], pa.list_(pa.int64()))})
    other = pa.table({"y": pa.array([[0], [1, 2]], pa.list_(pa.int64()))})
    first, second = (cw.count_label_stats(t, 3, fingerprint=True) for t in (one, other))
    assert first.counts.tolist() == second.counts.tolist()
    assert first.fingerprint != second.fingerprint
    pq.write_table(one, tmp_path / "one.parquet", row_group_size=1)
    assert (
        cw.count_label_stats(tmp_path / "one.parquet", 3, fingerprint=True, chunk_size=1).fingerprint
        == first.fingerprint
    )


@needs_arrow
def test_shards_of_a_list_column_combine_into_the_fingerprint():
    rows = ragged_rows(7, RAGGED_HASH_ROWS * 2 + 1234, 4, longest=3)
    table = pa.table({"y": pa.array(rows, pa.list_(pa.uint8()))})
    whole = cw.count_label_stats(table, 4, fingerprint=True)
    blocks, samples = [], 0
    for rank in range(3):
        hasher = _LabelHasher()
        stream = open_source(table, key=None, chunk_size=5000, shard=Shard(rank, 3, HASH_BLOCK_BYTES))
        for chunk in stream.chunks:
            hasher.update(chunk.data, chunk.lengths)
            samples += len(chunk.lengths)
        blocks += hasher.finish().blocks
    assert samples == len(rows)
    assert _combine_digests(blocks, "uint8", "ragged", samples) == whole.fingerprint


@given(
    rows=st.lists(st.lists(st.integers(0, 4), max_size=9), min_size=1, max_size=40),
    chunk_size=st.integers(1, 30),
    row_group_size=st.integers(1, 50),
)
@needs_arrow
def test_list_columns_match_a_per_row_reference(rows, chunk_size, row_group_size):
    flat = [label for row in rows for label in row]
    table = pa.table({"y": pa.array(rows, pa.list_(pa.int8()))})
    if not flat:
        with pytest.raises(ClassWeightError, match="Expected at least one label"):
            cw.count_labels(table, 5)
        return
    stats = cw.count_label_stats(table, 5, presence=True, fingerprint=True, chunk_size=chunk_size)
    assert stats.counts.tolist() == bincount(flat, 5)
    assert stats.image_pixels.tolist() == presence_reference(rows, 5)
    assert stats.num_images == len(rows)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "y.parquet"
        pq.write_table(table, path, row_group_size=row_group_size)
        again = cw.count_label_stats(path, 5, presence=True, fingerprint=True, chunk_size=chunk_size)
    assert again.counts.tolist() == stats.counts.tolist() and again.image_pixels.tolist() == stats.image_pixels.tolist()
    assert (
        again.fingerprint
        == cw.count_label_stats(table, 5, fingerprint=True, chunk_size=1000).fingerprint
        == stats.fingerprint
    )


# ----------------------------------------------------- pyarrow.Table ----


@needs_arrow
def test_arrow_table_sliced_and_in_several_chunks():
    rng = np.random.default_rng(8)
    parts = [rng.integers(0, 5, n) for n in (10, 0, 333, 1)]
    table = pa.concat_tables([pa.table({"label": p, "w": np.ones(len(p))}) for p in parts])
    labels = np.concatenate(parts)
    assert table.column("label").num_chunks == 4
    assert cw.count_labels(table, 5, key="label", chunk_size=7).tolist() == bincount(labels, 5)
    assert cw.count_labels(table.slice(5, 300), 5, key="label").tolist() == bincount(labels[5:305], 5)
    batch = table.combine_chunks().to_batches()[0]
    assert cw.count_labels(batch, 5, key="label").tolist() == bincount(labels, 5)


@needs_arrow
def test_sliced_list_columns_read_only_their_rows():
    rows = ragged_rows(9, 200, 5)
    column = pa.array(rows, pa.list_(pa.int64()))
    table = pa.table({"y": column}).slice(37, 100)
    assert cw.count_label_stats(table, 5, presence=True).image_pixels.tolist() == presence_reference(rows[37:137], 5)
    fixed = pa.FixedSizeListArray.from_arrays(pa.array(np.arange(300) % 5), 3)
    assert cw.count_labels(pa.table({"f": fixed}).slice(10, 20), 5).tolist() == bincount(np.arange(30, 90) % 5, 5)


@needs_arrow
def test_arrow_arrays_are_one_column():
    rows = ragged_rows(19, 50, 3)
    chunked = pa.chunked_array([pa.array(rows[:20], pa.list_(pa.int16())), pa.array(rows[20:], pa.list_(pa.int16()))])
    assert cw.count_labels(chunked, 3).tolist() == bincount([t for row in rows for t in row], 3)
    assert cw.count_labels(pa.array([2, 2, 0]), 3).tolist() == [1, 0, 2]
    with pytest.raises(ClassWeightError, match="Expected key=None for an Arrow array"):
        cw.count_labels(pa.array([2, 2, 0]), 3, key="y")


@needs_arrow
def test_dictionary_columns_are_decoded():
    column = pa.array([2, 0, 2, 1]).dictionary_encode()
    assert cw.count_labels(pa.table({"c": column}), 3).tolist() == [1, 1, 2]


# ---------------------------------------------------------- errors ----


@needs_arrow
def test_missing_or_ambiguous_column(tmp_path):
    pq.write_table(pa.table({"label": [0, 1], "image": [0.5, 0.2]}), tmp_path / "t.parquet")
    with pytest.raises(
        ClassWeightError, match=r"key 'lable' not found in '.*t\.parquet'; available columns: 'label', 'image'$"
    ):
        cw.count_labels(tmp_path / "t.parquet", 2, key="lable")
    with pytest.raises(
        ClassWeightError, match="has 2 columns; pass key= to name the label column, one of: 'label', 'image'"
    ):
        cw.count_labels(tmp_path / "t.parquet", 2)
    with pytest.raises(ClassWeightError, match="Expected key= to name a column of the table"):
        cw.count_labels(pa.table({"label": [0, 1]}), 2, key=0)
    twice = pa.Table.from_arrays([pa.array([0, 1]), pa.array([1, 1])], names=["label", "label"])
    with pytest.raises(
        ClassWeightError, match="the table has 2 columns named 'label'; expected one column of that name"
    ):
        cw.count_labels(twice, 2, key="label")
    pq.write_table(twice, tmp_path / "twice.parquet")
    with pytest.raises(ClassWeightError, match="has 2 columns named 'label'"):
        cw.count_labels(tmp_path / "twice.parquet", 2, key="label")


@pytest.mark.parametrize(
    ("column", "message"),
    [
        (lambda: pa.array([0, 1, None, 1]), r"table\['y'\]: row 2 holds a null label"),
        (lambda: pa.array([[0], [1, None]], pa.list_(pa.int64())), r"row 1 holds a null label"),
        (lambda: pa.array([[0], None, [1]], pa.list_(pa.int64())), r"row 1 holds a null label"),
        (lambda: pa.array([[[0]], [[1], [0, None]]], pa.list_(pa.list_(pa.int64()))), r"row 1 holds a null label"),
        (lambda: pa.array([None, None]), r"holds only nulls"),
        (
            lambda: pa.array(["cat", "dog"]),
            r"expected integer labels, but got Arrow type string; map string labels to integers first",
        ),
        (
            lambda: pa.array(["cat", "dog"]).dictionary_encode(),
            r"Arrow type string; map string labels to integers first",
        ),
        (lambda: pa.array([[b"x"]], pa.list_(pa.binary())), r"expected integer labels, but got Arrow type binary"),
        (lambda: pa.array([{"a": 1}]), r"expected integer labels, but got Arrow type struct"),
    ],
)
@needs_arrow
def test_columns_that_are_not_labels(column, message):
    with pytest.raises(ClassWeightError, match=message):
        cw.count_labels(pa.table({"y": column()}), 3)


@needs_arrow
def test_nulls_are_named_by_their_row_in_a_later_row_group(tmp_path):
    values = list(range(3)) * 10
    values[23] = None
    pq.write_table(pa.table({"y": pa.array(values, pa.int8())}), tmp_path / "n.parquet", row_group_size=7)
    with pytest.raises(ClassWeightError, match=r"'.*n\.parquet'\['y'\]: row 23 holds a null label"):
        cw.count_labels(tmp_path / "n.parquet", 3, chunk_size=4)


@needs_arrow
def test_bad_labels_are_named_by_row_and_position(tmp_path):
    pq.write_table(
        pa.table({"y": pa.array([[0, 1], [2], [1, 0, 7]], pa.list_(pa.int64()))}),
        tmp_path / "b.parquet",
        row_group_size=2,
    )
    with pytest.raises(
        ClassWeightError, match=r"\['y'\]: label 7 at row 2, position 2 is out of range for num_classes=3"
    ):
        cw.count_labels(tmp_path / "b.parquet", 3)
    with pytest.raises(ClassWeightError, match=r"label 0.5 at row 1 is not a class index"):
        cw.count_labels(pa.table({"y": [1.0, 0.5]}), 3)


@needs_arrow
@pytest.mark.parametrize("content", [b"", b"PAR1 not really", b"\x00" * 100])
def test_damaged_parquet_files(tmp_path, content):
    (tmp_path / "bad.parquet").write_bytes(content)
    with pytest.raises(ClassWeightError, match=r"could not read '.*bad\.parquet' as a Parquet file: "):
        cw.count_labels(tmp_path / "bad.parquet", 3)


_MUTANTS = """
import collections, json, random, sys
import classweights as cw
path, seed = sys.argv[1], int(sys.argv[2])
raw, rng, seen = bytearray(open(path, "rb").read()), random.Random(seed), collections.Counter()
for _ in range(300):
    mutant = bytearray(raw)
    for _ in range(rng.randint(1, 4)):
        mutant[rng.randrange(len(mutant))] = rng.randrange(256)
    open(path + ".mutant.parquet", "wb").write(mutant)
    for key in ("y", "s"):
        try:
            cw.count_labels(path + ".mutant.parquet", 3, key=key)
            seen["counted"] += 1
        except cw.ClassWeightError as exc:
            seen["one-line error" if "\\n" not in str(exc) else "multi-line error"] += 1
        except Exception as exc:
            seen[type(exc).__name__] += 1
print(json.dumps(seen))
"""


@needs_arrow
@pytest.mark.parametrize(
    ("compression", "seed"), [("snappy", 1), ("zstd", 2)]
)  # seeds whose mutants once aborted pyarrow
def test_damaged_parquet_files_byte_by_byte(tmp_path, compression, seed):
    """Mutated files (1-4 random bytes) give counts or a one-line ClassWeightError, and the process survives.

    Run in a child process: a crash inside pyarrow would take the test process with it. (pyarrow 26
    aborts on some damaged footers when their column-chunk statistics are read, so none are read.)
    """
    rows = pa.array([[0, 1, 2], [1], []] * 50, pa.list_(pa.int8()))
    pq.write_table(
        pa.table({"y": rows, "s": np.arange(150) % 3}),
        tmp_path / "f.parquet",
        row_group_size=40,
        compression=compression,
    )
    out = subprocess.run(
        [sys.executable, "-c", _MUTANTS, str(tmp_path / "f.parquet"), str(seed)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    seen = json.loads(out.stdout)
    assert set(seen) <= {"counted", "one-line error"} and sum(seen.values()) == 600, seen
    assert seen["one-line error"] > 100 and seen["counted"] > 10  # the mutants reach both outcomes


def test_parquet_paths_that_are_missing_or_not_files(tmp_path):
    with pytest.raises(
        ClassWeightError, match=r"Expected an existing \.parquet file, but '.*nope\.parquet' does not exist"
    ):
        cw.count_labels(tmp_path / "nope.parquet", 3)
    (tmp_path / "dir.parquet").mkdir()
    with pytest.raises(ClassWeightError, match=r"Expected a \.parquet file, but '.*dir\.parquet' is a directory"):
        cw.count_labels(tmp_path / "dir.parquet", 3)


@needs_arrow
def test_read_labels_refuses_parquet(tmp_path):
    pq.write_table(pa.table({"y": [0, 1]}), tmp_path / "r.parquet")
    with pytest.raises(ClassWeightError, match="Expected a path to a .npy or .npz file, but got the Parquet file"):
        cw.read_labels(tmp_path / "r.parquet")


def test_missing_pyarrow_is_a_one_line_hint(tmp_path, monkeypatch):
    (tmp_path / "h.parquet").write_bytes(b"PAR1")  # never parsed: pyarrow is missing
    real_import = builtins.__import__

    def without_pyarrow(name, *args, **kwargs):
        if name == "pyarrow" or name.startswith("pyarrow."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_pyarrow)
    with pytest.raises(ClassWeightError) as info:
        cw.count_labels(tmp_path / "h.parquet", 2)
    assert (
        str(info.value)
        == f'reading {str(tmp_path / "h.parquet")!r} needs pyarrow, which is not installed: pip install "classweights[arrow]"'
    )


# ------------------------------------------------------------- the CLI ----


@needs_arrow
def test_cli_weights_compute_reads_parquet_and_caches_by_its_content(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from arcvae import weight_cache
    from arcvae.cli import app

    monkeypatch.setattr(weight_cache, "QUIET_NS", -(10**12))  # take the file as settled at once: notes are written
    labels = np.random.default_rng(10).integers(0, 5, 4000)
    path = tmp_path / "data.parquet"
    pq.write_table(pa.table({"label": labels, "image": np.zeros(4000)}), path, row_group_size=500)
    runner = CliRunner()
    args = ["weights", "compute", str(path), "--key", "label", "--num-classes", "5"]
    first = runner.invoke(app, [*args, "--json"], catch_exceptions=False)
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout)["counts"] == bincount(labels, 5)
    again = runner.invoke(app, args, catch_exceptions=False)
    assert (
        again.exit_code == 0
        and "Loaded from the cache" in again.stdout
        and "(4,000 samples, 4,000 labels)" in again.stdout
    )
    pq.write_table(pa.table({"label": labels[:100], "image": np.zeros(100)}), path)  # new content: counted anew
    third = runner.invoke(app, [*args, "--json"], catch_exceptions=False)
    assert json.loads(third.stdout)["counts"] == bincount(labels[:100], 5)
    missing_key = runner.invoke(app, ["weights", "compute", str(path), "--num-classes", "5"])
    assert (
        missing_key.exit_code == 1
        and "pass key= to name the label column, one of: 'label', 'image'" in missing_key.stderr
    )


@needs_arrow
def test_count_multilabel_reads_multi_hot_columns(tmp_path):
    targets = np.random.default_rng(21).random((300, 5)) < 0.3
    fixed = pa.FixedSizeListArray.from_arrays(pa.array(targets.reshape(-1)), 5)
    lists = pa.array(targets.tolist(), pa.list_(pa.bool_()))
    pq.write_table(pa.table({"fixed": fixed, "lists": lists}), tmp_path / "t.parquet", row_group_size=64)
    for key in ("fixed", "lists"):
        counts = cw.count_multilabel(tmp_path / "t.parquet", 5, key=key, chunk_size=50)
        assert counts.positives.tolist() == targets.sum(axis=0).tolist() and counts.num_samples == 300, key
    ragged = pa.table({"y": pa.array([[1, 0, 1, 0, 0], [1, 1, 0]], pa.list_(pa.int8()))})
    with pytest.raises(
        ClassWeightError, match=r"table\['y'\]: expected multi-hot rows of num_classes=5 values, but a row holds 3"
    ):
        cw.count_multilabel(ragged, 5)


@needs_arrow
def test_sample_weights_of_table_columns():
    labels = np.random.default_rng(23).integers(0, 4, (60, 3))
    fixed = pa.table({"y": pa.FixedSizeListArray.from_arrays(pa.array(labels.reshape(-1)), 3)})
    lists = pa.table({"y": pa.array(labels.tolist(), pa.list_(pa.int64()))})
    expected = cw.sample_weights(labels, 4, method="balanced")
    assert torch.allclose(cw.sample_weights(fixed, 4, method="balanced"), expected)
    assert torch.allclose(cw.sample_weights(lists, 4, method="balanced"), expected)
    assert torch.allclose(cw.sample_weights(pa.table({"y": labels[:, 0]}), 4), cw.sample_weights(labels[:, 0], 4))
    ragged = pa.table({"y": pa.array([[0, 1], [2], [1, 1]], pa.list_(pa.int64()))})
    with pytest.raises(
        ClassWeightError,
        match=r"table\['y'\]: expected samples of one length for per-sample weights, but its rows hold 2 and 1 labels",
    ):
        cw.sample_weights(ragged, 3)
    with pytest.raises(ClassWeightError, match=r"table\['y'\]: label 7 at row 1, position 0 is out of range"):
        cw.sample_weights(pa.table({"y": pa.array([[0], [7]], pa.list_(pa.int64()))}), 3)


def test_count_multilabel_of_zarr_and_dask_arrays():
    zarr = pytest.importorskip("zarr")
    da = pytest.importorskip("dask.array")
    targets = (np.random.default_rng(22).random((40, 3)) < 0.5).astype(np.uint8)
    stored = zarr.create_array(store={}, shape=targets.shape, chunks=(16, 3), dtype="uint8")
    stored[:] = targets
    assert cw.count_multilabel(stored, 3).positives.tolist() == targets.sum(axis=0).tolist()
    with pytest.raises(ClassWeightError, match=r"expected samples of shape \[4\]"):
        cw.count_multilabel(stored, 4)
    import dask

    with dask.config.set(scheduler="threads"):
        lazy = da.from_array(targets, chunks=(7, 3))
        assert cw.count_multilabel(lazy, 3).positives.tolist() == targets.sum(axis=0).tolist()
        assert cw.count_multilabel(lazy, 3).num_samples == 40
        assert torch.equal(cw.pos_weight(lazy, 3), cw.pos_weight(targets, 3))
        with pytest.raises(ClassWeightError, match=r"dask array: expected samples of shape \[4\]"):
            cw.count_multilabel(lazy, 4)
        bad = targets.copy()
        bad[33, 1] = 2
        with pytest.raises(
            ClassWeightError,
            match="dask array: expected multi-hot targets holding only 0 and 1, but sample 33, class 1 holds 2",
        ):
            cw.count_multilabel(da.from_array(bad, chunks=(7, 3)), 3)


# ------------------------------------------------- Hugging Face datasets ----


@pytest.fixture(scope="module")
def hf():
    return pytest.importorskip("datasets")


def test_hf_dataset_scalar_and_list_columns(hf):
    rng = np.random.default_rng(11)
    labels = rng.integers(0, 4, 500)
    tokens = ragged_rows(12, 500, 4)
    dataset = hf.Dataset.from_dict({"label": labels, "tokens": tokens, "text": ["x"] * 500})
    assert cw.count_labels(dataset, 4, key="label", chunk_size=64).tolist() == bincount(labels, 4)
    stats = cw.count_label_stats(dataset, 4, key="tokens", presence=True, chunk_size=100)
    assert stats.counts.tolist() == bincount([t for row in tokens for t in row], 4)
    assert stats.image_pixels.tolist() == presence_reference(tokens, 4)
    with pytest.raises(
        ClassWeightError, match=r"dataset\['text'\]: expected integer labels, but got Arrow type string"
    ):
        cw.count_labels(dataset, 4, key="text")
    with pytest.raises(
        ClassWeightError, match="key 'labels' not found in the dataset; available columns: 'label', 'tokens', 'text'"
    ):
        cw.count_labels(dataset, 4, key="labels")


def test_hf_dataset_after_select_and_shuffle_counts_its_own_rows(hf):
    labels = np.arange(1000) % 7
    dataset = hf.Dataset.from_dict({"label": labels}).shuffle(seed=0).select(range(123))
    expected = bincount(np.asarray(dataset["label"]), 7)
    assert expected != bincount(labels[:123], 7)  # the rows are not the first 123
    stats = cw.count_label_stats(dataset, 7, chunk_size=10)
    assert stats.counts.tolist() == expected and stats.num_images == 123


def test_hf_dataset_features_for_masks(hf):
    masks = np.random.default_rng(13).integers(0, 3, (40, 4, 4)).astype(np.uint8)
    features = hf.Features({"mask": hf.Array2D((4, 4), "uint8"), "label": hf.ClassLabel(names=["a", "b", "c"]),
                            "row": hf.Sequence(hf.Value("int8"), length=4)})  # fmt: skip
    dataset = hf.Dataset.from_dict(
        {"mask": masks, "label": [i % 3 for i in range(40)], "row": masks[:, 0].tolist()}, features=features
    )
    expected = cw.count_label_stats(masks, 3, presence=True)
    stats = cw.count_label_stats(dataset, 3, key="mask", presence=True, chunk_size=50)
    assert torch.equal(stats.counts, expected.counts) and torch.equal(stats.image_pixels, expected.image_pixels)
    assert cw.count_labels(dataset, 3, key="label").tolist() == bincount(np.arange(40) % 3, 3)
    assert cw.count_labels(dataset, 3, key="row").tolist() == bincount(masks[:, 0], 3)


# --------------------------------------------------------------- zarr ----


def test_zarr_array_read_in_chunk_aligned_blocks(monkeypatch):
    zarr = pytest.importorskip("zarr")
    labels = np.random.default_rng(14).integers(0, 6, (103, 5, 4)).astype(np.uint8)
    array = zarr.create_array(store={}, shape=labels.shape, chunks=(10, 5, 4), dtype="uint8")
    array[:] = labels
    reads = []
    real_getitem = type(array).__getitem__

    def spy(self, selection):
        reads.append(selection)
        return real_getitem(self, selection)

    monkeypatch.setattr(type(array), "__getitem__", spy)
    expected = cw.count_label_stats(labels, 6, presence=True, fingerprint=True)
    for chunk_size in (1, 20 * 45, 10**6):
        reads.clear()
        stats = cw.count_label_stats(array, 6, presence=True, fingerprint=True, chunk_size=chunk_size)
        assert torch.equal(stats.counts, expected.counts) and torch.equal(stats.image_pixels, expected.image_pixels)
        assert (stats.fingerprint, stats.num_images) == (expected.fingerprint, 103)
        starts = [s.start for s in reads]
        stops = [s.stop for s in reads]
        assert starts[0] == 0 and stops[-1] == 103 and starts[1:] == stops[:-1]
        assert all(start % 10 == 0 for start in starts)  # every read begins on a chunk boundary
    assert len(reads) == 1  # 10**6 labels per chunk: one read of the whole array

    sharded = zarr.create_array(store={}, shape=labels.shape, chunks=(5, 5, 4), shards=(20, 5, 4), dtype="uint8")
    sharded[:] = labels
    reads.clear()
    assert torch.equal(cw.count_labels(sharded, 6, chunk_size=1), expected.counts)
    assert [s.start for s in reads] == list(range(0, 103, 20))  # whole shards: each is decoded once


def test_zarr_array_errors():
    zarr = pytest.importorskip("zarr")
    array = zarr.create_array(store={}, shape=(4,), chunks=(2,), dtype="int16")
    array[:] = [0, 1, 9, 1]
    with pytest.raises(
        ClassWeightError, match=r"zarr array: label 9 at flat index 2 is out of range for num_classes=3"
    ):
        cw.count_labels(array, 3)
    complex_array = zarr.create_array(store={}, shape=(2,), chunks=(2,), dtype="complex64")
    with pytest.raises(ClassWeightError, match="expected integer labels, but got an array of dtype complex64"):
        cw.count_labels(complex_array, 3)


# --------------------------------------------------------------- Dask ----


@pytest.fixture(scope="module")
def dask_array():
    return pytest.importorskip("dask.array")


def test_dask_array_on_the_threaded_scheduler(dask_array):
    import dask

    labels = np.random.default_rng(15).integers(0, 9, (120, 10, 6)).astype(np.uint8)
    calls = []

    def threaded(*args, **kwargs):
        calls.append(1)
        return dask.threaded.get(*args, **kwargs)

    with dask.config.set(scheduler=threaded):
        for chunks in [(50, 10, 6), (7, 3, 6), (120, 10, 1)]:
            array = dask_array.from_array(labels, chunks=chunks)
            stats = cw.count_label_stats(array, 9, presence=True)
            expected = cw.count_label_stats(labels, 9, presence=True)
            assert stats.counts.tolist() == bincount(labels, 9)
            assert torch.equal(stats.image_pixels, expected.image_pixels), chunks
            assert (stats.num_images, stats.num_labels) == (120, labels.size)
    assert len(calls) == 3  # one computation each, on the scheduler in use


@given(
    shape=st.lists(st.integers(1, 6), min_size=1, max_size=3),
    data=st.data(),
    ignore=st.sampled_from([None, 0, 3]),
)
def test_dask_blocks_of_any_shape_match_the_in_memory_count(dask_array, shape, data, ignore):
    import dask

    da = dask_array

    labels = np.asarray(
        data.draw(st.lists(st.integers(0, 3), min_size=int(np.prod(shape)), max_size=int(np.prod(shape))))
    ).reshape(shape)
    chunks = tuple(data.draw(st.integers(1, n)) for n in shape)
    expected = labels.reshape(-1)[labels.reshape(-1) != ignore] if ignore is not None else labels.reshape(-1)
    with dask.config.set(scheduler="sync"):
        if expected.size == 0:
            with pytest.raises(ClassWeightError, match="equals ignore_index"):
                cw.count_labels(da.from_array(labels, chunks=chunks), 4, ignore_index=ignore)
            return
        stats = cw.count_label_stats(da.from_array(labels, chunks=chunks), 4, ignore_index=ignore, presence=True)
    reference = cw.count_label_stats(labels, 4, ignore_index=ignore, presence=True)
    assert stats.counts.tolist() == bincount(expected, 4)
    assert torch.equal(stats.image_pixels, reference.image_pixels)
    assert (stats.num_images, stats.num_labels) == (reference.num_images, reference.num_labels)


def test_dask_array_options(dask_array):
    import dask

    labels = np.array([[0, 255, 1], [1, 1, 255]], dtype=np.uint8)
    array = dask_array.from_array(labels, chunks=(1, 2))
    seen = []
    with dask.config.set(scheduler="threads"):
        stats = cw.count_label_stats(
            array, 2, ignore_index=255, presence=True, progress=lambda d, t: seen.append((d, t))
        )
        assert stats.counts.tolist() == [1, 3] and stats.image_pixels.tolist() == [2, 4]
        assert seen == [(2, 2)]
        assert cw.count_labels(dask_array.from_array(np.array(3.0)), 4).tolist() == [0, 0, 0, 1]
        weights = cw.compute_class_weights(array, 2, method="median_frequency", ignore_index=255)
        assert torch.allclose(weights, cw.compute_class_weights(labels, 2, method="median_frequency", ignore_index=255))


def test_dask_array_errors(dask_array):
    import dask

    labels = np.zeros((60, 4), dtype=np.int32)
    labels[47, 3] = 11
    array = dask_array.from_array(labels, chunks=(20, 2))
    with dask.config.set(scheduler="threads"):
        with pytest.raises(ClassWeightError) as info:
            cw.count_labels(array, 10)
        assert (
            str(info.value)
            == "dask array block (2, 1): label 11 at index (47, 3) is out of range for num_classes=10 (expected 0 <= label < 10)"
        )
        assert info.value.__cause__ is None
        with pytest.raises(ClassWeightError, match=r"label 0.5 at index \(1,\) is not a class index"):
            cw.count_labels(dask_array.from_array(np.array([1.0, 0.5])), 3)
        with pytest.raises(ClassWeightError, match=r"dask array: label 11 at .* is out of range"):
            cw.count_label_stats(array, 10, fingerprint=True)  # read here in row blocks
        with pytest.raises(
            ClassWeightError, match="Expected an initialised torch.distributed process group for distributed=True"
        ):
            cw.count_labels(array, 12, distributed=True)
        with pytest.raises(ClassWeightError, match="Expected key=None for a Dask array"):
            cw.count_labels(array, 12, key="label")
        assert cw.count_labels(array, 12, device="cpu")[11] == 1
        with pytest.raises(ClassWeightError, match="Expected `device` to be a device that holds data"):
            cw.count_labels(array, 12, device="meta")
        with pytest.raises(ClassWeightError, match="dask array: expected integer labels, but got dtype object"):
            cw.count_labels(dask_array.from_array(np.array([object()] * 2), chunks=1), 3)
        with pytest.raises(ClassWeightError, match="Expected at least one label, but dask array is empty"):
            cw.count_labels(dask_array.zeros((0, 3), chunks=1), 3)
        unknown = dask_array.from_array(labels, chunks=(20, 4))
        unknown = unknown[unknown[:, 0] == 0]
        with pytest.raises(
            ClassWeightError, match=r"expected known chunk sizes, .*call .compute_chunk_sizes\(\) first"
        ):
            cw.count_labels(unknown, 12)


def test_dask_array_read_here_in_row_blocks_gives_what_memory_gives(dask_array):
    """Fingerprints, per-sample weights and the sampler read a Dask array into this process, block by block."""
    import dask

    labels = np.random.default_rng(23).integers(0, 5, (130, 6, 4)).astype(np.uint8)
    labels[labels == 4] = 255
    lazy = dask_array.from_array(labels, chunks=(17, 3, 4))
    with dask.config.set(scheduler="threads"):
        stats = cw.count_label_stats(lazy, 4, fingerprint=True, ignore_index=255, presence=True)
        reference = cw.count_label_stats(labels, 4, fingerprint=True, ignore_index=255, presence=True)
        assert stats.fingerprint == reference.fingerprint and torch.equal(stats.counts, reference.counts)
        assert torch.equal(stats.image_pixels, reference.image_pixels) and stats.num_images == 130
        for reduce in ("mean", "max"):
            assert torch.equal(
                cw.sample_weights(lazy, 4, ignore_index=255, reduce=reduce),
                cw.sample_weights(labels, 4, ignore_index=255, reduce=reduce),
            )
        single = dask_array.from_array(labels[:, 0, 0].astype(np.int64) % 255, chunks=40)
        drawn = list(cw.make_sampler(single, 4, num_samples=50, generator=torch.Generator().manual_seed(3)))
        again = list(cw.make_sampler(labels[:, 0, 0].astype(np.int64) % 255, 4, num_samples=50,
                                     generator=torch.Generator().manual_seed(3)))  # fmt: skip
        assert drawn == again
        with pytest.raises(ClassWeightError, match="Expected key=None for a Dask array"):
            cw.sample_weights(lazy, 4, key="y")
        unknown = lazy[lazy[:, 0, 0] == 0]
        with pytest.raises(ClassWeightError, match=r"expected known chunk sizes"):
            cw.sample_weights(unknown, 4)


def test_dask_array_on_the_process_scheduler(dask_array):
    import dask

    labels = np.random.default_rng(20).integers(0, 4, (90, 5)).astype(np.int64)
    with dask.config.set(scheduler="processes", num_workers=2):
        stats = cw.count_label_stats(dask_array.from_array(labels, chunks=(30, 5)), 4, presence=True)
    assert stats.counts.tolist() == bincount(labels, 4)
    assert stats.image_pixels.tolist() == presence_reference(labels, 4)


@pytest.fixture(scope="module")
def cluster_client(dask_array):
    """A local ``distributed`` cluster of two worker processes, started once for this module."""
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        distributed.Client(cluster, set_as_default=False) as client,
    ):
        yield client


def test_dask_array_on_a_distributed_cluster(dask_array, cluster_client):
    import dask
    from distributed import get_task_stream

    labels = np.random.default_rng(16).integers(0, 5, (200, 16, 16)).astype(np.uint8)
    array = dask_array.from_array(labels, chunks=(30, 16, 8))
    with dask.config.set(scheduler=cluster_client), get_task_stream(cluster_client) as tasks:
        stats = cw.count_label_stats(array, 5, presence=True)
    assert stats.counts.tolist() == bincount(labels, 5)
    assert torch.equal(stats.image_pixels, cw.count_label_stats(labels, 5, presence=True).image_pixels)
    assert len(tasks.data) >= array.npartitions  # every block was counted by a worker of the cluster
    assert {task["worker"] for task in tasks.data} <= set(cluster_client.scheduler_info()["workers"])

    broken = labels.copy()
    broken[170, 2, 9] = 5
    with dask.config.set(scheduler=cluster_client), pytest.raises(ClassWeightError) as info:
        cw.count_labels(dask_array.from_array(broken, chunks=(30, 16, 8)), 5)
    assert (
        str(info.value)
        == "dask array block (5, 0, 1): label 5 at index (170, 2, 9) is out of range for num_classes=5 (expected 0 <= label < 5)"
    )


# -------------------------------------------------- torch.distributed ----


@needs_arrow
@pytest.mark.slow
def test_distributed_ranks_read_their_shards_of_tables_and_zarr(tmp_path):
    """Two gloo ranks (started as torchrun starts them): global counts and the single-process fingerprint on every rank."""

    rng = np.random.default_rng(17)
    labels = rng.integers(0, 6, 10_001)
    rows = ragged_rows(18, RAGGED_HASH_ROWS * 2 + 5, 6, longest=4)  # three fingerprint blocks of rows: split 1 + 2
    masks = rng.integers(0, 6, (99, 4, 4)).astype(np.uint8)
    pq.write_table(
        pa.table({"label": labels, "w": np.ones(len(labels))}), tmp_path / "scalar.parquet", row_group_size=999
    )
    pq.write_table(
        pa.table({"tokens": pa.array(rows, pa.list_(pa.uint8()))}), tmp_path / "lists.parquet", row_group_size=10_000
    )
    expected = {
        "parquet scalar": cw.count_label_stats(labels, 6, presence=True, fingerprint=True),
        "parquet list": cw.count_label_stats(tmp_path / "lists.parquet", 6, presence=True, fingerprint=True),
        "table list": cw.count_label_stats(tmp_path / "lists.parquet", 6, presence=True, fingerprint=True),
    }
    try:
        import zarr

        array = zarr.open_array(tmp_path / "masks.zarr", mode="w", shape=masks.shape, chunks=(10, 4, 4), dtype="uint8")
        array[:] = masks
        expected["zarr"] = cw.count_label_stats(masks, 6, presence=True, fingerprint=True)
    except ImportError:
        pass
    run_ranks(Path(__file__).with_name("dist_tables_worker.py"), str(tmp_path))  # two ranks of a gloo group
    for rank in range(2):
        got = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert set(got) == set(expected)
        for name, want in expected.items():
            assert "error" not in got[name], (name, got[name])
            assert (
                got[name]["counts"] == want.counts.tolist() and got[name]["image_pixels"] == want.image_pixels.tolist()
            ), name
            assert (got[name]["num_images"], got[name]["num_labels"], got[name]["fingerprint"]) == (
                want.num_images,
                want.num_labels,
                want.fingerprint,
            ), name
