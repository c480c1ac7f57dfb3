"""Run by tests/test_distributed.py as each of two gloo ranks (tests/forked.py: run_ranks): count every kind of source on every rank.

Each rank writes ``rank<r>.json`` into the folder given as argv[1], mapping a
case name to what ``count_label_stats(..., distributed=True)`` returned or raised.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

import classweights
from classweights import ClassWeightError


def cases(folder: Path) -> dict:
    """name -> (source, options); the files were written by the test before the launch."""
    grids = np.load(folder / "grids.npy")  # 301 grids: two uneven shards
    masks = np.load(folder / "masks.npy")  # with 255 = ignore
    return {
        "array": (grids, {}),
        "array, presence": (grids, {"presence": True}),
        "one sample (an empty shard)": (grids[:1], {}),
        "tensor int64": (torch.from_numpy(grids.astype(np.int64)), {}),
        "npy path": (folder / "grids.npy", {}),
        "npz member": (folder / "grids.npz", {"key": "val"}),
        "npz compressed": (folder / "packed.npz", {}),
        "map-style dataset": (list(grids), {}),
        "TensorDataset": (
            TensorDataset(torch.zeros(len(masks), 1), torch.from_numpy(masks)),
            {"key": 1, "ignore_index": 255},
        ),
        "ignore_index": (masks, {"ignore_index": 255, "presence": True}),
        "DataLoader + DistributedSampler": (
            DataLoader(
                TensorDataset(torch.from_numpy(grids[:300])),
                batch_size=16,
                sampler=DistributedSampler(TensorDataset(torch.from_numpy(grids[:300])), shuffle=False),
            ),
            {},
        ),
        "fingerprint": (grids, {"fingerprint": True}),
        "fingerprint, sha256": (grids, {"fingerprint": "sha256"}),  # an earlier version's, to check its records
        "bad label on rank 1 only": (np.concatenate([grids[:150], np.full((150, 16, 16), 12, np.uint8)]), {}),
    }


def main() -> None:
    folder = Path(sys.argv[1])
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    out = {}
    for name, (source, options) in cases(folder).items():
        try:
            stats = classweights.count_label_stats(source, 10, distributed=True, **options)
            out[name] = {"counts": stats.counts.tolist(), "num_images": stats.num_images, "num_labels": stats.num_labels,
                         "image_pixels": None if stats.image_pixels is None else stats.image_pixels.tolist(),
                         "fingerprint": stats.fingerprint}  # fmt: skip
        except ClassWeightError as exc:
            out[name] = {"error": str(exc)}
    classweights._fingerprint.HASH_BLOCK_BYTES = 4096  # 16 grids per hash block: shards of many whole blocks
    for name, source in (
        ("fingerprint, 4 KiB blocks", np.load(folder / "grids.npy")),
        ("fingerprint, npy, 4 KiB blocks", folder / "grids.npy"),
    ):
        out[name] = {
            "fingerprint": classweights.count_label_stats(source, 10, distributed=True, fingerprint=True).fingerprint
        }
    out["weights"] = classweights.compute_class_weights(folder / "grids.npy", 10, distributed=True).tolist()
    (folder / f"rank{rank}.json").write_text(json.dumps(out))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
