"""What one training run trains on: its corpus, each split read once, and the content digests of the splits."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .config import TrainConfig
from .data import Narrator, Split, read_split, resolve_data_path
from .distributed import SINGLE, Dist
from .errors import ArcvaeError
from .weight_cache import DIGEST_ALGORITHM, ClassWeights, FileStamp, WeightCache


@dataclass
class RunData:
    """The splits of a run's corpus, as the trainer uses them."""

    path: Path  # the corpus, resolved
    cache: WeightCache  # the cache folder: digest notes and cached weights
    num_classes: int
    train: Split  # the full training split, as read (its labels as stored, and the file they came from)
    train_grids: np.ndarray  # what normal mode trains on: the training split (a quick test: its first grids)
    val_grids: np.ndarray | None = None  # normal mode: the validation grids
    batch: torch.Tensor | None = None  # overfit mode: the batch, on the device
    # the content digests of the splits trained on, which a resumed run must find again
    fingerprint: dict[str, str | None] = field(default_factory=lambda: {"train": None, "val": None})
    # their hash: a resumed run keeps the one its checkpoint's digests were made with
    algorithm: str = DIGEST_ALGORITHM

    def stamp(self, split: Split) -> FileStamp:
        """The identity of the file ``split`` was read from."""
        return FileStamp.read(self.path, split.identity, split.read_ns)

    def digest(self, split: Split, key: str, group: Dist = SINGLE) -> str:
        """The content digest of a split as stored (the one ``weights compute --key`` gives), noted per file read."""
        return self.cache.digest(
            split.stored,
            num_classes=self.num_classes,
            key=key,
            stamp=self.stamp(split),
            group=group,
            algorithm=self.algorithm,
        )

    def train_digest(self, weights: ClassWeights | None, group: Dist = SINGLE) -> str:
        """The training split's digest: the one its weights were counted with (one pass for both), else its own."""
        if weights is not None and weights.origin != "checkpoint":
            return weights.data_digest  # counted with DIGEST_ALGORITHM: only a resumed run may use another
        return self.digest(self.train, "train", group)

    def shown_grids(self) -> torch.Tensor:
        """The grids a run's pictures show: the overfit batch, or the validation split."""
        return self.batch if self.batch is not None else torch.from_numpy(self.val_grids)


def load_run_data(
    config: TrainConfig, report: Narrator, group: Dist, device: torch.device, algorithm: str = DIGEST_ALGORITHM
) -> RunData:
    """Find the corpus (generating the default one on first use) and read what ``config`` trains on.

    Under ``torchrun`` rank 0 finds the corpus and every rank reads it. The splits are digested with
    ``algorithm`` (a resumed run: the hash of its checkpoint's digests).

    Raises:
        ArcvaeError: a missing or invalid split, or fewer grids per batch than processes.
    """
    found = group.broadcast(resolve_data_path(config.data, report) if group.is_main else None)
    path, cache_dir = found[0].resolve(), found[1]
    cache = WeightCache(cache_dir, read=config.use_cached_weights, warn=report.warn)
    train = read_split(path, "train")
    data = RunData(path, cache, config.num_colors, train, train.grids, algorithm=algorithm)
    if config.overfit_batch:
        unique = min(config.overfit_samples, len(train.grids))
        if unique < group.world:
            raise ArcvaeError(
                f"the overfit batch has {unique} grids, fewer than the {group.world} processes; start fewer processes"
            )
        data.batch = torch.from_numpy(train.grids[:unique].astype(np.int64)).to(device)
        return data
    if config.batch_size < group.world:
        raise ArcvaeError(
            f"--batch-size {config.batch_size} is smaller than the {group.world} processes; each needs at least one grid per batch"
        )
    val = read_split(path, "val")
    data.val_grids = val.grids
    data.fingerprint["val"] = data.digest(val, "val", group)
    train_limit, val_limit = config.sample_limits  # a quick test or a study: the first grids of each split
    data.train_grids, data.val_grids = train.grids[:train_limit], val.grids[:val_limit]
    return data
