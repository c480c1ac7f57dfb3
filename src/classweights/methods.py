"""Turn class counts into loss weights: counts -> weights.

Every method is a plain function ``fn(counts, *, smooth, **params) -> weights``
working on float64 ``[C]`` tensors, registered by name in :data:`METHODS`.
:func:`weights_from_counts` validates the input, calls the method, applies the
zero-count policy, the optional ratio cap and the normalisation.

Zero-count policy: a class whose formula is not finite (its count is 0 and
the formula divides by it, e.g. ``inverse`` with ``smooth=0``) gets the
largest weight of the other classes, so it stays finite and positive. With
``smooth > 0`` (the default) the formula itself stays finite, and an unseen
class gets the formula's value at ``n_c = 0``, e.g. ``1 / sqrt(smooth)``,
which is at least the weight of every seen class.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ._checks import (
    MAX_CLASSES,
    as_float,
    check_dense_tensor,
    check_finite,
    check_flag,
    check_ignore_index,
    check_real,
    sequence_as_float64,
    shown,
)
from ._errors import ClassWeightError

WeightMethod = Callable[..., torch.Tensor]

METHODS: dict[str, WeightMethod] = {}
"""Registry of weighting methods by name. Add your own with :func:`register_method`."""


def register_method(name: str, fn: WeightMethod | None = None, *, overwrite: bool = False) -> Any:
    """Register ``fn`` as weighting method ``name``; usable as a decorator.

    ``fn(counts, *, smooth, **params)`` receives float64 counts ``[C]`` and must
    return float64 weights ``[C]``; entries for zero-count classes may be
    non-finite (the zero-count policy replaces them). A keyword-only parameter
    named ``image_pixels`` asks :func:`~classweights.compute_class_weights` to
    gather the per-image presence statistic.

    Example:
        >>> import torch
        >>> @register_method("log_inverse")
        ... def log_inverse(counts, *, smooth):
        ...     return 1.0 / torch.log1p(counts + smooth)
        >>> weights_from_counts([100, 10], "log_inverse").tolist()
        [0.6990..., 1.3009...]
        >>> del METHODS["log_inverse"]
    """

    def add(function: WeightMethod) -> WeightMethod:
        if not isinstance(name, str) or not name:
            raise ClassWeightError(f"Expected the method name to be a non-empty string, but got {name!r}")
        if name in METHODS and not overwrite:
            raise ClassWeightError(f"method {name!r} is already registered; pass overwrite=True to replace it")
        METHODS[name] = function
        return function

    return add if fn is None else add(fn)


def get_method(method: str) -> WeightMethod:
    """The registered function called ``method``, or a :class:`ClassWeightError` listing the names."""
    if not isinstance(method, str) or method not in METHODS:
        raise ClassWeightError(f"Expected `method` to be one of {sorted(METHODS)}, but got {shown(method)}")
    return METHODS[method]


def check_method(method: str, params: Mapping[str, Any]) -> WeightMethod:
    """The function of ``method``, after checking that it accepts every name in ``params``."""
    function = get_method(method)
    accepted = inspect.signature(function).parameters
    unknown = sorted(set(params) - set(accepted))
    if unknown and not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values()):
        known = sorted(p for p in accepted if p not in ("counts", "smooth"))
        raise ClassWeightError(f"method {method!r} takes parameters {known or 'none'}, but got {unknown}")
    return function


def needs_image_pixels(method: str) -> bool:
    """Whether ``method`` needs the ``image_pixels`` presence statistic."""
    return "image_pixels" in inspect.signature(get_method(method)).parameters


# -------------------------------------------------------------- methods ----


@register_method("uniform")
def uniform(counts: torch.Tensor, *, smooth: float) -> torch.Tensor:
    """All ones: ``w_c = 1``. The baseline that does no re-weighting."""
    return torch.ones_like(counts)


@register_method("inverse")
def inverse(counts: torch.Tensor, *, smooth: float) -> torch.Tensor:
    """Inverse frequency: ``w_c = 1 / (n_c + s)``.

    The classic re-weighting (e.g. King and Zeng 2001); strongest of the family,
    so on very skewed data it can over-weight rare classes.
    """
    return 1.0 / (counts + smooth)


@register_method("sqrt_inverse")
def sqrt_inverse(counts: torch.Tensor, *, smooth: float) -> torch.Tensor:
    """Inverse square-root frequency: ``w_c = 1 / sqrt(n_c + s)``.

    A softened inverse frequency (as used for long-tailed recognition, e.g.
    Mahajan et al. 2018). The default: on ARC grids (93% black) it gives the
    background about 1/11 of a colour's weight.
    """
    return torch.rsqrt(counts + smooth)


@register_method("balanced")
def balanced(counts: torch.Tensor, *, smooth: float) -> torch.Tensor:
    """Balanced: ``w_c = N / (C * (n_c + s))`` with ``N = sum_c (n_c + s)``.

    With ``smooth=0, normalize=False``, ``sum_c w_c * n_c = N``, and it equals
    scikit-learn's ``compute_class_weight("balanced", ...)`` when every class
    occurs; scikit-learn divides by the number of classes present, not ``C``
    (see :func:`~classweights.class_weight_dict` for its exact weights).
    """
    smoothed = counts + smooth
    return smoothed.sum() / (counts.numel() * smoothed)


@register_method("enet")
def enet(counts: torch.Tensor, *, smooth: float, c: float = 1.02) -> torch.Tensor:
    """ENet weighting: ``w_c = 1 / ln(c + p_c)``, ``p_c = (n_c + s) / sum_k (n_k + s)``.

    Paszke et al. 2016, "ENet: A Deep Neural Network Architecture for Real-Time
    Semantic Segmentation". ``c = 1.02`` bounds the weights to ``[1/ln(1+c), 1/ln(c)]``
    (about 1.42 to 50.5).
    """
    value = as_float(c)
    if value is None or not math.isfinite(value) or value <= 1:
        raise ClassWeightError(f"Expected `c` for 'enet' to be a number > 1, but got {shown(c)}")
    smoothed = counts + smooth
    return 1.0 / torch.log(value + smoothed / smoothed.sum())


@register_method("median_frequency")
def median_frequency(counts: torch.Tensor, *, smooth: float, image_pixels: Any = None) -> torch.Tensor:
    """Median frequency balancing: ``w_c = median(f) / f_c``, ``f_c = n_c / P_c``.

    Eigen and Fergus 2015, "Predicting Depth, Surface Normals and Semantic Labels
    with a Common Multi-Scale Convolutional Architecture". ``P_c`` is the total
    number of labels in the images that contain class ``c`` (``image_pixels``,
    from :func:`~classweights.count_label_stats` with ``presence=True``); the
    median is over classes that occur. ``smooth`` is not used. For 1-D labels
    (one label per sample) every ``f_c`` is 1 and all weights are equal.
    """
    if image_pixels is None:
        raise ClassWeightError(
            "Expected `image_pixels` for 'median_frequency' (from count_label_stats(..., presence=True)), but got None"
        )
    pixels = _as_float64(image_pixels, "image_pixels")
    if pixels.shape != counts.shape:
        raise ClassWeightError(
            f"Expected `image_pixels` to have shape {list(counts.shape)}, but got {list(pixels.shape)}"
        )
    if bool(((pixels < counts) & (counts > 0)).any()):
        raise ClassWeightError(
            "Expected `image_pixels` >= `counts` for every class, but some class has fewer image pixels than labels"
        )
    present = counts > 0
    frequency = torch.where(present, counts / pixels.clamp(min=1), torch.nan)
    return torch.quantile(frequency[present], 0.5) / frequency if bool(present.any()) else torch.ones_like(counts)


@register_method("effective_number")
def effective_number(counts: torch.Tensor, *, smooth: float, beta: float = 0.9999) -> torch.Tensor:
    """Effective number of samples: ``w_c = (1 - beta) / (1 - beta ** (n_c + s))``.

    Cui et al. 2019, "Class-Balanced Loss Based on Effective Number of Samples".
    ``beta -> 0`` gives uniform weights, ``beta -> 1`` inverse frequency. Classes
    with ``n_c >> 1 / (1 - beta)`` all get about ``1 - beta``: the paper's
    ``beta = 0.9999`` suits sample counts; for pixel counts in the millions,
    pass a ``beta`` closer to 1 (e.g. ``0.9999999``).
    """
    value = as_float(beta)
    if value is None or not 0 <= value < 1:
        raise ClassWeightError(f"Expected `beta` for 'effective_number' to be in [0, 1), but got {shown(beta)}")
    beta = value
    return (1.0 - beta) / -torch.expm1((counts + smooth) * math.log(beta)) if beta > 0 else torch.ones_like(counts)


# ------------------------------------------------------------- pipeline ----


def weights_from_counts(
    counts: Sequence[int] | np.ndarray | torch.Tensor,
    method: str = "sqrt_inverse",
    *,
    smooth: float = 1.0,
    normalize: bool = True,
    clip: float | None = None,
    ignore_index: int | None = None,
    **method_params: Any,
) -> torch.Tensor:
    """Compute class weights from per-class counts.

    Args:
        counts: non-negative counts ``[C]`` (from :func:`~classweights.count_labels`).
        method: a name in :data:`METHODS`: ``"sqrt_inverse"`` (default),
            ``"inverse"``, ``"balanced"``, ``"enet"``, ``"median_frequency"``,
            ``"effective_number"``, ``"uniform"``, or one you registered.
        smooth: pseudo-count ``s >= 0`` added to every count before the formula.
        normalize: rescale so the weights sum to ``C`` (mean 1).
        clip: if given (``>= 1``), cap the max/min weight ratio at ``clip`` by
            raising the smallest weights to ``max / clip`` (before normalising).
        ignore_index: a class in ``[0, C)`` that the loss ignores: it gets weight
            0 and takes no part in the method or the normalisation (the other
            weights then sum to ``C - 1``). Out-of-range values change nothing.
        **method_params: method parameters, e.g. ``beta`` for
            ``effective_number``, ``c`` for ``enet``, ``image_pixels`` for
            ``median_frequency``.

    Returns:
        float32 tensor ``[C]``: finite and positive (0 only at ``ignore_index``).
        The weights are computed in float64; a weight that float32 cannot hold
        (it would round to 0, switching its class off, or overflow to inf) is a
        :class:`~classweights.ClassWeightError` naming the class; ``clip``
        avoids it by capping the ratio of the largest to the smallest weight.

    Example:
        >>> spec_counts = [19081814, 154289, 154457, 153994, 155609,
        ...                155472, 155012, 155371, 157799, 156183]
        >>> w = weights_from_counts(spec_counts)
        >>> [round(v, 4) for v in w.tolist()[:3]], round(float(w.max() / w.min()), 2)
        ([0.0993, 1.1039, 1.1033], 11.13)
    """
    n = _as_float64(counts, "counts")
    if n.ndim != 1 or n.numel() == 0:
        raise ClassWeightError(f"Expected `counts` to be a non-empty 1-D sequence, but got shape {list(n.shape)}")
    if n.numel() > MAX_CLASSES:
        raise ClassWeightError(f"Expected at most MAX_CLASSES={MAX_CLASSES} counts, but got {n.numel()}")
    if not bool(torch.isfinite(n).all()) or bool((n < 0).any()):
        i = int((~torch.isfinite(n) | (n < 0)).nonzero()[0])
        raise ClassWeightError(f"Expected every count to be finite and >= 0, but class {i} has count {float(n[i])!r}")
    smooth = check_finite(smooth, "smooth", "a finite number >= 0")
    if smooth < 0:
        raise ClassWeightError(f"Expected `smooth` to be a finite number >= 0, but got {smooth!r}")
    if clip is not None and check_real(clip, "clip", "None or a number >= 1") < 1:
        raise ClassWeightError(f"Expected `clip` to be None or a number >= 1, but got {clip!r}")
    clip = None if clip is None else float(clip)
    normalize = check_flag(normalize, "normalize")
    ignore_index = check_ignore_index(ignore_index)
    function = check_method(method, method_params)
    classes = torch.arange(n.numel())
    if ignore_index is not None and 0 <= ignore_index < n.numel():
        if n.numel() == 1:
            raise ClassWeightError(f"Expected a class besides ignore_index={ignore_index}, but there is only one class")
        keep = classes != ignore_index
        params = {
            k: (_as_float64(v, k)[keep] if k == "image_pixels" and v is not None else v)
            for k, v in method_params.items()
        }
        weights = torch.zeros(n.numel(), dtype=torch.float64)
        weights[keep] = _weigh(function, method, n[keep], classes[keep], smooth, normalize, clip, params)
    else:
        keep = torch.ones(n.numel(), dtype=torch.bool)
        weights = _weigh(function, method, n, classes, smooth, normalize, clip, method_params)
    return _as_float32(weights, keep, method)


def _weigh(function: WeightMethod, method: str, n: torch.Tensor, classes: torch.Tensor, smooth: float, normalize: bool,
           clip: float | None, params: Mapping[str, Any]) -> torch.Tensor:  # fmt: skip
    """The method's float64 weights of the classes ``classes`` (their counts ``n``), filled, clipped and normalised."""
    if method != "uniform" and float((n + smooth).sum()) == 0:
        raise ClassWeightError("Expected at least one non-zero count (or smooth > 0), but every count is 0")
    weights = function(n, smooth=smooth, **params).to(torch.float64)
    weights = _fill_zero_count_classes(weights, n, method, classes)
    if clip is not None:
        weights = weights.clamp(min=float(weights.max()) / clip)
    if normalize:
        weights = weights * (n.numel() / weights.sum())
    return weights


def _as_float32(weights: torch.Tensor, keep: torch.Tensor, method: str) -> torch.Tensor:
    """Cast to float32, refusing a weight that must be positive but is not, or that float32 cannot hold."""
    single = weights.to(torch.float32)
    bad = keep & (~torch.isfinite(weights) | (weights <= 0) | (single == 0) | ~torch.isfinite(single))
    if bool(bad.any()):
        i = int(bad.nonzero()[0])
        raise ClassWeightError(
            f"Expected the weight of class {i} to be a positive float32, but {method!r} gives {float(weights[i])!r} "
            f"(float32: {float(single[i])!r}); the counts span too wide a range: pass clip= to cap the ratio of the weights"
        )
    return single


def _fill_zero_count_classes(
    weights: torch.Tensor, counts: torch.Tensor, method: str, classes: torch.Tensor
) -> torch.Tensor:
    """Apply the zero-count policy and reject anything else that is not finite and positive."""
    if weights.shape != counts.shape:
        raise ClassWeightError(f"method {method!r} returned shape {list(weights.shape)}, expected {list(counts.shape)}")
    invalid = ~torch.isfinite(weights) | (weights <= 0)
    if bool((invalid & (counts > 0)).any()):
        i = int((invalid & (counts > 0)).nonzero()[0])
        raise ClassWeightError(
            f"method {method!r} gave weight {float(weights[i])!r} for class {int(classes[i])} (count {float(counts[i]):g}); "
            "expected a finite positive number"
        )
    if bool(invalid.any()):
        if bool(invalid.all()):
            raise ClassWeightError(f"method {method!r} could not weigh any class; expected at least one non-zero count")
        weights = weights.masked_fill(invalid, float(weights[~invalid].max()))
    return weights


def _as_float64(values: Any, name: str) -> torch.Tensor:
    """``values`` as a float64 CPU tensor; tensors of any real dtype (uint64 too), arrays and sequences."""
    if isinstance(values, torch.Tensor):
        check_dense_tensor(values, f"`{name}`")
        return values.detach().cpu().to(torch.float64)  # complex and quantized tensors were refused above
    return sequence_as_float64(values, name, kinds="biuf", expected="numeric")
