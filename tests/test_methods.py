"""weights_from_counts: every method against a hand-written numpy reference, plus invariants."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from sklearn.utils.class_weight import compute_class_weight

from classweights import METHODS, ClassWeightError, register_method, weights_from_counts
from classweights.methods import needs_image_pixels

SPEC_COUNTS = [19081814, 154289, 154457, 153994, 155609, 155472, 155012, 155371, 157799, 156183]
SPEC_WEIGHTS = [0.0993, 1.1039, 1.1033, 1.1049, 1.0992, 1.0996, 1.1013, 1.1000, 1.0915, 1.0971]


def reference(method: str, counts: np.ndarray, smooth: float, **params) -> np.ndarray:
    """The formulas of DESIGN.md, written out in numpy, before the zero-count policy."""
    n = counts.astype(np.float64) + smooth
    with np.errstate(divide="ignore", invalid="ignore"):
        if method == "uniform":
            return np.ones_like(n)
        if method == "inverse":
            return 1 / n
        if method == "sqrt_inverse":
            return 1 / np.sqrt(n)
        if method == "balanced":
            return n.sum() / (len(n) * n)
        if method == "enet":
            return 1 / np.log(params.get("c", 1.02) + n / n.sum())
        if method == "effective_number":
            beta = params.get("beta", 0.9999)
            return (1 - beta) / (1 - beta**n)
        if method == "median_frequency":
            pixels = params["image_pixels"].astype(np.float64)
            f = counts / pixels
            return np.median(f[counts > 0]) / f
    raise AssertionError(method)


def finish(raw: np.ndarray, counts: np.ndarray, normalize: bool = True) -> np.ndarray:
    bad = ~np.isfinite(raw) | (raw <= 0)
    raw = np.where(bad, raw[~bad].max(), raw)
    return raw * len(raw) / raw.sum() if normalize else raw


counts_strategy = st.lists(st.integers(0, 10**7), min_size=1, max_size=16).filter(lambda c: sum(c) > 0)


@pytest.mark.parametrize("method", ["uniform", "inverse", "sqrt_inverse", "balanced", "enet", "effective_number"])
@given(counts=counts_strategy, smooth=st.sampled_from([0.0, 0.5, 1.0, 10.0]), normalize=st.booleans())
def test_methods_match_reference(method, counts, smooth, normalize):
    c = np.array(counts)
    expected = finish(reference(method, c, smooth), c, normalize)
    got = weights_from_counts(counts, method, smooth=smooth, normalize=normalize)
    np.testing.assert_allclose(got.numpy(), expected, rtol=2e-6)


@given(counts=counts_strategy, data=st.data())
def test_median_frequency_matches_reference(counts, data):
    c = np.array(counts)
    extra = np.array([data.draw(st.integers(0, 10**6)) for _ in counts])
    pixels = np.where(c > 0, c + extra, 0)
    got = weights_from_counts(c, "median_frequency", image_pixels=pixels, normalize=False)
    np.testing.assert_allclose(
        got.numpy(), finish(reference("median_frequency", c, 0, image_pixels=pixels), c, False), rtol=2e-6
    )


def test_spec_counts_give_spec_weights():
    w = weights_from_counts(SPEC_COUNTS, "sqrt_inverse", smooth=1.0, normalize=True)
    assert w.dtype == torch.float32 and w.shape == (10,)
    np.testing.assert_allclose(w.numpy(), SPEC_WEIGHTS, atol=5e-5)
    assert round(float(w.max() / w.min()), 2) == 11.13
    assert math.isclose(float(w.sum()), 10.0, rel_tol=1e-6)


@given(st.lists(st.integers(1, 10**6), min_size=2, max_size=12))
def test_balanced_equals_scikit_learn(counts):
    y = np.repeat(np.arange(len(counts)), counts)
    expected = compute_class_weight("balanced", classes=np.arange(len(counts)), y=y)
    got = weights_from_counts(counts, "balanced", smooth=0, normalize=False)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6)
    assert math.isclose(float(np.dot(got.numpy().astype(np.float64), counts)), sum(counts), rel_tol=1e-5)


@pytest.mark.parametrize("method", sorted(m for m in METHODS if m != "median_frequency"))
@given(counts=counts_strategy, smooth=st.sampled_from([0.0, 1.0]), seed=st.integers(0, 2**32 - 1))
def test_invariants(method, counts, smooth, seed):
    c = np.array(counts)
    w = weights_from_counts(c, method, smooth=smooth)
    assert w.shape == (len(c),) and w.dtype == torch.float32
    assert bool(torch.isfinite(w).all()) and bool((w > 0).all())
    assert math.isclose(float(w.sum()), len(c), rel_tol=1e-5)
    perm = np.random.default_rng(seed).permutation(len(c))
    np.testing.assert_allclose(weights_from_counts(c[perm], method, smooth=smooth).numpy(), w.numpy()[perm], rtol=1e-5)


@pytest.mark.parametrize("method", ["inverse", "sqrt_inverse", "balanced", "effective_number", "enet"])
@given(counts=counts_strategy)
def test_rarer_classes_never_weigh_less(method, counts):
    c = np.array(counts)
    w = weights_from_counts(c, method, smooth=1.0).numpy()
    order = np.argsort(c, kind="stable")
    assert np.all(np.diff(w[order]) <= 1e-6 * w.max())


def test_zero_count_class_gets_the_largest_seen_weight():
    w = weights_from_counts([100, 0, 25], "inverse", smooth=0, normalize=False)
    assert w.tolist() == pytest.approx([0.01, 0.04, 0.04])
    w = weights_from_counts([100, 0, 25], "median_frequency", image_pixels=[200, 0, 50], normalize=False)
    assert bool(torch.isfinite(w).all()) and float(w[1]) == float(w.max())


def test_clip_caps_the_ratio():
    w = weights_from_counts(SPEC_COUNTS, "inverse", clip=5.0)
    assert float(w.max() / w.min()) == pytest.approx(5.0, rel=1e-5)
    assert float(w.sum()) == pytest.approx(10.0, rel=1e-6)
    unclipped = weights_from_counts([1, 2], "inverse", clip=100.0)
    assert unclipped.tolist() == weights_from_counts([1, 2], "inverse").tolist()


def test_effective_number_limits():
    counts = [1000, 10]
    assert weights_from_counts(counts, "effective_number", beta=0.0).tolist() == [1.0, 1.0]
    near_inverse = weights_from_counts(counts, "effective_number", beta=1 - 1e-9, smooth=0)
    np.testing.assert_allclose(
        near_inverse.numpy(), weights_from_counts(counts, "inverse", smooth=0).numpy(), rtol=1e-4
    )


def test_enet_is_bounded_by_c():
    w = weights_from_counts([10**9, 0, 1], "enet", smooth=0, normalize=False)
    assert float(w.max()) <= 1 / math.log(1.02) + 1e-3 and float(w.min()) >= 1 / math.log(2.02) - 1e-3


def test_needs_image_pixels():
    assert needs_image_pixels("median_frequency") and not needs_image_pixels("sqrt_inverse")


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (([1, 2], "nope"), {}, "Expected `method` to be one of ["),
        (([1, -2],), {}, "class 1 has count -2.0"),
        (([1, float("nan")],), {}, "class 1 has count nan"),
        (([],), {}, "non-empty 1-D sequence, but got shape [0]"),
        (([[1, 2]],), {}, "non-empty 1-D sequence, but got shape [1, 2]"),
        ((["a", "b"],), {}, "Expected `counts` to be"),
        (([0, 0],), {"smooth": 0}, "every count is 0"),
        (([1, 2],), {"smooth": -1}, "Expected `smooth` to be a finite number >= 0, but got -1"),
        (([1, 2],), {"clip": 0.5}, "Expected `clip` to be None or a number >= 1, but got 0.5"),
        (
            ([1, 2], "effective_number"),
            {"beta": 1.0},
            "Expected `beta` for 'effective_number' to be in [0, 1), but got 1.0",
        ),
        (([1, 2], "enet"), {"c": 1.0}, "Expected `c` for 'enet' to be a number > 1, but got 1.0"),
        (([1, 2], "sqrt_inverse"), {"beta": 0.9}, "method 'sqrt_inverse' takes parameters none, but got ['beta']"),
        (([1, 2], "median_frequency"), {}, "Expected `image_pixels` for 'median_frequency'"),
        (([1, 2], "median_frequency"), {"image_pixels": [1, 1]}, "fewer image pixels than labels"),
        (([1, 2], "median_frequency"), {"image_pixels": [4]}, "Expected `image_pixels` to have shape [2], but got [1]"),
    ],
)
def test_errors(args, kwargs, message):
    with pytest.raises(ClassWeightError) as info:
        weights_from_counts(*args, **kwargs)
    assert message in str(info.value)


def test_register_method_and_duplicates():
    @register_method("square_inverse")
    def square_inverse(counts, *, smooth, power=2.0):
        return (counts + smooth) ** -power

    try:
        assert weights_from_counts(
            [1, 3], "square_inverse", smooth=0, normalize=False, power=1.0
        ).tolist() == pytest.approx([1, 1 / 3])
        with pytest.raises(ClassWeightError, match="already registered"):
            register_method("square_inverse", square_inverse)
        register_method("square_inverse", square_inverse, overwrite=True)
    finally:
        del METHODS["square_inverse"]


def test_a_broken_method_is_caught():
    register_method("broken", lambda counts, *, smooth: -counts)
    try:
        with pytest.raises(ClassWeightError, match="method 'broken' gave weight -1.0 for class 0"):
            weights_from_counts([1, 2], "broken")
    finally:
        del METHODS["broken"]


def test_numpy_scalars_are_accepted_as_parameters():
    a = weights_from_counts([10, 1], "effective_number", smooth=np.float32(1.0), beta=np.float64(0.5), clip=np.int64(3))
    assert a.tolist() == weights_from_counts([10, 1], "effective_number", smooth=1.0, beta=0.5, clip=3).tolist()


@given(counts=counts_strategy, data=st.data())
def test_an_ignored_class_gets_zero_and_leaves_the_others_as_without_it(counts, data):
    c = np.array(counts)
    ignored = data.draw(st.integers(0, len(c) - 1))
    keep = np.arange(len(c)) != ignored
    if len(c) == 1 or c[keep].sum() == 0:
        return
    got = weights_from_counts(c, "sqrt_inverse", ignore_index=ignored).numpy()
    assert got[ignored] == 0.0
    np.testing.assert_allclose(got[keep], weights_from_counts(c[keep], "sqrt_inverse").numpy(), rtol=1e-6)
    assert weights_from_counts(c, ignore_index=len(c) + 5).tolist() == weights_from_counts(c).tolist()
