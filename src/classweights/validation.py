"""Check a weight vector before it reaches a loss function."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ._errors import ClassWeightError


def validate_weights(weights: Any, num_classes: int) -> torch.Tensor:
    """Return ``weights`` as a float32 tensor ``[num_classes]``, or raise.

    Checks the shape, that every weight is finite and non-negative, and that
    not all are zero. A tensor keeps its device.

    Raises:
        ClassWeightError: naming the offending class index and value.

    Example:
        >>> validate_weights([0.5, 1.5], num_classes=2)
        tensor([0.5000, 1.5000])
        >>> validate_weights([0.5, float("nan")], num_classes=2)
        Traceback (most recent call last):
        ...
        classweights.ClassWeightError: Expected the weight of class 1 to be finite, but got nan
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ClassWeightError(f"Expected `num_classes` to be a positive integer, but got {num_classes!r}")
    if isinstance(weights, torch.Tensor):
        tensor = weights
    else:
        try:
            tensor = torch.as_tensor(np.asarray(weights))
        except (TypeError, ValueError, RuntimeError) as exc:
            raise ClassWeightError(f"Expected `weights` to be a sequence of numbers, but got {type(weights).__name__} ({exc})") from None
    if tensor.dtype == torch.bool or not (tensor.is_floating_point() or tensor.dtype in (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)):
        raise ClassWeightError(f"Expected `weights` to be real numbers, but got dtype {str(tensor.dtype).replace('torch.', '')}")
    if tuple(tensor.shape) != (num_classes,):
        raise ClassWeightError(f"Expected `weights` to have shape [{num_classes}], but got {list(tensor.shape)}")
    tensor = tensor.to(torch.float32)
    values = tensor.detach().cpu()
    not_finite = ~torch.isfinite(values)
    if bool(not_finite.any()):
        i = int(not_finite.nonzero()[0])
        raise ClassWeightError(f"Expected the weight of class {i} to be finite, but got {float(values[i])}")
    negative = values < 0
    if bool(negative.any()):
        i = int(negative.nonzero()[0])
        raise ClassWeightError(f"Expected the weight of class {i} to be >= 0, but got {float(values[i])}")
    if not bool((values > 0).any()):
        raise ClassWeightError(f"Expected at least one positive weight, but all {num_classes} weights are 0")
    return tensor
