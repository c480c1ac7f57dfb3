"""In-memory counting: count_labels against torch.bincount, scikit-learn and the spec's loop.

Run: python benchmarks/bench_counting.py [--runs 5]
Data: 80,000 x 16 x 16 uint8 labels, ~93% zeros (the shared corpus if present).
Targets (2-core CPU), in every run: >= 4x one torch.bincount on the flat
tensor, >= 150x scikit-learn's compute_class_weight, >= 500x the per-sample loop.
The three are timed in turns (ROUNDS rounds) and compared by their medians, so
that load from other work hits them alike. Each run also measures what bounds
counting on this machine: the rate at which both cores read memory, and the
increment loop inside torch.bincount on pairs of labels (the work count_labels
cannot avoid), spread over both cores.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from _common import arc_like_labels, interleaved, load_average, machine, median, table, verdict

import classweights

ROUNDS = 9


def spec_loop(grids: torch.Tensor, num_classes: int) -> torch.Tensor:
    """The loop the spec's trainer used: per sample, per class, ``(sample == c).sum().item()``."""
    counts = torch.zeros(num_classes, dtype=torch.long)
    for sample in grids:
        for c in range(num_classes):
            counts[c] += (sample == c).sum().item()
    return counts


def floors(flat: torch.Tensor) -> tuple[float, float]:
    """Seconds for (both cores reading the labels once, the bincount loop over label pairs on both cores).

    Each is timed on one core (numpy's max; torch on one thread) and halved: what two free cores would take.
    """
    labels = flat.numpy()
    read = median(interleaved([labels.max], 15)[0])
    # The loop alone: int16 pairs whose bins do not repeat (no increment waits for the one before).
    pairs = torch.randint(0, 1 << 15, (flat.numel() // 2,), dtype=torch.int16)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        loop = median(interleaved([lambda: torch.bincount(pairs, minlength=1 << 15)], 7)[0])
    finally:
        torch.set_num_threads(threads)
    return read / 2, loop / 2


def cores_used(labels: np.ndarray) -> float:
    """CPU time over wall time of count_labels: near 2 when both cores are free, near 1 when other work holds one."""
    ratios = []
    for _ in range(5):
        wall, cpu = time.perf_counter(), time.process_time()
        classweights.count_labels(labels, 10)
        ratios.append((time.process_time() - cpu) / (time.perf_counter() - wall))
    return median(ratios)


def after_idle(labels: np.ndarray) -> tuple[float, float, float]:
    """Medians of count_labels (back to back; each after 30 ms in which the other core had nothing to do; on one
    thread). On a virtual machine a core left idle is slow to take up work again (the host has to run its vCPU):
    the interleaved rounds above leave it idle while torch.bincount and scikit-learn run on one core."""
    back_to_back = median(interleaved([lambda: classweights.count_labels(labels, 10)], 15)[0])
    gaps = []
    for _ in range(15):
        time.sleep(0.03)
        start = time.perf_counter()
        classweights.count_labels(labels, 10)
        gaps.append(time.perf_counter() - start)
    one = median(interleaved([lambda: classweights.count_labels(labels, 10, num_threads=1)], 9)[0])
    return back_to_back, median(gaps), one


def one_run(labels: np.ndarray, with_loop: bool) -> dict[str, float]:
    from sklearn.utils.class_weight import compute_class_weight

    flat = torch.from_numpy(labels).reshape(-1)
    classes, y = np.arange(10), labels.reshape(-1)
    ours, bincount, sklearn = (median(t) for t in interleaved([
        lambda: classweights.count_labels(labels, 10),
        lambda: torch.bincount(flat, minlength=10),
        lambda: compute_class_weight("balanced", classes=classes, y=y),
    ], ROUNDS))  # fmt: skip
    read, loop = floors(flat)
    result = {
        "ours": ours,
        "bincount": bincount,
        "sklearn": sklearn,
        "read": read,
        "loop": loop,
        "cores": cores_used(labels),
    }
    result["back_to_back"], result["after_idle"], result["one_thread"] = after_idle(labels)
    if with_loop:
        start = time.perf_counter()
        assert torch.equal(spec_loop(torch.from_numpy(labels), 10), torch.bincount(flat, minlength=10))
        result["spec"] = time.perf_counter() - start
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=1, help="consecutive runs of the whole measurement")
    args = parser.parse_args()
    labels = arc_like_labels()
    flat = torch.from_numpy(labels).reshape(-1)
    assert torch.equal(classweights.count_labels(labels, 10), torch.bincount(flat, minlength=10))
    n = labels.size
    print(machine())
    print(f"labels: {labels.shape} {labels.dtype}, {n:,} in all, {float((labels == 0).mean()):.2%} zeros")
    summary = []
    for run in range(1, args.runs + 1):
        before = load_average()
        r = one_run(labels, with_loop=run == 1)
        ours = r["ours"]
        rows = [
            ["count_labels", f"{ours * 1e3:.2f} ms", f"{n / ours / 1e9:.2f}", "1.00x", "", ""],
            ["torch.bincount (one call)", f"{r['bincount'] * 1e3:.2f} ms", f"{n / r['bincount'] / 1e9:.2f}", f"{r['bincount'] / ours:.2f}x", ">= 4x", verdict(r["bincount"] / ours, 4)],
            ["sklearn compute_class_weight", f"{r['sklearn'] * 1e3:.1f} ms", f"{n / r['sklearn'] / 1e9:.3f}", f"{r['sklearn'] / ours:.0f}x", ">= 150x", verdict(r["sklearn"] / ours, 150)],
        ]  # fmt: skip
        if "spec" in r:
            rows.append(["spec per-sample loop", f"{r['spec']:.2f} s", f"{n / r['spec'] / 1e9:.4f}", f"{r['spec'] / ours:.0f}x", ">= 500x", verdict(r["spec"] / ours, 500)])  # fmt: skip
        rows += [
            ["floor: 2 cores read the labels (1 core / 2)", f"{r['read'] * 1e3:.2f} ms", f"{n / r['read'] / 1e9:.2f}", f"{r['read'] / ours:.2f}x", "", ""],
            ["floor: bincount loop on label pairs (1 core / 2)", f"{r['loop'] * 1e3:.2f} ms", f"{n / r['loop'] / 1e9:.2f}", f"{r['loop'] / ours:.2f}x", "", ""],
        ]  # fmt: skip
        print(f"\nrun {run} of {args.runs}: medians of {ROUNDS} interleaved rounds; load average {before} -> {load_average()}; "
              f"count_labels used {r['cores']:.2f} of {machine().split(', ')[1]}")  # fmt: skip
        print(table(rows, ["method", "time", "G labels/s", "count_labels is faster by", "target", ""]))
        print(f"count_labels called back to back: {r['back_to_back'] * 1e3:.2f} ms ({r['bincount'] / r['back_to_back']:.2f}x one torch.bincount); "
              f"each after 30 ms with the other core idle: {r['after_idle'] * 1e3:.2f} ms ({r['bincount'] / r['after_idle']:.2f}x); "
              f"on one thread: {r['one_thread'] * 1e3:.2f} ms")  # fmt: skip
        print(
            f"150x scikit-learn here needs count_labels in {r['sklearn'] / 150 * 1e3:.2f} ms; the bincount loop alone takes {r['loop'] * 1e3:.2f} ms on both cores"
        )
        summary.append((r["bincount"] / ours, r["sklearn"] / ours))
    if args.runs > 1:
        print(f"\nover {args.runs} runs: vs torch.bincount {min(b for b, _ in summary):.2f}x-{max(b for b, _ in summary):.2f}x (>= 4x in every run: "
              f"{verdict(min(b for b, _ in summary), 4)}); vs scikit-learn {min(s for _, s in summary):.0f}x-{max(s for _, s in summary):.0f}x "
              f"(>= 150x in every run: {verdict(min(s for _, s in summary), 150)})")  # fmt: skip


if __name__ == "__main__":
    main()
