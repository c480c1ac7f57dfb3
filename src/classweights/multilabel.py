"""Multi-label targets: count positives per class, and turn them into BCE ``pos_weight``.

In multi-label classification every sample may belong to any number of the
``C`` classes, and each class is a binary problem of its own. What a loss needs
per class is how many samples are positive for it (``P_c``) out of how many
samples there are (``N``); :func:`pos_weight` turns them into the weight
``torch.nn.BCEWithLogitsLoss(pos_weight=...)`` gives to each class's positives:
``(N - P_c + smooth) / (P_c + smooth)``, the ratio of negatives to positives.

Targets come as multi-hot rows ``[N, C]`` (read through the same sources and
chunks as :func:`~classweights.count_labels`) or as Python lists of label
indices, one list per sample. Multi-hot chunks are checked to hold only 0 and
1, then summed column by column (see ``_multilabel_chunks``), at about the
speed of ``targets.sum(0)`` or faster.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ._checks import (
    check_dense_tensor,
    check_finite,
    check_flag,
    check_key_and_progress,
    check_num_classes,
    check_real,
    is_int,
    shown,
)
from ._errors import ClassWeightError
from ._frames import frame_values, is_pandas, is_pandas_frame
from ._multilabel_chunks import (
    check_shape,
    count_index_lists,
    count_multi_hot,
    index_list_stream,
    is_index_lists,
    release,
)
from ._ranks import _process_group_shard, _reduce_across_ranks
from ._sources import open_source
from ._stream import Chunk
from ._threads import _ordered_map
from .counting import ProgressCallback, _resolve_threads

_NAMED_CLASSES = 10  # classes a warning lists by number; the rest are counted


@dataclass(frozen=True, eq=False)
class MultilabelCounts:
    """What :func:`count_multilabel` gathers: positives per class and the number of samples.

    Attributes:
        positives: int64 ``[C]``: ``positives[c]`` is the number of samples in
            which class ``c`` is positive (each sample counts at most once).
        num_samples: number of samples ``N``; ``N - positives[c]`` are negative
            for class ``c``.

    Built by hand, ``positives`` may be any 1-D sequence of integers; it is
    stored as an int64 CPU tensor, and every entry must lie in ``[0, N]``.
    Two counts are equal if both their fields are.

    Example:
        >>> MultilabelCounts([3, 0, 1], num_samples=4)
        MultilabelCounts(positives=tensor([3, 0, 1]), num_samples=4)
    """

    positives: torch.Tensor
    num_samples: int

    def __post_init__(self) -> None:
        if not is_int(self.num_samples) or self.num_samples < 0:
            raise ClassWeightError(f"Expected `num_samples` to be an integer >= 0, but got {shown(self.num_samples)}")
        positives = _as_int64(self.positives)
        if positives.numel() and (bool((positives < 0).any()) or bool((positives > self.num_samples).any())):
            i = int(((positives < 0) | (positives > self.num_samples)).nonzero()[0])
            raise ClassWeightError(
                f"Expected every positive count to lie in [0, num_samples={self.num_samples}], but class {i} has {int(positives[i])}"
            )
        object.__setattr__(self, "positives", positives)
        object.__setattr__(self, "num_samples", int(self.num_samples))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MultilabelCounts):
            return NotImplemented
        return self.num_samples == other.num_samples and torch.equal(self.positives, other.positives)

    __hash__ = None  # type: ignore[assignment]  # equal counts may be built from different tensors


def count_multilabel(
    source: Any,
    num_classes: int,
    *,
    key: str | int | None = None,
    chunk_size: int | None = None,
    num_threads: int | None = None,
    progress: ProgressCallback | None = None,
    distributed: bool = False,
) -> MultilabelCounts:
    """Count, for each class, the samples in which it is positive.

    Args:
        source: the targets, in one of two forms.

            - Multi-hot rows: a ``[N, C]`` tensor or array (``np.memmap``
              included) of bool, integer or float values that are all 0 or 1; a
              path to a ``.npy`` file, or to a ``.npz`` file whose array ``key``
              is read; a mapping of arrays; a ``TensorDataset``; a map-style
              dataset whose items are ``[C]`` rows (or tuples, lists or dicts
              holding them, picked by ``key`` as in
              :func:`~classweights.count_labels`); or any iterable of ``[B, C]``
              batches, e.g. a ``DataLoader``. Tensors on another device are
              copied to the CPU one chunk at a time.
            - Label indices: a ``list`` or ``tuple`` of Python lists, tuples or
              sets of class indices, one per sample, e.g. ``[[0, 2], [], [1]]``.
              An index listed twice in one sample counts once. The first element
              decides the form: a list of arrays or tensors is a dataset of
              multi-hot rows, so pass index arrays as lists (``.tolist()``), and
              multi-hot rows given as nested lists as ``np.array(rows)``.
        num_classes: number of classes ``C``: the length of every multi-hot row,
            and the bound ``0 <= index < C`` of every label index.
        key: as in :func:`~classweights.count_labels`: the array of a ``.npz``
            file or mapping, or the targets' key or position in dataset items
            and batches, e.g. ``key=1`` for ``(input, target)`` pairs. Not
            taken by label-index lists.
        chunk_size: values per chunk (multi-hot) or label indices per chunk
            (index lists), as in :func:`~classweights.count_labels`; a chunk
            always holds whole samples. Never changes the result.
        num_threads: chunks counted in parallel (default: ``torch.get_num_threads()``,
            at most 8).
        progress: optional callback ``progress(done, total)``, called after every
            chunk with the samples done so far and their total (``None`` if
            unknown).
        distributed: count across the processes of the initialised default
            ``torch.distributed`` process group, as
            :func:`~classweights.count_labels` does: each rank counts its shard
            of a sized source (everything an iterable gives it) and one
            ``all_reduce`` sums the counts, so every rank returns the global
            counts. Every rank must call it; an error on one rank is raised on all.

    Returns:
        A :class:`MultilabelCounts`: ``positives`` (int64 ``[C]``, on the CPU)
        and ``num_samples``.

    Raises:
        ClassWeightError: for a value other than 0 or 1 in a multi-hot row
            (naming it and its sample and class), samples whose shape is not
            ``[C]``, label indices outside ``[0, C)`` or not integers, an empty
            source, unsupported dtypes, missing files or keys, and the other
            source errors of :func:`~classweights.count_labels`; and for
            ``distributed=True`` without an initialised process group.

    Example:
        >>> import torch
        >>> targets = torch.tensor([[1, 0, 1], [0, 0, 1], [1, 0, 1], [0, 1, 1]])
        >>> count_multilabel(targets, num_classes=3)
        MultilabelCounts(positives=tensor([2, 1, 4]), num_samples=4)
        >>> count_multilabel([[0, 2], [2], [0, 2, 2], [1, 2]], num_classes=3).positives
        tensor([2, 1, 4])
    """
    num_classes = check_num_classes(num_classes)
    check_key_and_progress(key, progress)
    distributed = check_flag(distributed, "distributed")
    workers = _resolve_threads(num_threads)
    shard = _process_group_shard(None) if distributed else None
    positives = torch.zeros(num_classes, dtype=torch.int64)
    samples = 0
    where = "labels"
    failure: BaseException | None = None
    try:
        source, key = _frame_targets(source, key)
        if is_index_lists(source):
            if key is not None:
                raise ClassWeightError(
                    f"key={key!r} picks the targets of a file, mapping or dataset, but the source is lists of label indices"
                )
            stream = index_list_stream(source, chunk_size, shard)
            count_chunk = count_index_lists
        else:
            if isinstance(source, (np.ndarray, torch.Tensor)):
                check_shape(tuple(source.shape), "labels", num_classes)
            stream = open_source(source, key=key, chunk_size=chunk_size, parts=workers, shard=shard)
            if stream.shape is not None:  # a file's, from its header
                try:
                    check_shape(stream.shape, stream.where, num_classes)
                except ClassWeightError:
                    release(stream)
                    raise
            count_chunk = count_multi_hot
        where = stream.where

        def work(chunk: Chunk) -> tuple[np.ndarray, int]:
            return count_chunk(chunk, num_classes, stream.where)

        for chunk_positives, chunk_samples in _ordered_map(work, stream.chunks, workers):
            positives += torch.from_numpy(chunk_positives)
            samples += chunk_samples
            if progress is not None:
                progress(samples, stream.total)
    except Exception as exc:  # with other ranks waiting in all_reduce, an error must reach them first
        if shard is None:
            raise
        failure = exc
    if shard is not None:
        positives, _, samples, _, _ = _reduce_across_ranks(
            positives, None, samples, samples * num_classes, None, failure
        )
        if shard.world > 1:
            where = f"{where} (all {shard.world} ranks)"
    if samples == 0:
        raise ClassWeightError(f"Expected at least one sample, but {where} is empty")
    return MultilabelCounts(positives, samples)


def pos_weight(
    source_or_counts: Any,
    num_classes: int | None = None,
    *,
    smooth: float = 0.0,
    clip: float | None = None,
) -> torch.Tensor:
    """The ``pos_weight`` of ``torch.nn.BCEWithLogitsLoss``: negatives per positive, per class.

    For ``N`` samples of which ``P_c`` are positive for class ``c``::

        pos_weight[c] = (N - P_c + smooth) / (P_c + smooth)

    so a class's positives weigh as much in the loss, in all, as its negatives.

    Args:
        source_or_counts: a :class:`MultilabelCounts`, or any source
            :func:`count_multilabel` accepts (counted with its default options;
            for other options, such as ``key``, call :func:`count_multilabel`
            first and pass its result).
        num_classes: number of classes ``C``; required for a source, and
            checked against the counts if given with a :class:`MultilabelCounts`.
        smooth: pseudo-count ``s >= 0`` added to both the negatives and the
            positives of every class; it pulls every weight towards 1.
        clip: ``None`` (default) or a number ``>= 1``: cap every weight at
            ``clip``. Very rare classes get very large weights (``N - 1`` for a
            class with one positive), whose gradients can swamp the others; a
            cap such as ``clip=100`` bounds them.

    Returns:
        float32 tensor ``[C]`` on the CPU, every entry finite and ``>= 0``.

        A class with no positive sample (``P_c = 0`` with ``smooth = 0``), whose
        formula would be infinite, gets the largest weight of the classes that
        have positives (``N`` if none has), before ``clip``; a warning names
        such classes. A class positive in every sample (``P_c = N`` with
        ``smooth = 0``) gets 0, so its positives take no part in the loss; a
        warning names those too. ``smooth > 0`` avoids both.

    Raises:
        ClassWeightError: for a missing or mismatched ``num_classes``; counts
            of no sample; ``smooth`` that is not a finite number ``>= 0``;
            ``clip`` that is not ``None`` or a number ``>= 1``; a weight that
            float32 cannot hold (from a tiny ``smooth``); and everything
            :func:`count_multilabel` raises.

    Example:
        >>> import torch
        >>> targets = torch.tensor([[1, 0, 1], [0, 0, 1], [1, 0, 1], [0, 1, 1]])
        >>> pos_weight(targets, num_classes=3, smooth=1)
        tensor([1.0000, 2.0000, 0.2000])
        >>> loss = torch.nn.BCEWithLogitsLoss(pos_weight=pos_weight(targets, 3, smooth=1))
    """
    if isinstance(source_or_counts, MultilabelCounts):
        counts = source_or_counts
        if num_classes is not None and check_num_classes(num_classes) != counts.positives.numel():
            raise ClassWeightError(
                f"Expected `num_classes` to be {counts.positives.numel()}, the classes of the counts, but got {num_classes!r}"
            )
    elif num_classes is None:
        raise ClassWeightError(
            "Expected `num_classes` when `source_or_counts` is a source to count (only MultilabelCounts carry their own), but got None"
        )
    else:
        counts = None
    smooth = check_finite(smooth, "smooth", "a finite number >= 0")
    if smooth < 0:
        raise ClassWeightError(f"Expected `smooth` to be a finite number >= 0, but got {smooth!r}")
    if clip is not None and check_real(clip, "clip", "None or a number >= 1") < 1:
        raise ClassWeightError(f"Expected `clip` to be None or a number >= 1, but got {clip!r}")
    if counts is None:  # options are checked first: counting may take a while
        counts = count_multilabel(source_or_counts, num_classes)  # type: ignore[arg-type]
    if counts.positives.numel() == 0:
        raise ClassWeightError("Expected counts of at least one class, but `positives` is empty")
    n = counts.num_samples
    if n == 0:
        raise ClassWeightError("Expected counts of at least one sample, but num_samples is 0")
    positives = counts.positives.to(torch.float64)
    weights = (n - positives + smooth) / (positives + smooth)
    never = positives + smooth == 0  # P_c = 0 and smooth = 0: the ratio is infinite
    if bool(never.any()):
        seen = ~never
        fill = float(weights[seen].max()) if bool(seen.any()) else float(n)
        weights = weights.masked_fill(never, fill)
        names, one = _classes(never)
        source = (
            "the largest of the classes with positives"
            if bool(seen.any())
            else "the number of samples (no class has a positive)"
        )
        warnings.warn(
            f"{names} {'has' if one else 'have'} no positive sample, so {'its' if one else 'their'} pos_weight is set to "
            f"{fill:g}, {source}; pass smooth > 0 to use the formula instead",
            stacklevel=2,
        )
    always = (n - positives + smooth == 0) & ~never
    if bool(always.any()):
        names, one = _classes(always)
        warnings.warn(
            f"{names} {'is' if one else 'are'} positive in every sample, so {'its' if one else 'their'} pos_weight is 0 "
            f"and {'its' if one else 'their'} positives take no part in the loss; pass smooth > 0 to keep them",
            stacklevel=2,
        )
    if clip is not None:
        weights = weights.clamp(max=float(clip))
    return _as_float32(weights)


# -------------------------------------------------------------- weights ----


def _frame_targets(source: Any, key: str | int | None) -> tuple[Any, str | int | None]:
    """A pandas DataFrame of several columns and no ``key`` is multi-hot, one column per class; a column of
    label-index lists becomes those lists."""
    if not is_pandas(source):
        return source, key
    if key is None and is_pandas_frame(source) and source.shape[1] > 1:
        return frame_values(source), None
    column = source[key] if is_pandas_frame(source) and key is not None else source
    if getattr(column, "dtype", None) == object and is_pandas(column):
        rows = column.tolist()
        if is_index_lists(rows):
            return rows, None
    return source, key


def _classes(mask: torch.Tensor) -> tuple[str, bool]:
    """'class 3', or 'classes 1, 4 and 9' (at most ``_NAMED_CLASSES`` named), and whether it is one class."""
    found = mask.nonzero().flatten().tolist()
    if len(found) == 1:
        return f"class {found[0]}", True
    if len(found) > _NAMED_CLASSES:
        return f"{len(found)} classes ({', '.join(map(str, found[:_NAMED_CLASSES]))}, ...)", False
    return f"classes {', '.join(map(str, found[:-1]))} and {found[-1]}", False


def _as_float32(weights: torch.Tensor) -> torch.Tensor:
    """Cast to float32, refusing a weight that float32 cannot hold (overflow to inf, or a positive one rounding to 0)."""
    single = weights.to(torch.float32)
    bad = ~torch.isfinite(weights) | ~torch.isfinite(single) | ((weights > 0) & (single == 0))
    if bool(bad.any()):
        i = int(bad.nonzero()[0])
        raise ClassWeightError(
            f"Expected the pos_weight of class {i} to be a finite float32, but it is {float(weights[i])!r} "
            f"(float32: {float(single[i])!r}); a smooth this small makes it so: pass a larger smooth= (or clip= to cap the weights)"
        )
    return single


def _as_int64(values: Any) -> torch.Tensor:
    """``values`` as a 1-D int64 CPU tensor of positive counts, or a one-line error."""
    if isinstance(values, torch.Tensor):
        check_dense_tensor(values, "`positives`")
        tensor = values.detach().cpu()
    else:
        try:
            array = np.asarray(values)
        except (TypeError, ValueError, OverflowError) as exc:
            raise ClassWeightError(
                f"Expected `positives` to be a 1-D sequence of integers, but got {type(values).__name__} ({exc})"
            ) from None
        if array.dtype.kind not in "iu" and not (array.size == 0 and array.dtype.kind == "f"):
            raise ClassWeightError(
                f"Expected `positives` to be a 1-D sequence of integers, but got dtype {array.dtype}"
            )
        tensor = torch.from_numpy(array.astype(np.int64))
    if tensor.dtype.is_floating_point or tensor.is_complex() or tensor.dtype == torch.bool or tensor.ndim != 1:
        raise ClassWeightError(
            f"Expected `positives` to be a 1-D sequence of integers, but got {tensor.dtype} of shape {list(tensor.shape)}"
        )
    return tensor.to(torch.int64)
