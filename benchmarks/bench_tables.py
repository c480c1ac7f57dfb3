"""Tables, zarr and Dask sources: count_labels against reading everything at once and counting with numpy.

Run: python benchmarks/bench_tables.py   (needs pyarrow, dask[array] and zarr)
Data: 80,000 x 16 x 16 uint8 labels, ~93% zeros (the shared corpus if present),
stored as a Parquet column of one grid per row (fixed-size lists, and plain
lists), in row groups of 8,192 rows; as a zarr array in chunks of 4,096 grids;
as a Dask array in blocks of 10,000 grids.

Baselines, measured in the same run:
- Parquet: ``pq.read_table(columns=[key])`` + ``np.bincount`` of the whole
  column, and pyarrow's own decoding of the column batch by batch (a floor:
  no counting at all). Targets: time <= 1.1x the whole-column read, <= 1.25x
  the decoding alone. Memory: the peak of pyarrow's memory pool (each in a
  fresh process) for the file and for one 4x as long; count_labels' peak must
  not grow with the file (<= 1.1x), while the whole-column read's does.
- zarr: ``np.bincount(z[:])``. Target: time <= 1.0x.
- Dask (threaded scheduler): ``da.bincount(x.ravel()).compute()``. Target: time <= 1.0x.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from _common import arc_like_labels, best_of, machine, table, verdict

import classweights

HERE = Path(__file__).resolve().parent


def write_files(folder: Path, labels: np.ndarray, name: str = "grids.parquet") -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    flat = pa.array(labels.reshape(-1))
    per_row = labels[0].size
    fixed = pa.FixedSizeListArray.from_arrays(flat, per_row)
    lists = pa.ListArray.from_arrays(pa.array(np.arange(0, labels.size + 1, per_row, dtype=np.int32)), flat)
    table_ = pa.table({"grid_id": np.arange(len(labels)), "mask": fixed, "mask_list": lists})
    pq.write_table(table_, folder / name, row_group_size=8192)


def whole_column(path: Path, key: str) -> np.ndarray:
    import pyarrow.parquet as pq

    column = pq.read_table(path, columns=[key]).column(key).combine_chunks()
    return np.bincount(column.flatten().to_numpy(), minlength=10)


def decode_only(path: Path, key: str) -> int:
    import pyarrow.parquet as pq

    rows = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=16384, columns=[key]):
        rows += batch.num_rows
    return rows


def peak_arrow_bytes(how: str, path: Path, key: str) -> int:
    """Peak bytes of pyarrow's memory pool while one reader runs, in a fresh process (the peak cannot be reset)."""
    code = (f"import sys, json; sys.path.insert(0, {str(HERE)!r}); import pyarrow as pa, bench_tables as b, classweights; "
            f"from pathlib import Path; p = Path({str(path)!r}); "
            f"(classweights.count_labels(p, 10, key={key!r}) if {how!r} == 'count_labels' else b.whole_column(p, {key!r})); "
            "print(json.dumps(pa.default_memory_pool().max_memory()))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(json.loads(out.stdout))


def main() -> None:
    import dask
    import dask.array as da
    import zarr

    labels = arc_like_labels()
    expected = np.bincount(labels.reshape(-1), minlength=10)
    n = labels.size
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        path, longer = Path(folder) / "grids.parquet", Path(folder) / "grids4x.parquet"
        write_files(Path(folder), labels)
        write_files(Path(folder), np.concatenate([labels] * 4), longer.name)
        for key in ("mask", "mask_list"):
            assert classweights.count_labels(path, 10, key=key).tolist() == expected.tolist()
            ours = best_of(lambda key=key: classweights.count_labels(path, 10, key=key), repeats=5)
            whole = best_of(lambda key=key: whole_column(path, key), repeats=5)
            decode = best_of(lambda key=key: decode_only(path, key), repeats=5)
            peaks = {
                (how, file): peak_arrow_bytes(how, file, key) / 2**20
                for how in ("count_labels", "whole")
                for file in (path, longer)
            }
            growth = peaks["count_labels", longer] / peaks["count_labels", path]
            name = f"Parquet, {'fixed-size lists' if key == 'mask' else 'lists'}"
            rows += [
                [f"{name}: count_labels", f"{ours * 1e3:.0f} ms", f"{n / ours / 1e6:.0f}", "", "", ""],
                ["  vs read_table + bincount", f"{whole * 1e3:.0f} ms", f"{n / whole / 1e6:.0f}", f"{ours / whole:.2f}x time", "<= 1.1x", verdict(ours / whole, 1.1, higher_is_better=False)],
                ["  vs decoding alone", f"{decode * 1e3:.0f} ms", f"{n / decode / 1e6:.0f}", f"{ours / decode:.2f}x time", "<= 1.25x", verdict(ours / decode, 1.25, higher_is_better=False)],
                [(f"  peak Arrow memory, 1x -> 4x the rows: {peaks['count_labels', path]:.0f} -> {peaks['count_labels', longer]:.0f} MiB "
                 f"(read_table: {peaks['whole', path]:.0f} -> {peaks['whole', longer]:.0f} MiB)"), "", "", f"{growth:.2f}x memory", "<= 1.1x",
                 verdict(growth, 1.1, higher_is_better=False)],
            ]  # fmt: skip

        stored = zarr.create_array(
            store=str(Path(folder) / "grids.zarr"), shape=labels.shape, chunks=(4096, 16, 16), dtype="uint8"
        )
        stored[:] = labels
        assert classweights.count_labels(stored, 10).tolist() == expected.tolist()
        ours = best_of(lambda: classweights.count_labels(stored, 10), repeats=5)
        whole = best_of(lambda: np.bincount(stored[:].reshape(-1), minlength=10), repeats=5)
        rows += [
            ["zarr: count_labels", f"{ours * 1e3:.0f} ms", f"{n / ours / 1e6:.0f}", "", "", ""],
            ["  vs np.bincount(z[:])", f"{whole * 1e3:.0f} ms", f"{n / whole / 1e6:.0f}", f"{ours / whole:.2f}x time", "<= 1.0x", verdict(ours / whole, 1.0, higher_is_better=False)],
        ]  # fmt: skip

    lazy = da.from_array(labels, chunks=(10_000, 16, 16))
    with dask.config.set(scheduler="threads"):
        assert classweights.count_labels(lazy, 10).tolist() == expected.tolist()
        ours = best_of(lambda: classweights.count_labels(lazy, 10), repeats=5)
        theirs = best_of(lambda: da.bincount(lazy.reshape(-1), minlength=10).compute(), repeats=5)
    rows += [
        ["Dask (threads): count_labels", f"{ours * 1e3:.0f} ms", f"{n / ours / 1e6:.0f}", "", "", ""],
        ["  vs da.bincount(x.ravel())", f"{theirs * 1e3:.0f} ms", f"{n / theirs / 1e6:.0f}", f"{ours / theirs:.2f}x time", "<= 1.0x", verdict(ours / theirs, 1.0, higher_is_better=False)],
    ]  # fmt: skip

    import dask as dask_module
    import pyarrow as pa

    print(machine())
    print(f"pyarrow {pa.__version__}, zarr {zarr.__version__}, dask {dask_module.__version__}")
    print(f"labels: {labels.shape} {labels.dtype}, {n:,} in all, {float((labels == 0).mean()):.2%} zeros")
    print(table(rows, ["source", "time", "M labels/s", "count_labels vs baseline", "target", ""]))


if __name__ == "__main__":
    main()
