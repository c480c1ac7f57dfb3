"""Class weights resolved in one call: counted (or taken from the cache) for a file, and for a training run.

:func:`resolve_class_weights` weighs any labels, with the cache of
:mod:`arcvae.weight_cache`; ``arcvae weights compute`` calls it for a file.
:func:`run_weights` decides a training run's weights, whatever their origin.
Neither prints anything: the caller reports the value they return.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

import classweights
from classweights import count_and_weigh, count_labels, weights_from_counts

from .distributed import SINGLE, Dist
from .errors import ArcvaeError
from .weight_cache import DIGEST_ALGORITHM, ClassWeights, FileStamp, WeightCache, WeightSpec

if TYPE_CHECKING:
    from .config import TrainConfig
    from .run_data import RunData


def resolve_class_weights(
    labels: Any,
    spec: WeightSpec,
    *,
    key: str | None,
    cache: WeightCache,
    source: str,
    stamp: FileStamp | None = None,
    progress: Callable[[int, int | None], None] | None = None,
    group: Dist = SINGLE,
) -> ClassWeights:
    """Load matching cached weights (if ``cache.read``) or count ``labels`` and weigh them.

    Args:
        labels: an array in memory, or a path ``count_labels`` can read.
        spec: the parameters of the weights.
        key: the split (array in a ``.npz`` file) the labels are; part of the
            fingerprint, and passed on to ``count_labels`` for a path.
        cache: the cache folder; its ``warn`` is called at most once, for a
            damaged cache file or a folder that cannot be written.
        source: how to name the labels in the cache entry (and in errors).
        stamp: for a path, the file's identity taken *before* it is read (a
            cache hit then needs no pass over the labels); for labels in
            memory, the identity of the file they were read from.
        progress: called as counting advances (not on a cache hit).
        group: under ``torchrun``, every rank calls this with its group: rank 0
            alone reads and writes the cache, each rank counts its shard of the
            labels, and the weights are checked to be identical on every rank.

    On a miss the labels are counted and hashed in one pass; the weights are
    then cached atomically.
    """
    cache = dataclasses.replace(cache, warn=_once(cache.warn))
    known = cache.noted_digest(stamp, key, group)
    if known is not None:
        cached = cache.load(spec, fingerprint=spec.fingerprint(known, key), data_digest=known, group=group)
        if cached is not None:
            return cached

    read_key = {"key": key} if isinstance(labels, (str, os.PathLike)) and key is not None else {}
    stats, weights = count_and_weigh(
        labels,
        spec.num_classes,
        spec.method,
        smooth=spec.smooth,
        normalize=spec.normalize,
        ignore_index=spec.ignore_index,
        progress=progress,
        fingerprint=DIGEST_ALGORITHM if known is None else False,
        distributed=group.enabled,
        **read_key,
    )
    group.check_identical(weights, "class weights")
    if stats.source_identity is not None and stamp is not None and stats.source_identity != stamp.identity:
        # The path led to another file by the time it was read (replaced, or a link re-pointed): the note
        # looked up for the stamp says nothing about what was counted, and no note may be written for it.
        if known is not None:
            raise classweights.ClassWeightError(
                f"{source!r} was replaced while it was being read; run the command again"
            )
        stamp = None
    digest = known or stats.fingerprint
    assert digest is not None
    fingerprint = spec.fingerprint(digest, key)
    result = ClassWeights(
        weights=weights,
        counts=stats.counts,
        spec=spec,
        num_samples=stats.num_images,
        fingerprint=fingerprint,
        data_digest=digest,
        cache_path=cache.entry(fingerprint),
    )
    if group.is_main:
        result = cache.store(result, source=source, key=key, stamp=stamp, note=known is None)
    return group.broadcast(result) if group.enabled else result


def run_weights(
    config: TrainConfig,
    data: RunData,
    *,
    checkpoint: dict[str, Any] | None,
    progress: Callable[[int, int | None], None] | None = None,
    group: Dist = SINGLE,
) -> ClassWeights | None:
    """The class weights a training run trains with; ``None`` without class weights.

    - A resumed run (``checkpoint``) keeps exactly the weights it started with,
      its checkpoint's, never a recount: the cache or a newer formula could
      give others.
    - With ``weights_from="batch"`` (for comparison): in overfit mode they are
      counted on the overfit batch alone; in normal mode there are no weights
      for the run, ``None``: each training step weighs its batch with
      :func:`batch_weights`.
    - Otherwise they are counted on the full training split (also in overfit
      mode), through the cache; under ``torchrun`` each process counts its shard.
    """
    if not config.use_class_weights or config.per_batch_weights:
        return None
    spec = WeightSpec(config.num_colors, config.weights_method, config.weights_smooth)
    if checkpoint is not None:
        return _checkpoint_weights(checkpoint, spec)
    if config.weights_from == "batch":
        return _batch_weights(data, spec, group)
    return resolve_class_weights(
        data.train.stored,
        spec,
        key="train",
        cache=data.cache,
        source=str(data.path),
        stamp=data.stamp(data.train),
        progress=None if group.enabled else progress,
        group=group,
    )


def _checkpoint_weights(checkpoint: dict[str, Any], spec: WeightSpec) -> ClassWeights:
    values = checkpoint.get("class_weights")
    if values is None or checkpoint["weights_fingerprint"] is None:
        raise ArcvaeError("cannot resume: the checkpoint holds no class weights, but the run uses them")
    data_digest = str(checkpoint["data_fingerprint"].get("train"))
    return ClassWeights(
        weights=values.to(torch.float32),
        counts=None,
        spec=spec,
        num_samples=0,
        fingerprint=checkpoint["weights_fingerprint"],
        data_digest=data_digest,
        origin="checkpoint",
    )


def _batch_weights(data: RunData, spec: WeightSpec, group: Dist) -> ClassWeights:
    """Weights from the overfit batch alone: the counter-example to full-split weights (docs/study.md)."""
    assert data.batch is not None
    stats, weights = count_and_weigh(data.batch.cpu(), spec.num_classes, spec.method, smooth=spec.smooth)
    data_digest = data.digest(data.train, "train", group)
    fingerprint = spec.fingerprint(data_digest, key=f"train[:{len(data.batch)}]")
    return ClassWeights(
        weights=weights,
        counts=stats.counts,
        spec=spec,
        num_samples=len(data.batch),
        fingerprint=fingerprint,
        data_digest=data_digest,
        origin="batch",
    )


def batch_weights(grids: torch.Tensor, spec: WeightSpec, group: Dist = SINGLE) -> torch.Tensor:
    """The weights of one training batch, counted from its own labels (normal mode, ``--weights-from batch``).

    Under ``torchrun`` the counts of every process's share are summed, so each
    weighs the whole batch alike.

    Args:
        grids: the batch's labels, any shape, on any device.
        spec: the method, smoothing and number of classes.
        group: the processes sharing the batch.

    Returns:
        float32 ``[num_classes]`` on the device of ``grids``.

    Example:
        >>> w = batch_weights(torch.tensor([[0, 0, 0, 1]]), WeightSpec(3, "sqrt_inverse", 1.0))
        >>> [round(v, 3) for v in w.tolist()]
        [0.68, 0.961, 1.359]
    """
    counts = count_labels(grids, spec.num_classes, distributed=group.enabled)
    weights = weights_from_counts(counts, spec.method, smooth=spec.smooth, normalize=spec.normalize)
    return weights.to(grids.device, non_blocking=True)


def _once(warn: Callable[[str], None]) -> Callable[[str], None]:
    """``warn``, silenced after its first message."""
    said: list[str] = []

    def once(message: str) -> None:
        if not said:
            said.append(message)
            warn(message)

    return once
