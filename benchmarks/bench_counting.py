"""In-memory counting: count_labels against torch.bincount, scikit-learn and the spec's loop.

Run: python benchmarks/bench_counting.py
Data: 80,000 x 16 x 16 uint8 labels, ~93% zeros (the shared corpus if present).
Targets (2-core CPU): >= 2.5x torch.bincount on the flat tensor, >= 100x
scikit-learn's compute_class_weight, >= 500x the per-sample loop.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from _common import arc_like_labels, best_of, machine, table, verdict

import classweights


def spec_loop(grids: torch.Tensor, num_classes: int) -> torch.Tensor:
    """The loop the spec's trainer used: per sample, per class, ``(sample == c).sum().item()``."""
    counts = torch.zeros(num_classes, dtype=torch.long)
    for sample in grids:
        for c in range(num_classes):
            counts[c] += (sample == c).sum().item()
    return counts


def main() -> None:
    from sklearn.utils.class_weight import compute_class_weight

    labels = arc_like_labels()
    flat = torch.from_numpy(labels).reshape(-1)
    expected = torch.bincount(flat, minlength=10)
    assert torch.equal(classweights.count_labels(labels, 10), expected)

    ours = best_of(lambda: classweights.count_labels(labels, 10), repeats=15)
    bincount = best_of(lambda: torch.bincount(flat, minlength=10), repeats=15)
    classes = np.arange(10)
    y = labels.reshape(-1)
    sklearn = best_of(lambda: compute_class_weight("balanced", classes=classes, y=y), repeats=3)
    start = time.perf_counter()
    assert torch.equal(spec_loop(torch.from_numpy(labels), 10), expected)
    loop = time.perf_counter() - start

    n = labels.size
    rows = [
        ["count_labels", f"{ours * 1e3:.2f} ms", f"{n / ours / 1e9:.2f}", "1.00x", "", ""],
        ["torch.bincount (one call)", f"{bincount * 1e3:.2f} ms", f"{n / bincount / 1e9:.2f}", f"{bincount / ours:.2f}x", ">= 2.5x", verdict(bincount / ours, 2.5)],
        ["sklearn compute_class_weight", f"{sklearn * 1e3:.1f} ms", f"{n / sklearn / 1e9:.3f}", f"{sklearn / ours:.0f}x", ">= 100x", verdict(sklearn / ours, 100)],
        ["spec per-sample loop", f"{loop:.2f} s", f"{n / loop / 1e9:.4f}", f"{loop / ours:.0f}x", ">= 500x", verdict(loop / ours, 500)],
    ]  # fmt: skip
    print(machine())
    print(f"labels: {labels.shape} {labels.dtype}, {n:,} in all, {float((labels == 0).mean()):.2%} zeros")
    print(table(rows, ["method", "time", "G labels/s", "count_labels is faster by", "target", ""]))


if __name__ == "__main__":
    main()
