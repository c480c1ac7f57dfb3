"""Run by tests/test_tables.py as each of two gloo ranks (tests/forked.py: run_ranks): count table and zarr sources with ``distributed=True``.

Each rank writes ``rank<r>.json`` into the folder given as argv[1]: for every
case, the counts, presence statistics and fingerprint it returned (or the error).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pyarrow.parquet as pq
import torch.distributed as dist

import classweights
from classweights import ClassWeightError


def cases(folder: Path) -> dict:
    """name -> (source, options); the files were written by the test before the launch."""
    found = {
        "parquet scalar": (folder / "scalar.parquet", {"key": "label", "presence": True, "fingerprint": True}),
        "parquet list": (folder / "lists.parquet", {"presence": True, "fingerprint": True}),
        "table list": (
            pq.read_table(folder / "lists.parquet"),
            {"presence": True, "fingerprint": True, "chunk_size": 1000},
        ),
    }
    if (folder / "masks.zarr").exists():
        import zarr

        found["zarr"] = (zarr.open_array(folder / "masks.zarr", mode="r"), {"presence": True, "fingerprint": True})
    return found


def main() -> None:
    folder = Path(sys.argv[1])
    dist.init_process_group("gloo")
    out = {}
    for name, (source, options) in cases(folder).items():
        try:
            stats = classweights.count_label_stats(source, 6, distributed=True, **options)
            out[name] = {"counts": stats.counts.tolist(), "image_pixels": stats.image_pixels.tolist(), "num_images": stats.num_images,
                         "num_labels": stats.num_labels, "fingerprint": stats.fingerprint}  # fmt: skip
        except ClassWeightError as exc:
            out[name] = {"error": str(exc)}
    (folder / f"rank{dist.get_rank()}.json").write_text(json.dumps(out))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
