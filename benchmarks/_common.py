"""Shared helpers for the benchmarks: the machine, best-of-N and interleaved timing, a table printer."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

SHARED_CORPUS = Path(__file__).resolve().parents[2] / "shared" / "data" / "simplified_dataset_100k.npz"


def machine() -> str:
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (f"machine: {platform.machine()}, {cores} cores available, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), numpy {np.__version__}, Python {platform.python_version()}")  # fmt: skip


def best_of(fn: Callable[[], object], repeats: int = 7, warmup: int = 1) -> float:
    """Best wall time of ``repeats`` calls, in seconds (the least disturbed by other load)."""
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def interleaved(fns: Sequence[Callable[[], object]], rounds: int, warmup: int = 1) -> list[list[float]]:
    """Wall times of each of ``fns`` over ``rounds`` rounds, run in turns within each round.

    Taking turns means that other load on a shared machine hits every method
    alike, so the ratio of their medians holds even when absolute times do not.
    """
    for _ in range(warmup):
        for fn in fns:
            fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(rounds):
        for fn, kept in zip(fns, times):
            start = time.perf_counter()
            fn()
            kept.append(time.perf_counter() - start)
    return times


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def load_average() -> str:
    """The 1-minute load average against the cores, for reading a run's numbers (``?`` where unknown)."""
    try:
        return f"{os.getloadavg()[0]:.1f}"
    except OSError:
        return "?"


def arc_like_labels(num_grids: int = 80_000, seed: int = 0) -> np.ndarray:
    """``[N, 16, 16]`` uint8, ~93% zeros: the real corpus when it is there, else generated."""
    if SHARED_CORPUS.exists() and num_grids <= 80_000:
        with np.load(SHARED_CORPUS) as data:
            return np.ascontiguousarray(data["train"][:num_grids])
    rng = np.random.default_rng(seed)
    labels = rng.integers(1, 10, size=(num_grids, 16, 16), dtype=np.uint8)
    labels[rng.random(labels.shape) < 0.93] = 0
    return labels


def table(rows: Sequence[Sequence[object]], header: Sequence[str]) -> str:
    cells = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"
    return "\n".join(
        [line(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in cells[1:]]
    )


def verdict(ratio: float, target: float, higher_is_better: bool = True) -> str:
    ok = ratio >= target if higher_is_better else ratio <= target
    return "PASS" if ok else "FAIL"
