"""The one-call API: labels -> counts -> weights -> validated weights."""

from __future__ import annotations

from typing import Any

import torch

from .counting import LabelStats, count_label_stats
from .methods import check_method, needs_image_pixels, weights_from_counts
from .validation import validate_weights

_COUNT_OPTIONS = (
    "ignore_index",
    "key",
    "chunk_size",
    "num_threads",
    "device",
    "progress",
    "fingerprint",
    "distributed",
)


def compute_class_weights(
    dataset: Any,
    num_classes: int,
    method: str = "sqrt_inverse",
    smooth: float = 1.0,
    normalize: bool = True,
    **kwargs: Any,
) -> torch.Tensor:
    """Count the labels of ``dataset`` and turn the counts into validated weights.

    Args:
        dataset: any source :func:`~classweights.count_labels` accepts.
        num_classes: number of classes ``C``.
        method, smooth, normalize: as in :func:`~classweights.weights_from_counts`.
        **kwargs: counting options (``ignore_index``, ``key``, ``chunk_size``,
            ``num_threads``, ``device``, ``progress``, ``distributed``) and weighting options
            (``clip`` and method parameters such as ``beta``).

    Returns:
        float32 tensor ``[C]`` on the CPU.

    Example:
        >>> import numpy as np
        >>> labels = np.array([[0, 0, 0, 1], [0, 0, 2, 2]])
        >>> compute_class_weights(labels, num_classes=3, method="balanced", smooth=0, normalize=False)
        tensor([0.5333, 2.6667, 1.3333])
    """
    return count_and_weigh(dataset, num_classes, method, smooth=smooth, normalize=normalize, **kwargs)[1]


def count_and_weigh(
    dataset: Any,
    num_classes: int,
    method: str = "sqrt_inverse",
    *,
    smooth: float = 1.0,
    normalize: bool = True,
    **kwargs: Any,
) -> tuple[LabelStats, torch.Tensor]:
    """:func:`compute_class_weights` that also returns the :class:`LabelStats` it counted.

    Use it when you want to keep the counts (e.g. to save them beside the weights).
    It gathers the presence statistic only for methods that need it, and the
    labels' content fingerprint if given ``fingerprint=True``.

    Example:
        >>> stats, weights = count_and_weigh([0, 0, 0, 1], 2, "inverse", smooth=0, normalize=False)
        >>> stats.counts.tolist(), [round(w, 4) for w in weights.tolist()]
        ([3, 1], [0.3333, 1.0])
    """
    count_options = {k: kwargs.pop(k) for k in _COUNT_OPTIONS if k in kwargs}
    # Reject an unknown method or parameter before a possibly long counting pass.
    check_method(method, {k: v for k, v in kwargs.items() if k != "clip"})
    presence = needs_image_pixels(method)
    stats = count_label_stats(dataset, num_classes, presence=presence, **count_options)
    if presence:
        kwargs.setdefault("image_pixels", stats.image_pixels)
    ignore_index = count_options.get("ignore_index")
    weights = weights_from_counts(
        stats.counts, method, smooth=smooth, normalize=normalize, ignore_index=ignore_index, **kwargs
    )
    return stats, validate_weights(weights, num_classes)
