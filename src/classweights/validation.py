"""Check a weight vector before it reaches a loss function."""

from __future__ import annotations

from typing import Any

import torch

from ._checks import check_dense_tensor, check_num_classes, sequence_as_float64
from ._errors import ClassWeightError


def validate_weights(weights: Any, num_classes: int) -> torch.Tensor:
    """Return ``weights`` as a float32 tensor ``[num_classes]``, or raise.

    Checks the shape, that every weight is finite and non-negative, that not
    all are zero, and that float32 holds each one: a positive weight too small
    for float32 (below about ``1e-45``) would become 0 and switch its class
    off, so it is an error, as is one too large (above about ``3.4e38``). A
    tensor keeps its device.

    Raises:
        ClassWeightError: naming the offending class index and value; also for
            ``num_classes`` above :data:`~classweights.MAX_CLASSES`.

    Example:
        >>> validate_weights([0.5, 1.5], num_classes=2)
        tensor([0.5000, 1.5000])
        >>> validate_weights([0.5, float("nan")], num_classes=2)
        Traceback (most recent call last):
        ...
        classweights.ClassWeightError: Expected the weight of class 1 to be finite, but got nan
    """
    num_classes = check_num_classes(num_classes)
    if isinstance(weights, torch.Tensor):
        check_dense_tensor(weights, "`weights`")
        tensor = weights
    else:
        tensor = _from_sequence(weights)
    if (
        tensor.dtype == torch.bool
        or tensor.is_complex()
        or not (tensor.is_floating_point() or tensor.dtype in _INTEGERS)
    ):
        raise ClassWeightError(
            f"Expected `weights` to be real numbers, but got dtype {str(tensor.dtype).replace('torch.', '')}"
        )
    if tuple(tensor.shape) != (num_classes,):
        raise ClassWeightError(f"Expected `weights` to have shape [{num_classes}], but got {list(tensor.shape)}")
    values = tensor.detach().cpu().to(torch.float64)  # checked before the cast, so no value changes unseen
    not_finite = ~torch.isfinite(values)
    if bool(not_finite.any()):
        i = int(not_finite.nonzero()[0])
        raise ClassWeightError(f"Expected the weight of class {i} to be finite, but got {float(values[i])}")
    negative = values < 0
    if bool(negative.any()):
        i = int(negative.nonzero()[0])
        raise ClassWeightError(f"Expected the weight of class {i} to be >= 0, but got {float(values[i])}")
    single = values.to(torch.float32)
    lost = ((values > 0) & (single == 0)) | ~torch.isfinite(single)
    if bool(lost.any()):
        i = int(lost.nonzero()[0])
        raise ClassWeightError(
            f"Expected the weight of class {i} to be representable in float32, but {float(values[i])!r} becomes {float(single[i])!r}"
        )
    if not bool((values > 0).any()):
        raise ClassWeightError(f"Expected at least one positive weight, but all {num_classes} weights are 0")
    return tensor.to(torch.float32)


_INTEGERS = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64, torch.uint16, torch.uint32, torch.uint64)


def _from_sequence(weights: Any) -> torch.Tensor:
    return sequence_as_float64(weights, "weights", kinds="iuf", expected="real numbers")  # bools are not weights
