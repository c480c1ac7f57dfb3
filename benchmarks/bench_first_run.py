"""The first run of the main job, end to end and stage by stage: `arcvae train --overfit-batch` from an empty cache.

Run: python benchmarks/bench_first_run.py [--rounds N]
Each round starts two fresh processes with an empty cache folder (XDG_CACHE_HOME) and an
empty matplotlib configuration folder (MPLCONFIGDIR), as on a new machine:
1. the command itself, timed from outside (wall time of the whole process);
2. the same job through arcvae.trainer.train, with each stage's function wrapped in a timer:
   imports, corpus generation (and saving it), reading the data, class weights (count +
   fingerprint + cache), model and optimiser, the training loop, the pictures.
Then, in this process, the corpus stage against what it replaced (object placement on boolean
16x16 masks, written by np.savez_compressed; same random draws, the same grids), to show the cut.
The stage table reports the median over rounds.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import machine, table

STAGED = r"""
import io, json, sys, time
t0 = time.perf_counter()
import torch
t1 = time.perf_counter()
from rich.console import Console
from arcvae import run_data, trainer
from arcvae.config import TrainConfig
from arcvae.report import Reporter
t2 = time.perf_counter()
times = {"import torch": t1 - t0, "import arcvae": t2 - t1}

def timed(owner, name, label):
    inner = getattr(owner, name)
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            times[label] = times.get(label, 0.0) + time.perf_counter() - start
    setattr(owner, name, wrapper)

timed(run_data, "resolve_data_path", "corpus: generate + save")
timed(trainer, "load_run_data", "data: read the splits")
timed(trainer, "run_weights", "class weights: count + fingerprint")
timed(trainer.TrainingState, "start", "model + optimiser")
timed(trainer, "train_epochs", "training loop")
timed(trainer, "save_pictures", "pictures")
start = time.perf_counter()
result = trainer.train(TrainConfig(overfit_batch=True, out=sys.argv[1]), Reporter(Console(file=io.StringIO())))
times["train() in all"] = time.perf_counter() - start
times["data: read the splits"] -= times["corpus: generate + save"]  # it runs inside load_run_data
times["epochs"] = result.epochs_run
print(json.dumps(times))
"""


def fresh_env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(XDG_CACHE_HOME=str(home / "cache"), MPLCONFIGDIR=str(home / "mpl"), WANDB_MODE="disabled")
    return env


def one_round() -> tuple[float, dict[str, float]]:
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "arcvae", "train", "--overfit-batch", "--out", str(Path(a) / "run")],
                       env=fresh_env(Path(a)), check=True, capture_output=True)  # fmt: skip
        whole = time.perf_counter() - start
        out = subprocess.run([sys.executable, "-c", STAGED, str(Path(b) / "run")], env=fresh_env(Path(b)), check=True,
                             capture_output=True, text=True)  # fmt: skip
        return whole, json.loads(out.stdout.strip().splitlines()[-1])


# ------------------------------------------- the placement it replaced ----


def place_with_masks(canvas, rows, templates, rng, occupied=None):  # the former arcvae.data.synthetic._place_objects
    from arcvae.data.synthetic import GRID, MAX_PLACEMENT_ATTEMPTS, NUM_COLORS

    occupied = canvas != 0
    blocked = occupied.copy()
    blocked[:, 1:, :] |= occupied[:, :-1, :]
    blocked[:, :-1, :] |= occupied[:, 1:, :]
    near = blocked.copy()
    blocked[:, :, 1:] |= near[:, :, :-1]
    blocked[:, :, :-1] |= near[:, :, 1:]
    axis = np.arange(GRID)
    cumulative = np.cumsum(templates.probs)
    pending = rows
    for _ in range(MAX_PLACEMENT_ATTEMPTS):
        if pending.size == 0:
            break
        count = pending.size
        shape = np.minimum(np.searchsorted(cumulative, rng.random(count), side="right"), len(cumulative) - 1)
        top = rng.integers(0, GRID - templates.heights[shape] + 1)
        left = rng.integers(0, GRID - templates.widths[shape] + 1)
        colour = rng.integers(1, NUM_COLORS, size=count, dtype=np.uint8)
        mask = templates.masks[shape[:, None, None], (axis[None, :] - top[:, None])[:, :, None],
                               (axis[None, :] - left[:, None])[:, None, :]]  # fmt: skip
        clash = (mask & blocked[pending]).any(axis=(1, 2))
        ok = ~clash
        canvas[pending[ok]] = np.where(mask[ok], colour[ok, None, None], canvas[pending[ok]])
        pending = pending[clash]


def generation_cut(rounds: int) -> list[list[object]]:
    """The corpus stage as it was (boolean masks, ``np.savez_compressed``) and as it is, interleaved, best of rounds."""
    from arcvae.data import files, synthetic

    current = synthetic._place_objects
    ways = {
        "before": (place_with_masks, lambda out, arrays: np.savez_compressed(out, **arrays)),
        "now": (current, files._write_npz),
    }
    times: dict[str, dict[str, list[float]]] = {name: {"generate": [], "write": []} for name in ways}
    for _ in range(rounds):
        corpora = {}
        for name, (placement, write) in ways.items():
            synthetic._place_objects = placement
            start = time.perf_counter()
            corpora[name] = synthetic.generate_corpus()
            middle = time.perf_counter()
            write(io.BytesIO(), corpora[name])
            times[name]["generate"].append(middle - start)
            times[name]["write"].append(time.perf_counter() - middle)
        synthetic._place_objects = current
        assert all(np.array_equal(corpora["before"][k], corpora["now"][k]) for k in corpora["now"]), "the grids differ"
    rows = []
    before = min(times["before"]["generate"]) + min(times["before"]["write"])
    for name, label in (
        ("before", "boolean 16x16 masks + np.savez_compressed (zlib 6)"),
        ("now", "16-bit rows + zlib 1"),
    ):
        generate, write = min(times[name]["generate"]), min(times[name]["write"])
        rows.append(
            [
                label,
                f"{generate:.2f} s",
                f"{write:.2f} s",
                f"{generate + write:.2f} s",
                f"{before / (generate + write):.2f}x",
            ]
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(machine())
    print(f"load average (1 min) before: {os.getloadavg()[0]:.2f}")
    wholes, stages = [], []
    for _ in range(args.rounds):
        whole, staged = one_round()
        wholes.append(whole)
        stages.append(staged)
    total = statistics.median(s["train() in all"] + s["import torch"] + s["import arcvae"] for s in stages)
    rows = []
    for name in stages[0]:
        if name in ("train() in all", "epochs"):
            continue
        median = statistics.median(s[name] for s in stages)
        rows.append(
            [name, f"{median:.2f} s", f"{100 * median / total:.0f}%", ", ".join(f"{s[name]:.2f}" for s in stages)]
        )
    known = sum(
        statistics.median(s[name] for s in stages) for name in stages[0] if name not in ("train() in all", "epochs")
    )
    rows.append(
        [
            "the rest (run folder, checkpoint of the start, report)",
            f"{total - known:.2f} s",
            f"{100 * (total - known) / total:.0f}%",
            "",
        ]
    )
    print(f"\n`arcvae train --overfit-batch`, empty cache, as one process: {', '.join(f'{w:.1f} s' for w in wholes)} "
          f"(median {statistics.median(wholes):.1f} s); the target was reached at epoch(s) {sorted({s['epochs'] for s in stages})}")  # fmt: skip
    print("\nThe same job stage by stage (median of rounds):")
    print(table(rows, ["stage", "median", "share", "all rounds"]))
    print("\nCorpus generation (100,000 grids), best of rounds, in this process:")
    print(table(generation_cut(args.rounds), ["placement + .npz writer", "generate", "write", "both", "speed-up"]))
    print(f"load average (1 min) after: {os.getloadavg()[0]:.2f}  (other work on the machine inflates every time)")


if __name__ == "__main__":
    main()
