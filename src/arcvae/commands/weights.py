"""``arcvae weights compute`` and ``arcvae weights show``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from ._common import user_errors, warn

app = typer.Typer(
    help="Compute, save and inspect class weights (any labels, not only ARC grids).", no_args_is_help=True
)


Labels = Annotated[
    Path,
    typer.Argument(
        help="Labels: a .npy, .npz or .parquet file (see --key), or a folder or quoted glob of label images "
        "(.png, .tif, .tiff, .npy; one image per sample).",
        show_default=False,
    ),
]
Key = Annotated[
    str | None,
    typer.Option(
        help="Array inside a .npz file (default: train, or the only array), or the label column of a .parquet file."
    ),
]
Method = Annotated[
    str,
    typer.Option(
        help="Weighting method: sqrt_inverse, inverse, balanced, enet, median_frequency, effective_number, uniform."
    ),
]
Smooth = Annotated[float, typer.Option(help="Pseudo-count added to every class count.")]
Normalize = Annotated[
    bool, typer.Option("--normalize/--no-normalize", help="Scale the weights to sum to the number of classes.")
]
IgnoreIndex = Annotated[int | None, typer.Option(help="Label value to skip, e.g. 255.")]
NumClasses = Annotated[int, typer.Option(help="Number of classes; labels must lie in [0, num_classes).")]
Out = Annotated[Path | None, typer.Option(help="Save the weights to this JSON file (atomically).")]
AsJson = Annotated[
    bool,
    typer.Option("--json", help="Print one JSON object (counts, weights, method, ratio, source) and nothing else."),
]
Cache = Annotated[
    bool,
    typer.Option(
        "--cache/--no-cache",
        help="Reuse weights cached for the same file content and options (in the arcvae cache folder). "
        "A folder or glob of images is counted every time.",
    ),
]
Force = Annotated[bool, typer.Option("--force", help="Overwrite an existing --out file.")]


@app.command("compute")
@user_errors
def compute(
    data: Labels,
    key: Key = None,
    method: Method = "sqrt_inverse",
    smooth: Smooth = 1.0,
    normalize: Normalize = True,
    ignore_index: IgnoreIndex = None,
    num_classes: NumClasses = 10,
    out: Out = None,
    as_json: AsJson = False,
    cache: Cache = True,
    force: Force = False,
) -> None:
    """Count the labels in DATA and turn the counts into class weights."""
    import classweights

    from ..data import default_cache_dir
    from ..weight_cache import FileStamp, WeightCache, WeightSpec, save_weights_record
    from ..weights import resolve_class_weights

    classweights.check_method(method, {})  # an unknown method fails before any reading
    if out is not None:
        from ..outputs import check_output_file

        check_output_file(out, force=force, inputs=[data])
    # The cache knows a data set by one file's identity. A folder's own identity does not change when an image in it
    # is rewritten, so a folder or glob of images is counted every time: no cache entry is read or written for it.
    one_file = data.is_file()
    spec = WeightSpec(num_classes, method, smooth, normalize, ignore_index)
    folder = WeightCache(default_cache_dir() if one_file else None, read=cache and one_file, warn=warn)
    stamp = FileStamp.of(data) if one_file else None  # taken before the file is read
    result = _with_progress(
        lambda progress: resolve_class_weights(
            data, spec, key=key, cache=folder, source=str(data), stamp=stamp, progress=progress
        ),
        quiet=as_json,
    )
    counts, values = result.counts.tolist(), result.weights.tolist()
    positive = [v for v in values if v > 0]  # an ignored class has weight 0
    ratio = max(positive) / min(positive)
    if out is not None:
        save_weights_record(result, out, source=str(data), key=key)
    if as_json:
        typer.echo(
            json.dumps({"counts": counts, "weights": values, "method": method, "ratio": ratio, "source": str(data)})
        )
        return
    _warn_absent(counts, ignore_index, method, data)
    _print_table(
        counts, values, title=f"{method} weights for {data} ({result.num_samples:,} samples, {sum(counts):,} labels)"
    )
    _print_footer(ratio, result.cache_path if result.from_cache else None, out)


def _warn_absent(counts: list[int], ignore_index: int | None, method: str, data: Path) -> None:
    """A warning for classes that never occur: they get the weight of a count of 0, which is often a wrong C."""
    absent = [c for c, n in enumerate(counts) if n == 0 and c != ignore_index]
    if absent:
        plural = len(absent) > 1
        warn(
            f"class{'es' if plural else ''} {', '.join(map(str, absent))} never occur{'' if plural else 's'} in {data}; "
            f"{method} gives {'them' if plural else 'it'} the weight of a count of 0 (check --num-classes)"
        )


def _print_footer(ratio: float, cached: Path | None, out: Path | None) -> None:
    from ..console import default_console

    console = default_console()
    console.print(f"Weight ratio (max/min): {ratio:.2f}x")
    if cached is not None:
        console.print(f"[WEIGHTS] Loaded from the cache: {cached} (--no-cache recounts)")
    if out is not None:
        console.print(f"[WEIGHTS] Saved to: {out}")


def _with_progress(work: Any, *, quiet: bool) -> Any:
    """Run ``work(progress)`` with a counting progress bar on stderr (none with --json or off a terminal)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from ..console import default_console

    console = default_console(stderr=True)
    if quiet or not console.is_terminal:
        return work(None)
    with Progress(
        TextColumn("Counting labels"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task("count", total=None)
        return work(lambda done, total: bar.update(task, completed=done, total=total))


def _print_table(counts: list[int] | None, weights: list[float], *, title: str) -> None:
    from rich.table import Table

    from ..console import default_console

    table = Table(title=title, title_justify="left")
    table.add_column("class", justify="right")
    if counts is not None:
        total = sum(counts)
        table.add_column("count", justify="right")
        table.add_column("share", justify="right")
    table.add_column("weight", justify="right")
    for label, weight in enumerate(weights):
        row = [str(label)]
        if counts is not None:
            row += [f"{counts[label]:,}", f"{counts[label] / total:.2%}" if total else "-"]
        table.add_row(*row, f"{weight:.4f}")
    default_console().print(table)


@app.command("show")
@user_errors
def show(
    path: Annotated[
        Path,
        typer.Argument(
            help="A weights file from 'weights compute --out' or a run folder's class_weights.json (legacy .pth too).",
            show_default=False,
        ),
    ],
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
    for name, value in meta.items():
        if name != "counts":
            console.print(f"  {name}: {value}")
