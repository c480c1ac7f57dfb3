"""The content fingerprint of the class-weight cache: what hashing costs on a large label file.

Run: python benchmarks/bench_fingerprint.py [--size-gib 2]
Writes a SIZE-GiB .npy of [N, 16, 16] uint8 labels (the 80,000-grid ARC-like
block repeated, ~92% zeros) into a temporary folder, then times, best of a few
runs with the file in the page cache: counting alone; counting and hashing in
one pass (count_label_stats(fingerprint=True)); counting, then a separate
sha256 pass over the file; a cache miss and a cache hit through
arcvae.weights.resolve_class_weights; and the same with the labels in memory
(no file stamp, so every call counts and hashes).
Checks: the fused pass beats the two passes; the hit comes from the cache with
the miss's weights; the in-memory labels give the file's digest and weights.
"""

from __future__ import annotations

import argparse
import hashlib
import resource
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from _common import arc_like_labels, best_of, machine, table

import arcvae.weights
import classweights
from arcvae.weights import ClassWeights, FileStamp

PIECE = 4 * 2**20  # bytes per read in the separate hashing pass


def write_labels(path: Path, size_gib: float) -> int:
    """Write ``size_gib`` GiB of labels one block at a time; returns the number of labels."""
    block = arc_like_labels()
    grids = round(size_gib * 2**30 / block[0].size)
    np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(grids,) + block.shape[1:]).flush()  # header, size
    for start in range(0, grids, len(block)):
        stop = min(grids, start + len(block))
        out = np.lib.format.open_memmap(path, mode="r+")  # mapped per block, so only one block is resident
        out[start:stop] = block[: stop - start]
        out.flush()
        del out
    return grids * block[0].size


def sha256_file(path: Path) -> str:
    sha = hashlib.sha256()
    buffer = bytearray(PIECE)
    view = memoryview(buffer)
    with path.open("rb") as handle:
        while got := handle.readinto(buffer):
            sha.update(view[:got])
    return sha.hexdigest()


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-gib", type=float, default=2.0, help="size of the label file in GiB")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each full pass (best is kept)")
    args = parser.parse_args()
    arcvae.weights._QUIET_NS = 0  # the file is fresh: let the miss note its digest without waiting 2 s

    with tempfile.TemporaryDirectory(prefix="bench-fingerprint-") as tmp:
        path, cache = Path(tmp) / "labels.npy", Path(tmp) / "cache"
        n = write_labels(path, args.size_gib)

        def resolve(labels: object, stamp: FileStamp | None) -> ClassWeights:
            return arcvae.weights.resolve_class_weights(
                labels, key=None, num_classes=10, method="sqrt_inverse", smooth=1.0, cache_dir=cache,
                use_cache=True, source=str(path), stamp=stamp)  # fmt: skip

        def timed(fn: Callable[[], object], repeats: int = args.repeats) -> float:
            return best_of(fn, repeats=repeats, warmup=1)  # the warm-up also fills the page cache

        count = timed(lambda: classweights.count_label_stats(path, 10))
        fused = timed(lambda: classweights.count_label_stats(path, 10, fingerprint=True))
        two_pass = timed(lambda: (classweights.count_label_stats(path, 10), sha256_file(path)))
        miss_runs: list[ClassWeights] = []
        miss = best_of(lambda: miss_runs.append(resolve(path, FileStamp.of(path))), repeats=1, warmup=0)
        hits: list[ClassWeights] = []
        hit = best_of(lambda: hits.append(resolve(path, FileStamp.of(path))), repeats=20)  # stamp taken inside
        file_rss = peak_rss_mib()

        in_memory = np.load(path)
        memory_runs: list[ClassWeights] = []
        memory = timed(lambda: memory_runs.append(resolve(in_memory, None)))
        del in_memory
        all_rss = peak_rss_mib()

    rows = [
        ["count_label_stats (count only)", count],
        ["count_label_stats(fingerprint=True) (one pass)", fused],
        ["count, then sha256 of the file in 4 MiB reads", two_pass],
        ["resolve_class_weights, miss (1 run; counts, hashes, writes)", miss],
        ["resolve_class_weights, hit (stamp + note + cached file)", hit],
        ["resolve_class_weights, labels in memory (stamp=None)", memory],
    ]
    ratios = [
        ["fused / count only", f"{fused / count:.2f}x", "", ""],
        ["two-pass / fused", f"{two_pass / fused:.2f}x", "> 1x", "PASS" if fused < two_pass else "FAIL"],
        ["hit / count only", f"{hit / count:.5f}x", "", ""],
    ]
    print(machine())
    print(f"labels: {n:,} uint8 ({n / 2**30:.2f} GiB) in a temporary .npy, page cache warm; best of {args.repeats} (hit: of 20)")
    print(table([[name, f"{s:.6f}", f"{n / s / 1e9:.2f}"] for name, s in rows], ["step", "seconds", "GB/s"]))
    print(table(ratios, ["ratio", "value", "target", ""]))
    print(f"peak RSS: {file_rss:.0f} MiB before loading the labels into memory, {all_rss:.0f} MiB after")

    first = miss_runs[0]
    failures = [
        message
        for ok, message in [
            (fused < two_pass, f"the fused pass ({fused:.3f} s) is not cheaper than two passes ({two_pass:.3f} s)"),
            (not first.from_cache, "the first call came from the cache (was the cache folder not empty?)"),
            (all(h.from_cache for h in hits), "a later call on the unchanged file did not come from the cache"),
            (all(torch.equal(h.weights, first.weights) for h in hits), "the cached weights differ from the miss's"),
            (all(not r.from_cache and r.data_digest == first.data_digest and torch.equal(r.weights, first.weights)
                 for r in memory_runs), "the in-memory labels give another digest or other weights than the file"),  # fmt: skip
        ]
        if not ok
    ]
    if failures:
        sys.exit("FAILED: " + "; ".join(failures))


if __name__ == "__main__":
    main()
