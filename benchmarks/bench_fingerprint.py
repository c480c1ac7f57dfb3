"""The content fingerprint of the class-weight cache: what hashing costs on a large label file.

Run: python benchmarks/bench_fingerprint.py [--size-gib 2] [--rounds 5]
Writes a SIZE-GiB .npy of [N, 16, 16] uint8 labels (the 80,000-grid ARC-like
block repeated: ~93% zeros, 92% with the shared corpus) into a temporary
folder, then times in turns (--rounds rounds; medians), with the file in the
page cache: counting alone; counting and hashing in one pass
(count_label_stats(fingerprint=True), BLAKE3); the same with sha256, the hash
of earlier versions (fingerprint="sha256"); counting, then a separate BLAKE3
pass over the file; then a cache miss and a cache hit through
arcvae.weights.resolve_class_weights, and the same with the labels in memory
(no file stamp, so every call counts and hashes).
Target (2-core CPU): the one pass within 1.15x of counting alone. Also
measured, to show what bounds it: BLAKE3 on one core over the file's bytes in
memory, and the CPU time of counting alone; with two cores the one pass cannot
take less than their sum over two.
Checks: the one pass beats the two passes; the hit comes from the cache with
the miss's weights; the in-memory labels give the file's digest and weights.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import blake3
import numpy as np
import torch
from _common import arc_like_labels, best_of, interleaved, load_average, machine, median, table, verdict

import arcvae.weight_cache
import classweights
from arcvae.weight_cache import ClassWeights, FileStamp, WeightCache, WeightSpec
from arcvae.weights import resolve_class_weights

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


def blake3_file(path: Path) -> str:
    whole = blake3.blake3()
    buffer = bytearray(PIECE)
    view = memoryview(buffer)
    with path.open("rb") as handle:
        while got := handle.readinto(buffer):
            whole.update(view[:got])
    return whole.hexdigest()


def cpu_and_wall(fn: Callable[[], object]) -> tuple[float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    fn()
    return time.process_time() - cpu, time.perf_counter() - wall


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-gib", type=float, default=2.0, help="size of the label file in GiB")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds of each full pass (medians are compared)")
    args = parser.parse_args()
    arcvae.weight_cache.QUIET_NS = 0  # the file is fresh: let the miss note its digest without waiting 2 s

    with tempfile.TemporaryDirectory(prefix="bench-fingerprint-") as tmp:
        path, cache = Path(tmp) / "labels.npy", Path(tmp) / "cache"
        n = write_labels(path, args.size_gib)
        load_before = load_average()

        def resolve(labels: object, stamp: FileStamp | None) -> ClassWeights:
            spec = WeightSpec(num_classes=10, method="sqrt_inverse", smooth=1.0)
            return resolve_class_weights(
                labels, spec, key=None, cache=WeightCache(cache), source=str(path), stamp=stamp
            )

        count, fused, legacy, two_pass = (median(t) for t in interleaved([
            lambda: classweights.count_label_stats(path, 10),
            lambda: classweights.count_label_stats(path, 10, fingerprint=True),
            lambda: classweights.count_label_stats(path, 10, fingerprint="sha256"),
            lambda: (classweights.count_label_stats(path, 10), blake3_file(path)),
        ], args.rounds))  # fmt: skip
        cpu_runs = [cpu_and_wall(lambda: classweights.count_label_stats(path, 10)) for _ in range(3)]
        count_cpu, cores = median([c for c, _ in cpu_runs]), median([c / w for c, w in cpu_runs])
        miss_runs: list[ClassWeights] = []
        miss = best_of(lambda: miss_runs.append(resolve(path, FileStamp.of(path))), repeats=1, warmup=0)
        hits: list[ClassWeights] = []
        hit = best_of(lambda: hits.append(resolve(path, FileStamp.of(path))), repeats=20)  # stamp taken inside
        file_rss = peak_rss_mib()

        in_memory = np.load(path)
        raw = memoryview(in_memory.reshape(-1))
        hash_one_core = median(interleaved([lambda: blake3.blake3(raw).digest()], 3)[0])
        memory_runs: list[ClassWeights] = []
        memory = best_of(lambda: memory_runs.append(resolve(in_memory, None)), repeats=args.rounds)
        all_rss = peak_rss_mib()
        load_after = load_average()

    bound = max(count, (count_cpu + hash_one_core) / 2)
    rows = [
        ["count_label_stats (count only)", count],
        ["count_label_stats(fingerprint=True) (one pass, BLAKE3)", fused],
        ['count_label_stats(fingerprint="sha256") (one pass, the earlier hash)', legacy],
        ["count, then BLAKE3 of the file in 4 MiB reads", two_pass],
        ["BLAKE3 of the labels in memory, one core", hash_one_core],
        ["bound for the one pass: (CPU of counting + BLAKE3) / 2 cores", bound],
        ["resolve_class_weights, miss (1 run; counts, hashes, writes)", miss],
        ["resolve_class_weights, hit (stamp + note + cached file)", hit],
        ["resolve_class_weights, labels in memory (stamp=None)", memory],
    ]
    ratios = [
        [
            "one pass / count only",
            f"{fused / count:.2f}x",
            "<= 1.15x",
            verdict(fused / count, 1.15, higher_is_better=False),
        ],
        ["bound / count only", f"{bound / count:.2f}x", "", ""],
        ["sha256 one pass / count only", f"{legacy / count:.2f}x", "", ""],
        ["two passes / one pass", f"{two_pass / fused:.2f}x", "> 1x", "PASS" if fused < two_pass else "FAIL"],
        ["hit / count only", f"{hit / count:.5f}x", "", ""],
    ]
    print(machine())
    print(f"labels: {n:,} uint8 ({n / 2**30:.2f} GiB) in a temporary .npy, page cache warm; medians of {args.rounds} "
          f"interleaved rounds (hit: best of 20; miss: 1 run); load average {load_before} -> {load_after}")  # fmt: skip
    print(f"counting alone used {count_cpu:.3f} CPU seconds ({cores:.2f} cores)")
    print(table([[name, f"{s:.6f}", f"{n / s / 1e9:.2f}"] for name, s in rows], ["step", "seconds", "GB/s"]))
    print(table(ratios, ["ratio", "value", "target", ""]))
    print(f"peak RSS: {file_rss:.0f} MiB before loading the labels into memory, {all_rss:.0f} MiB after")

    first = miss_runs[0]

    def same_as_miss(result: ClassWeights) -> bool:
        return result.data_digest == first.data_digest and torch.equal(result.weights, first.weights)

    checks = {
        f"the fused pass ({fused:.3f} s) is not cheaper than two passes ({two_pass:.3f} s)": fused < two_pass,
        "the first call came from the cache (was the cache folder not empty?)": not first.from_cache,
        "a later call on the unchanged file did not come from the cache": all(h.from_cache for h in hits),
        "the cached weights or digest differ from the miss's": all(same_as_miss(h) for h in hits),
        "labels in memory hit the cache or gave another digest or weights": all(
            not r.from_cache and same_as_miss(r) for r in memory_runs
        ),
    }
    failures = [message for message, ok in checks.items() if not ok]
    if failures:
        sys.exit("FAILED: " + "; ".join(failures))


if __name__ == "__main__":
    main()
