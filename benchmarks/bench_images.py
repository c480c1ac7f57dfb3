"""Counting a folder of label images: count_labels against a single-threaded Pillow + np.bincount loop.

Run: python benchmarks/bench_images.py [--images 2000] [--repeats 5]
Data: a temporary folder of palette ("P") PNGs of 500 x 375, VOC-like: background 0, one
to three objects of classes 1-20, each outlined by a 5-pixel border of 255 (ignore_index).
Target (2-core CPU): count_labels(folder, 21, ignore_index=255) >= 1.8x the loop
``np.bincount(np.asarray(Image.open(p)).ravel())`` over the same files.

The methods run in turn, `repeats` rounds, and each keeps its best time (the one least
disturbed by other load on the machine). To explain the ratio it also measures how well
decoding alone scales (Image.open + load per image on one thread and on two), how many
cores each method really got (its CPU time over its wall time), and where the time of one
image goes on one thread: the parts that run in C without the GIL (Pillow's decompression
and histogram) bound what two threads can gain.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from _common import machine, table, verdict
from PIL import Image, ImageDraw

import classweights


def voc_palette() -> list[int]:
    colours = []
    for index in range(256):
        r = g = b = 0
        for bit in range(8):
            r |= ((index >> (3 * bit)) & 1) << (7 - bit)
            g |= ((index >> (3 * bit + 1)) & 1) << (7 - bit)
            b |= ((index >> (3 * bit + 2)) & 1) << (7 - bit)
        colours += [r, g, b]
    return colours


def write_masks(folder: Path, count: int, seed: int = 0) -> list[Path]:
    """``count`` VOC-like palette PNGs of 500 x 375: objects filled with their class and outlined with 255."""
    rng = np.random.default_rng(seed)
    palette = voc_palette()
    paths = []
    for i in range(count):
        image = Image.new("P", (500, 375), 0)
        image.putpalette(palette)
        draw = ImageDraw.Draw(image)
        for _ in range(rng.integers(1, 4)):
            x0, y0 = int(rng.integers(0, 400)), int(rng.integers(0, 300))
            x1, y1 = x0 + int(rng.integers(30, 200)), y0 + int(rng.integers(30, 150))
            label = int(rng.integers(1, 21))
            if rng.random() < 0.5:
                draw.ellipse([x0, y0, x1, y1], fill=label, outline=255, width=5)
            else:
                draw.polygon(
                    [(x0, y0), (x1, y0 + 20), (x1 - 10, y1), (x0 + 15, y1 - 30)], fill=label, outline=255, width=5
                )
        path = folder / f"2007_{i:06d}.png"
        image.save(path)
        paths.append(path)
    return paths


def baseline(paths: list[Path]) -> np.ndarray:
    """What one would write by hand: decode each file, bincount its pixels, one file after another."""
    counts = np.zeros(256, np.int64)
    for path in paths:
        counts += np.bincount(np.asarray(Image.open(path)).ravel(), minlength=256)
    return counts


def decode_only(path: Path) -> None:
    with Image.open(path) as image:
        image.load()


def stages(paths: list[Path]) -> dict[str, float]:
    """Seconds per image of each stage of reading a label image, on one thread (best of 3 passes)."""
    best = {"Image.open (Python: header, chunks)": float("inf"), "load (mostly decompression, GIL released)": float("inf"),
            "histogram (C; GIL released)": float("inf")}  # fmt: skip
    for _ in range(3):
        spent = dict.fromkeys(best, 0.0)
        for path in paths:
            with path.open("rb") as handle:
                start = time.perf_counter()
                image = Image.open(handle, formats=["PNG"])
                opened = time.perf_counter()
                image.load()
                loaded = time.perf_counter()
                image.histogram()
                done = time.perf_counter()
            spent["Image.open (Python: header, chunks)"] += opened - start
            spent["load (mostly decompression, GIL released)"] += loaded - opened
            spent["histogram (C; GIL released)"] += done - loaded
        best = {k: min(best[k], spent[k] / len(paths)) for k in best}
    return best


def interleaved_best(methods: dict[str, Callable[[], object]], repeats: int) -> dict[str, tuple[float, float]]:
    """Best wall time and best CPU time (this process, all threads) of each method, running them in turn."""
    best = {name: (float("inf"), float("inf")) for name in methods}
    for fn in methods.values():  # warm-up: imports, thread pools, the page cache
        fn()
    for _ in range(repeats):
        for name, fn in methods.items():
            wall, cpu = time.perf_counter(), time.process_time()
            fn()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            best[name] = (min(best[name][0], wall), min(best[name][1], cpu))
    return best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=2000, help="number of 500 x 375 palette PNGs")
    parser.add_argument("--repeats", type=int, default=5, help="rounds of timing (each method keeps its best)")
    args = parser.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(2) as pool:
        folder = Path(tmp)
        paths = write_masks(folder, args.images)
        expected = baseline(paths)
        counts = classweights.count_labels(folder, 21, ignore_index=255)
        assert counts.tolist() == expected[:21].tolist(), "count_labels disagrees with np.bincount"
        assert int(expected[21:255].sum()) == 0 and expected[255] > 0
        methods = {
            "baseline": lambda: baseline(paths),
            "count_labels": lambda: classweights.count_labels(folder, 21, ignore_index=255),
            "count_labels 1 thread": lambda: classweights.count_labels(folder, 21, ignore_index=255, num_threads=1),
            "fingerprint": lambda: classweights.count_label_stats(folder, 21, ignore_index=255, fingerprint=True),
            "decode 1 thread": lambda: [decode_only(p) for p in paths],
            "decode 2 threads": lambda: list(pool.map(decode_only, paths)),
        }
        best = interleaved_best(methods, args.repeats)
        parts = stages(paths)
        size = sum(p.stat().st_size for p in paths)
    load_after = os.getloadavg()

    n = len(paths)
    base = best["baseline"][0]
    ratio = base / best["count_labels"][0]

    def row(name: str, label: str, target: str = "", ok: str = "") -> list[str]:
        wall, cpu = best[name]
        return [
            label,
            f"{wall:.3f} s",
            f"{wall / n * 1e6:.0f} us",
            f"{cpu / n * 1e6:.0f} us",
            f"{cpu / wall:.2f}",
            f"{base / wall:.2f}x",
            target,
            ok,
        ]

    rows = [
        row("baseline", "loop: np.bincount(np.asarray(Image.open(p))), 1 thread"),
        row("count_labels", "count_labels(folder, 21, ignore_index=255)", ">= 1.8x", verdict(ratio, 1.8)),
        row("count_labels 1 thread", "  the same with num_threads=1"),
        row("fingerprint", "  count_label_stats(..., fingerprint=True)"),
        row("decode 1 thread", "decode only (Image.open + load), 1 thread"),
        row("decode 2 threads", "decode only, 2 threads"),
    ]
    print(machine())
    print(f"images: {n} palette PNGs of 500 x 375 ({size / n / 1024:.1f} KiB each on average), "
          f"{float(expected[0] / expected.sum()):.1%} background, {float(expected[255] / expected.sum()):.1%} border (255)")  # fmt: skip
    print(
        f"load average (1 min) before: {load_before[0]:.2f}, after: {load_after[0]:.2f}  (other work on the machine lowers every ratio)"
    )
    print(
        table(
            rows, ["method", "best time", "wall per image", "CPU per image", "cores used", "vs baseline", "target", ""]
        )
    )
    decode_scaling = best["decode 1 thread"][0] / best["decode 2 threads"][0]
    print(
        f"decoding alone runs {decode_scaling:.2f}x faster on 2 threads than on 1 (2.0x if both cores were free to this process)"
    )
    one = best["count_labels 1 thread"][0] / n
    released = parts["load (mostly decompression, GIL released)"] + parts["histogram (C; GIL released)"]
    print("one image on one thread, count_labels: " + ", ".join(f"{k} {v * 1e6:.0f} us" for k, v in parts.items())
          + f", the rest {max(0.0, one - sum(parts.values())) * 1e6:.0f} us")  # fmt: skip
    share = min(1.0, released / one)
    single = best["baseline"][0] / best["count_labels 1 thread"][0]
    low = 1 / (1 - share / 2)  # if the parts holding the GIL never overlapped any other work
    print(f"the GIL is released for {share:.0%} of it, so 2 free cores would run it {low:.2f}x to 2.00x as fast as 1 thread: "
          f"{single * low:.2f}x to {single * 2:.2f}x the baseline")  # fmt: skip


if __name__ == "__main__":
    main()
