"""Console output of a training run, in the layout of the spec's expected output."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.text import Text
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from .console import default_console
from .metrics import format_per_class

RULE = "─" * 70


class Reporter:
    """Prints what the trainer tells it; owns the Rich console and progress bars."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or default_console()
        self._progress: Progress | None = None

    # ------------------------------------------------------------ basics ----

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

    # ------------------------------------------------------------ blocks ----

    def class_weight_analysis(self, *, method: str, source: str, weights: Sequence[float]) -> None:
        low, high = min(weights), max(weights)
        self.section("Class Weight Analysis")
        self.print(f"  Method: {method}")
        self.print(f"  Source: {source}")
        self.print(f"  Weight range: {low:.4f} - {high:.4f}")
        self.print(f"  Weight ratio (max/min): {high / low:.2f}x")
        self.print()
        self.print("Class weights:")
        for color, weight in enumerate(weights):
            self.print(f"  Color {color}: {weight:.4f}")

    def per_class(self, per_class: list[float | None], *, prefix: str = "  Per-class accuracy") -> None:
        self.print(f"{prefix}: {format_per_class(per_class)}")

    # ---------------------------------------------------------- progress ----

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
