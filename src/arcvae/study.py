"""The overfit study: does the choice of class weights decide whether one batch can be memorised?

Each *arm* is a way of weighting the loss; each arm is trained in overfit mode
once per seed, and the runs are summarised per arm:

- ``none``: no class weights (plain focal loss);
- ``batch``: ``sqrt_inverse`` weights counted on the 32-grid batch alone;
- ``full``: ``sqrt_inverse`` weights counted on the full training split (the default of ``arcvae train``);
- ``full:<method>``: full-split weights with another method of ``classweights.METHODS``.

A run *collapsed to all-black* if at some evaluation it got every background
pixel right and no foreground pixel right, which is what predicting black
everywhere scores; it *ended all-black* if its last evaluation did. Most runs
pass through an all-black phase early on (black is 93% of the pixels); what
separates the arms is whether they leave it. Runs are independent processes, so several run at once
(one thread each).
"""

from __future__ import annotations

import json
import math
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .config import TrainConfig
from .errors import ArcvaeError

BASE_ARMS = ("none", "batch", "full")
STUDY_VERSION = 1


@dataclass
class RunSummary:
    """One (arm, seed) run, as the study reports it."""

    arm: str
    seed: int
    run_dir: str
    reached_target: bool
    epochs: int  # epochs run (to the target, if reached)
    steps: list[int] = field(default_factory=list)  # evaluation steps
    foreground_accuracy: list[float | None] = field(default_factory=list)  # at those steps
    pixel_accuracy: float | None = None  # final evaluation
    final_foreground_accuracy: float | None = None
    min_class_accuracy: float | None = None  # over the colours present in the batch
    collapsed: bool = False  # all-black at some evaluation
    ended_black: bool = False  # all-black at the last evaluation


def arm_config(arm: str) -> dict[str, Any]:
    """The ``TrainConfig`` fields that make ``arm``."""
    if arm == "none":
        return {"use_class_weights": False}
    if arm == "batch":
        return {"weights_from": "batch"}
    if arm == "full":
        return {}
    if arm.startswith("full:"):
        import classweights

        method = arm.split(":", 1)[1]
        classweights.check_method(method, {})  # an unknown method fails here, before any run
        return {"weights_method": method}
    raise ArcvaeError(f"Expected an arm none, batch, full or full:<method>, but got {arm!r}")


def summarise_run(arm: str, seed: int, run_dir: Path) -> RunSummary:
    """Read a finished run's ``metrics.jsonl`` and ``result.json``."""
    from .run_files import read_metrics

    records = read_metrics(run_dir)
    result = json.loads((run_dir / "result.json").read_text(encoding="utf-8"))
    evals = [r for r in records if r.get("type") == "step" and "eval_pixel_accuracy" in r]
    final = result.get("final") or {}
    present = [a for a in final.get("per_class_accuracy") or [] if a is not None]
    black = [
        (r.get("eval_per_class_accuracy") or [None])[0] == 1.0 and r.get("eval_foreground_accuracy") == 0.0
        for r in evals
    ]
    return RunSummary(
        arm=arm,
        seed=seed,
        run_dir=str(run_dir),
        reached_target=bool(result.get("reached_target")),
        epochs=int(result["epochs_run"]),
        steps=[int(r["step"]) for r in evals],
        foreground_accuracy=[r.get("eval_foreground_accuracy") for r in evals],
        pixel_accuracy=final.get("pixel_accuracy"),
        final_foreground_accuracy=final.get("foreground_accuracy"),
        min_class_accuracy=min(present) if present else None,
        collapsed=any(black),
        ended_black=bool(black) and black[-1],
    )


Task = tuple[str, int, str, int, str, bool]  # arm, seed, corpus, epochs, study folder, --wandb


def _one_run(task: Task) -> RunSummary:
    """Train one arm with one seed (in a worker process) and summarise it."""
    arm, seed, data, epochs, out, wandb = task
    import io

    import torch
    from rich.console import Console

    from .report import Reporter
    from .trainer import train

    torch.set_num_threads(1)  # the runs share the cores
    run_dir = Path(out) / "runs" / f"{arm.replace(':', '-')}-seed{seed}"
    # the schedules of a default `arcvae train --overfit-batch` run (50 epochs), stopped after `epochs`
    config = TrainConfig(
        data=data,
        out=str(run_dir),
        overfit_batch=True,
        max_epochs=epochs,
        seed=seed,
        device="cpu",
        wandb=wandb,
        **arm_config(arm),
    )
    train(config, Reporter(Console(file=io.StringIO(), width=120)))
    return summarise_run(arm, seed, run_dir)


def summarise_arm(runs: Sequence[RunSummary], target: float) -> dict[str, Any]:
    """The study table's row for one arm."""
    reached = [r for r in runs if r.reached_target]

    def median(values: list[float | None]) -> float | None:
        known = [v for v in values if v is not None]
        return statistics.median(known) if known else None

    return {
        "runs": len(runs),
        "reached_target": len(reached),
        "median_epochs_to_target": median([float(r.epochs) for r in reached]),
        "median_pixel_accuracy": median([r.pixel_accuracy for r in runs]),
        "median_foreground_accuracy": median([r.final_foreground_accuracy for r in runs]),
        "min_class_accuracy": min(
            (r.min_class_accuracy for r in runs if r.min_class_accuracy is not None), default=None
        ),
        "collapsed": sum(r.collapsed for r in runs),
        "ended_black": sum(r.ended_black for r in runs),
        "target_accuracy": target,
    }


def run_study(
    data: Path,
    *,
    arms: Sequence[str] = BASE_ARMS,
    seeds: Sequence[int] = (42, 43, 44, 45, 46),
    epochs: int = 10,
    out: Path,
    jobs: int | None = None,
    wandb: bool = False,
    progress: Callable[[RunSummary], None] | None = None,
) -> dict[str, Any]:
    """Train every arm with every seed in overfit mode; write ``study.json`` and ``study.png`` in ``out``.

    Returns the study record that ``study.json`` holds.
    """
    for arm in arms:
        arm_config(arm)
    if not seeds:
        raise ArcvaeError("Expected at least one seed")
    (out / "runs").mkdir(parents=True, exist_ok=True)
    clash = sorted(p.name for p in (out / "runs").iterdir())
    if clash:
        raise ArcvaeError(f"{str(out)!r} already holds study runs ({', '.join(clash[:3])}, ...); choose another --out")
    tasks = [(arm, seed, str(data), epochs, str(out), wandb) for seed in seeds for arm in arms]
    workers = max(1, min(jobs or (os.cpu_count() or 1), len(tasks)))
    started = time.time()
    runs = _run_all(tasks, workers, progress or (lambda run: None))
    target = TrainConfig().target_accuracy
    by_arm = {arm: [r for r in runs if r.arm == arm] for arm in arms}
    record = {
        "version": STUDY_VERSION,
        "data": str(data),
        "epochs": epochs,
        "seeds": list(seeds),
        "target_accuracy": target,
        "seconds": round(time.time() - started, 1),
        "jobs": workers,
        "arms": {
            arm: {"summary": summarise_arm(of_arm, target), "runs": [asdict(r) for r in of_arm]}
            for arm, of_arm in by_arm.items()
        },
    }
    write_study(record, runs, out)
    return record


def _run_all(tasks: list[Task], workers: int, progress: Callable[[RunSummary], None]) -> list[RunSummary]:
    """Every run, one after the other or in ``workers`` processes; ``progress`` after each."""
    if workers == 1:
        return [_reported(_one_run(task), progress) for task in tasks]
    import multiprocessing

    pool = multiprocessing.get_context("spawn").Pool(workers)
    try:
        runs = [_reported(summary, progress) for summary in pool.imap(_one_run, tasks)]
        pool.close()
        return runs
    except BaseException:  # an error, Ctrl-C or SIGTERM: stop the runs in progress and start no other
        pool.terminate()
        raise
    finally:
        pool.join()


def _reported(run: RunSummary, progress: Callable[[RunSummary], None]) -> RunSummary:
    progress(run)
    return run


def write_study(record: dict[str, Any], runs: Sequence[RunSummary], out: Path) -> None:
    """``study.json`` (the record) and ``study.png`` (foreground accuracy against step, one line per run) in ``out``."""
    import classweights

    from .plots import save_study_plot

    classweights.atomic_write_bytes(out / "study.json", (json.dumps(record, indent=2, allow_nan=False) + "\n").encode())
    lines = [
        {"arm": r.arm, "seed": r.seed, "steps": r.steps, "foreground_accuracy": r.foreground_accuracy} for r in runs
    ]
    save_study_plot(lines, out / "study.png")


def format_value(value: float | None, pct: bool = True) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.1%}" if pct else f"{value:g}"
