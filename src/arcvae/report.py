"""Console output of a training run, in the layout docs/cli.md shows ("What a run prints").

The trainer computes, then tells the :class:`Reporter` what to show; nothing
here decides anything about the run.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from .console import default_console
from .metrics import format_per_class

if TYPE_CHECKING:
    import torch

    from .config import TrainConfig
    from .distributed import Dist
    from .run_data import RunData
    from .weight_cache import ClassWeights

RULE = "─" * 70
# --target-metric, as the end of an overfit run names it
TARGET_NAMES = {
    "pixel": "pixel accuracy",
    "foreground": "foreground accuracy",
    "balanced": "balanced accuracy",
    "perfect": "perfect-grid rate",
}


class Printer:
    """Lines, sections, warnings and progress bars on one Rich console (bars and lines never tear each other)."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or default_console()
        self._progress: Progress | None = None

    def print(self, text: str = "", *, style: str | None = None) -> None:
        """Print ``text`` literally (a path holding ``[/]`` is not markup), in ``style``."""
        target = self._progress.console if self._progress is not None else self.console
        target.print(Text(text, style=style or ""), highlight=False)

    def section(self, title: str) -> None:
        self.print()
        self.print(RULE)
        self.print(title)
        self.print(RULE)

    def warn(self, text: str) -> None:
        self.print(f"[WARNING] {text}", style="yellow")

    def per_class(self, per_class: list[float | None], *, prefix: str = "  Per-class accuracy") -> None:
        self.print(f"{prefix}: {format_per_class(per_class)}")

    @contextmanager
    def epoch_bar(self, description: str, total: int) -> Iterator[EpochBar]:
        progress = Progress(
            TextColumn("{task.description}", markup=False),
            BarColumn(bar_width=20),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[stats]}", markup=False),
            console=self.console,
            transient=False,
            refresh_per_second=4,  # a redraw costs CPU that the training step needs
        )
        self._progress = progress
        try:
            with progress:
                yield EpochBar(progress, progress.add_task(description, total=total, stats=""))
        finally:
            self._progress = None


class Reporter(Printer):
    """What a training run shows, block by block, in the order it happens."""

    # ------------------------------------------------------------ the data ----

    def data(self, config: TrainConfig, data: RunData, group: Dist, device: torch.device) -> None:
        """The ``[DATA]`` lines: what each epoch trains on and what is validated."""
        if data.batch is not None:
            unique, repeats = len(data.batch), config.steps_per_overfit_epoch
            self.print(
                f"[DATA] Train: {unique * repeats} samples ({unique} unique × {repeats} repeats), {repeats} batches"
            )
            self.print(f"[DATA] Val:   {unique} samples (the same batch, reconstructed from mu in eval mode)")
        else:
            assert data.val_grids is not None
            grids = len(data.train_grids)
            if group.enabled:  # each process: ceil(N / world) grids in batches of batch_size // world
                per_batch = config.batch_size // group.world
                batches = math.ceil(math.ceil(grids / group.world) / per_batch)
                self.print(
                    f"[DATA] Train: {grids} samples, {batches} batches of {per_batch * group.world} ({per_batch} per process)"
                )
            else:
                self.print(
                    f"[DATA] Train: {grids} samples, {math.ceil(grids / config.batch_size)} batches of {config.batch_size}"
                )
            self.print(f"[DATA] Val:   {len(data.val_grids)} samples")
        if group.enabled:
            shares = "share of the batch" if config.overfit_batch else "share of every batch"
            self.print(
                f"[DDP] {group.world} processes ({'nccl' if device.type == 'cuda' else 'gloo'}): each trains on its "
                f"{shares} and evaluates its share of the grids"
            )

    # ------------------------------------------------------- class weights ----

    def weights_started(self, config: TrainConfig, data_path: Path, *, resumed: bool) -> None:
        """What comes before the weights are resolved (a count then prints its progress)."""
        if not config.use_class_weights:
            if config.overfit_batch:
                self.warn(
                    "--overfit-batch without class weights: the model will likely collapse to all-black (93% pixel accuracy)"
                )
        elif config.per_batch_weights:
            self.section("Class weights from every training batch (not the full dataset)...")
            self.print(
                f"  Method: {config.weights_method} (smooth {config.weights_smooth:g}), counted anew on each batch of "
                f"{config.batch_size} grids at every training step; the validation loss is unweighted"
            )
        elif resumed:
            return  # the run's own weights are shown once read
        elif config.weights_from == "batch":
            self.section("[OVERFIT MODE] Computing class weights from the SINGLE BATCH (not the full dataset)...")
        else:
            self.section(
                "[OVERFIT MODE] Computing class weights from FULL dataset..."
                if config.overfit_batch
                else "Computing class weights..."
            )
            self.print(f"Loading full dataset for class weight computation... ({data_path})")

    def counting_progress(self, total: int) -> Callable[[int, int | None], None]:
        """A progress callback printing one line per eighth of ``total`` samples, as soon as the count has passed it.

        The same lines whatever the number of threads, which decides how the
        counting is chunked (and so when it calls back).
        """
        milestones = sorted({total * k // 8 for k in range(1, 9)} - {0})
        started: list[bool] = []

        def progress(done: int, _total: int | None) -> None:  # called only when the weights are counted
            if not started:
                self.print(f"Computing class weights from {total} samples...")
                started.append(True)
            while milestones and milestones[0] <= done:
                self.print(f"  Processed {milestones.pop(0)}/{total} samples...")

        return progress

    def weights_resolved(self, weights: ClassWeights | None, *, batch: torch.Tensor | None, processes: int) -> None:
        """The weights a run trains with, printed once: the counts they came from, then one Class Weight Analysis.

        In overfit mode with full-split weights, the batch's own counts come
        between the two, as the spec shows them.
        """
        if weights is None:
            return
        values = weights.weights.tolist()
        if weights.origin == "checkpoint":
            self.class_weight_analysis(weights.spec.method, "the resumed run's checkpoint", values)
            return
        if weights.origin == "batch":
            assert weights.counts is not None
            self.print(f"  Batch class counts: {weights.counts.tolist()}")
            self.class_weight_analysis(weights.spec.method, f"Single batch ({weights.num_samples} samples)", values)
            return
        if processes > 1 and not weights.from_cache:
            self.print(
                f"Counted {weights.num_samples} samples in {processes} shards, one per process (identical weights on every process: checked)"
            )
        if weights.from_cache:
            self.print(f"[WEIGHTS] Loaded cached weights from: {weights.cache_path}")
        elif weights.cache_path is not None and weights.cache_path.exists():
            self.print(f"[WEIGHTS] Cached for future use: {weights.cache_path}")
        assert weights.counts is not None
        self.print(f"  Class counts: {weights.counts.tolist()}")
        if batch is not None:
            self._batch_statistics(batch, len(values))
        self.class_weight_analysis(weights.spec.method, f"Full dataset ({weights.num_samples} samples)", values)

    def _batch_statistics(self, batch: torch.Tensor, num_classes: int) -> None:
        import classweights

        counts = classweights.count_labels(batch, num_classes)
        self.print()
        self.print("[OVERFIT MODE] Single batch statistics:")
        self.print(f"  Batch class counts: {counts.tolist()}")
        self.print(f"  Batch total pixels: {int(counts.sum())}")
        self.print("  Note: Using global weights (not batch weights) for better statistical significance")

    def class_weight_analysis(self, method: str, source: str, weights: Sequence[float]) -> None:
        self.section("Class Weight Analysis")
        self.print(f"  Method: {method}")
        self.print(f"  Source: {source}")
        self.print(f"  Weight range: {min(weights):.4f} - {max(weights):.4f}")
        self.print(f"  Weight ratio (max/min): {_ratio(weights):.2f}x")
        self.print()
        self.print("Class weights:")
        for color, weight in enumerate(weights):
            self.print(f"  Color {color}: {weight:.4f}")

    def weights_saved(self, path: Path) -> None:
        self.print()
        self.print(f"[WEIGHTS] Saved to: {path}")

    # --------------------------------------------------------------- model ----

    def model(
        self, config: TrainConfig, weights: ClassWeights | None, *, parameters: int, device: torch.device
    ) -> None:
        self.print(f"[MODEL] Created: {parameters:,} parameters")
        self.print(f"[MODEL] Using Focal Loss (γ={config.focal_gamma})")
        if weights is not None:
            source = "single_batch" if config.weights_from == "batch" else "full_dataset"
            self.print(f"[MODEL] Using class weights (method={weights.spec.method}, source={source})")
        elif config.per_batch_weights:
            self.print(f"[MODEL] Using class weights (method={config.weights_method}, source=every_batch)")
        else:
            self.print("[MODEL] No class weights (uniform)")
        self.print(f"[MODEL] Device: {device}")

    # --------------------------------------------------------------- loops ----

    def validation(self, final: dict[str, Any], *, improved: bool) -> None:
        """Normal mode: the ``[Val]`` lines after an epoch (``(best)`` marks a new best epoch, saved as best.pt)."""
        self.print(
            f"  [Val] loss={final['loss']:.4f} objective={final['objective']:.4f} acc={final['pixel_accuracy']:.3f} "
            f"fg={_pct(final['foreground_accuracy'])} balanced={_pct(final['balanced_accuracy'])} "
            f"perfect={final['perfect_rate']:.3f}" + ("  (best)" if improved else "")
        )
        self.per_class(final["per_class_accuracy"], prefix="  [Val] Per-class accuracy")

    def overfit_reached(self, final: dict[str, Any], config: TrainConfig, grids: int, run_dir: Path) -> None:
        """The end of an overfit run that reached its target (the spec's lines), with the perfect-grid rate."""
        self.print()
        self.print(
            f"✓ Overfitting target achieved! ({_target_value(final, config)} >= {config.target_accuracy:.1%})",
            style="bold green",
        )
        self.print("Stopping early as model has successfully memorized the batch.")
        self._overfit_summary(final, config, grids)
        self.print(f"[RUN] {run_dir}")

    def overfit_missed(
        self, final: dict[str, Any], config: TrainConfig, grids: int, epochs: int, run_dir: Path
    ) -> None:
        self.print()
        self.print(
            f"✗ Target not reached: {_target_value(final, config, named=True)} < {config.target_accuracy:.1%} "
            f"after {epochs} epochs (foreground accuracy {_pct(final.get('foreground_accuracy'))}).",
            style="bold red",
        )
        self._overfit_summary(final, config, grids)
        self.print(f"[RUN] {run_dir}")

    def _overfit_summary(self, final: dict[str, Any], config: TrainConfig, grids: int) -> None:
        """The other measures of the last evaluation, the perfect-grid rate among them (pixel accuracy hides it)."""
        perfect = round((final.get("perfect_rate") or 0.0) * grids)
        self.print(
            f"  Pixel accuracy: {_pct(final.get('pixel_accuracy'))}, foreground accuracy: "
            f"{_pct(final.get('foreground_accuracy'))}, balanced accuracy: {_pct(final.get('balanced_accuracy'))}, "
            f"perfect grids: {perfect}/{grids} ({_pct(final.get('perfect_rate'))})"
        )
        if config.target_metric != "perfect" and perfect < grids:
            self.print(
                f"  Note: {grids - perfect} of the {grids} grids still have wrong pixels; "
                "--target-metric perfect stops only when whole grids are right"
            )

    def best(self, run_dir: Path, epoch: int | None, score: float, floor: float) -> None:
        """Normal mode's last line: the epoch ``best.pt`` holds, or why there is none."""
        if epoch is None:
            self.print(
                f"[RUN] {run_dir} (no best.pt: no epoch beat the balanced accuracy of predicting one colour "
                f"everywhere, {floor:.1%})"
            )
        else:
            self.print(f"[RUN] {run_dir} (best.pt: epoch {epoch}, validation balanced accuracy {score:.1%})")


def _target_value(final: dict[str, Any], config: TrainConfig, *, named: bool = False) -> str:
    """``95.4%``, or ``perfect-grid rate 40.6%``: the target metric's value (named when not pixel accuracy)."""
    value = _pct(final.get(config.target_key))
    return f"{TARGET_NAMES[config.target_metric]} {value}" if named or config.target_metric != "pixel" else value


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _ratio(weights: Sequence[float]) -> float:
    """Largest weight over the smallest non-zero one."""
    positive = [w for w in weights if w > 0]
    return max(positive) / min(positive)


class EpochBar:
    """One epoch's progress bar: ``advance`` every step, ``show`` the latest numbers."""

    def __init__(self, progress: Progress, task: TaskID) -> None:
        self._progress = progress
        self._task = task

    def advance(self, steps: int = 1) -> None:
        self._progress.advance(self._task, steps)

    def show(self, **values: Any) -> None:
        stats = ", ".join(f"{k}={v:.3f}" if k != "β" else f"{k}={v:.2f}" for k, v in values.items())
        self._progress.update(self._task, stats=stats)
