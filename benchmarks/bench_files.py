"""Counting from files: peak memory and throughput on a large .npy and a compressed .npz.

Run: python benchmarks/bench_files.py [--gib 2]
Writes a GIB-sized uint8 label file (80,000-grid ARC-like block repeated) as
.npy and as a compressed .npz member in a temporary folder, then, each in a
fresh process, measures the peak RSS above `import torch` while counting it,
and the throughput against counting the same labels in memory.
Targets (2-core CPU): peak RSS increase <= 128 MiB for both files; .npy
throughput within 2x of the in-memory path.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
import zipfile
from pathlib import Path

import numpy as np
from _common import arc_like_labels, machine, table, verdict

PROBE = textwrap.dedent(
    """
    import json, resource, sys, time
    import numpy as np, torch
    import classweights
    kind, path = sys.argv[1], sys.argv[2]
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if kind == "memory":
        labels = np.load(path)                     # the whole array in RAM first
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        source = labels
    else:
        source = path
    start = time.perf_counter()
    counts = classweights.count_labels(source, 10)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": seconds, "rss_mib": (peak - base) / 1024, "labels": int(counts.sum()), "counts": counts.tolist()}))
    """
)


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
    with zipfile.ZipFile(npz, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        with archive.open("train.npy", "w", force_zip64=True) as member:
            np.lib.format.write_array_header_1_0(member, {"descr": "|u1", "fortran_order": False, "shape": shape})
            for _ in range(repeats):
                member.write(block.tobytes())
    return npy, npz, repeats * block.size


def probe(kind: str, path: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, kind, str(path)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gib", type=float, default=2.0, help="size of the label file in GiB")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        npy, npz, n = write_files(Path(tmp), args.gib)
        runs = {kind: min((probe(kind, path) for _ in range(2)), key=lambda r: r["seconds"])
                for kind, path in (("memory", npy), ("npy", npy), ("npz", npz))}  # fmt: skip
    assert len({json.dumps(r["counts"]) for r in runs.values()}) == 1, "sources disagree"
    memory = runs["memory"]["seconds"]
    rows = []
    for kind, label in (("memory", "in memory (np.load first)"), ("npy", ".npy path (streamed)"), ("npz", ".npz member (compressed, streamed)")):
        r = runs[kind]
        rss_ok = "" if kind == "memory" else verdict(r["rss_mib"], 128, higher_is_better=False)
        ratio = r["seconds"] / memory
        speed_ok = verdict(ratio, 2.0, higher_is_better=False) if kind == "npy" else ""
        rows.append([label, f"{r['seconds']:.2f} s", f"{n / r['seconds'] / 1e9:.2f}", f"{ratio:.2f}x", speed_ok,
                     f"{r['rss_mib']:.0f} MiB", rss_ok])  # fmt: skip
    print(machine())
    print(f"labels: {n:,} uint8 ({n / 2**30:.2f} GiB)")
    print(table(rows, ["source", "time", "G labels/s", "time vs memory", "<= 2x", "peak RSS above import torch", "<= 128 MiB"]))


if __name__ == "__main__":
    main()
