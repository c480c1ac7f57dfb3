"""pandas Series and DataFrames, and the Hugging Face containers that are not one table.

A pandas column is read through its numpy values in one step, never item by
item (a Series has ``__getitem__`` and ``__len__``, so without this module it
would be read as a map-style dataset, one Python call per label). A
``datasets.DatasetDict`` holds splits, not labels: it is refused with the
names of its splits. A ``datasets.IterableDataset`` is read in batches of
rows. Neither pandas nor datasets is imported here.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import numpy as np

from ._checks import shown_names
from ._errors import ClassWeightError

_ITERABLE_BATCH_ROWS = 1024  # rows of a datasets.IterableDataset read at a time


def is_pandas(source: Any) -> bool:
    """True for a ``pandas.Series`` or ``pandas.DataFrame`` (without importing pandas)."""
    pd = sys.modules.get("pandas")
    return pd is not None and isinstance(source, (pd.Series, pd.DataFrame))


def is_pandas_frame(source: Any) -> bool:
    pd = sys.modules.get("pandas")
    return pd is not None and isinstance(source, pd.DataFrame)


def frame_labels(source: Any, key: Any) -> tuple[np.ndarray, str]:
    """The labels of a Series, or of column ``key`` of a DataFrame, as a numpy array, and where they came from."""
    if is_pandas_frame(source):
        columns = list(source.columns)
        shown = shown_names(columns)
        if key is None:
            if len(columns) != 1:
                raise ClassWeightError(
                    f"the DataFrame has {len(columns)} columns; pass key= to name the label column, one of: {shown}"
                )
            key = columns[0]
        elif key not in columns:
            raise ClassWeightError(f"key {key!r} not found in the DataFrame; available columns: {shown}")
        if columns.count(key) > 1:
            raise ClassWeightError(f"the DataFrame has {columns.count(key)} columns named {key!r}; expected one")
        return column_values(source[key], f"DataFrame[{key!r}]"), f"DataFrame[{key!r}]"
    if key is not None:
        raise ClassWeightError(f"Expected key=None for a pandas Series (it is one column), but got {key!r}")
    return column_values(source, "Series"), "Series"


def frame_values(frame: Any) -> np.ndarray:
    """Every column of a DataFrame side by side, ``[rows, columns]`` (multi-hot targets, one column per class)."""
    columns = [column_values(frame.iloc[:, j], f"DataFrame[{name!r}]") for j, name in enumerate(frame.columns)]
    return np.stack(columns, axis=1) if columns else np.zeros((len(frame), 0), dtype=np.int64)


def column_values(series: Any, where: str) -> np.ndarray:
    """One pandas column as numpy values: nulls and text are refused, categories of numbers are their values."""
    dtype = series.dtype
    if getattr(dtype, "name", "") == "category":
        categories = dtype.categories
        if categories.dtype.kind not in "biuf":
            raise ClassWeightError(
                f"{where}: expected integer labels, but got categories of dtype {categories.dtype}; "
                "turn them into codes first (classweights.encode_labels, or .cat.codes)"
            )
    nulls = np.flatnonzero(np.asarray(series.isna()))
    if nulls.size:
        raise ClassWeightError(
            f"{where}: row {int(nulls[0])} holds a null label; expected integer labels in every row (drop or fill the nulls first)"
        )
    numpy_dtype = getattr(dtype, "numpy_dtype", None)  # pandas' nullable Int64, UInt8, boolean, ...
    values = series.to_numpy(dtype=numpy_dtype) if numpy_dtype is not None else series.to_numpy()
    if values.dtype == object:
        kinds = {type(v).__name__ for v in values[:100]}
        if kinds & {"str", "bytes"}:
            raise ClassWeightError(
                f"{where}: expected integer labels, but got text; turn the labels into codes first (classweights.encode_labels)"
            )
        try:  # a column whose rows each hold a label array (a mask per row)
            values = np.stack([np.asarray(v) for v in values]) if len(values) else values.astype(np.int64)
        except ValueError:
            raise ClassWeightError(
                f"{where}: expected rows of one shape, but the rows hold arrays of several shapes"
            ) from None
    return values


def is_hf_container(source: Any) -> bool:
    """True for a ``datasets.DatasetDict`` or ``IterableDatasetDict``: splits, not one table."""
    datasets = sys.modules.get("datasets")
    kinds = tuple(getattr(datasets, name) for name in ("DatasetDict", "IterableDatasetDict") if hasattr(datasets, name))
    return datasets is not None and isinstance(source, kinds)


def refuse_splits(source: Any) -> ClassWeightError:
    names = ", ".join(map(str, source.keys())) or "(none)"
    first = next(iter(source.keys()), "train")
    return ClassWeightError(
        f"Expected one split of the {type(source).__name__}, but got all of them ({names}); pass one, e.g. source[{first!r}]"
    )


def is_hf_iterable(source: Any) -> bool:
    datasets = sys.modules.get("datasets")
    return datasets is not None and isinstance(source, getattr(datasets, "IterableDataset", ()))


def iterable_batches(source: Any, key: Any) -> Iterator[Any]:
    """The label column of a ``datasets.IterableDataset``, a batch of rows at a time."""
    names = getattr(source, "column_names", None)  # None when the features are not known before reading
    if key is None and names:
        if len(names) != 1:
            raise ClassWeightError(
                f"the dataset has {len(names)} columns; pass key= to name the label column, one of: {shown_names(names)}"
            )
        key = names[0]
    if key is None:
        raise ClassWeightError("the dataset's columns are not known before reading; pass key= to name the label column")
    if names and key not in names:
        raise ClassWeightError(f"key {key!r} not found in the dataset; available columns: {shown_names(names)}")
    view = source.select_columns([key]) if names else source
    for batch in view.iter(batch_size=_ITERABLE_BATCH_ROWS):
        if key not in batch:
            raise ClassWeightError(f"key {key!r} not found in the dataset; available columns: {shown_names(batch)}")
        yield batch[key]
