"""``arcvae weights compute`` and ``arcvae weights show``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ._common import user_errors, warn

app = typer.Typer(help="Compute, save and inspect class weights (any labels, not only ARC grids).", no_args_is_help=True)


@app.command("compute")
@user_errors
def compute(
    data: Annotated[Path, typer.Argument(help="Labels: a .npy file, a .npz file (see --key), or a folder or quoted glob of label images "
                                              "(.png, .tif, .tiff, .npy; one image per sample).", show_default=False)],
    key: Annotated[Optional[str], typer.Option(help="Array inside a .npz file (default: train, or the only array).")] = None,
    method: Annotated[str, typer.Option(help="Weighting method: sqrt_inverse, inverse, balanced, enet, median_frequency, effective_number, uniform.")] = "sqrt_inverse",
    smooth: Annotated[float, typer.Option(help="Pseudo-count added to every class count.")] = 1.0,
    normalize: Annotated[bool, typer.Option("--normalize/--no-normalize", help="Scale the weights to sum to the number of classes.")] = True,
    ignore_index: Annotated[Optional[int], typer.Option(help="Label value to skip, e.g. 255.")] = None,
    num_classes: Annotated[int, typer.Option(help="Number of classes; labels must lie in [0, num_classes).")] = 10,
    out: Annotated[Optional[Path], typer.Option(help="Save the weights to this JSON file (atomically).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object (counts, weights, method, ratio, source) and nothing else.")] = False,
    cache: Annotated[bool, typer.Option("--cache/--no-cache", help="Reuse weights cached for the same file content and options (in the arcvae cache folder). "
                                                                 "A folder or glob of images is counted every time.")] = True,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing --out file.")] = False,
) -> None:
    """Count the labels in DATA and turn the counts into class weights."""
    from classweights._images import is_image_source
    from classweights.methods import check_method

    from ..console import default_console
    from ..data import default_cache_dir
    from ..weights import FileStamp, resolve_class_weights, save_weights_record

    check_method(method, {})  # an unknown method fails before any reading
    if out is not None:
        from ..outputs import check_output_file

        check_output_file(out, force=force, inputs=[data])
    # The cache knows a data set by one file's identity. A folder's own identity does not change when an image in it
    # is rewritten, so images are counted every time: no cache entry is read or written for them.
    images = is_image_source(data)
    stamp = None if images else FileStamp.of(data)  # taken before the file is read
    result = _with_progress(
        lambda progress: resolve_class_weights(
            data, key=key, num_classes=num_classes, method=method, smooth=smooth, normalize=normalize, ignore_index=ignore_index,
            cache_dir=None if images else default_cache_dir(), use_cache=cache and not images, source=str(data), stamp=stamp,
            progress=progress, warn=warn,
        ),
        quiet=as_json,
    )  # fmt: skip
    counts = result.counts.tolist()
    values = result.weights.tolist()
    positive = [v for v in values if v > 0]  # an ignored class has weight 0
    ratio = max(positive) / min(positive)
    if out is not None:
        save_weights_record(result, out, source=str(data), key=key)
    if as_json:
        record = {"counts": counts, "weights": values, "method": method, "ratio": ratio, "source": str(data)}
        typer.echo(json.dumps(record))
        return
    absent = [c for c, n in enumerate(counts) if n == 0 and c != ignore_index]
    if absent:
        plural = len(absent) > 1
        message = (f"class{'es' if plural else ''} {', '.join(map(str, absent))} never occur{'' if plural else 's'} in {data}; "
                   f"{method} gives {'them' if plural else 'it'} the weight of a count of 0 (check --num-classes)")  # fmt: skip
        warn(message)
    _print_table(counts, values, title=f"{method} weights for {data} ({result.num_samples:,} samples, {sum(counts):,} labels)")
    console = default_console()
    console.print(f"Weight ratio (max/min): {ratio:.2f}x")
    if result.from_cache:
        console.print(f"[WEIGHTS] Loaded from the cache: {result.cache_path} (--no-cache recounts)")
    if out is not None:
        console.print(f"[WEIGHTS] Saved to: {out}")


def _with_progress(work: Any, *, quiet: bool) -> Any:
    """Run ``work(progress)`` with a counting progress bar on stderr (none with --json or off a terminal)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from ..console import default_console

    console = default_console(stderr=True)
    if quiet or not console.is_terminal:
        return work(None)
    with Progress(TextColumn("Counting labels"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=console, transient=True) as bar:
        task = bar.add_task("count", total=None)
        return work(lambda done, total: bar.update(task, completed=done, total=total))


def _print_table(counts: list[int] | None, weights: list[float], *, title: str) -> None:
    from ..console import default_console
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    table.add_column("class", justify="right")
    if counts is not None:
        total = sum(counts)
        table.add_column("count", justify="right")
        table.add_column("share", justify="right")
    table.add_column("weight", justify="right")
    for c, w in enumerate(weights):
        row = [str(c)]
        if counts is not None:
            row += [f"{counts[c]:,}", f"{counts[c] / total:.2%}" if total else "-"]
        table.add_row(*row, f"{w:.4f}")
    default_console().print(table)


@app.command("show")
@user_errors
def show(
    path: Annotated[Path, typer.Argument(help="A weights file from 'weights compute --out' or a run folder's class_weights.json (legacy .pth too).", show_default=False)],
    as_json: Annotated[bool, typer.Option("--json", help="Print the weights and metadata as one JSON object.")] = False,
) -> None:
    """Show the weights stored in PATH, with their counts and metadata."""
    import classweights

    weights, meta = classweights.load_class_weights(path, with_metadata=True)
    values = weights.tolist()
    if as_json:
        typer.echo(json.dumps({"weights": values, **meta}))
        return
    counts = meta.get("counts")
    if not (isinstance(counts, list) and len(counts) == len(values)):
        counts = None
    _print_table(counts, values, title=f"Class weights in {path}")
    from ..console import default_console

    console = default_console()
    positive = [v for v in values if v > 0]
    console.print(f"Weight ratio (max/min over non-zero weights): {max(positive) / min(positive):.2f}x")
    for k, v in meta.items():
        if k != "counts":
            console.print(f"  {k}: {v}")
