"""Counting from files: peak memory and throughput on a large .npy and a compressed .npz.

Run: python benchmarks/bench_files.py [--gib 2] [--rounds 5]
Writes a GIB-sized uint8 label file (80,000-grid ARC-like block repeated) as
.npy and as a compressed .npz member in a temporary folder. Memory: each file
is counted in a fresh process, whose peak RSS above `import torch` (and
numpy and classweights) is measured. Time: in one process, with the page
cache warm, counting the .npy path and counting the same labels already in
memory take turns (--rounds rounds; medians).
Targets (2-core CPU): peak RSS increase <= 32 MiB for both files; the .npy
path within 1.25x of the in-memory time. Also measured, to show what bounds
the second: the CPU time of counting in memory, and reading the file into
one reused buffer on one thread (what streaming adds); with two cores the
streamed count cannot take less than their sum over two.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
import time
import zipfile
from pathlib import Path

import numpy as np
from _common import arc_like_labels, interleaved, load_average, machine, median, table, verdict

import classweights

# The peak RSS of the probe's own memory (VmHWM): getrusage's ru_maxrss would start at the parent's RSS, which a
# child inherits across fork and exec on Linux.
PROBE = textwrap.dedent(
    """
    import json, sys, time
    import numpy as np, torch
    import classweights

    def peak_kib():
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))

    path = sys.argv[1]
    base = peak_kib()
    start = time.perf_counter()
    counts = classweights.count_labels(path, 10)
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "rss_mib": (peak_kib() - base) / 1024, "counts": counts.tolist()}))
    """
)
READ_BYTES = 1 << 22  # what one chunk of uint8 labels reads


def write_files(folder: Path, gib: float) -> tuple[Path, Path, int]:
    block = arc_like_labels()
    repeats = max(1, round(gib * 2**30 / block.nbytes))
    shape = (repeats * len(block),) + block.shape[1:]
    npy = folder / "labels.npy"
    with npy.open("wb") as handle:
        np.lib.format.write_array_header_1_0(handle, {"descr": "|u1", "fortran_order": False, "shape": shape})
        for _ in range(repeats):
            handle.write(block.tobytes())
    npz = folder / "labels.npz"
    with (
        zipfile.ZipFile(npz, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive,
        archive.open("train.npy", "w", force_zip64=True) as member,
    ):
        np.lib.format.write_array_header_1_0(member, {"descr": "|u1", "fortran_order": False, "shape": shape})
        for _ in range(repeats):
            member.write(block.tobytes())
    return npy, npz, repeats * block.size


def probe(path: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, str(path)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def read_only(path: Path) -> None:
    """The file read into one reused buffer, as the stream reads it, and nothing else."""
    view = memoryview(np.empty(READ_BYTES, dtype=np.uint8))
    with path.open("rb", buffering=0) as handle:
        while handle.readinto(view):
            pass


def cpu_and_wall(fn) -> tuple[float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    fn()
    return time.process_time() - cpu, time.perf_counter() - wall


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gib", type=float, default=2.0, help="size of the label file in GiB")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds of each method (medians are compared)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-files-") as tmp:
        npy, npz, n = write_files(Path(tmp), args.gib)
        load_before = load_average()
        memory_probe = {kind: probe(path) for kind, path in (("npy", npy), ("npz", npz))}
        labels = np.load(npy)
        in_memory, streamed, read = interleaved([
            lambda: classweights.count_labels(labels, 10),
            lambda: classweights.count_labels(npy, 10),
            lambda: read_only(npy),
        ], args.rounds)  # fmt: skip
        cpu_runs = [cpu_and_wall(lambda: classweights.count_labels(labels, 10)) for _ in range(3)]
        memory_cpu, cores = median([c for c, _ in cpu_runs]), median([c / w for c, w in cpu_runs])
        counts = classweights.count_labels(labels, 10).tolist()
        load_after = load_average()
    assert all(r["counts"] == counts for r in memory_probe.values()), "sources disagree"
    memory, npy_time, read_time = median(in_memory), median(streamed), median(read)
    bound = max(memory, (memory_cpu + read_time) / 2)
    rows = [
        ["in memory (np.load first)", f"{memory:.3f} s", f"{n / memory / 1e9:.2f}", "1.00x", "", "", ""],
        [".npy path (streamed)", f"{npy_time:.3f} s", f"{n / npy_time / 1e9:.2f}", f"{npy_time / memory:.2f}x",
         verdict(npy_time / memory, 1.25, higher_is_better=False), f"{memory_probe['npy']['rss_mib']:.1f} MiB",
         verdict(memory_probe["npy"]["rss_mib"], 32, higher_is_better=False)],
        [".npz member (compressed, streamed; fresh process)", f"{memory_probe['npz']['seconds']:.3f} s",
         f"{n / memory_probe['npz']['seconds'] / 1e9:.2f}", f"{memory_probe['npz']['seconds'] / memory:.2f}x", "",
         f"{memory_probe['npz']['rss_mib']:.1f} MiB", verdict(memory_probe["npz"]["rss_mib"], 32, higher_is_better=False)],
        ["read the .npy only (one thread, one 4 MiB buffer)", f"{read_time:.3f} s", f"{n / read_time / 1e9:.2f}",
         f"{read_time / memory:.2f}x", "", "", ""],
        ["bound for the .npy path: (CPU of counting in memory + read) / 2 cores", f"{bound:.3f} s", f"{n / bound / 1e9:.2f}",
         f"{bound / memory:.2f}x", "", "", ""],
    ]  # fmt: skip
    print(machine())
    print(f"labels: {n:,} uint8 ({n / 2**30:.2f} GiB); medians of {args.rounds} interleaved rounds, page cache warm; "
          f"load average {load_before} -> {load_after}")  # fmt: skip
    print(f"counting in memory used {memory_cpu:.3f} CPU seconds ({cores:.2f} cores)")
    print(
        table(
            rows,
            ["source", "time", "G labels/s", "time vs memory", "<= 1.25x", "peak RSS above import torch", "<= 32 MiB"],
        )
    )


if __name__ == "__main__":
    main()
