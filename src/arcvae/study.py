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
from typing import Any, TypeVar

from .config import TrainConfig
from .errors import ArcvaeError

T = TypeVar("T")
R = TypeVar("R")
BASE_ARMS = ("none", "batch", "full")
STUDY_VERSION = 2  # 2: target_metric, and each run's perfect-grid rate


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
    perfect_rate: float | None = None  # the share of the batch's grids reconstructed without a wrong pixel
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
        perfect_rate=final.get("perfect_rate"),
        min_class_accuracy=min(present) if present else None,
        collapsed=any(black),
        ended_black=bool(black) and black[-1],
    )


@dataclass(frozen=True)
class Task:
    """One overfit run of the study: what a worker process needs to train it."""

    arm: str
    seed: int
    data: str
    epochs: int
    out: str
    wandb: bool
    target_metric: str = "pixel"
    target_accuracy: float = 0.95


def _one_run(task: Task) -> RunSummary:
    """Train one arm with one seed (in a worker process) and summarise it."""
    run_dir = Path(task.out) / "runs" / f"{task.arm.replace(':', '-')}-seed{task.seed}"
    # a default `arcvae train --overfit-batch` run (its learning rate does not depend on --epochs), stopped sooner
    config = TrainConfig(
        data=task.data,
        out=str(run_dir),
        overfit_batch=True,
        epochs=task.epochs,
        seed=task.seed,
        device="cpu",
        wandb=task.wandb,
        target_metric=task.target_metric,  # type: ignore[arg-type]
        target_accuracy=task.target_accuracy,
        **arm_config(task.arm),
    )
    train_quietly(config)
    return summarise_run(task.arm, task.seed, run_dir)


def train_quietly(config: TrainConfig) -> None:
    """Train one study run on one thread (the runs share the cores), its console output discarded."""
    import io

    import torch
    from rich.console import Console

    from .report import Reporter
    from .trainer import train

    torch.set_num_threads(1)
    train(config, Reporter(Console(file=io.StringIO(), width=120)))


def median(values: Sequence[float | None]) -> float | None:
    """The median of the known values; ``None`` if there is none."""
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def summarise_arm(runs: Sequence[RunSummary], target: float) -> dict[str, Any]:
    """The study table's row for one arm."""
    reached = [r for r in runs if r.reached_target]
    return {
        "runs": len(runs),
        "reached_target": len(reached),
        "median_epochs_to_target": median([float(r.epochs) for r in reached]),
        "median_pixel_accuracy": median([r.pixel_accuracy for r in runs]),
        "median_foreground_accuracy": median([r.final_foreground_accuracy for r in runs]),
        "median_perfect_rate": median([r.perfect_rate for r in runs]),
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
    target_metric: str = "pixel",
    target_accuracy: float = 0.95,
    progress: Callable[[RunSummary], None] | None = None,
) -> dict[str, Any]:
    """Train every arm with every seed in overfit mode; write ``study.json`` and ``study.png`` in ``out``.

    Returns the study record that ``study.json`` holds.
    """
    for arm in arms:
        arm_config(arm)
    prepare_study(out, seeds)
    target = {"target_metric": target_metric, "target_accuracy": target_accuracy}
    tasks = [Task(arm, seed, str(data), epochs, str(out), wandb, **target) for seed in seeds for arm in arms]  # type: ignore[arg-type]
    workers = study_workers(jobs, len(tasks))
    started = time.time()
    runs = run_all(_one_run, tasks, workers, progress or (lambda run: None))
    by_arm = {arm: [r for r in runs if r.arm == arm] for arm in arms}
    record = {
        "version": STUDY_VERSION,
        "data": str(data),
        "epochs": epochs,
        "seeds": list(seeds),
        **target,
        "seconds": round(time.time() - started, 1),
        "jobs": workers,
        "arms": {
            arm: {"summary": summarise_arm(of_arm, target_accuracy), "runs": [asdict(r) for r in of_arm]}
            for arm, of_arm in by_arm.items()
        },
    }
    write_study(record, runs, out)
    return record


def prepare_study(out: Path, seeds: Sequence[int]) -> None:
    """Check the seeds, and create the study folder's ``runs/``, which must hold no runs yet (studies never mix)."""
    if not seeds:
        raise ArcvaeError("Expected at least one seed")
    (out / "runs").mkdir(parents=True, exist_ok=True)
    clash = sorted(p.name for p in (out / "runs").iterdir())
    if clash:
        raise ArcvaeError(
            f"{str(out)!r} already holds study runs ({', '.join(map(repr, clash[:3]))}, ...); choose another --out"
        )


def study_workers(jobs: int | None, tasks: int) -> int:
    """Runs trained at once: ``jobs``, else one per CPU core; never more than there are runs."""
    return max(1, min(jobs or (os.cpu_count() or 1), tasks))


def run_all(run: Callable[[T], R], tasks: Sequence[T], workers: int, progress: Callable[[R], None]) -> list[R]:
    """``run`` on every task, one after the other or in ``workers`` processes, in order; ``progress`` after each."""
    if workers == 1:
        return [_reported(run(task), progress) for task in tasks]
    import multiprocessing

    pool = multiprocessing.get_context("spawn").Pool(workers)
    try:
        results = [_reported(result, progress) for result in pool.imap(run, tasks)]
        pool.close()
        return results
    except BaseException:  # an error, Ctrl-C or SIGTERM: stop the runs in progress and start no other
        pool.terminate()
        raise
    finally:
        pool.join()


def _reported(result: R, progress: Callable[[R], None]) -> R:
    progress(result)
    return result


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
    """``95.4%`` (or ``6`` with ``pct=False``); ``-`` for no value."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.1%}" if pct else f"{value:g}"
