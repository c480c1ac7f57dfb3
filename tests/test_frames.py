"""pandas Series and DataFrames, Hugging Face DatasetDicts and IterableDatasets as label sources."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import classweights as cw
from classweights import ClassWeightError

pd = pytest.importorskip("pandas")


def bincount(labels, num_classes):
    return np.bincount(np.asarray(labels).reshape(-1), minlength=num_classes).tolist()


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.integers(0, 5), min_size=1, max_size=300),
    st.sampled_from(["int64", "int8", "uint16", "Int64", "UInt8"]),
)
def test_a_series_counts_as_its_values(labels, dtype):
    series = pd.Series(labels, dtype=dtype, index=np.arange(len(labels)) * 7 + 3)  # the index plays no part
    assert cw.count_labels(series, 6).tolist() == bincount(labels, 6)
    assert torch.equal(cw.sample_weights(series, 6), cw.sample_weights(np.array(labels), 6))


def test_a_series_is_read_at_once_never_label_by_label(monkeypatch):
    series = pd.Series(np.arange(10_000) % 4)
    monkeypatch.setattr(pd.Series, "__getitem__", lambda *a: pytest.fail("read item by item"))
    assert cw.count_labels(series, 4).tolist() == [2500] * 4


def test_dataframe_columns():
    frame = pd.DataFrame({"y": [0, 2, 2, 1], "x": [0.5, 0.1, 0.2, 0.3]})
    assert cw.count_labels(frame, 3, key="y").tolist() == [1, 1, 2]
    assert cw.count_labels(frame[["y"]], 3).tolist() == [1, 1, 2]  # one column: no key needed
    assert cw.class_weight_dict(frame["y"]) == cw.class_weight_dict(np.array([0, 2, 2, 1]))
    with pytest.raises(
        ClassWeightError, match="the DataFrame has 2 columns; pass key= to name the label column, one of: 'y', 'x'"
    ):
        cw.count_labels(frame, 3)
    with pytest.raises(ClassWeightError, match="key 'label' not found in the DataFrame; available columns: 'y', 'x'"):
        cw.count_labels(frame, 3, key="label")
    with pytest.raises(ClassWeightError, match="Expected key=None for a pandas Series"):
        cw.count_labels(frame["y"], 3, key="y")
    masks = pd.Series([np.zeros((2, 2), dtype=np.uint8), np.full((2, 2), 2, dtype=np.uint8)])
    assert cw.count_label_stats(masks, 3, presence=True).image_pixels.tolist() == [4, 0, 4]


@pytest.mark.parametrize(
    ("series", "message"),
    [
        (
            lambda: pd.Series([0, 1, None], dtype="Int64"),
            r"Series: row 2 holds a null label; expected integer labels in every row",
        ),
        (lambda: pd.Series([0.0, np.nan]), r"Series: row 1 holds a null label"),
        (
            lambda: pd.Series(["cat", "dog"]),
            r"Series: expected integer labels, but got text; .*classweights.encode_labels",
        ),
        (lambda: pd.Series(["cat", "dog"], dtype="category"), r"expected integer labels, but got categories of dtype"),
        (lambda: pd.Series([np.zeros(2), np.zeros(3)]), r"Series: expected rows of one shape"),
        (lambda: pd.Series([0.5, 1.0]), r"label 0.5 at .* is not a class index"),
    ],
)
def test_bad_columns_are_one_line_errors(series, message):
    with pytest.raises(ClassWeightError, match=message):
        cw.count_labels(series(), 3)


def test_numeric_categories_count_as_their_values():
    assert cw.count_labels(pd.Series([2, 0, 2], dtype="category"), 3).tolist() == [1, 0, 2]


def test_multilabel_frames_and_columns_of_lists():
    rng = np.random.default_rng(5)
    targets = (rng.random((50, 4)) < 0.3).astype(np.int64)
    frame = pd.DataFrame(targets, columns=["cat", "dog", "car", "sky"])
    assert cw.count_multilabel(frame, 4).positives.tolist() == targets.sum(axis=0).tolist()
    assert torch.equal(cw.pos_weight(frame, 4), cw.pos_weight(targets, 4))
    lists = [list(np.flatnonzero(row)) for row in targets]
    table = pd.DataFrame({"tags": lists, "id": range(50)})
    assert cw.count_multilabel(table, 4, key="tags").positives.tolist() == targets.sum(axis=0).tolist()
    assert cw.count_multilabel(table["tags"], 4).num_samples == 50
    frame.iloc[7, 2] = 3
    with pytest.raises(
        ClassWeightError, match="expected multi-hot targets holding only 0 and 1, but sample 7, class 2 holds 3"
    ):
        cw.count_multilabel(frame, 4)


def test_hugging_face_splits_and_iterable_datasets():
    datasets = pytest.importorskip("datasets")
    labels = np.random.default_rng(9).integers(0, 5, 3000)
    dataset = datasets.Dataset.from_dict({"label": labels, "x": np.zeros(3000)})
    splits = datasets.DatasetDict({"train": dataset, "test": dataset})
    with pytest.raises(
        ClassWeightError,
        match=r"Expected one split of the DatasetDict, but got all of them \(train, test\); pass one, e.g. source\['train'\]",
    ):
        cw.count_labels(splits, 5, key="label")
    assert cw.count_labels(splits["train"], 5, key="label").tolist() == bincount(labels, 5)
    streamed = dataset.to_iterable_dataset(num_shards=3)
    stats = cw.count_label_stats(streamed, 5, key="label", fingerprint=True)
    assert stats.counts.tolist() == bincount(labels, 5)
    assert stats.fingerprint == cw.count_label_stats(labels, 5, fingerprint=True).fingerprint
    assert torch.equal(cw.sample_weights(streamed, 5, key="label"), cw.sample_weights(labels, 5))
    with pytest.raises(
        ClassWeightError, match="the dataset has 2 columns; pass key= to name the label column, one of: 'label', 'x'"
    ):
        cw.count_labels(streamed, 5)
    with pytest.raises(ClassWeightError, match="key 'y' not found in the dataset; available columns: 'label', 'x'"):
        cw.count_labels(streamed, 5, key="y")
    with pytest.raises(ClassWeightError, match="Expected one split of the IterableDatasetDict"):
        cw.count_labels(datasets.IterableDatasetDict({"train": streamed}), 5, key="label")
