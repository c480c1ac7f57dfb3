"""count_multilabel and pos_weight against numpy and torch references, for every source type."""

from __future__ import annotations

import gc
import json
import warnings
from pathlib import Path

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
import torch
from forked import run_ranks
from hypothesis import given
from hypothesis import strategies as st
from torch.utils.data import DataLoader, TensorDataset

from classweights import (
    ClassWeightError,
    MultilabelCounts,
    count_multilabel,
    pos_weight,
)
from classweights._multilabel_chunks import column_sums

HERE = Path(__file__).resolve().parent
DTYPES = [np.bool_, np.uint8, np.int8, np.int16, np.int32, np.int64, np.uint16, np.uint32, np.uint64,
          np.float16, np.float32, np.float64]  # fmt: skip


def reference_pos_weight(targets: np.ndarray, smooth: float = 0.0) -> np.ndarray:
    """The formula, in float64, by numpy: (N - P + s) / (P + s)."""
    positives = (np.asarray(targets) != 0).sum(axis=0).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (len(targets) - positives + smooth) / (positives + smooth)


def multi_hot(rng: np.random.Generator, shape: tuple[int, int], dtype=np.uint8, p: float = 0.3) -> np.ndarray:
    return (rng.random(shape) < p).astype(dtype)


@st.composite
def multi_hot_arrays(draw):
    classes = draw(st.integers(1, 40))
    samples = draw(st.integers(1, 90))
    dtype = draw(st.sampled_from(DTYPES))
    hot = draw(hnp.arrays(np.bool_, (samples, classes)))
    return hot.astype(dtype), draw(st.sampled_from([1, 7, 64, 1000, None])), draw(st.integers(1, 3))


# ------------------------------------------------------------ counting ----


@given(case=multi_hot_arrays())
def test_positives_equal_a_column_sum_for_every_dtype_shape_and_chunking(case):
    targets, chunk_size, threads = case
    counts = count_multilabel(targets, targets.shape[1], chunk_size=chunk_size, num_threads=threads)
    assert counts.positives.dtype == torch.int64 and counts.positives.shape == (targets.shape[1],)
    np.testing.assert_array_equal(counts.positives.numpy(), targets.astype(np.int64).sum(axis=0))
    assert counts.num_samples == len(targets)
    torch_counts = torch.from_numpy(targets.astype(np.float32)).sum(0).to(torch.int64)  # counted by torch directly
    assert torch.equal(count_multilabel(torch.from_numpy(targets), targets.shape[1]).positives, torch_counts)


@given(
    samples=st.integers(0, 3000), classes=st.integers(1, 70), offset=st.integers(0, 9), seed=st.integers(0, 2**32 - 1)
)
def test_word_sums_fold_back_into_column_sums_at_any_alignment(samples, classes, offset, seed):
    rng = np.random.default_rng(seed)
    buffer = multi_hot(rng, (samples + offset, classes), p=rng.random())
    values = buffer[offset:]  # rows starting at any byte offset from an 8-byte boundary
    np.testing.assert_array_equal(column_sums(values), values.sum(axis=0, dtype=np.int64))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_large_arrays_of_every_dtype_in_threads(dtype):
    # more than 255 word groups per block, and several cache-sized blocks per chunk
    targets = multi_hot(np.random.default_rng(1), (60_011, 37), dtype, p=0.4)
    expected = targets.astype(np.int64).sum(axis=0)
    for options in ({}, {"num_threads": 3, "chunk_size": 37 * 5000}, {"num_threads": 1}):
        np.testing.assert_array_equal(count_multilabel(targets, 37, **options).positives.numpy(), expected)


def test_all_ones_and_all_zeros_columns_count_exactly_past_255():
    targets = np.zeros((5000, 9), np.uint8)
    targets[:, 3] = 1
    assert count_multilabel(targets, 9).positives.tolist() == [0, 0, 0, 5000, 0, 0, 0, 0, 0]
    assert count_multilabel(np.ones((70_000, 2), np.float32), 2).positives.tolist() == [70_000, 70_000]


def test_layouts_byte_orders_and_torch_dtypes():
    rng = np.random.default_rng(2)
    targets = multi_hot(rng, (301, 13), np.float32)
    expected = targets.sum(axis=0).astype(np.int64).tolist()
    for name, source in {
        "fortran order": np.asfortranarray(targets),
        "column slice": np.concatenate([targets, targets], axis=1)[:, :13],
        "every other row": np.repeat(targets, 2, axis=0)[::2],
        "big-endian float": targets.astype(">f4"),
        "big-endian int": targets.astype(">i4"),
        "transposed tensor": torch.from_numpy(np.ascontiguousarray(targets.T)).T,
        "bfloat16 tensor": torch.from_numpy(targets).to(torch.bfloat16),
        "float16 tensor": torch.from_numpy(targets).half(),
        "uint16 tensor": torch.from_numpy(targets.astype(np.int32)).to(torch.uint16),
        "tensor that requires grad": torch.from_numpy(targets).requires_grad_(),
    }.items():
        assert count_multilabel(source, 13).positives.tolist() == expected, name


def test_negative_zero_is_zero_and_odd_bool_bytes_are_true():
    targets = np.array([[-0.0, 1.0], [1.0, -0.0]], np.float32)
    assert count_multilabel(targets, 2).positives.tolist() == [1, 1]
    odd = np.array([[0, 2], [255, 1], [0, 0]], np.uint8).view(np.bool_)  # as a file's bytes may hold them
    assert count_multilabel(odd, 2).positives.tolist() == [1, 2]


# -------------------------------------------------------------- sources ----


class PairDataset:
    """(input, multi-hot target) items, as a typical multi-label dataset returns them."""

    def __init__(self, targets):
        self.targets = targets

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        return torch.zeros(3), torch.from_numpy(self.targets[i])


class DictDataset(PairDataset):
    def __getitem__(self, i):
        return {"image": np.zeros(2), "labels": self.targets[i]}


def test_every_source_type_gives_the_same_counts(tmp_path):
    targets = multi_hot(np.random.default_rng(3), (203, 11), np.uint8)
    expected = targets.sum(axis=0).tolist()
    np.save(tmp_path / "t.npy", targets)
    np.savez(tmp_path / "t.npz", train=targets[:5], val=targets)
    np.savez_compressed(tmp_path / "packed.npz", train=targets)
    tensor = torch.from_numpy(targets)
    index_lists = [np.flatnonzero(row).tolist() for row in targets]

    def sources() -> dict:  # anew for each pass: a generator is read once
        return {
            "ndarray": (targets, {}),
            "tensor": (tensor, {}),
            "float tensor": (tensor.float(), {}),
            "memmap": (np.load(tmp_path / "t.npy", mmap_mode="r"), {}),
            ".npy path": (tmp_path / "t.npy", {}),
            ".npy path as str": (str(tmp_path / "t.npy"), {}),
            ".npz member": (tmp_path / "t.npz", {"key": "val"}),
            ".npz compressed": (tmp_path / "packed.npz", {}),
            "mapping": ({"train": targets, "test": targets[:3]}, {}),
            "TensorDataset": (TensorDataset(torch.zeros(203, 4), tensor), {"key": 1}),
            "dataset of pairs": (PairDataset(targets), {"key": 1}),
            "dataset of dicts": (DictDataset(targets), {"key": "labels"}),
            "list of rows": (list(targets), {}),
            "generator of batches": ((targets[i : i + 50] for i in range(0, 203, 50)), {}),
            "DataLoader": (DataLoader(TensorDataset(torch.zeros(203, 4), tensor.bool()), batch_size=32), {"key": 1}),
            "DataLoader of pairs": (DataLoader(PairDataset(targets), batch_size=20), {"key": 1}),
            "label-index lists": (index_lists, {}),
            "tuple of label-index tuples": (tuple(tuple(i) for i in index_lists), {}),
            "list of label-index sets": ([set(i) for i in index_lists], {}),
        }

    for chunk_size in (None, 23):
        for name, (source, options) in sources().items():
            counts = count_multilabel(source, 11, chunk_size=chunk_size, **options)
            assert counts.positives.tolist() == expected, name
            assert counts.num_samples == 203, name


def test_label_index_lists_count_each_class_once_per_sample():
    counts = count_multilabel([[0, 2], [], [1], [2, 2, 0], range(3)], 3)
    assert counts == MultilabelCounts([3, 2, 3], 5)
    assert count_multilabel([[]], 4) == MultilabelCounts([0, 0, 0, 0], 1)
    big = [[i % 7, (i * 3) % 7, 6] for i in range(1000)]
    expected = np.zeros(7, np.int64)
    for row in big:
        expected[sorted(set(row))] += 1
    assert count_multilabel(big, 7, chunk_size=5, num_threads=2).positives.tolist() == expected.tolist()
    assert count_multilabel([[np.int64(1), np.uint8(0)]], 2).positives.tolist() == [1, 1]


@given(st.lists(st.lists(st.integers(0, 9), max_size=12), min_size=1, max_size=60), st.sampled_from([1, 4, None]))
def test_label_index_lists_equal_their_multi_hot_rows(rows, chunk_size):
    hot = np.zeros((len(rows), 10), np.bool_)
    for i, row in enumerate(rows):
        hot[i, row] = True
    counts = count_multilabel(rows, 10, chunk_size=chunk_size)
    assert counts == count_multilabel(hot, 10)
    assert counts.positives.tolist() == hot.sum(axis=0).tolist()


def test_progress_reports_samples_in_order():
    seen = []
    count_multilabel(
        np.zeros((100, 4), np.uint8), 4, chunk_size=4 * 30, progress=lambda done, total: seen.append((done, total))
    )
    assert seen == [(30, 100), (60, 100), (90, 100), (100, 100)]
    seen.clear()
    count_multilabel((np.zeros((10, 4)) for _ in range(2)), 4, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(10, None), (20, None)]


# --------------------------------------------------------------- errors ----


@pytest.mark.parametrize(
    ("bad", "dtype", "shown"),
    [(2, np.uint8, "2"), (-1, np.int8, "-1"), (2, np.int64, "2"), (-1, np.int32, "-1"), (7, np.uint16, "7"),
     (0.5, np.float32, "0.5"), (float("nan"), np.float32, "nan"), (float("nan"), np.float64, "nan"),
     (float("inf"), np.float16, "inf"), (-1.0, np.float64, "-1.0"), (1.0000001, np.float32, "1.0000001192092896")],
)  # fmt: skip
def test_a_value_other_than_0_or_1_is_named_with_its_sample_and_class(bad, dtype, shown):
    targets = multi_hot(np.random.default_rng(4), (40, 9), dtype)
    targets[3, 7] = bad
    message = f"labels: expected multi-hot targets holding only 0 and 1, but sample 3, class 7 holds {shown}"
    with pytest.raises(ClassWeightError, match=f"^{message.replace('.', '[.]')}$"):
        count_multilabel(targets, 9)
    targets[3, 7] = 0
    targets[35, 2] = bad  # in a later chunk: the position is still counted from the first sample
    with pytest.raises(ClassWeightError, match="sample 35, class 2 holds"):
        count_multilabel(targets, 9, chunk_size=9 * 4, num_threads=2)


def test_bad_values_in_files_datasets_and_batches_name_their_sample(tmp_path):
    targets = np.zeros((50, 5), np.float32)
    targets[44, 1] = 0.25
    np.save(tmp_path / "t.npy", targets)
    for source, where in [
        (tmp_path / "t.npy", "t.npy"),
        (list(targets), "dataset"),
        (DataLoader(torch.from_numpy(targets), batch_size=8), "batches"),
    ]:
        with pytest.raises(ClassWeightError, match=f"{where}.*sample 44, class 1 holds 0.25"):
            count_multilabel(source, 5, chunk_size=10)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (
            np.zeros((6, 4)),
            r"^labels: expected multi-hot targets of shape \[N, 3\] \(num_classes=3\), but got shape \[6, 4\]$",
        ),
        (np.zeros((6, 3, 1)), r"got shape \[6, 3, 1\]"),
        (np.zeros(3), r"got shape \[3\]"),
        (torch.zeros(0, 5), r"got shape \[0, 5\]"),
        (
            {"train": np.zeros((2, 4))},
            r"mapping\['train'\]: expected samples of shape \[3\] .* but got samples of shape \[4\]",
        ),
        ([np.zeros(3), np.zeros(4)], r"dataset: expected samples of shape \[3\] .* got samples of shape \[4\]"),
        ([np.zeros((1, 3))], r"got samples of shape \[1, 3\]"),
        (iter([np.zeros((2, 3)), np.zeros((2, 2))]), r"batches: .* got samples of shape \[2\]"),
        (TensorDataset(torch.zeros(4, 3), torch.zeros(4, 7)), r"got shape"),
        ([0, 1, 1], r"^labels: expected samples of shape \[3\] .* but got samples of shape \[\]$"),
    ],
)
def test_a_sample_that_is_not_a_row_of_num_classes_values_names_the_shape(source, message):
    if isinstance(source, TensorDataset):
        with pytest.raises(
            ClassWeightError, match=r"TensorDataset.tensors\[1\]: expected samples of shape \[3\] .* shape \[7\]"
        ):
            count_multilabel(source, 3, key=1)
        return
    with pytest.raises(ClassWeightError, match=message):
        count_multilabel(source, 3)


def test_a_file_of_the_wrong_shape_is_refused_and_closed(tmp_path):
    np.save(tmp_path / "t.npy", np.zeros((10, 6), np.uint8))
    np.savez_compressed(tmp_path / "t.npz", train=np.zeros((10, 5, 1), np.uint8))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)  # what a file left for the garbage collector to close gives
        with pytest.raises(
            ClassWeightError,
            match=r"t.npy: expected multi-hot targets of shape \[N, 5\] \(num_classes=5\), but got shape \[10, 6\]$",
        ):
            count_multilabel(tmp_path / "t.npy", 5)
        with pytest.raises(
            ClassWeightError, match=r"t.npz'\['train'\]: expected multi-hot targets .* but got shape \[10, 5, 1\]$"
        ):
            count_multilabel(tmp_path / "t.npz", 5)
        gc.collect()
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []


@pytest.mark.parametrize(
    "source",
    [np.zeros((0, 3), np.uint8), torch.zeros(0, 3), [], (), [np.zeros(3)][:0], iter([])],
    ids=["array", "tensor", "list", "tuple", "dataset", "iterator"],
)
def test_an_empty_source_is_an_error(source):
    with pytest.raises(ClassWeightError, match="^Expected at least one sample, but .* is empty$"):
        count_multilabel(source, 3)


def test_an_empty_file_is_an_error(tmp_path):
    np.save(tmp_path / "e.npy", np.zeros((0, 3), np.uint8))
    with pytest.raises(ClassWeightError, match="Expected at least one sample, but .*e.npy is empty"):
        count_multilabel(tmp_path / "e.npy", 3)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (
            [[0, 3]],
            r"^labels: sample 0 holds label index 3, out of range for num_classes=3 \(expected 0 <= index < 3\)$",
        ),
        ([[0], [], [1, -1]], r"sample 2 holds label index -1, out of range"),
        ([[0], [2**70]], r"sample 1 holds label index 1180591620717411303424, out of range"),
        ([[0], [1.0]], r"^labels: expected integer label indices, but sample 1 holds 1.0$"),
        ([[0], [True]], r"sample 1 holds True"),
        ([[0], ["1"]], r"sample 1 holds '1'"),
        ([[0], [[1]]], r"sample 1 holds \[1\]"),
        ([[0], 1], r"^labels: expected sample 1 to be a list of label indices like sample 0, but got int$"),
        ([[0], np.array([1])], r"expected sample 1 to be a list of label indices like sample 0, but got ndarray"),
    ],
)
def test_bad_label_indices_name_their_sample(source, message):
    with pytest.raises(ClassWeightError, match=message):
        count_multilabel(source, 3)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"num_classes": 0}, "Expected `num_classes` to be a positive integer, but got 0"),
        ({"num_classes": True}, "Expected `num_classes` to be a positive integer, but got True"),
        ({"chunk_size": 0}, "Expected `chunk_size` to be a positive integer, but got 0"),
        ({"num_threads": 0}, "Expected `num_threads` to be a positive integer or None, but got 0"),
        ({"progress": 3}, "Expected `progress` to be a callable or None, but got 3"),
        ({"distributed": "yes"}, "Expected `distributed` to be True or False, but got 'yes'"),
        ({"key": 1.5}, "Expected `key` to be a string, an integer or None, but got 1.5"),
        ({"distributed": True}, "Expected an initialised torch.distributed process group for distributed=True"),
    ],
)
def test_bad_options_are_one_line_errors(options, message):
    options = {"num_classes": 2, **options}
    with pytest.raises(ClassWeightError, match=f"^{message}"):
        count_multilabel(np.zeros((2, 2), np.uint8), **options)


def test_unsupported_dtypes_and_keys_for_index_lists():
    with pytest.raises(ClassWeightError, match="expected multi-hot targets of dtype bool, integer or float"):
        count_multilabel(np.zeros((2, 2), np.complex64), 2)
    with pytest.raises(ClassWeightError, match="dtype"):
        count_multilabel(np.array([["a", "b"]]), 2)
    with pytest.raises(
        ClassWeightError,
        match="key='train' picks the targets of a file, mapping or dataset, but the source is lists of label indices",
    ):
        count_multilabel([[0]], 2, key="train")


# ------------------------------------------------------------ MultilabelCounts ----


def test_multilabel_counts_are_stored_as_int64_and_checked():
    counts = MultilabelCounts(np.array([3, 0], np.uint8), np.int64(3))
    assert counts.positives.dtype == torch.int64 and counts.num_samples == 3 and type(counts.num_samples) is int
    with pytest.raises(
        ClassWeightError, match=r"^Expected every positive count to lie in \[0, num_samples=2\], but class 1 has 3$"
    ):
        MultilabelCounts([1, 3], 2)
    with pytest.raises(ClassWeightError, match="class 0 has -1"):
        MultilabelCounts(torch.tensor([-1]), 2)
    with pytest.raises(ClassWeightError, match="Expected `num_samples` to be an integer >= 0, but got -1"):
        MultilabelCounts([0], -1)
    with pytest.raises(ClassWeightError, match="Expected `positives` to be a 1-D sequence of integers"):
        MultilabelCounts([0.5], 2)
    with pytest.raises(ClassWeightError, match="Expected `positives` to be a 1-D sequence of integers"):
        MultilabelCounts(torch.zeros(2, 2, dtype=torch.int64), 2)
    with pytest.raises(AttributeError):
        counts.num_samples = 4  # frozen


# ------------------------------------------------------------ pos_weight ----


@given(case=multi_hot_arrays(), smooth=st.sampled_from([0.0, 0.5, 1.0, 10.0]))
def test_pos_weight_follows_the_formula(case, smooth):
    targets, _, _ = case
    expected = reference_pos_weight(targets, smooth)
    never = ~np.isfinite(expected)
    if never.any():  # P_c = 0 with smooth = 0: the largest other weight, or N
        expected[never] = expected[~never].max() if (~never).any() else len(targets)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        weights = pos_weight(targets, targets.shape[1], smooth=smooth)
    assert weights.dtype == torch.float32 and weights.shape == (targets.shape[1],)
    np.testing.assert_allclose(weights.numpy(), expected, rtol=1e-6)


def test_pos_weight_equals_counting_with_torch_directly():
    targets = torch.from_numpy(multi_hot(np.random.default_rng(5), (1000, 20), np.float32, p=0.05))
    positives = targets.sum(0)
    expected = ((len(targets) - positives + 1) / (positives + 1)).float()
    assert torch.allclose(pos_weight(targets, 20, smooth=1), expected, rtol=1e-6)
    counts = count_multilabel(targets, 20)
    assert torch.equal(pos_weight(counts, smooth=1), pos_weight(targets, 20, smooth=1))
    assert torch.equal(pos_weight(counts, 20, smooth=1), pos_weight(counts, smooth=1))


def test_pos_weight_in_bce_with_logits_loss_balances_positives_and_negatives():
    targets = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    weight = pos_weight(targets, 2)
    assert weight.tolist() == [3.0, 1.0]
    logits = torch.zeros(4, 2)  # p = 0.5 everywhere: each positive and each negative costs log 2
    loss = torch.nn.BCEWithLogitsLoss(pos_weight=weight, reduction="sum")(logits, targets)
    # class 0: one positive weighted 3 and three negatives; class 1: two of each
    assert loss.item() == pytest.approx(np.log(2) * (3 + 3 + 2 + 2))


def test_a_class_without_positives_gets_the_largest_other_weight_and_a_warning():
    counts = MultilabelCounts([10, 0, 1, 0], 20)
    with pytest.warns(
        UserWarning,
        match=r"^classes 1 and 3 have no positive sample, so their pos_weight is set to 19, the largest of the classes with positives; pass smooth > 0",
    ):
        weights = pos_weight(counts)
    assert weights.tolist() == [1.0, 19.0, 19.0, 19.0]
    with pytest.warns(UserWarning, match=r"^class 0 has no positive sample, so its pos_weight is set to 1"):
        assert pos_weight(MultilabelCounts([0, 5], 10)).tolist() == [1.0, 1.0]
    with pytest.warns(
        UserWarning, match=r"classes 0 and 1 have .* set to 7, the number of samples \(no class has a positive\)"
    ):
        assert pos_weight(MultilabelCounts([0, 0], 7)).tolist() == [7.0, 7.0]
    with pytest.warns(
        UserWarning, match=r"^12 classes \(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, \.\.\.\) have no positive sample"
    ):
        pos_weight(MultilabelCounts([0] * 12 + [1], 2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # smooth > 0: the formula is finite, no warning
        assert pos_weight(counts, smooth=1).tolist() == pytest.approx([11 / 11, 21 / 1, 20 / 2, 21 / 1])


def test_a_class_positive_in_every_sample_gets_zero_and_a_warning():
    with pytest.warns(
        UserWarning,
        match=r"^class 1 is positive in every sample, so its pos_weight is 0 and its positives take no part in the loss",
    ):
        assert pos_weight(MultilabelCounts([1, 4], 4)).tolist() == [3.0, 0.0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert pos_weight(MultilabelCounts([1, 4], 4), smooth=0.5).tolist() == [
            pytest.approx(3.5 / 1.5),
            pytest.approx(0.5 / 4.5),
        ]


def test_clip_caps_every_weight():
    counts = MultilabelCounts([1, 10, 500, 0], 1000)
    with pytest.warns(UserWarning, match="class 3"):
        assert pos_weight(counts, clip=100).tolist() == [100.0, 99.0, 1.0, 100.0]
    assert pos_weight(counts, clip=1, smooth=1).tolist() == [1.0, 1.0, pytest.approx(501 / 501), 1.0]
    assert pos_weight(counts, clip=float("inf"), smooth=1).tolist() == pytest.approx(
        [1000 / 2, 991 / 11, 501 / 501, 1001]
    )


@pytest.mark.parametrize(
    ("args", "options", "message"),
    [
        ((np.zeros((2, 2)),), {}, "Expected `num_classes` when `source_or_counts` is a source to count"),
        ((MultilabelCounts([1, 1], 2), 3), {}, "Expected `num_classes` to be 2, the classes of the counts, but got 3"),
        ((MultilabelCounts([1, 1], 2), 0), {}, "Expected `num_classes` to be a positive integer, but got 0"),
        ((MultilabelCounts([1], 2),), {"smooth": -1}, "Expected `smooth` to be a finite number >= 0, but got -1.0"),
        (
            (MultilabelCounts([1], 2),),
            {"smooth": float("nan")},
            "Expected `smooth` to be a finite number >= 0, but got nan",
        ),
        ((MultilabelCounts([1], 2),), {"smooth": "1"}, "Expected `smooth` to be a finite number >= 0, but got '1'"),
        ((MultilabelCounts([1], 2),), {"clip": 0.5}, "Expected `clip` to be None or a number >= 1, but got 0.5"),
        ((MultilabelCounts([1], 2),), {"clip": True}, "Expected `clip` to be None or a number >= 1, but got True"),
        ((MultilabelCounts([0], 0),), {}, "Expected counts of at least one sample, but num_samples is 0"),
        ((MultilabelCounts([], 3),), {}, "Expected counts of at least one class, but `positives` is empty"),
        ((np.full((2, 2), 3),), {"num_classes": 2}, "sample 0, class 0 holds 3"),
        (
            (MultilabelCounts([0], 2**62),),
            {"smooth": 1e-300},
            "Expected the pos_weight of class 0 to be a finite float32, but it is inf (float32: inf)",
        ),
        (
            (MultilabelCounts([2**62], 2**62),),
            {"smooth": 1e-300},
            "Expected the pos_weight of class 0 to be a finite float32, but it is 2.1",
        ),
    ],
)
def test_bad_pos_weight_input_is_a_one_line_error(args, options, message):
    with pytest.raises(ClassWeightError, match=message.replace("(", r"\(").replace(")", r"\)")) as error:
        pos_weight(*args, **options)
    assert "\n" not in str(error.value)


def test_pos_weight_checks_its_options_before_counting():
    def never_read():
        raise AssertionError("counted before checking the options")
        yield

    with pytest.raises(ClassWeightError, match="clip"):
        pos_weight(never_read(), 3, clip=0)


# ----------------------------------------------------------- distributed ----


@pytest.mark.slow  # two processes that import torch: about 3 s on two idle cores
def test_two_ranks_count_their_shards_and_sum_them(tmp_path):
    targets = multi_hot(np.random.default_rng(6), (301, 12), np.float32)
    targets[:, 5] = 0
    np.save(tmp_path / "targets.npy", targets)
    run_ranks(HERE / "dist_multilabel_worker.py", str(tmp_path))  # two ranks of a gloo group, as torchrun starts them
    index_lists = [np.flatnonzero(row).tolist() for row in targets]
    single = {
        "array": count_multilabel(targets, 12),
        "npy path": count_multilabel(targets, 12),
        "index lists": count_multilabel(index_lists, 12),
        "dataset": count_multilabel(targets, 12),
    }
    errors = []
    for rank in range(2):
        got = json.loads((tmp_path / f"rank{rank}.json").read_text())
        for name, counts in single.items():
            assert got[name] == {"positives": counts.positives.tolist(), "num_samples": 301}, (rank, name)
        assert got["pos_weight"] == pos_weight(targets, 12, smooth=1).tolist()
        errors.append(got["bad value on rank 1"]["error"])
    own = "labels: expected multi-hot targets holding only 0 and 1, but sample 250, class 3 holds 2.0"
    assert errors == [f"counting failed on rank 1: {own}", own]  # the global sample number, raised on every rank
