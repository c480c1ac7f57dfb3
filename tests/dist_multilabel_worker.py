"""Run by tests/test_multilabel.py as one of two gloo ranks: count multi-label targets with distributed=True.

Usage: dist_multilabel_worker.py FOLDER, with the variables torchrun sets (tests/forked.py:
run_ranks sets them); each rank writes ``rank<r>.json`` mapping a case name to the counts it
returned or the error it raised.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch.distributed as dist

import classweights
from classweights import ClassWeightError


def main() -> None:
    folder = Path(sys.argv[1])
    dist.init_process_group("gloo")  # RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT from the environment
    rank = dist.get_rank()
    targets = np.load(folder / "targets.npy")  # 301 samples: two uneven shards
    bad = targets.copy()
    bad[250, 3] = 2.0  # in rank 1's shard only
    cases = {
        "array": targets,
        "npy path": folder / "targets.npy",
        "index lists": [np.flatnonzero(row).tolist() for row in targets],
        "dataset": list(targets),
        "bad value on rank 1": bad,
    }
    out: dict = {}
    for name, source in cases.items():
        try:
            counts = classweights.count_multilabel(source, targets.shape[1], distributed=True)
            out[name] = {"positives": counts.positives.tolist(), "num_samples": counts.num_samples}
        except ClassWeightError as exc:
            out[name] = {"error": str(exc)}
    counts = classweights.count_multilabel(targets, targets.shape[1], distributed=True)
    out["pos_weight"] = classweights.pos_weight(counts, smooth=1).tolist()
    (folder / f"rank{rank}.json").write_text(json.dumps(out))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
