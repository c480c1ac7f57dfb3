"""compute_class_weights: the one-call API equals the composition of its parts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import classweights as cw


@pytest.mark.parametrize("method", sorted(cw.METHODS))
def test_equals_count_then_weigh(grids, method):
    stats = cw.count_label_stats(grids, 10, presence=True)
    params = {"image_pixels": stats.image_pixels} if method == "median_frequency" else {}
    expected = cw.weights_from_counts(stats.counts, method, **params)
    got = cw.compute_class_weights(grids, num_classes=10, method=method)
    assert torch.equal(got, expected)


def test_passes_counting_and_weighting_options(tmp_path, grids):
    np.savez(tmp_path / "d.npz", train=grids, val=grids[:5])
    seen = []
    w = cw.compute_class_weights(
        tmp_path / "d.npz", 10, key="val", progress=lambda d, t: seen.append(d), clip=2.0, chunk_size=256
    )
    assert seen[-1] == 5
    assert float(w.max() / w.min()) <= 2.0 + 1e-5


def test_unknown_method_fails_before_counting():
    def never():
        raise AssertionError("counted")
        yield

    with pytest.raises(cw.ClassWeightError, match="Expected `method` to be one of"):
        cw.compute_class_weights(never(), 10, method="nope")
    with pytest.raises(
        cw.ClassWeightError, match=r"method 'sqrt_inverse' takes parameters none, but got \['ignore_idx'\]"
    ):
        cw.compute_class_weights(never(), 10, ignore_idx=255)


def test_real_corpus_weights(real_corpus):
    w = cw.compute_class_weights(real_corpus, 10)
    assert float(w[0]) < 0.15 and bool((w[1:] > 1.05).all())
    assert 9 < float(w.max() / w.min()) < 12
