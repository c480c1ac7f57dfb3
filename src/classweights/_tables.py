"""Read one label column of a Parquet file, an Arrow table or a Hugging Face dataset, in record batches.

A column is scalar (one label per row) or list-valued (a label sequence, or a
flattened label map, per row; lists may nest). Each batch's column becomes
numpy arrays without a loop over rows: the leaf values (zero-copy where Arrow
allows it) and, for lists, the row offsets. Rows of one fixed length (scalar
and fixed-size list columns) become ``[rows, length]`` chunks like an array's;
rows of any length (list columns) become ragged chunks with their lengths.

pyarrow is imported only here, and only when such a source is read.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._checks import shown_names
from ._errors import ClassWeightError
from ._npfiles import _SourceFile
from ._stream import RAGGED_HASH_ROWS, Chunk, Shard, Stream, _one_line, _rows_per_chunk, _shard_rows, check_label_dtype

INSTALL_HINT = 'pip install "classweights[arrow]"'
_FIRST_RAGGED_BATCH = 1024  # rows of the first batch of a list column, before its labels per row are known


def is_arrow_table(source: Any) -> bool:
    """True for a ``pyarrow.Table``, ``RecordBatch``, ``ChunkedArray`` or ``Array`` (without importing pyarrow)."""
    pa = sys.modules.get("pyarrow")
    return pa is not None and isinstance(source, (pa.Table, pa.RecordBatch, pa.ChunkedArray, pa.Array))


def is_hf_dataset(source: Any) -> bool:
    """True for a Hugging Face ``datasets.Dataset`` (without importing datasets)."""
    datasets = sys.modules.get("datasets")
    return datasets is not None and isinstance(source, getattr(datasets, "Dataset", ()))


def _pyarrow(what: str) -> Any:
    try:
        import pyarrow as pa
        import pyarrow.parquet
    except ImportError:
        raise ClassWeightError(f"reading {what} needs pyarrow, which is not installed: {INSTALL_HINT}") from None
    return pa


# ------------------------------------------------------------- sources ----


def table_stream(table: Any, key: str | int | None, chunk_size: int, shard: Shard | None) -> Stream:
    """Stream column ``key`` of a ``pyarrow.Table`` or ``RecordBatch``, or an Arrow array that is the column.

    The table's chunks are sliced, never copied.
    """
    pa = _pyarrow("an Arrow table")
    if isinstance(table, (pa.Array, pa.ChunkedArray)):
        if key is not None:
            raise ClassWeightError(f"Expected key=None for an Arrow array (it is one column), but got {key!r}")
        column, where = table, "arrow array"
    else:
        name = _pick_column(table.schema.names, key, "the table")
        column, where = table.column(name), f"table[{name!r}]"
    layout = _Layout.of(column.type, where)
    lo, hi = layout.rows(len(column), shard)
    seen = _Seen()
    batches = ((column.slice(a, b - a), a) for a, b in _row_ranges(lo, hi, layout, chunk_size, seen))
    return Stream(_column_chunks(batches, chunk_size, where, seen), hi - lo, where, sharded=shard is not None)


def dataset_stream(dataset: Any, key: str | int | None, chunk_size: int, shard: Shard | None) -> Stream:
    """Stream column ``key`` of a ``datasets.Dataset`` through its Arrow format (an index mapping, as left
    by ``select`` or ``shuffle``, is honoured: rows come in the dataset's order)."""
    _pyarrow("a Hugging Face dataset")
    name = _pick_column(list(dataset.column_names), key, "the dataset")
    where = f"dataset[{name!r}]"
    layout = _Layout.of(dataset.data.schema.field(name).type, where)
    view = dataset.with_format("arrow", columns=[name])
    lo, hi = layout.rows(len(dataset), shard)
    seen = _Seen()
    batches = ((view[a:b].column(0), a) for a, b in _row_ranges(lo, hi, layout, chunk_size, seen))
    return Stream(_column_chunks(batches, chunk_size, where, seen), hi - lo, where, sharded=shard is not None)


def parquet_stream(
    file: _SourceFile, path: Path, key: str | int | None, chunk_size: int, shard: Shard | None
) -> Stream:
    """Stream column ``key`` of an open Parquet file, record batch by record batch.

    pyarrow reads through the descriptor that ``_open_path`` checked, so the
    file counted is the file whose identity the stream reports; only the row
    groups holding this shard's rows are read.
    """
    where = f"{str(path)!r}"
    pa = _pyarrow(where)
    try:
        parquet = pa.parquet.ParquetFile(file.handle)
        metadata = parquet.metadata
        sizes = [metadata.row_group(g).num_rows for g in range(metadata.num_row_groups)]
        schema = parquet.schema_arrow
    except (pa.ArrowException, OSError, ValueError, TypeError, IndexError, KeyError) as exc:
        raise ClassWeightError(f"could not read {where} as a Parquet file: {_one_line(exc)}") from None
    name = _pick_column(schema.names, key, where)
    where = f"{where}[{name!r}]"
    layout = _Layout.of(schema.field(name).type, where)
    lo, hi = layout.rows(sum(sizes), shard)
    starts = np.cumsum([0, *sizes]).tolist()
    groups = [g for g, size in enumerate(sizes) if size and starts[g] < hi and starts[g] + size > lo]
    seen = _Seen()

    def read(chosen: list[int], batch_rows: int, first: int) -> Iterator[tuple[Any, int]]:
        """The rows of the row groups ``chosen`` from row ``first`` on (and within this shard), ``batch_rows`` at a time."""
        row = starts[chosen[0]]
        for batch in parquet.iter_batches(
            batch_size=batch_rows, row_groups=chosen, columns=[name], use_pandas_metadata=False
        ):
            a, b = max(lo, first, row), min(hi, row + batch.num_rows)
            if b > a:
                yield batch.column(0).slice(a - row, b - a), a
            row += batch.num_rows

    def batches() -> Iterator[tuple[Any, int]]:
        if not groups:
            return
        first = starts[groups[0]]
        if layout.per_row is None:
            # A list column's labels per row are unknown until some rows are read: a first look at a few rows
            # sizes the batches of the rest. (The footer's value counts would tell, but some damaged footers
            # make pyarrow abort when they are read.)
            for piece in read(groups[:1], min(_FIRST_RAGGED_BATCH, chunk_size), first):
                yield piece
                first = piece[1] + len(piece[0])
                break
        yield from read(groups, _batch_rows(layout, chunk_size, seen), first)

    def chunks() -> Iterator[Chunk]:
        try:
            yield from _column_chunks(batches(), chunk_size, where, seen)
            file.check_unchanged()
        except ClassWeightError:
            raise
        except (pa.ArrowException, OSError, ValueError, TypeError, IndexError, KeyError) as exc:
            raise ClassWeightError(f"could not read {where}: {_one_line(exc)}") from None
        finally:
            file.close()

    return Stream(chunks(), hi - lo, where, sharded=shard is not None, identity=file.identity)


def _pick_column(names: list[str], key: str | int | None, where: str) -> str:
    if key is None:
        if len(names) == 1:
            return names[0]
        raise ClassWeightError(
            f"{where} has {len(names)} columns; pass key= to name the label column, one of: {shown_names(names)}"
        )
    if not isinstance(key, str):
        raise ClassWeightError(f"Expected key= to name a column of {where} (a string), but got {key!r}")
    if key not in names:
        raise ClassWeightError(f"key {key!r} not found in {where}; available columns: {shown_names(names)}")
    if names.count(key) > 1:  # Arrow allows it, but then no name says which column is meant
        raise ClassWeightError(
            f"{where} has {names.count(key)} columns named {key!r}; expected one column of that name"
        )
    return key


# --------------------------------------------------------------- layout ----


@dataclass(frozen=True)
class _Layout:
    """What a column's type says: labels per row (``None``: any number) and the bytes of one label."""

    per_row: int | None
    itemsize: int = 1

    def rows(self, n: int, shard: Shard | None) -> tuple[int, int]:
        """This shard's rows ``[lo, hi)`` of ``n``, on fingerprint block boundaries when the shard asks for them."""
        if self.per_row is None and shard is not None and shard.block_bytes is not None:
            # rows of any length are fingerprinted RAGGED_HASH_ROWS rows at a time
            return _shard_rows(n, Shard(shard.rank, shard.world, RAGGED_HASH_ROWS), 1)
        return _shard_rows(n, shard, (self.per_row or 0) * self.itemsize)

    @staticmethod
    def of(arrow_type: Any, where: str) -> _Layout:
        import pyarrow as pa

        t = arrow_type
        if isinstance(t, pa.ExtensionType):
            return _Layout.of(t.storage_type, where)
        if pa.types.is_dictionary(t):
            return _Layout.of(t.value_type, where)
        if pa.types.is_fixed_size_list(t):
            inner = _Layout.of(t.value_type, where)
            return _Layout(None if inner.per_row is None else inner.per_row * t.list_size, inner.itemsize)
        if pa.types.is_list(t) or pa.types.is_large_list(t):
            return _Layout(None, _Layout.of(t.value_type, where).itemsize)
        if pa.types.is_integer(t) or pa.types.is_floating(t):
            return _Layout(1, t.bit_width // 8)
        if pa.types.is_boolean(t):
            return _Layout(1, 1)  # numpy's bool
        if pa.types.is_null(t):
            raise ClassWeightError(
                f"{where}: expected integer labels, but the column holds only nulls (Arrow type null)"
            )
        if (
            pa.types.is_string(t)
            or pa.types.is_large_string(t)
            or getattr(pa.types, "is_string_view", lambda _: False)(t)
        ):
            raise ClassWeightError(
                f"{where}: expected integer labels, but got Arrow type {t}; map string labels to integers first"
            )
        raise ClassWeightError(
            f"{where}: expected integer labels, but got Arrow type {t} (expected integers, bool or floats, or lists of them)"
        )


# -------------------------------------------------------------- batches ----


@dataclass
class _Seen:
    """Rows and labels read so far: sizes the next batch of a list column."""

    rows: int = 0
    labels: int = 0


def _batch_rows(layout: _Layout, chunk_size: int, seen: _Seen) -> int:
    """Rows of about ``chunk_size`` labels; for lists, by the labels per row seen so far."""
    if layout.per_row is not None:
        return _rows_per_chunk(layout.per_row, chunk_size)
    if seen.rows == 0:
        return min(_FIRST_RAGGED_BATCH, chunk_size)
    return max(1, chunk_size * seen.rows // max(1, seen.labels))


def _row_ranges(lo: int, hi: int, layout: _Layout, chunk_size: int, seen: _Seen) -> Iterator[tuple[int, int]]:
    """Rows ``[a, b)`` of about ``chunk_size`` labels each (see ``_batch_rows``)."""
    a = lo
    while a < hi:
        b = min(hi, a + _batch_rows(layout, chunk_size, seen))
        yield a, b
        a = b


def _column_chunks(
    batches: Iterator[tuple[Any, int]], chunk_size: int, where: str, seen: _Seen | None = None
) -> Iterator[Chunk]:
    """Chunks of the column pieces ``(array, first_row)``; flat indices count the labels read so far."""
    seen = _Seen() if seen is None else seen
    flat = 0
    for column, first_row in batches:
        pieces = column.chunks if hasattr(column, "chunks") else [column]
        for piece in pieces:
            values, offsets, width = _unnest(piece, where, _rows_from(first_row))
            data = _to_numpy(values, where)
            if offsets is None:
                yield from _fixed_chunks(data, width, len(piece), first_row, flat, chunk_size)
            else:
                yield from _ragged_chunks(data, offsets, first_row, flat, chunk_size)
            first_row += len(piece)
            flat += data.size
            seen.rows += len(piece)
            seen.labels += data.size


def _fixed_chunks(
    data: np.ndarray, width: int, rows: int, first_row: int, flat: int, chunk_size: int
) -> Iterator[Chunk]:
    step = _rows_per_chunk(width, chunk_size)
    grid = data.reshape(rows, width)
    for a in range(0, rows, step):
        yield Chunk(grid[a : a + step], flat + a * width, locate=_fixed_locator(first_row + a, width))


def _ragged_chunks(
    data: np.ndarray, offsets: np.ndarray, first_row: int, flat: int, chunk_size: int
) -> Iterator[Chunk]:
    rows = len(offsets) - 1
    a = 0
    while a < rows:
        # as many whole rows as fit in chunk_size labels, and at least one
        b = max(a + 1, int(np.searchsorted(offsets, offsets[a] + chunk_size, side="right")) - 1)
        b = min(b, rows)
        bounds = offsets[a : b + 1]
        part = data[bounds[0] : bounds[-1]]
        yield Chunk(
            part.reshape(1, -1),
            flat + int(bounds[0]),
            lengths=np.diff(bounds),
            locate=_ragged_locator(first_row + a, bounds - bounds[0]),
        )
        a = b


def _fixed_locator(first_row: int, width: int) -> Callable[[int], str]:
    def locate(i: int) -> str:
        row, position = divmod(i, width)
        return f"row {first_row + row}" if width == 1 else f"row {first_row + row}, position {position}"

    return locate


def _ragged_locator(first_row: int, bounds: np.ndarray) -> Callable[[int], str]:
    def locate(i: int) -> str:
        row = int(np.searchsorted(bounds, i, side="right")) - 1
        return f"row {first_row + row}, position {i - int(bounds[row])}"

    return locate


# ------------------------------------------------------------ unnesting ----


def _unnest(array: Any, where: str, row_of: Callable[[int], int]) -> tuple[Any, np.ndarray | None, int]:
    """The leaf values of ``array`` and where each of its rows lies in them.

    Returns ``(leaves, offsets, width)``: row ``i`` holds ``leaves[offsets[i]:offsets[i + 1]]``,
    or, if ``offsets`` is ``None``, ``leaves[i * width:(i + 1) * width]``. ``row_of`` maps an index
    of ``array`` to the row of the column it lies in, to name that row when a value is null.
    """
    import pyarrow as pa

    if isinstance(array, pa.ExtensionArray):
        array = array.storage
    if pa.types.is_dictionary(array.type):
        _check_nulls(array, where, row_of)
        array = array.dictionary_decode()
    _check_nulls(array, where, row_of)
    t = array.type
    if pa.types.is_fixed_size_list(t):
        size = t.list_size
        leaves, offsets, width = _unnest(array.flatten(), where, lambda i: row_of(i // size))
        if offsets is None:
            return leaves, None, width * size
        return leaves, (offsets[::size] if size else np.zeros(len(array) + 1, np.int64)), 0
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        own = np.asarray(array.offsets, dtype=np.int64)
        child = array.values.slice(int(own[0]), int(own[-1] - own[0]))  # .values ignores the array's slice
        own = own - own[0]
        leaves, offsets, width = _unnest(child, where, lambda i: row_of(int(np.searchsorted(own, i, side="right")) - 1))
        return leaves, (own * width if offsets is None else offsets[own]), 0
    return array, None, 1


def _check_nulls(array: Any, where: str, row_of: Callable[[int], int]) -> None:
    if array.null_count:
        index = int(np.flatnonzero(np.asarray(array.is_null()))[0])
        raise ClassWeightError(
            f"{where}: row {row_of(index)} holds a null label; expected integer labels in every row (drop or fill the nulls first)"
        )


def _to_numpy(values: Any, where: str) -> np.ndarray:
    """The leaf values as numpy: zero-copy for integers and floats, a copy for bools (Arrow packs them in bits)."""
    data = values.to_numpy(zero_copy_only=False)
    check_label_dtype(data.dtype, where)
    return data if data.ndim == 1 else data.reshape(-1)


def _rows_from(first_row: int) -> Callable[[int], int]:
    return lambda i: first_row + i
