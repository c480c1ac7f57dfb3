"""sample_weights and make_sampler: against scikit-learn and numpy references, label maps, sources, sampler frequencies."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from sklearn.utils.class_weight import compute_sample_weight
from torch.utils.data import DataLoader, TensorDataset, WeightedRandomSampler

import classweights
from classweights import (
    ClassWeightError,
    count_label_stats,
    count_labels,
    encode_labels,
    make_sampler,
    sample_weights,
    weights_from_counts,
)
from classweights.sampling import MAX_SAMPLER_SAMPLES


def per_sample_reference(labels: np.ndarray, weights: np.ndarray, ignore_index: int | None, reduce: str) -> np.ndarray:
    """Sample by sample in Python: the reduce of the weights of the labels that are not ignored, 0 if none are left."""
    out = []
    for sample in labels.reshape(len(labels), -1):
        kept = [int(v) for v in sample if ignore_index is None or v != ignore_index]
        values = weights.astype(np.float64)[kept]
        out.append(0.0 if not kept else (values.mean() if reduce == "mean" else values.max()))
    return np.array(out)


@st.composite
def all_classes_present(draw, max_classes=8):
    """Single labels 0..C-1 with every class present, shuffled."""
    c = draw(st.integers(1, max_classes))
    extra = draw(st.lists(st.integers(0, c - 1), max_size=60))
    y = list(range(c)) + extra
    return np.array(draw(st.permutations(y))), c


# ------------------------------------------------------- single labels ----


@given(all_classes_present())
def test_balanced_equals_sklearn_compute_sample_weight(case):
    y, c = case
    expected = compute_sample_weight("balanced", y)
    got = sample_weights(y, c, method="balanced")
    assert got.dtype == torch.float32 and got.shape == (len(y),)
    assert torch.equal(got, torch.from_numpy(expected).to(torch.float32))  # scikit-learn's float64, rounded once


labels_of_any_kind = st.one_of(
    st.lists(st.text(alphabet="abcXYZ é", max_size=3), min_size=1, max_size=40),
    st.lists(st.integers(-(10**6), 10**6), min_size=1, max_size=40),
    st.lists(st.sampled_from([-100, -1, 3, 70, 2**40]), min_size=1, max_size=40),
)


@given(labels_of_any_kind)
def test_balanced_of_encoded_labels_equals_sklearn_for_strings_and_negative_labels(y):
    codes, classes = encode_labels(y)
    got = sample_weights(codes, len(classes), method="balanced")
    assert torch.equal(got, torch.from_numpy(compute_sample_weight("balanced", y)).to(torch.float32))


def test_balanced_with_an_absent_class_is_sklearn_times_present_over_c():
    y = np.array([0, 0, 0, 2, 2, 3])  # class 1 absent: 3 of 4 classes present
    got = sample_weights(y, 4, method="balanced").double().numpy()
    np.testing.assert_allclose(got, compute_sample_weight("balanced", y) * 3 / 4, rtol=1e-7)


@given(
    st.lists(st.integers(0, 5), min_size=1, max_size=50),
    st.lists(st.floats(0, 1e6, width=32, allow_subnormal=False), min_size=6, max_size=6),
)
def test_given_weights_are_looked_up_exactly(y, weights):
    if not any(weights):
        weights[0] = 1.0
    got = sample_weights(y, 6, weights=weights)
    assert torch.equal(got, torch.tensor(weights, dtype=torch.float32)[torch.tensor(y)])


@pytest.mark.parametrize("method", ["inverse", "sqrt_inverse", "balanced", "uniform", "enet", "effective_number"])
@pytest.mark.parametrize(
    "options", [{}, {"smooth": 1.0}, {"normalize": True}, {"smooth": 2.0, "normalize": True, "clip": 3}]
)
def test_methods_use_weights_from_counts_with_smooth_0_and_no_normalisation_by_default(method, options):
    y = np.array([0] * 50 + [1] * 7 + [3] * 2)  # class 2 absent: the zero-count policy applies
    table = weights_from_counts(count_labels(y, 4), method, **{"smooth": 0.0, "normalize": False, **options})
    assert torch.equal(sample_weights(y, 4, method=method, **options), table[torch.from_numpy(y)])


def test_inverse_gives_every_present_class_the_same_total_weight():
    y = np.array([0] * 1000 + [1] * 37 + [2] * 3 + [4] * 1)
    w = sample_weights(y, 5).double()
    totals = torch.zeros(5, dtype=torch.float64).index_add_(0, torch.from_numpy(y), w)
    torch.testing.assert_close(totals, torch.tensor([1.0, 1.0, 1.0, 0.0, 1.0], dtype=torch.float64), rtol=1e-6, atol=0)


def test_single_label_ignored_sample_gets_zero():
    assert sample_weights([0, -100, 1, 1], 2, ignore_index=-100).tolist() == [1.0, 0.0, 0.5, 0.5]


# ---------------------------------------------------------- label maps ----


@st.composite
def label_maps(draw):
    ignore = draw(st.sampled_from([None, 255, -1, 0]))
    c = draw(st.integers(2 if ignore == 0 else 1, 6))  # ignoring the only class leaves nothing to weigh
    n, h, w = draw(st.integers(1, 6)), draw(st.integers(1, 4)), draw(st.integers(1, 4))
    values = list(range(c)) + ([ignore] if ignore is not None else [])
    flat = draw(st.lists(st.sampled_from(values), min_size=n * h * w, max_size=n * h * w))
    labels = np.array(flat, dtype=np.int16).reshape(n, h, w)
    labels[0, 0, 0] = c - 1  # at least one label is counted (all ignored is refused, tested below)
    return labels, c, ignore


@pytest.mark.parametrize("reduce", ["mean", "max"])
@given(case=label_maps(), method=st.sampled_from(["inverse", "balanced", "sqrt_inverse"]))
def test_label_maps_reduce_like_the_reference(case, method, reduce):
    labels, c, ignore = case
    table = weights_from_counts(
        count_labels(labels, c, ignore_index=ignore), method, smooth=0, normalize=False, ignore_index=ignore
    )
    expected = per_sample_reference(labels, table.numpy(), ignore, reduce)
    got = sample_weights(labels, c, method=method, reduce=reduce, ignore_index=ignore)
    assert got.shape == (len(labels),) and got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6)


def test_label_maps_mean_max_and_fully_ignored_samples():
    masks = np.array([[[0, 0], [1, 255]], [[0, 0], [0, 0]], [[255, 255], [255, 255]]], dtype=np.uint8)
    weights = [1.0, 4.0]
    assert sample_weights(masks, 2, weights=weights, ignore_index=255).tolist() == [2.0, 1.0, 0.0]
    assert sample_weights(masks, 2, weights=weights, ignore_index=255, reduce="max").tolist() == [4.0, 1.0, 0.0]
    # computed weights: class 0 has 6 labels, class 1 one; the fully ignored sample still gets 0
    assert sample_weights(masks, 2, ignore_index=255).tolist() == pytest.approx([(2 / 6 + 1) / 3, 1 / 6, 0.0])


def test_ignore_index_inside_the_classes_gets_weight_zero_and_leaves_the_reduce():
    masks = np.array([[0, 1, 2, 2], [0, 0, 0, 0]])
    got = sample_weights(masks, 3, ignore_index=0)
    table = weights_from_counts(
        count_labels(masks, 3, ignore_index=0), "inverse", smooth=0, normalize=False, ignore_index=0
    )
    assert table[0] == 0
    np.testing.assert_allclose(got.numpy(), [(table[1] + 2 * table[2]) / 3, 0.0], rtol=1e-6)


def test_samples_of_different_sizes_and_samples_without_labels():
    items = [np.array([0, 1]), np.array([], dtype=np.int64), np.array([1, 1, 1])]
    w = [2.0, 6.0]
    assert sample_weights(items, 2, weights=w).tolist() == [4.0, 0.0, 6.0]


def test_median_frequency_gathers_image_pixels_in_the_same_read():
    masks = np.array([[0, 0, 0, 1], [0, 2, 2, 2], [0, 0, 0, 0]])
    stats = count_label_stats(masks, 3, presence=True)
    table = weights_from_counts(
        stats.counts, "median_frequency", smooth=0, normalize=False, image_pixels=stats.image_pixels
    )
    expected = per_sample_reference(masks, table.numpy(), None, "mean")
    np.testing.assert_allclose(sample_weights(masks, 3, method="median_frequency").numpy(), expected, rtol=1e-6)


# ------------------------------------------------------------- sources ----


class Pairs:
    """A map-style dataset of (image, mask) items that counts its reads."""

    def __init__(self, masks: np.ndarray) -> None:
        self.masks, self.reads = masks, 0

    def __len__(self) -> int:
        return len(self.masks)

    def __getitem__(self, i: int):
        self.reads += 1
        return torch.zeros(3), torch.from_numpy(self.masks[i])


def test_every_source_gives_the_same_weights(tmp_path):
    rng = np.random.default_rng(0)
    masks = rng.choice(4, size=(40, 3, 3), p=[0.85, 0.1, 0.04, 0.01]).astype(np.uint8)
    expected = sample_weights(masks, 4)
    np.save(tmp_path / "m.npy", masks)
    np.savez_compressed(tmp_path / "m.npz", train=masks[:1], val=masks)
    sources = {
        "tensor": (torch.from_numpy(masks), {}),
        "nested list": (masks.tolist(), {}),
        ".npy": (tmp_path / "m.npy", {}),
        ".npz key": (str(tmp_path / "m.npz"), {"key": "val"}),
        "dict": ({"train": masks}, {}),
        "TensorDataset": (TensorDataset(torch.zeros(40, 2), torch.from_numpy(masks)), {"key": 1}),
        "pairs": (Pairs(masks), {"key": 1}),
        "DataLoader": (DataLoader(Pairs(masks), batch_size=7), {"key": 1}),
        "generator": ((masks[i : i + 9] for i in range(0, 40, 9)), {}),
    }
    for name, (source, options) in sources.items():
        assert torch.equal(sample_weights(source, 4, **options), expected), name
    y = masks[:, 0, 0]
    assert torch.equal(sample_weights(y.tolist(), 4), sample_weights(y, 4))


def test_labels_are_read_once(tmp_path, monkeypatch):
    masks = np.array([[0, 1], [0, 0], [2, 0]], dtype=np.uint8)
    dataset = Pairs(masks)
    sample_weights(dataset, 3, key=1)
    assert dataset.reads == len(masks)

    import classweights._npfiles as sources

    opened = []
    real = sources.open_regular
    monkeypatch.setattr(sources, "open_regular", lambda *a, **k: opened.append(a[0]) or real(*a, **k))
    path = tmp_path / "m.npz"
    np.savez(path, train=masks)
    assert torch.equal(sample_weights(path, 3, reduce="max"), sample_weights(masks, 3, reduce="max"))
    assert len(opened) == 1


def test_a_tensor_source_is_not_copied():
    labels = torch.tensor([[0, 1], [1, 1]])
    samples = classweights.sampling.read_samples(labels, 2, ignore_index=None, key=None)
    assert samples.chunks[0].data_ptr() == labels.data_ptr()


# ------------------------------------------------------------- errors ----


def one_line_error(call, *fragments):
    with pytest.raises(ClassWeightError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_bad_input_is_a_one_line_error_naming_the_value(tmp_path):
    y = np.array([0, 1, 1])
    one_line_error(lambda: sample_weights(np.array([0, 3, 12]), 3), "label 3 at flat index 1", "num_classes=3")
    one_line_error(lambda: sample_weights(y, 2, reduce="sum"), "`reduce`", "'sum'")
    one_line_error(lambda: sample_weights(y, 0), "`num_classes`", "0")
    one_line_error(lambda: sample_weights(y, 2, ignore_index="255"), "`ignore_index`", "'255'")
    one_line_error(lambda: sample_weights(y, 2, weights=[1.0]), "shape [2]", "[1]")
    one_line_error(lambda: sample_weights(y, 2, weights=[1.0, float("nan")]), "class 1", "nan")
    one_line_error(
        lambda: sample_weights(y, 2, weights=[1.0, 1.0], method="balanced"), "either `weights`", "method='balanced'"
    )
    one_line_error(lambda: sample_weights(y, 2, weights=[1.0, 1.0], smooth=1), "either `weights`", "smooth")
    one_line_error(lambda: sample_weights(y, 2, method="median"), "`method`", "'median'")
    one_line_error(lambda: sample_weights(y, 2, beta=0.9), "'inverse'", "beta")
    one_line_error(lambda: sample_weights(y, 2, smooth=-1), "`smooth`", "-1")
    one_line_error(lambda: sample_weights(np.array([0.5, 1.0]), 2), "label 0.5")
    one_line_error(lambda: sample_weights(np.array(["a", "b"]), 2), "dtype")
    one_line_error(lambda: sample_weights(np.zeros((0, 4), np.uint8), 2), "empty")
    one_line_error(lambda: sample_weights([[255, 255]], 2, ignore_index=255), "ignore_index=255")
    one_line_error(lambda: sample_weights(tmp_path / "missing.npy", 2), "missing.npy")
    one_line_error(lambda: sample_weights(3.5, 2), "float")


def test_unknown_method_is_refused_before_reading():
    dataset = Pairs(np.zeros((4, 2), np.uint8))
    one_line_error(lambda: sample_weights(dataset, 2, method="nope", key=1), "'nope'")
    assert dataset.reads == 0


# ------------------------------------------------------------- sampler ----


def chi_square(observed: np.ndarray, probabilities: np.ndarray) -> float:
    expected = observed.sum() * probabilities
    return float(((observed - expected) ** 2 / expected).sum())


# chi2(df).isf(1e-9): a true null exceeds it once in a billion runs, so the test cannot flake; a wrong
# distribution (the uniform-method case below) exceeds it by orders of magnitude.
FALSE_ALARM = 1e-9


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_inverse_sampler_draws_every_class_equally_often(seed):
    chi2 = pytest.importorskip("scipy.stats").chi2
    counts = np.array([5000, 1000, 200, 50, 7])
    y = np.random.default_rng(seed).permutation(np.repeat(np.arange(5), counts))
    sampler = make_sampler(y, 5, num_samples=100_000, generator=torch.Generator().manual_seed(seed))
    drawn = np.bincount(y[np.fromiter(iter(sampler), dtype=np.int64)], minlength=5)
    assert drawn.sum() == 100_000
    assert chi_square(drawn, np.full(5, 0.2)) < chi2.isf(FALSE_ALARM, df=4)


def test_uniform_sampler_draws_classes_by_their_counts_and_fails_the_uniform_test():
    chi2 = pytest.importorskip("scipy.stats").chi2
    counts = np.array([5000, 1000, 200, 50, 7])
    y = np.repeat(np.arange(5), counts)
    sampler = make_sampler(y, 5, method="uniform", num_samples=100_000, generator=torch.Generator().manual_seed(0))
    drawn = np.bincount(y[np.fromiter(iter(sampler), dtype=np.int64)], minlength=5)
    assert chi_square(drawn, counts / counts.sum()) < chi2.isf(FALSE_ALARM, df=4)
    assert chi_square(drawn, np.full(5, 0.2)) > 100 * chi2.isf(FALSE_ALARM, df=4)


def test_sampler_defaults_options_and_reproducibility():
    masks = np.array([[0, 0, 1], [0, 0, 0], [255, 255, 255], [2, 0, 0]])
    sampler = make_sampler(masks, 3, reduce="max", ignore_index=255)
    assert isinstance(sampler, WeightedRandomSampler)
    assert len(sampler) == 4 and sampler.replacement
    assert torch.equal(sampler.weights, sample_weights(masks, 3, reduce="max", ignore_index=255).double())
    draws = [
        list(make_sampler(masks, 3, ignore_index=255, num_samples=50, generator=torch.Generator().manual_seed(7)))
        for _ in range(2)
    ]
    assert draws[0] == draws[1] and 2 not in draws[0]  # the fully ignored sample has weight 0
    without = list(make_sampler(masks, 3, ignore_index=255, replacement=False, num_samples=3))
    assert sorted(without) == [0, 1, 3]
    weighted = make_sampler([0, 1, 1], 2, weights=[3.0, 1.0])
    assert weighted.weights.tolist() == [3.0, 1.0, 1.0]


def test_sampler_bad_input():
    y = [0, 1, 1]
    one_line_error(lambda: make_sampler(y, 2, num_samples=0), "`num_samples`", "0")
    one_line_error(lambda: make_sampler(y, 2, num_samples=2.5), "`num_samples`", "2.5")
    one_line_error(lambda: make_sampler(y, 2, replacement="no"), "`replacement`", "'no'")
    one_line_error(lambda: make_sampler(y, 2, generator=42), "`generator`", "42")
    one_line_error(lambda: make_sampler(y, 2, replacement=False, num_samples=4), "`num_samples` <= 3", "4")
    one_line_error(lambda: make_sampler([1, 1], 2, weights=[1.0, 0.0]), "weight 0")
    one_line_error(lambda: make_sampler(y, 2, method="median"), "'median'")


def test_sampler_refuses_more_samples_than_multinomial_draws_from():
    one_line_error(
        lambda: make_sampler(torch.zeros(MAX_SAMPLER_SAMPLES + 1, dtype=torch.uint8), 1), str(MAX_SAMPLER_SAMPLES + 1)
    )
