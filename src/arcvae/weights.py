"""Class weights for training: counted over the full training split, cached by content.

The cache file name is a fingerprint of everything that determines the
weights: the training split's bytes, shape and dtype, the split's name, the
number of classes, the method, the smoothing and the file format version. A
different dataset, split, method or smoothing therefore never reuses a stale
file. The cache lives in ``<cache dir>/weights/`` (see
:func:`arcvae.data.default_cache_dir`), not beside the data, which may be
read-only or shared.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import classweights
from classweights.pipeline import count_and_weigh
from classweights.storage import FORMAT_VERSION


@dataclass(frozen=True)
class ClassWeights:
    """Weights and where they came from."""

    weights: torch.Tensor  # float32 [C]
    counts: torch.Tensor  # int64 [C]
    method: str
    smooth: float
    num_samples: int
    fingerprint: str
    cache_path: Path | None
    from_cache: bool


def fingerprint(labels: np.ndarray, *, key: str, num_classes: int, method: str, smooth: float) -> str:
    """sha256 over the labels' bytes and every parameter that determines the weights."""
    digest = hashlib.sha256()
    header = {
        "format_version": FORMAT_VERSION,
        "key": key,
        "shape": list(labels.shape),
        "dtype": str(labels.dtype),
        "num_classes": num_classes,
        "method": method,
        "smooth": float(smooth),
        "ignore_index": None,
    }
    digest.update(json.dumps(header, sort_keys=True).encode())
    digest.update(memoryview(np.ascontiguousarray(labels)).cast("B"))
    return digest.hexdigest()


def resolve_class_weights(
    labels: np.ndarray,
    *,
    key: str,
    num_classes: int,
    method: str,
    smooth: float,
    cache_dir: Path | None,
    use_cache: bool,
    source: str,
    progress: Callable[[int, int | None], None] | None = None,
    warn: Callable[[str], None] = print,
) -> ClassWeights:
    """Load matching cached weights (if ``use_cache``) or count ``labels`` and weigh them.

    Freshly computed weights are written to the cache (atomically); a cache
    that cannot be written costs one warning, never the run.
    """
    digest = fingerprint(labels, key=key, num_classes=num_classes, method=method, smooth=smooth)
    cache_path = None if cache_dir is None else cache_dir / "weights" / f"{digest[:24]}.json"
    if use_cache and cache_path is not None and cache_path.exists():
        try:
            weights, meta = classweights.load_class_weights(cache_path, num_classes=num_classes, with_metadata=True)
            if meta.get("fingerprint") != digest:
                raise classweights.ClassWeightError("its fingerprint does not match the data and parameters")
            counts = torch.tensor(meta["counts"], dtype=torch.int64)
            return ClassWeights(weights, counts, method, smooth, int(meta["num_samples"]), digest, cache_path, True)
        except (classweights.ClassWeightError, KeyError, TypeError, ValueError) as exc:
            warn(f"ignoring the cached weights at {cache_path} ({exc}); recomputing")

    stats, weights = count_and_weigh(labels, num_classes, method, smooth=smooth, progress=progress)
    result = ClassWeights(weights, stats.counts, method, smooth, stats.num_images, digest, cache_path, False)
    if cache_path is not None:
        try:
            cache_path.parent.mkdir(parents=True, exist_ok=True)
            save_weights_record(result, cache_path, source=source, key=key)
        except (OSError, classweights.ClassWeightError) as exc:
            warn(f"could not cache the class weights at {cache_path}: {getattr(exc, 'strerror', None) or exc}")
    return result


def save_weights_record(result: ClassWeights, path: str | os.PathLike[str], **extra: object) -> None:
    """Save ``result`` with its provenance (counts, method, fingerprint, ...) through classweights."""
    classweights.save_class_weights(
        result.weights,
        path,
        counts=result.counts,
        method=result.method,
        smooth=result.smooth,
        normalize=True,
        num_samples=result.num_samples,
        fingerprint=result.fingerprint,
        **extra,
    )
