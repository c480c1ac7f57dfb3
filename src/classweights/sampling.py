"""Weigh samples instead of classes: labels -> one weight per sample, and a sampler that draws by them.

A class weight says how much a label of that class counts; a sample weight
says how much a whole sample counts, or how often a sampler should draw it.
:func:`sample_weights` gives sample ``i`` the weight of its label, or, for a
label map per sample (segmentation masks), the mean or max weight of its
labels. :func:`make_sampler` wraps those weights in a
:class:`torch.utils.data.WeightedRandomSampler`, so rare classes are drawn as
often as common ones.

Unlike :func:`~classweights.weights_from_counts`, the class weights here are
the method's formula as written: ``smooth=0`` and ``normalize=False`` unless
given. Two reasons: ``inverse`` then gives every class the same total weight
(``n_c * 1/n_c = 1``), which is what makes a sampler draw the classes equally
often; and ``balanced`` then equals scikit-learn's
``compute_sample_weight("balanced", y)``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch.utils.data import WeightedRandomSampler

from ._checks import (
    check_flag,
    check_ignore_index,
    check_num_classes,
    check_positive_int,
    shown,
)
from ._chunk_counts import _as_labels, _count_chunk, _to_tensor
from ._errors import ClassWeightError
from ._sources import open_source
from ._stream import Chunk
from .methods import check_method, needs_image_pixels, weights_from_counts
from .validation import validate_weights

Reduce = Literal["mean", "max"]

SAMPLE_DEFAULTS = {"smooth": 0.0, "normalize": False}
"""The options of :func:`~classweights.weights_from_counts` that :func:`sample_weights` changes by default."""

MAX_SAMPLER_SAMPLES = 1 << 24  # torch.multinomial draws from at most 2**24 categories
_BLOCK_LABELS = 1 << 20  # labels gathered into float64 weights at a time (8 MiB)
_NOT_METHOD_PARAMS = ("smooth", "normalize", "clip")  # weights_from_counts options, not parameters of a method


def sample_weights(
    labels: Any,
    num_classes: int,
    *,
    weights: Any = None,
    method: str = "inverse",
    reduce: Reduce = "mean",
    ignore_index: int | None = None,
    key: str | int | None = None,
    **method_params: Any,
) -> torch.Tensor:
    """One weight per sample: the weight of its label, or the mean (or max) weight of its labels.

    The first axis of ``labels`` is the sample axis. With one label per
    sample (shape ``[N]``), sample ``i`` gets ``w[y_i]``. With a label map
    per sample (e.g. ``[N, H, W]``), it gets ``reduce`` over the weights of
    its labels, labels equal to ``ignore_index`` left out. A sample whose
    labels are all ignored (or that holds none) gets weight 0: it adds
    nothing to a weighted loss and a sampler never draws it.

    The class weights ``w`` are ``weights`` if given, else
    ``weights_from_counts(counts, method, smooth=0, normalize=False, **method_params)``
    with ``counts`` as :func:`~classweights.count_labels` counts them. Note
    ``smooth=0, normalize=False``, not that function's defaults: with them,
    ``method="inverse"`` gives every class the same total weight (what
    :func:`make_sampler` needs), and ``method="balanced"`` gives exactly
    scikit-learn's ``compute_sample_weight("balanced", y)`` (rounded to
    float32) when the classes ``0..C-1`` all occur; when some class does not
    occur, this ``balanced`` divides by ``C`` where scikit-learn divides by the
    number of classes present, so the weights are smaller by that ratio (all
    alike; use :func:`~classweights.class_weight_dict` for scikit-learn's
    class weights of any labels). Pass ``smooth=`` or ``normalize=True`` to
    change them.

    Args:
        labels: integer labels, the sample axis first: a tensor, an array, a
            list, a ``.npy``/``.npz`` path, a mapping, a map-style dataset or
            an iterable of batches, as :func:`~classweights.count_labels`
            accepts. The labels are read once and kept in memory (a tensor or
            array of int8-int64 or uint8 labels is not copied). Samples keep
            the source's order: pass a dataset, not a shuffling ``DataLoader``.
        num_classes: number of classes ``C``.
        weights: class weights ``[C]`` to use instead of computing them; checked
            with :func:`~classweights.validate_weights`.
        method: weighting method when ``weights`` is not given (default ``"inverse"``).
        reduce: ``"mean"`` (default) or ``"max"`` over a sample's labels.
        ignore_index: a label value that takes no part: not counted, not in any
            sample's ``reduce``; within ``[0, C)`` its class gets weight 0, as
            in :func:`~classweights.weights_from_counts`.
        key: which array of a ``.npz`` file or mapping, or which entry of
            dataset items, holds the labels (as in ``count_labels``).
        **method_params: options of :func:`~classweights.weights_from_counts`:
            ``smooth`` (default 0 here), ``normalize`` (default False here),
            ``clip``, and the method's parameters (``beta``, ``c``,
            ``image_pixels``; ``median_frequency`` gathers ``image_pixels`` itself).

    Returns:
        float32 tensor ``[N]`` on the CPU, every entry finite and ``>= 0``.

    Raises:
        ClassWeightError: for labels ``count_labels`` refuses (empty, out of
            range, not integers, a bad file, or every label ignored); for bad
            ``weights``; for an unknown ``method`` or ``reduce``; and for
            ``weights`` together with a ``method`` or its parameters.

    Example:
        >>> y = [0, 0, 0, 1, 2, 2]
        >>> sample_weights(y, 3)  # inverse: 1/3 for class 0, 1 for class 1, 1/2 for class 2
        tensor([0.3333, 0.3333, 0.3333, 1.0000, 0.5000, 0.5000])
        >>> sample_weights(y, 3, method="balanced")  # = sklearn's compute_sample_weight("balanced", y)
        tensor([0.6667, 0.6667, 0.6667, 2.0000, 1.0000, 1.0000])
        >>> sample_weights([[0, 0, 1], [0, 0, 255]], 2, weights=[1.0, 4.0], ignore_index=255)
        tensor([2., 1.])
    """
    num_classes = check_num_classes(num_classes)
    ignore_index = check_ignore_index(ignore_index)
    if reduce not in ("mean", "max"):
        raise ClassWeightError(f"Expected `reduce` to be 'mean' or 'max', but got {shown(reduce)}")
    if weights is not None:
        if method != "inverse" or method_params:
            given = [f"method={method!r}"] * (method != "inverse") + sorted(method_params)
            raise ClassWeightError(
                f"Expected either `weights` or a method with its parameters, but got both (weights= and {', '.join(given)})"
            )
        table = validate_weights(weights, num_classes).cpu()
        samples = read_samples(labels, num_classes, ignore_index=ignore_index, key=key)
    else:
        params = {**SAMPLE_DEFAULTS, **method_params}
        # An unknown method or parameter is refused before a possibly long read.
        check_method(method, {k: v for k, v in params.items() if k not in _NOT_METHOD_PARAMS})
        presence = needs_image_pixels(method) and params.get("image_pixels") is None
        samples = read_samples(labels, num_classes, ignore_index=ignore_index, key=key, presence=presence)
        if presence:
            params["image_pixels"] = samples.image_pixels
        table = weights_from_counts(samples.counts, method, ignore_index=ignore_index, **params)
    return reduce_per_sample(samples.chunks, table, ignore_index=ignore_index, reduce=reduce)


def make_sampler(
    labels: Any,
    num_classes: int,
    *,
    method: str = "inverse",
    num_samples: int | None = None,
    replacement: bool = True,
    generator: torch.Generator | None = None,
    **params: Any,
) -> WeightedRandomSampler:
    """A sampler that draws sample ``i`` with probability proportional to its :func:`sample_weights`.

    With the default ``method="inverse"`` and one label per sample, each
    class is drawn equally often in expectation: class ``c`` has ``n_c``
    samples of weight ``1/n_c``. For label maps it draws samples by the mean
    (or, with ``reduce="max"``, the largest) weight of their labels, which
    favours samples that hold rare classes.

    Args:
        labels: as in :func:`sample_weights` (read once).
        num_classes: number of classes ``C``.
        method: weighting method (default ``"inverse"``).
        num_samples: samples drawn per epoch (default: the number of samples ``N``).
        replacement: draw with replacement (default). Without it,
            ``num_samples`` must not exceed the samples of positive weight.
        generator: a ``torch.Generator`` for reproducible draws.
        **params: passed to :func:`sample_weights`: ``weights``, ``reduce``,
            ``ignore_index``, ``key``, ``smooth``, ``normalize``, ``clip`` and
            method parameters.

    Returns:
        a :class:`torch.utils.data.WeightedRandomSampler`; pass it as
        ``DataLoader(dataset, sampler=...)``.

    Raises:
        ClassWeightError: as :func:`sample_weights`; for a bad ``num_samples``,
            ``replacement`` or ``generator``; when no sample has a positive
            weight; and for more than ``2**24`` samples, the most
            ``torch.multinomial`` draws from.

    Example:
        >>> import torch
        >>> y = [0] * 90 + [1] * 10
        >>> sampler = make_sampler(y, 2, num_samples=1000, generator=torch.Generator().manual_seed(0))
        >>> drawn = torch.tensor([y[i] for i in sampler])
        >>> 400 < int((drawn == 1).sum()) < 600  # class 1 is half the draws, not a tenth
        True
    """
    replacement = check_flag(replacement, "replacement")
    num_samples = check_positive_int(num_samples, "num_samples", allow_none=True)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ClassWeightError(f"Expected `generator` to be a torch.Generator or None, but got {shown(generator)}")
    weights = sample_weights(labels, num_classes, method=method, **params)
    if weights.numel() > MAX_SAMPLER_SAMPLES:
        raise ClassWeightError(
            f"Expected at most {MAX_SAMPLER_SAMPLES} samples (2**24, the most torch.multinomial draws from), but got {weights.numel()}"
        )
    drawable = int((weights > 0).sum())
    if drawable == 0:
        raise ClassWeightError(
            f"Expected some sample to have a positive weight, but all {weights.numel()} samples have weight 0"
        )
    num_samples = weights.numel() if num_samples is None else num_samples
    if not replacement and num_samples > drawable:
        raise ClassWeightError(
            f"Expected `num_samples` <= {drawable} (the samples of positive weight) with replacement=False, but got {num_samples}"
        )
    return WeightedRandomSampler(weights.to(torch.float64), num_samples, replacement=replacement, generator=generator)


# ------------------------------------------------------------- helpers ----


@dataclass(frozen=True)
class Samples:
    """Labels read once: their ``[B, P]`` blocks of whole samples in order, and what counting them gave."""

    chunks: list[torch.Tensor]
    counts: torch.Tensor
    image_pixels: torch.Tensor | None
    num_samples: int


def read_samples(
    labels: Any, num_classes: int, *, ignore_index: int | None, key: str | int | None, presence: bool = False
) -> Samples:
    """Read ``labels`` once, checking and counting each chunk as :func:`~classweights.count_labels` does, and keep it.

    Keeping the chunks is what lets a file or an iterable be read only once:
    the counts come from the same pass that gathers the labels to weigh.
    """
    stream = open_source(labels, key=key, chunk_size=None)
    cpu = torch.device("cpu")
    chunks: list[torch.Tensor] = []
    counts = torch.zeros(num_classes, dtype=torch.int64)
    pixels = torch.zeros(num_classes, dtype=torch.int64) if presence else None
    samples = numel = 0
    for chunk in stream.chunks:
        if chunk.lengths is not None:  # rows of a list column: weighed per sample only while they are of one length
            lengths = chunk.lengths
            differ = lengths != lengths[0] if lengths.size else lengths.astype(bool)
            if differ.any():
                other = int(lengths[differ][0])
                raise ClassWeightError(
                    f"{stream.where}: expected samples of one length for per-sample weights, but its rows hold {int(lengths[0])} and {other} labels"
                )
            chunk = Chunk(
                chunk.data.reshape(len(lengths), int(lengths[0]) if lengths.size else 0),
                chunk.start,
                locate=chunk.locate,
            )
        data = _as_labels(
            _to_tensor(chunk, cpu, num_classes, stream.where), chunk.start, num_classes, stream.where, chunk.locate
        )
        chunk_counts, chunk_pixels, chunk_samples, chunk_labels = _count_chunk(
            Chunk(data, chunk.start, locate=chunk.locate), num_classes, ignore_index, presence, stream.where
        )
        counts += chunk_counts
        if pixels is not None and chunk_pixels is not None:
            pixels += chunk_pixels
        samples += chunk_samples
        numel += chunk_labels
        chunks.append(data)
    if numel == 0:
        raise ClassWeightError(f"Expected at least one label, but {stream.where} is empty")
    if int(counts.sum()) == 0:
        raise ClassWeightError(
            f"Expected at least one label to count, but every label in {stream.where} equals ignore_index={ignore_index}"
        )
    return Samples(chunks, counts, pixels, samples)


def reduce_per_sample(
    chunks: list[torch.Tensor], table: torch.Tensor, *, ignore_index: int | None, reduce: Reduce
) -> torch.Tensor:
    """float32 ``[N]``: ``reduce`` of ``table[label]`` over each sample's labels that are not ``ignore_index`` (0 if none)."""
    table = table.to(torch.float64)  # per-sample means are taken in float64, then rounded once
    return torch.cat([part for chunk in chunks for part in _reduce_chunk(chunk, table, ignore_index, reduce)]).to(
        torch.float32
    )


def _reduce_chunk(
    chunk: torch.Tensor, table: torch.Tensor, ignore_index: int | None, reduce: Reduce
) -> Iterator[torch.Tensor]:
    samples, per_sample = chunk.shape
    if per_sample == 0:  # dataset items that hold no labels
        yield torch.zeros(samples, dtype=torch.float64)
        return
    info = torch.iinfo(chunk.dtype)
    # A value the dtype cannot hold occurs nowhere, and comparing with it would wrap (uint8 != -100 is uint8 != 156).
    ignored = ignore_index if ignore_index is not None and info.min <= ignore_index <= info.max else None
    step = max(1, _BLOCK_LABELS // per_sample)  # bounds the float64 gather below to about 8 MiB
    for lo in range(0, samples, step):
        block = chunk[lo : lo + step]
        keep = None if ignored is None else block != ignored
        index = block if keep is None else block.masked_fill(~keep, 0)
        values = table[index.to(torch.int64)]
        if keep is None:
            yield values.mean(dim=1) if reduce == "mean" else values.amax(dim=1)
        elif reduce == "max":  # weights are >= 0, so 0 stands in for ignored labels and for samples with none left
            yield values.masked_fill(~keep, 0.0).amax(dim=1)
        else:
            kept = keep.sum(dim=1)
            total = values.masked_fill(~keep, 0.0).sum(dim=1)
            yield torch.where(kept > 0, total / kept.clamp(min=1), 0.0)
