"""encode_labels and class_weight_dict against scikit-learn's LabelEncoder and compute_class_weight."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import LabelEncoder
from sklearn.utils.class_weight import compute_class_weight

from classweights import (
    ClassWeightError,
    class_weight_dict,
    count_label_stats,
    encode_labels,
    weights_from_counts,
)

# numpy's fixed-width strings drop trailing NULs, so scikit-learn would merge "a" and "a\0"; keep NUL out
strings = st.lists(st.text(alphabet="abcXYZ é-", max_size=4), min_size=1, max_size=50)
negative_and_sparse = st.lists(st.sampled_from([-(2**40), -100, -1, 0, 3, 70, 2**40]), min_size=1, max_size=50)
any_ints = st.lists(st.integers(-(2**63), 2**63 - 1), min_size=1, max_size=50)
labels_of_any_kind = st.one_of(
    strings, negative_and_sparse, any_ints, st.lists(st.floats(-5, 5, allow_nan=False), min_size=1, max_size=30)
)


def one_line_error(call, *fragments):
    with pytest.raises(ClassWeightError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


# -------------------------------------------------------- encode_labels ----


@given(labels_of_any_kind)
def test_encode_labels_equals_sklearn_label_encoder(y):
    codes, classes = encode_labels(y)
    encoder = LabelEncoder().fit(y)
    assert codes.dtype == np.int64 and codes.shape == (len(y),)
    np.testing.assert_array_equal(codes, encoder.transform(y))
    assert classes == encoder.classes_.tolist()
    assert [classes[k] for k in codes] == list(y)


@given(st.lists(st.text(alphabet="abc", max_size=2), min_size=1, max_size=30), st.randoms())
def test_given_classes_keep_their_order(y, random):
    classes = sorted(set(y)) + ["unseen"]
    random.shuffle(classes)
    codes, got = encode_labels(y, classes=classes)
    assert got == classes
    assert codes.tolist() == [classes.index(v) for v in y]


def test_arrays_tensors_and_other_sequences():
    grid = np.array([[3, -1], [70, 3]])
    codes, classes = encode_labels(grid)
    assert classes == [-1, 3, 70] and codes.tolist() == [[1, 0], [2, 1]] and codes.dtype == np.int64
    assert encode_labels(torch.tensor([5, 2, 5]))[0].tolist() == [1, 0, 1]
    assert encode_labels(torch.tensor([0.5, -2.0], dtype=torch.bfloat16))[1] == [-2.0, 0.5]
    assert encode_labels(np.array(["b", "a", "b"]))[1] == ["a", "b"]
    assert encode_labels(x for x in "bab")[1] == ["a", "b"]
    assert encode_labels(range(3, 0, -1))[0].tolist() == [2, 1, 0]
    assert encode_labels([(1, 2), (0, 1), (1, 2)])[1] == [(0, 1), (1, 2)]  # tuples are labels, not rows
    assert encode_labels([2**70, 1, 2**70])[0].tolist() == [1, 0, 1]  # beyond int64
    assert encode_labels(np.array([1, 2], dtype=object))[1] == [1, 2]
    assert encode_labels([True, False, True])[1] == [False, True]
    assert encode_labels([1, 2.5, 1.0])[1] == [1, 2.5]  # 1 and 1.0 are one class
    assert type(encode_labels(np.array([np.int64(4)], dtype=object))[1][0]) is int
    codes, classes = encode_labels([])
    assert codes.tolist() == [] and codes.dtype == np.int64 and classes == []


def test_mixed_types_need_classes():
    one_line_error(lambda: encode_labels([1, "a", 2]), "int, str", "classes=")
    codes, classes = encode_labels([1, "a", None, 1], classes=[None, "a", 1])
    assert codes.tolist() == [2, 1, 0, 2] and classes == [None, "a", 1]


def test_labels_outside_classes_are_named_with_their_number():
    message = one_line_error(
        lambda: encode_labels(["a", "x", "x", "y"], classes=["a", "b"]), "3 labels", "2 other values", "'x'", "'y'"
    )
    assert "..." not in message
    y = list(range(20)) * 2
    message = one_line_error(
        lambda: encode_labels(y, classes=[0]), "38 labels", "19 other values", "1, 2, 3, 4, 5, ..."
    )
    assert "6" not in message.split(":", 1)[1]


def test_encode_labels_bad_input():
    one_line_error(lambda: encode_labels(5), "5", "int")
    one_line_error(lambda: encode_labels("cat"), "'cat'", "str")
    one_line_error(lambda: encode_labels({1, 2}), "set")
    one_line_error(lambda: encode_labels({"a": 1}), "dict")
    one_line_error(lambda: encode_labels(np.array(3)), "single value 3")
    one_line_error(lambda: encode_labels([[0, 1], [1, 1]]), "label 0", "[0, 1]", "list")
    one_line_error(lambda: encode_labels([1.0, float("nan")]), "label 1", "NaN")
    one_line_error(lambda: encode_labels(["a", float("nan")]), "label 1", "NaN")
    one_line_error(lambda: encode_labels(np.ma.masked_array([1, 2], mask=[0, 1])), "masked")
    one_line_error(lambda: encode_labels([1], classes=[1, 2, 1]), "once", "1", "2 times")
    one_line_error(lambda: encode_labels([1], classes=[1, True]), "once", "2 times")
    one_line_error(lambda: encode_labels([1], classes="ab"), "`classes`", "str")
    one_line_error(lambda: encode_labels([1], classes=[[1]]), "hashable", "[1]")
    one_line_error(lambda: encode_labels([1], classes=[float("nan")]), "NaN")


# ---------------------------------------------------- class_weight_dict ----


@given(labels_of_any_kind)
def test_balanced_equals_sklearn_compute_class_weight(y):
    classes = np.unique(y)
    expected = compute_class_weight("balanced", classes=classes, y=y)
    got = class_weight_dict(y)
    assert list(got) == classes.tolist()
    assert all(type(w) is float for w in got.values())
    assert list(got.values()) == expected.tolist()  # float64, operation for operation: equal, not close


@given(st.lists(st.sampled_from(["cat", "dog", "emu", "gnu"]), min_size=1, max_size=40), st.randoms())
def test_balanced_with_classes_in_any_order_equals_sklearn(y, random):
    order = sorted(set(y))
    random.shuffle(order)
    expected = compute_class_weight("balanced", classes=np.array(order), y=y)
    assert class_weight_dict(y, classes=order) == dict(zip(order, expected.tolist()))


def test_balanced_refuses_absent_classes_as_sklearn_does():
    y = ["a", "a", "b"]
    with pytest.raises(ValueError, match="classes should have valid labels that are in y"):
        compute_class_weight("balanced", classes=np.array(["a", "b", "c"]), y=y)
    one_line_error(lambda: class_weight_dict(y, classes=["a", "b", "c"]), "'balanced'", "1 does not", "'c'")
    with pytest.raises(ValueError, match="classes should include all valid labels"):
        compute_class_weight("balanced", classes=np.array(["a"]), y=y)
    one_line_error(lambda: class_weight_dict(y, classes=["a"]), "1 label takes 1 other value", "'b'")


def test_drop_in_for_scikit_learn_class_weight():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 3))
    y = np.where(x[:, 0] > 1.2, "rare", np.where(x[:, 1] > 0, "b", "a"))
    ours = LogisticRegression(class_weight=class_weight_dict(y)).fit(x, y)
    theirs = LogisticRegression(class_weight="balanced").fit(x, y)
    np.testing.assert_array_equal(ours.coef_, theirs.coef_)


@pytest.mark.parametrize("method", ["inverse", "sqrt_inverse", "uniform", "enet", "effective_number"])
@pytest.mark.parametrize("params", [{}, {"smooth": 0, "normalize": False}, {"clip": 2}])
def test_other_methods_are_weights_from_counts_of_the_encoded_labels(method, params):
    y = ["z"] * 30 + ["a"] * 5 + [-1] * 1
    classes = ["z", "a", -1, "unseen"]
    got = class_weight_dict(y, method, classes=classes, **params)
    expected = weights_from_counts([30, 5, 1, 0], method, **params)  # the library's defaults: smooth=1, normalize=True
    assert got == dict(zip(classes, expected.tolist()))


def test_balanced_with_options_goes_through_weights_from_counts():
    y = [3, 3, 3, 70]
    got = class_weight_dict(y, "balanced", clip=2)
    assert got == dict(
        zip([3, 70], weights_from_counts([3, 1], "balanced", smooth=0, normalize=False, clip=2).tolist())
    )
    got = class_weight_dict(y, "balanced", normalize=True)
    assert sum(got.values()) == pytest.approx(2)


def test_median_frequency_of_single_labels_is_uniform():
    assert class_weight_dict(["a", "b", "b"], "median_frequency") == {"a": 1.0, "b": 1.0}
    grid = np.array([[0, 0, 1], [0, 2, 2]])  # each row a sample: image_pixels [6, 3, 3]
    stats = count_label_stats(grid, 3, presence=True)
    expected = weights_from_counts(stats.counts, "median_frequency", image_pixels=stats.image_pixels)
    assert class_weight_dict(grid, "median_frequency") == dict(zip([0, 1, 2], expected.tolist()))
    assert len(set(expected.tolist())) == 3  # f = 3/6, 1/3, 2/3: not uniform for label maps


def test_class_weight_dict_bad_input():
    one_line_error(lambda: class_weight_dict([]), "empty")
    one_line_error(lambda: class_weight_dict(["a"], "median"), "`method`", "'median'")
    one_line_error(lambda: class_weight_dict(["a"], "inverse", beta=0.5), "'inverse'", "beta")
    one_line_error(lambda: class_weight_dict(["a"], ignore_index=0), "ignore_index")
    one_line_error(lambda: class_weight_dict([1, "a"]), "int, str")
