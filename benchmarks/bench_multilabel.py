"""Multi-hot counting: count_multilabel against ``targets.sum(0)`` on the same array.

Run: python benchmarks/bench_multilabel.py [--samples N] [--classes C] [--threads T]
Data: N x C multi-hot targets (default 1,000,000 x 100), about 10% ones, in
several dtypes, as numpy arrays (baseline: numpy's ``targets.sum(0)``) and as
torch tensors (baseline: torch's ``targets.sum(0)``).
count_multilabel also checks that every value is 0 or 1; the sum checks nothing.
Target: count_multilabel takes at most 1.5x the time of ``targets.sum(0)``.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from _common import best_of, machine, table, verdict

import classweights

TARGET = 1.5
DTYPES = ["uint8", "bool", "float32", "int64", "float16"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1_000_000)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None, help="count_multilabel's num_threads (default: its own)")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    hot = rng.random((args.samples, args.classes)) < 0.1
    rows = []
    for name in DTYPES:
        array = hot.astype(name)
        for kind, targets in (("numpy", array), ("torch", torch.from_numpy(array))):
            expected = torch.from_numpy(hot.sum(axis=0))
            counts = classweights.count_multilabel(targets, args.classes, num_threads=args.threads)
            assert torch.equal(counts.positives, expected) and counts.num_samples == args.samples
            ours = best_of(
                lambda t=targets: classweights.count_multilabel(t, args.classes, num_threads=args.threads),
                repeats=args.repeats,
            )
            baseline = best_of(lambda t=targets: t.sum(0), repeats=args.repeats)
            ratio = ours / baseline
            rows.append([f"{kind} {name}", f"{array.nbytes / 2**20:.0f} MiB", f"{ours * 1e3:.1f} ms", f"{array.nbytes / ours / 1e9:.2f}",
                         f"{baseline * 1e3:.1f} ms", f"{ratio:.2f}x", f"<= {TARGET}x", verdict(ratio, TARGET, higher_is_better=False)])  # fmt: skip
    print(machine())
    threads = "default" if args.threads is None else args.threads
    print(
        f"targets: {args.samples:,} x {args.classes} multi-hot, {float(hot.mean()):.1%} ones; best of {args.repeats}; num_threads={threads}"
    )
    print(table(rows, ["targets", "size", "count_multilabel", "GB/s", "targets.sum(0)", "time ratio", "target", ""]))


if __name__ == "__main__":
    main()
