"""validate_weights: the last check before weights reach a loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from classweights import ClassWeightError, validate_weights


def test_returns_float32_tensor_of_the_right_shape():
    w = validate_weights(np.array([1, 2, 0]), 3)
    assert w.dtype == torch.float32 and w.tolist() == [1.0, 2.0, 0.0]
    t = torch.tensor([0.5, 1.5], dtype=torch.float64)
    assert validate_weights(t, 2).dtype == torch.float32


@pytest.mark.parametrize(
    ("weights", "num_classes", "message"),
    [
        ([1.0, 2.0], 3, "Expected `weights` to have shape [3], but got [2]"),
        ([[1.0, 2.0]], 2, "Expected `weights` to have shape [2], but got [1, 2]"),
        ([1.0, float("nan")], 2, "Expected the weight of class 1 to be finite, but got nan"),
        ([float("inf"), 1.0], 2, "Expected the weight of class 0 to be finite, but got inf"),
        ([1.0, float("-inf")], 2, "Expected the weight of class 1 to be finite, but got -inf"),
        ([1.0, -0.5], 2, "Expected the weight of class 1 to be >= 0, but got -0.5"),
        ([0.0, 0.0], 2, "Expected at least one positive weight, but all 2 weights are 0"),
        ([True, False], 2, "Expected `weights` to be real numbers, but got dtype bool"),
        (["a", "b"], 2, "Expected `weights` to be"),
        ([1.0], 0, "Expected `num_classes` to be a positive integer, but got 0"),
    ],
)
def test_rejects_bad_weights(weights, num_classes, message):
    with pytest.raises(ClassWeightError) as info:
        validate_weights(weights, num_classes)
    assert message in str(info.value)
    assert isinstance(info.value, ValueError)
