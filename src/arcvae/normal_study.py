"""The normal-training study: where do full-split class weights matter once every batch is a new one?

In overfit mode one batch is the whole objective, so weights counted on it
are as good as any (docs/study.md). In normal training one set of weights
must fit every batch; weights recounted from each batch follow its chance
colour counts instead, and a small batch can lack a colour altogether. Each
*arm* is a way of weighting the loss, trained in normal mode (the default
schedules, stopped after ``epochs``) once per batch size and seed:

- ``none``: no class weights;
- ``per-batch``: ``sqrt_inverse`` weights recounted from every training batch
  (``arcvae train --weights-from batch``), the spec's failure mode carried over;
- ``full``: ``sqrt_inverse`` weights counted on the full training split (the default);
- ``per-batch:<method>``, ``full:<method>``: the same with another method.

Each run is summarised by its last validation: pixel, foreground and
balanced accuracy, its worst colour, the share of grids reconstructed
perfectly, and whether it ended all-black; each (arm, batch size) by the
median over seeds and their range.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .config import TrainConfig
from .errors import ArcvaeError
from .study import median, prepare_study, run_all, study_workers, train_quietly

BASE_ARMS = ("none", "per-batch", "full")
MEASURES = ("pixel_accuracy", "foreground_accuracy", "balanced_accuracy", "min_class_accuracy", "perfect_rate")
STUDY_VERSION = 1


def arm_config(arm: str) -> dict[str, Any]:
    """The ``TrainConfig`` fields that make ``arm`` (``none``, ``per-batch[:<method>]``, ``full[:<method>]``)."""
    if arm == "none":
        return {"use_class_weights": False}
    kind, colon, method = arm.partition(":")
    if kind not in ("per-batch", "full") or (colon and not method):
        raise ArcvaeError(f"Expected an arm none, per-batch[:<method>] or full[:<method>], but got {arm!r}")
    fields: dict[str, Any] = {"weights_from": "batch"} if kind == "per-batch" else {}
    if method:
        import classweights

        classweights.check_method(method, {})  # an unknown method fails here, before any run
        fields["weights_method"] = method
    return fields


def study_arms(methods: Sequence[str]) -> list[str]:
    """The base arms, then each extra method both ways: ``per-batch:<method>`` and ``full:<method>``."""
    return list(BASE_ARMS) + [f"{kind}:{method}" for method in methods for kind in ("per-batch", "full")]


@dataclass(frozen=True)
class NormalTask:
    """One normal-mode run of the study: what a worker process needs to train it."""

    arm: str
    batch_size: int
    seed: int
    data: str
    epochs: int
    train_samples: int | None
    val_samples: int | None
    out: str
    wandb: bool = False
    target_metric: str = "pixel"
    target_accuracy: float = 0.95

    @property
    def run_dir(self) -> Path:
        return Path(self.out) / "runs" / f"{self.arm.replace(':', '-')}-b{self.batch_size}-seed{self.seed}"


@dataclass
class NormalRun:
    """One (arm, batch size, seed) run, as the study reports it: its last validation, and its curve."""

    arm: str
    batch_size: int
    seed: int
    run_dir: str
    epochs: int
    steps: int
    pixel_accuracy: float | None = None
    foreground_accuracy: float | None = None
    balanced_accuracy: float | None = None
    min_class_accuracy: float | None = None  # the worst colour present in the validation grids
    perfect_rate: float | None = None  # the share of validation grids reconstructed without a wrong pixel
    ended_black: bool = False  # the last validation got every black pixel right and no other
    epoch_reached: int | None = None  # the first epoch whose validation reached the target
    best_epoch: int | None = None  # the epoch best.pt holds
    val_balanced_accuracy: list[float | None] = field(default_factory=list)  # every epoch's validation


def _one_run(task: NormalTask) -> NormalRun:
    """Train one arm with one batch size and seed (in a worker process) and summarise it."""
    config = TrainConfig(
        data=task.data,
        out=str(task.run_dir),
        batch_size=task.batch_size,
        max_epochs=task.epochs,  # the default 50-epoch schedules, stopped after `epochs`
        train_samples=task.train_samples,
        val_samples=task.val_samples,
        seed=task.seed,
        device="cpu",
        wandb=task.wandb,
        target_metric=task.target_metric,  # type: ignore[arg-type]
        target_accuracy=task.target_accuracy,
        **arm_config(task.arm),
    )
    train_quietly(config)
    return summarise_normal_run(task, config.target_key)


def summarise_normal_run(task: NormalTask, target_key: str) -> NormalRun:
    """Read a finished normal run's ``metrics.jsonl`` and ``result.json``."""
    from .run_files import read_metrics

    run_dir = task.run_dir
    epochs = [r for r in read_metrics(run_dir) if r.get("type") == "epoch"]
    result = json.loads((run_dir / "result.json").read_text(encoding="utf-8"))
    final = result.get("final") or {}
    per_class = final.get("per_class_accuracy") or []
    present = [a for a in per_class if a is not None]
    scores = [(r["epoch"], r.get(f"val_{target_key}")) for r in epochs]
    reached = [epoch for epoch, score in scores if score is not None and score >= task.target_accuracy]
    return NormalRun(
        arm=task.arm,
        batch_size=task.batch_size,
        seed=task.seed,
        run_dir=str(run_dir),
        epochs=int(result["epochs_run"]),
        steps=int(result["steps"]),
        pixel_accuracy=final.get("pixel_accuracy"),
        foreground_accuracy=final.get("foreground_accuracy"),
        balanced_accuracy=final.get("balanced_accuracy"),
        min_class_accuracy=min(present) if present else None,
        perfect_rate=final.get("perfect_rate"),
        ended_black=bool(per_class) and per_class[0] == 1.0 and final.get("foreground_accuracy") == 0.0,
        epoch_reached=reached[0] if reached else None,
        best_epoch=result.get("best_epoch"),
        val_balanced_accuracy=[r.get("val_balanced_accuracy") for r in epochs],
    )


def summarise_cell(runs: Sequence[NormalRun]) -> dict[str, Any]:
    """One (arm, batch size): per measure the median over seeds and its range, and the runs that ended black."""
    summary: dict[str, Any] = {"runs": len(runs)}
    for measure in MEASURES:
        values = [getattr(r, measure) for r in runs if getattr(r, measure) is not None]
        summary[measure] = {
            "median": median(values),
            "min": min(values, default=None),
            "max": max(values, default=None),
        }
    reached = [r.epoch_reached for r in runs if r.epoch_reached is not None]
    summary["reached_target"] = len(reached)
    summary["median_epoch_reached"] = median([float(e) for e in reached])
    summary["ended_black"] = sum(r.ended_black for r in runs)
    return summary


def run_normal_study(
    data: Path,
    *,
    out: Path,
    arms: Sequence[str] = BASE_ARMS,
    batch_sizes: Sequence[int] = (8, 32, 128),
    seeds: Sequence[int] = (42, 43, 44),
    epochs: int = 5,
    train_samples: int | None = None,
    val_samples: int | None = None,
    jobs: int | None = None,
    wandb: bool = False,
    target_metric: str = "pixel",
    target_accuracy: float = 0.95,
    progress: Callable[[NormalRun], None] | None = None,
) -> dict[str, Any]:
    """Train every arm with every batch size and seed in normal mode; write ``study.json`` and ``study.png``.

    Returns the study record that ``study.json`` holds.
    """
    for arm in arms:
        arm_config(arm)
    if not batch_sizes or min(batch_sizes) < 1:
        raise ArcvaeError(f"Expected batch sizes of at least 1, but got {list(batch_sizes)}")
    prepare_study(out, seeds)
    shared = {"data": str(data), "epochs": epochs, "train_samples": train_samples, "val_samples": val_samples}
    target = {"target_metric": target_metric, "target_accuracy": target_accuracy}
    tasks = [
        NormalTask(arm, size, seed, out=str(out), wandb=wandb, **shared, **target)  # type: ignore[arg-type]
        for seed in seeds
        for size in batch_sizes
        for arm in arms
    ]
    workers = study_workers(jobs, len(tasks))
    started = time.time()
    runs = run_all(_one_run, tasks, workers, progress or (lambda run: None))
    record = {
        "version": STUDY_VERSION,
        "kind": "normal",
        **shared,
        "seeds": list(seeds),
        "batch_sizes": list(batch_sizes),
        **target,
        "seconds": round(time.time() - started, 1),
        "jobs": workers,
        "arms": {
            arm: {
                str(size): {
                    "summary": summarise_cell([r for r in runs if r.arm == arm and r.batch_size == size]),
                    "runs": [asdict(r) for r in runs if r.arm == arm and r.batch_size == size],
                }
                for size in batch_sizes
            }
            for arm in arms
        },
    }
    _write(record, out)
    return record


def _write(record: dict[str, Any], out: Path) -> None:
    """``study.json`` and ``study.png`` (each measure against the batch size, one line per arm) in ``out``."""
    import classweights

    from .plots import save_normal_study_plot

    classweights.atomic_write_bytes(out / "study.json", (json.dumps(record, indent=2, allow_nan=False) + "\n").encode())
    save_normal_study_plot(record, out / "study.png")
