"""Pictures of grids and runs: PNG files (matplotlib) and grids in the terminal (Rich).

matplotlib is imported inside the functions that draw, so importing this
module stays light. Figures are ``matplotlib.figure.Figure`` objects on the
non-interactive Agg canvas (no pyplot state), rendered into memory and written
with :func:`classweights.atomic_write_bytes`: a crash never leaves half
a PNG. Every figure has a fixed size, so its PNG size is known in advance.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from rich.columns import Columns
from rich.style import Style
from rich.text import Text

from .errors import ArcvaeError

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

ARC_PALETTE: tuple[str, ...] = (
    "#000000",  # 0 black
    "#0074D9",  # 1 blue
    "#FF4136",  # 2 red
    "#2ECC40",  # 3 green
    "#FFDC00",  # 4 yellow
    "#AAAAAA",  # 5 grey
    "#F012BE",  # 6 magenta
    "#FF851B",  # 7 orange
    "#7FDBFF",  # 8 light blue
    "#870C25",  # 9 maroon
)
"""The 10 standard ARC colours as hex strings; the index is the colour."""

DPI = 100
_PERFECT, _WRONG = "#2E7D32", "#C62828"  # green and red of the per-grid marks


# --------------------------------------------------------------- PNG files ----


def save_reconstructions(
    originals: np.ndarray, reconstructions: np.ndarray, path: str | os.PathLike[str], *, title: str | None = None
) -> None:
    """Draw originals (top row) over their reconstructions (bottom row) into a PNG.

    Each column is one grid in the ARC colours, with thin cell lines; above it,
    ``#i perfect`` in green or ``#i k wrong`` in red (k wrong pixels).

    The PNG is ``50 + 125 * n`` pixels wide and ``275`` pixels high for ``n``
    grids (a 0.5 in margin for the row labels plus 1.25 in per column, by
    2.75 in, at 100 dpi).

    Args:
        originals: ``[n, H, W]`` colours 0-9, n >= 1.
        reconstructions: the model's grids, the same shape as ``originals``.
        path: the PNG file to write (atomically).
        title: an optional line above the grids.

    Raises:
        ArcvaeError: the two arrays differ in shape, are not ``[n, H, W]``, or are empty.
    """
    originals, reconstructions = np.asarray(originals), np.asarray(reconstructions)
    if originals.shape != reconstructions.shape or originals.ndim != 3 or len(originals) == 0:
        raise ArcvaeError(
            f"Expected originals and reconstructions of the same shape [n, H, W] with n >= 1, "
            f"but got {originals.shape} and {reconstructions.shape}"
        )
    # The grids are painted into one pixel array, shown 1:1 on the figure: one image and a few labels to render
    # instead of two axes per grid, which is most of the time a picture takes.
    n = len(originals)
    width, height = 50 + 125 * n, 275  # pixels, at DPI
    canvas = np.full((height, width, 3), 255, np.uint8)
    fig = _new_figure(width / DPI, height / DPI)
    for i in range(n):
        for top, grid in ((_GRID_TOP, originals[i]), (_GRID_TOP + _GRID_BOX + _ROW_GAP, reconstructions[i])):
            block = _grid_pixels(grid)
            y, x = top + (_GRID_BOX - block.shape[0]) // 2, 50 + 125 * i + (125 - block.shape[1]) // 2
            canvas[y : y + block.shape[0], x : x + block.shape[1]] = block
        wrong = int((originals[i] != reconstructions[i]).sum())
        fig.text(
            (50 + 125 * i + 62.5) / width,
            1 - (_GRID_TOP - 6) / height,
            f"#{i} perfect" if wrong == 0 else f"#{i} {wrong} wrong",
            fontsize=8,
            color=_PERFECT if wrong == 0 else _WRONG,
            ha="center",
            va="bottom",
        )
    fig.figimage(canvas, 0, 0, origin="upper")
    for row, label in enumerate(("original", "reconstruction")):
        centre = _GRID_TOP + _GRID_BOX / 2 + row * (_GRID_BOX + _ROW_GAP)
        fig.text(30 / width, 1 - centre / height, label, fontsize=9, rotation=90, ha="center", va="center")
    if title:
        fig.text(0.5, 1 - 14 / height, title, fontsize=10, ha="center", va="center")
    _save(fig, path)


_GRID_TOP, _GRID_BOX, _ROW_GAP = 55, 96, 12  # pixels: top of the first row of grids, the square each grid fits in, gap
_LINE = np.array([0x33, 0x33, 0x33], np.uint8)  # the thin lines between cells
_RGB = np.array([[int(c[k : k + 2], 16) for k in (1, 3, 5)] for c in ARC_PALETTE], np.uint8)


def _grid_pixels(grid: np.ndarray) -> np.ndarray:
    """``grid`` ``[H, W]`` (colours 0-9) as RGB pixels ``[h, w, 3]``: square cells, 1-pixel lines between them when cells are large enough."""
    pitch = max(1, _GRID_BOX // max(grid.shape))
    cells = _RGB[np.clip(grid.astype(np.int64), 0, 9)]
    block = np.repeat(np.repeat(cells, pitch, axis=0), pitch, axis=1)
    if pitch >= 4:
        block[pitch - 1 :: pitch] = _LINE
        block[:, pitch - 1 :: pitch] = _LINE
        block = block[:-1, :-1]  # no line after the last row and column
    return block


def save_curves(records: Sequence[Mapping[str, Any]], path: str | os.PathLike[str]) -> None:
    """Draw a run's training curves against the step into a PNG of 1000 x 700 pixels (10 x 7 in at 100 dpi).

    Four panels: loss, pixel accuracy, foreground accuracy (training, and the
    evaluation of the overfit batch or the validation split where logged), and
    per-class accuracy, one line per colour in its ARC colour (the evaluation's
    when logged, else training's). A missing value (``None``, e.g. a colour
    absent from the batch) leaves a gap. Empty or one-record logs give empty
    or one-point panels.

    Args:
        records: the dicts of a run's ``metrics.jsonl`` (``type`` ``step`` or
            ``epoch``, each with a ``step``); records without a step are skipped.
        path: the PNG file to write (atomically).
    """
    records = [r for r in records if isinstance(r.get("step"), (int, float))]
    fig = _new_figure(10, 7)
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.08, top=0.95, wspace=0.2, hspace=0.3)
    (loss_ax, pixel_ax), (fg_ax, class_ax) = fig.subplots(2, 2)
    for ax, key, title in (
        (loss_ax, "loss", "loss"),
        (pixel_ax, "pixel_accuracy", "pixel accuracy"),
        (fg_ax, "foreground_accuracy", "foreground accuracy"),
    ):
        for prefix, label in (("", "train"), ("eval_", "eval (batch)"), ("val_", "validation")):
            steps, values = _series(records, prefix + key)
            if steps:
                ax.plot(steps, values, marker="." if len(steps) < 3 else None, label=label)
        _finish(ax, title)
    key = "eval_per_class_accuracy" if any("eval_per_class_accuracy" in r for r in records) else "per_class_accuracy"
    steps, rows = _series(records, key)
    for color, hex_color in enumerate(ARC_PALETTE if steps else ()):
        values = [
            row[color] if isinstance(row, list) and color < len(row) and row[color] is not None else math.nan
            for row in rows
        ]
        class_ax.plot(
            steps, values, color=hex_color, linewidth=1.2, marker="." if len(steps) < 3 else None, label=str(color)
        )
    _finish(class_ax, "per-class accuracy" + (" (eval)" if key.startswith("eval_") else " (train)"), ncol=5)
    for ax in (pixel_ax, fg_ax, class_ax):
        ax.set_ylim(-0.02, 1.02)
    for ax in (fg_ax, class_ax):
        ax.set_xlabel("step")
    _save(fig, path)


def save_study_plot(runs: Sequence[Mapping[str, Any]], path: str | os.PathLike[str]) -> None:
    """Draw the foreground accuracy of every study run against the step into a PNG of 800 x 500 pixels (8 x 5 in at 100 dpi).

    One line per run, one colour per arm (in order of first appearance), one
    legend entry per arm. ``None`` values leave gaps.

    Args:
        runs: dicts ``{"arm": str, "seed": int, "steps": [int, ...],
            "foreground_accuracy": [float | None, ...]}``.
        path: the PNG file to write (atomically).

    Raises:
        ArcvaeError: a run's steps and accuracies differ in length.
    """
    fig = _new_figure(8, 5)
    ax = fig.add_subplot()
    colors: dict[str, str] = {}
    for run in runs:
        steps, accuracy = list(run["steps"]), list(run["foreground_accuracy"])
        if len(steps) != len(accuracy):
            raise ArcvaeError(
                f"Expected as many steps as accuracies in run {run['arm']!r} seed {run['seed']}, "
                f"but got {len(steps)} and {len(accuracy)}"
            )
        new_arm = run["arm"] not in colors
        color = colors.setdefault(run["arm"], f"C{len(colors) % 10}")
        ax.plot(
            steps,
            [math.nan if a is None else a for a in accuracy],
            color=color,
            alpha=0.8,
            linewidth=1.2,
            marker=".",
            markersize=3,
            label=run["arm"] if new_arm else None,
        )
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("step")
    ax.set_ylabel("foreground accuracy")
    _finish(ax, "Overfit study: foreground accuracy of the batch, one line per run")
    _save(fig, path)


NORMAL_STUDY_PANELS = (
    ("foreground_accuracy", "foreground accuracy"),
    ("balanced_accuracy", "balanced accuracy"),
    ("min_class_accuracy", "worst colour's accuracy"),
    ("perfect_rate", "perfect grids"),
)


def save_normal_study_plot(record: Mapping[str, Any], path: str | os.PathLike[str]) -> None:
    """Draw a normal study's validation measures against the batch size into a PNG of 1000 x 700 pixels.

    Four panels (foreground, balanced and worst-colour accuracy, perfect-grid
    rate); in each, one line per arm through the medians over seeds, and a band
    from the lowest to the highest seed. The batch sizes are on a log scale;
    each panel's accuracy axis ends a little above its highest value (at least
    0.2, at most 1).

    Args:
        record: a normal study's ``study.json``: ``batch_sizes``, and ``arms``
            mapping each arm to ``{"<batch size>": {"summary": {measure:
            {"median", "min", "max"}}}}``; a ``None`` value leaves a gap.
        path: the PNG file to write (atomically).
    """
    sizes = [int(size) for size in record["batch_sizes"]]
    fig = _new_figure(10, 7)
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.08, top=0.92, wspace=0.18, hspace=0.3)
    fig.suptitle(
        f"Normal study: last validation after {record['epochs']} epochs, median over seeds (band: lowest to highest)",
        fontsize=11,
    )
    for ax, (measure, title) in zip(fig.subplots(2, 2).flat, NORMAL_STUDY_PANELS):
        highest = 0.0
        for k, (arm, cells) in enumerate(record["arms"].items()):
            stats = [cells[str(size)]["summary"][measure] for size in sizes]
            low, mid, high = (
                [math.nan if s[key] is None else s[key] for s in stats] for key in ("min", "median", "max")
            )
            ax.fill_between(sizes, low, high, color=f"C{k % 10}", alpha=0.15, linewidth=0)
            ax.plot(sizes, mid, color=f"C{k % 10}", marker="o", markersize=4, label=arm)
            highest = max([highest, *(value for value in high if not math.isnan(value))])
        ax.set_xscale("log", base=2)
        ax.set_xticks(sizes, [str(size) for size in sizes])
        ax.set_ylim(-0.01, min(1.02, max(0.2, 1.15 * highest)))  # short runs score low: their range, not 0 to 1
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.set_xlabel("batch size")
    fig.axes[0].legend(fontsize=8)
    _save(fig, path)


def _new_figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | os.PathLike[str]) -> None:
    """Render ``fig`` to PNG in memory, then write it atomically."""
    import classweights

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    classweights.atomic_write_bytes(path, buffer.getvalue())


def _series(records: Sequence[Mapping[str, Any]], key: str) -> tuple[list[float], list[Any]]:
    """Steps and values of ``key`` in the records that have it, one value per step (the last), in step order; ``None`` -> NaN."""
    by_step = {r["step"]: r[key] for r in records if key in r}
    steps = sorted(by_step)
    return steps, [math.nan if by_step[s] is None else by_step[s] for s in steps]


def _finish(ax: Axes, title: str, *, ncol: int = 1) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.set_title(title, fontsize=10)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, ncol=ncol)


# ---------------------------------------------------------------- terminal ----


def grids_panel(
    originals: np.ndarray, reconstructions: np.ndarray, *, labels: Sequence[str] | None = None, colour: bool = True
) -> Columns:
    """Each original beside its reconstruction, in the terminal, as many pairs per row as fit.

    A cell is two full blocks ``██`` in its ARC colour; with ``colour=False``
    (a console without colours, e.g. ``NO_COLOR`` or a pipe) it is its colour
    digit and a space, ``.`` for black. Each pair has a header:
    its label and ``perfect`` or the number of wrong pixels. A pair is
    ``4 * W + 2`` columns wide (66 for 16x16 grids), so an 80-column terminal
    shows one pair per row and a 200-column one two.

    Args:
        originals: ``[n, H, W]`` colours 0-9.
        reconstructions: the same shape as ``originals``.
        labels: one header label per pair (default ``#0``, ``#1``, ...).
        colour: draw coloured blocks (default) or digits.

    Returns:
        A Rich renderable for ``Console.print``.

    Raises:
        ArcvaeError: the arrays differ in shape or are not ``[n, H, W]``, or
            ``labels`` is not one per pair.
    """
    originals, reconstructions = np.asarray(originals), np.asarray(reconstructions)
    if originals.shape != reconstructions.shape or originals.ndim != 3:
        raise ArcvaeError(
            f"Expected originals and reconstructions of the same shape [n, H, W], but got {originals.shape} and {reconstructions.shape}"
        )
    labels = [f"#{i}" for i in range(len(originals))] if labels is None else list(labels)
    if len(labels) != len(originals):
        raise ArcvaeError(f"Expected one label per grid ({len(originals)}), but got {len(labels)}")
    return Columns(
        [_pair(o, r, label, colour) for o, r, label in zip(originals, reconstructions, labels)], padding=(1, 3)
    )


_STYLES = [Style(color=c) for c in ARC_PALETTE]


_DIGITS = [". "] + [f"{c} " for c in range(1, 10)]


def _pair(original: np.ndarray, reconstruction: np.ndarray, label: str, colour: bool = True) -> Text:
    width = 2 * original.shape[1]
    wrong = int((original != reconstruction).sum())
    text = Text(
        f"{label} ", no_wrap=True, overflow="crop"
    )  # a narrow console crops lines rather than breaking the grids
    text.append("perfect" if wrong == 0 else f"{wrong} wrong", style="green" if wrong == 0 else "red")
    text.append(f"\n{'original':<{width}}  reconstruction", style="dim")
    for row_o, row_r in zip(original, reconstruction):
        text.append("\n")
        for row in (row_o, row_r):
            for color in row:
                if colour:
                    text.append("██", style=_STYLES[int(color)])
                else:
                    text.append(_DIGITS[int(color)])
            text.append("  ")
        text.right_crop(2)
    return text
