"""``arcvae show``: a run's reconstructions of the grids it trained on, in the terminal (and as a PNG)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ..errors import ArcvaeError
from ._common import user_errors

if TYPE_CHECKING:
    import numpy as np


class SplitChoice(str, Enum):
    train = "train"
    val = "val"


@user_errors
def show_command(
    run: Annotated[
        Path, typer.Argument(metavar="RUN", help="Run folder written by 'arcvae train'.", show_default=False)
    ],
    n: Annotated[int, typer.Option("--n", min=1, help="Number of grids to show.")] = 8,
    split: Annotated[
        SplitChoice,
        typer.Option(help="Split of the run's corpus to show in normal mode (overfit runs show their batch)."),
    ] = SplitChoice.val,
    last: Annotated[bool, typer.Option("--last", help="Use the last checkpoint instead of the best one.")] = False,
    out: Annotated[
        Path | None, typer.Option(help="Also save the picture to this PNG file (atomically).", show_default=False)
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing --out file.")] = False,
) -> None:
    """Show the first N grids a run trained on beside the model's reconstructions, with their accuracy."""
    from ..checkpoints import load_run
    from ..console import default_console
    from ..model import reconstruct
    from ..outputs import check_output_file
    from ..plots import grids_panel, save_reconstructions
    from ..run_files import grids_trained_on

    if not (run / "checkpoints").is_dir():
        raise ArcvaeError(
            f"{str(run)!r} is not a run folder (it has no checkpoints folder); pass a folder written by 'arcvae train'"
        )
    if out is not None:  # before any work, and again below with the run's corpus among the inputs
        check_output_file(out, force=force)
    model, config, checkpoint = load_run(run, best=not last)
    if out is not None:
        check_output_file(out, force=force, inputs=[config.data])
    grids, source = grids_trained_on(config, split.value, n)
    recons = reconstruct(model, grids)
    which = "best" if not last and (run / "checkpoints" / "best.pt").exists() else "last"
    console = default_console()
    console.print(
        f"[SHOW] {run}: {which} checkpoint (epoch {checkpoint['epoch']}, step {checkpoint['step']}); {source}",
        markup=False,
    )
    console.print(grids_panel(grids, recons, colour=console.color_system is not None and not console.no_color))
    console.print(summary_line(grids, recons), markup=False)
    if out is not None:
        save_reconstructions(grids, recons, out, title=f"{run.name}: {source}")
        console.print(f"[SHOW] Saved to: {out}", markup=False)


def summary_line(originals: np.ndarray, reconstructions: np.ndarray) -> str:
    """One line of accuracy over the shown grids.

    Args:
        originals: ``[n, H, W]`` colours, n >= 1.
        reconstructions: the model's grids, the same shape.

    Returns:
        e.g. ``pixel accuracy 93.0%, foreground accuracy 41.2%, perfect grids 1/8``
        (foreground: colours 1-9; ``-`` when the grids have none).
    """
    import torch

    from ..metrics import batch_metrics

    m = batch_metrics(torch.as_tensor(reconstructions).long(), torch.as_tensor(originals).long())
    fg = "-" if m["foreground_accuracy"] is None else f"{m['foreground_accuracy']:.1%}"
    perfect = round(m["perfect_rate"] * len(originals))
    return (
        f"pixel accuracy {m['pixel_accuracy']:.1%}, foreground accuracy {fg}, perfect grids {perfect}/{len(originals)}"
    )
