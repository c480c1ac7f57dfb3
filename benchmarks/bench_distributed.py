"""Sharded counting with ``distributed=True``: 1 process against 2 processes of a gloo group.

Run: python benchmarks/bench_distributed.py [--size-gib 1]
Writes a SIZE-GiB .npy of [N, 16, 16] uint8 labels (the 80,000-grid ARC-like
block repeated, see bench_fingerprint.write_labels) into a temporary folder,
then launches this script as workers with ``python -m torch.distributed.run
--standalone --nproc_per_node=N`` and times, in each worker,
``count_labels(source, 10, distributed=True)`` on two sources: the .npy path
(each rank reads its shard of the file) and an ``np.load(mmap_mode="r")``
memory map (each rank counts its slice of the array). Cases:

- no process group: plain ``count_labels(source, 10)``, 1 process x 2 threads;
- world size 1, 1 thread; world size 1, 2 threads (the same 2 cores as below);
- world size 2, 1 thread per process (2 processes x 2 threads would
  oversubscribe the 2 cores).

classweights counts on ``torch.get_num_threads()`` threads per process; each
worker sets it with ``torch.set_num_threads``. Inside a worker every call is
preceded by ``dist.barrier()``; a call's time is the slowest rank's, and the
best of the calls is kept. Only the counting call is timed (not the process
start-up, the rendezvous or the memory map). The cases are launched in turns,
``--rounds`` times, and the best round is kept (the machine is shared).
The file is in the page cache, so the .npy rows measure reading from memory.
Exit code 1 if any rank of any case returns other counts than np.bincount.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import arc_like_labels, machine, table

SOURCES = ("npy path", "memmap")
CASES = (  # (process group, processes, threads per process)
    (False, 1, 2),
    (True, 1, 1),
    (True, 1, 2),
    (True, 2, 1),
)


# ------------------------------------------------------------------ worker ----


def worker(args: argparse.Namespace) -> None:
    """One rank: warm up, time ``--repeats`` calls per source, rank 0 writes the result."""
    import torch
    import torch.distributed as dist

    import classweights

    torch.set_num_threads(args.threads)
    grouped = not args.no_group
    if grouped:
        dist.init_process_group("gloo")
    sources = {"npy path": args.path, "memmap": np.load(args.path, mmap_mode="r")}
    times: dict[str, list[float]] = {name: [] for name in sources}
    counts: dict[str, list[list[int]]] = {name: [] for name in sources}
    for name, source in sources.items():  # warm-up: maps the memmap's pages, starts the thread pool
        counts[name].append(classweights.count_labels(source, 10, distributed=grouped).tolist())
    for _ in range(args.repeats):
        for name, source in sources.items():
            if grouped:
                dist.barrier()
            start = time.perf_counter()
            result = classweights.count_labels(source, 10, distributed=grouped)
            times[name].append(time.perf_counter() - start)
            counts[name].append(result.tolist())
    mine = {"times": times, "counts": counts, "threads": torch.get_num_threads()}
    ranks = [mine]
    if grouped:
        ranks = [None] * dist.get_world_size()
        dist.all_gather_object(ranks, mine)
        rank = dist.get_rank()
        dist.destroy_process_group()
        if rank:
            return
    best = {name: min(max(r["times"][name][i] for r in ranks) for i in range(args.repeats)) for name in sources}
    record = {"best": best, "counts": [r["counts"] for r in ranks], "threads": [r["threads"] for r in ranks]}
    Path(args.result).write_text(json.dumps(record))


# ------------------------------------------------------------------ parent ----


def launch(grouped: bool, processes: int, threads: int, path: Path, result: Path, repeats: int) -> dict:
    script = [str(Path(__file__).resolve()), "--worker", "--path", str(path), "--result", str(result),
              "--threads", str(threads), "--repeats", str(repeats)]  # fmt: skip
    if grouped:
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={processes}",
            *script,
        ]
    else:
        command = [sys.executable, *script, "--no-group"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    out = subprocess.run(command, check=False, capture_output=True, text=True, env=env)
    if out.returncode:
        sys.exit(f"worker failed ({' '.join(command)}):\n{out.stderr[-3000:]}")
    return json.loads(result.read_text())


def expected_counts(num_labels: int) -> list[int]:
    """np.bincount of what write_labels wrote: whole copies of the block, then a partial one."""
    block = arc_like_labels()
    grids, per_grid = num_labels // block[0].size, block[0].size
    whole, rest = divmod(grids, len(block))
    counts = whole * np.bincount(block.reshape(-1), minlength=10) + np.bincount(block[:rest].reshape(-1), minlength=10)
    assert counts.sum() == grids * per_grid
    return counts.tolist()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-gib", type=float, default=1.0, help="size of the label file in GiB")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per source in each worker")
    parser.add_argument("--rounds", type=int, default=5, help="launches of every case, in turns; the best is kept")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-group", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    from bench_fingerprint import write_labels

    best: dict[tuple[bool, int, int], dict[str, float]] = {}
    wrong: list[str] = []
    threads_seen: dict[tuple[bool, int, int], list[int]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-distributed-") as tmp:
        path = Path(tmp) / "labels.npy"
        n = write_labels(path, args.size_gib)
        with path.open("rb") as handle:
            os.fsync(handle.fileno())  # no write-back while timing
        want = expected_counts(n)
        for _ in range(args.rounds):
            for case in CASES:
                record = launch(*case, path, Path(tmp) / "result.json", args.repeats)
                times = best.setdefault(case, {name: float("inf") for name in SOURCES})
                for name in SOURCES:
                    times[name] = min(times[name], record["best"][name])
                threads_seen[case] = record["threads"]
                for rank, per_source in enumerate(record["counts"]):
                    for name in SOURCES:
                        if any(c != want for c in per_source[name]):
                            wrong.append(f"{case} rank {rank} {name}")

    def label(case: tuple[bool, int, int]) -> str:
        return f"{case[1]} x {case[2]}"

    rows = []
    for name in SOURCES:
        for case in CASES:
            seconds = best[case][name]
            group = f"gloo, world size {case[1]}" if case[0] else "none"
            rows.append([name, label(case), group, f"{seconds:.3f}", f"{n / seconds / 1e9:.2f}"])
    two, one, one_two = (True, 2, 1), (True, 1, 1), (True, 1, 2)

    def speedups(base: tuple[bool, int, int]) -> str:
        return ", ".join(f"{name} {best[base][name] / best[two][name]:.2f}x" for name in SOURCES)

    print(machine())
    print(f"labels: {n:,} uint8 ({n / 2**30:.2f} GiB) in a temporary .npy, page cache warm; "
          f"best of {args.rounds} launches x {args.repeats} calls per case, slowest rank per call")  # fmt: skip
    print("threads: torch.set_num_threads(T) in every process (classweights counts on torch.get_num_threads() threads); "
          "2 processes run 1 thread each so they do not oversubscribe the 2 cores; 1 process x 2 threads is the "
          "single-process baseline on the same cores. Threads seen per rank: "
          + "; ".join(f"{label(c)}{'' if c[0] else ' (no group)'}: {threads_seen[c]}" for c in CASES))  # fmt: skip
    print(table(rows, ["source", "processes x threads", "process group", "seconds", "GB/s"]))
    print(f"speed-up, 2 processes x 1 thread vs 1 process x 1 thread:  {speedups(one)}")
    print(f"speed-up, 2 processes x 1 thread vs 1 process x 2 threads: {speedups(one_two)}")
    if wrong:
        sys.exit(f"FAILED: counts differ from np.bincount in: {'; '.join(wrong)}")
    print(f"counts: identical on every rank of every case and call, equal to np.bincount ({want})")


if __name__ == "__main__":
    main()
