"""``arcvae study overfit`` and ``arcvae study normal``: every weighting arm, several seeds, summary tables."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..config import TargetMetric
from ._common import user_errors

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

app = typer.Typer(help="Experiments that compare ways of weighting the loss.", no_args_is_help=True)

Data = Annotated[
    Path | None,
    typer.Option(help="Corpus .npz (default: the synthetic corpus in the cache folder).", show_default=False),
]
Seeds = Annotated[int, typer.Option(min=1, help="Runs per arm (seeds 42, 43, ...).")]
Epochs = Annotated[
    int, typer.Option(min=1, help="Maximum epochs per run (50 steps each); a run stops at the target accuracy.")
]
Methods = Annotated[
    str,
    typer.Option(
        help="Extra arms: comma-separated classweights methods, each weighing the full split (e.g. inverse,balanced)."
    ),
]
Jobs = Annotated[
    int | None,
    typer.Option(
        min=1, help="Runs trained at once, one thread each (default: the number of CPU cores).", show_default=False
    ),
]
Out = Annotated[Path | None, typer.Option(help="Study folder (default: studies/<time>-overfit).", show_default=False)]
NormalOut = Annotated[
    Path | None, typer.Option(help="Study folder (default: studies/<time>-normal).", show_default=False)
]
BatchSizes = Annotated[str, typer.Option(help="Comma-separated batch sizes, each studied with every arm and seed.")]
NormalEpochs = Annotated[
    int, typer.Option(min=1, help="Epochs per run: the default 50-epoch schedules, stopped after this many.")
]
TrainSamples = Annotated[int, typer.Option(min=1, help="Train on the first N training grids.")]
ValSamples = Annotated[int, typer.Option(min=1, help="Validate on the first N validation grids.")]
NormalSeeds = Annotated[int, typer.Option(min=1, help="Runs per arm and batch size (seeds 42, 43, ...).")]
NormalMethods = Annotated[
    str,
    typer.Option(
        help="Extra arms: comma-separated classweights methods, each tried per batch and on the full split "
        "(e.g. inverse)."
    ),
]
TargetMetricOption = Annotated[
    TargetMetric,
    typer.Option(
        help="What --target-accuracy applies to: pixel, foreground or balanced accuracy, or the perfect-grid rate."
    ),
]
TargetAccuracy = Annotated[float, typer.Option(min=0, max=1, help="The target, in (0, 1].")]
Wandb = Annotated[
    bool,
    typer.Option(
        "--wandb",
        help="Log every run to Weights & Biases (needs the optional wandb package; honours WANDB_MODE=offline).",
    ),
]


@app.command("overfit")
@user_errors
def overfit(
    data: Data = None,
    seeds: Seeds = 5,
    epochs: Epochs = 10,
    methods: Methods = "",
    jobs: Jobs = None,
    out: Out = None,
    wandb: Wandb = False,
    target_metric: TargetMetricOption = "pixel",
    target_accuracy: TargetAccuracy = 0.95,
) -> None:
    """Overfit one batch with no class weights, batch weights and full-split weights, for several seeds.

    Prints a table per arm and a summary, and writes study.json and study.png
    (foreground accuracy against step, one line per run) to the study folder.
    """
    from ..study import BASE_ARMS, arm_config, run_study

    arms = list(BASE_ARMS) + [f"full:{m}" for m in _names(methods)]
    for arm in arms:
        arm_config(arm)  # unknown methods fail before any work
    console, data_path = _start(data, wandb, target_accuracy)
    folder = out or Path("studies") / f"{time.strftime('%Y%m%d-%H%M%S')}-overfit"
    seed_list = [42 + k for k in range(seeds)]
    runs = _count(len(arms) * len(seed_list), "overfit run")
    plan = (
        f"{_count(len(arms), 'arm')} x {_count(len(seed_list), 'seed')} = {runs} of at most {_count(epochs, 'epoch')}"
    )
    console.print(f"[STUDY] {plan} on {data_path}")
    study = {"arms": arms, "seeds": seed_list, "epochs": epochs, "out": folder, "jobs": jobs, "wandb": wandb}
    study.update(target_metric=target_metric, target_accuracy=target_accuracy)
    record = _run_with_bar(
        console, len(arms) * len(seed_list), lambda progress: run_study(data_path, **study, progress=progress)
    )
    print_study(record, console)
    _files(console, folder, record)


@app.command("normal")
@user_errors
def normal(
    data: Data = None,
    batch_sizes: BatchSizes = "8,32,128",
    seeds: NormalSeeds = 3,
    epochs: NormalEpochs = 5,
    train_samples: TrainSamples = 2000,
    val_samples: ValSamples = 1000,
    methods: NormalMethods = "",
    jobs: Jobs = None,
    out: NormalOut = None,
    wandb: Wandb = False,
    target_metric: TargetMetricOption = "pixel",
    target_accuracy: TargetAccuracy = 0.95,
) -> None:
    """Train in normal mode with no class weights, per-batch weights and full-split weights, per batch size and seed.

    Prints one table (a row per batch size and arm) and writes study.json and
    study.png (each validation measure against the batch size) to the study folder.
    """
    from ..normal_study import arm_config, run_normal_study, study_arms

    arms = study_arms(_names(methods))
    for arm in arms:
        arm_config(arm)  # unknown methods fail before any work
    sizes = _batch_sizes(batch_sizes)
    console, data_path = _start(data, wandb, target_accuracy)
    folder = out or Path("studies") / f"{time.strftime('%Y%m%d-%H%M%S')}-normal"
    seed_list = [42 + k for k in range(seeds)]
    total = len(arms) * len(sizes) * len(seed_list)
    plan = f"{_count(len(arms), 'arm')} x {_count(len(sizes), 'batch size')} x {_count(len(seed_list), 'seed')}"
    console.print(
        f"[STUDY] {plan} = {_count(total, 'normal run')} of {_count(epochs, 'epoch')} on the first {train_samples:,} "
        f"training grids of {data_path}"
    )
    study = {"arms": arms, "batch_sizes": sizes, "seeds": seed_list, "epochs": epochs, "out": folder, "jobs": jobs}
    study.update(train_samples=train_samples, val_samples=val_samples, wandb=wandb)
    study.update(target_metric=target_metric, target_accuracy=target_accuracy)
    record = _run_with_bar(console, total, lambda progress: run_normal_study(data_path, **study, progress=progress))
    print_normal_study(record, console)
    _files(console, folder, record)


def _start(data: Path | None, wandb: bool, target_accuracy: float) -> tuple[Console, Path]:
    """Checks before any work (the target, --wandb's package), the console, and the corpus resolved."""
    from ..console import default_console
    from ..data import resolve_data_path
    from ..errors import ArcvaeError
    from ..report import Reporter

    if target_accuracy <= 0:
        raise ArcvaeError(f"Expected --target-accuracy in (0, 1], but got {target_accuracy}")
    if wandb:
        from ..tracking import require_wandb

        require_wandb()
    console = default_console()
    return console, resolve_data_path(None if data is None else str(data), Reporter(console))[0].resolve()


def _names(methods: str) -> list[str]:
    """``"inverse, balanced"`` -> ``["inverse", "balanced"]``."""
    return [m.strip() for m in methods.split(",") if m.strip()]


def _batch_sizes(text: str) -> list[int]:
    """``"8,32,128"`` -> ``[8, 32, 128]``; anything but positive integers is an error."""
    from ..errors import ArcvaeError

    sizes = _names(text)
    if not sizes or not all(size.isdigit() and int(size) >= 1 for size in sizes):
        raise ArcvaeError(f"Expected --batch-sizes to be comma-separated integers >= 1, but got {text!r}")
    return [int(size) for size in sizes]


def _files(console: Console, folder: Path, record: dict[str, Any]) -> None:
    files = f"{folder / 'study.json'}  {folder / 'study.png'}"
    console.print(f"[STUDY] {files}  ({record['seconds']:.0f} s, {record['jobs']} at a time)")


def _run_with_bar(
    console: Console, total: int, run: Callable[[Callable[[Any], None]], dict[str, Any]]
) -> dict[str, Any]:
    """``run(progress)``, a study, with a bar counting its finished runs."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("Runs"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=not console.is_terminal) as bar:
        task = bar.add_task("runs", total=total)
        return run(lambda finished: bar.advance(task))


def _count(n: int, noun: str) -> str:
    """``1 seed``, ``3 seeds``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def print_study(record: dict[str, Any], console: Console) -> None:
    """One table per arm (a row per seed), then the summary table."""
    for arm, entry in record["arms"].items():
        console.print(_arm_table(arm, entry["runs"]))
    console.print(_summary_table(record))


def _arm_table(arm: str, runs: list[dict[str, Any]]) -> Table:
    """An overfit study's arm: a row per seed."""
    from rich.table import Table

    from ..study import format_value

    table = Table(title=f"arm {arm}", title_justify="left")
    columns = (
        "seed",
        "reached",
        "epochs",
        "pixel acc",
        "fg acc",
        "min class acc",
        "perfect",
        "collapsed",
        "ended black",
    )
    for column in columns:
        table.add_column(column, justify="right")
    for run in runs:
        accuracies = (run["pixel_accuracy"], run["final_foreground_accuracy"], run["min_class_accuracy"])
        table.add_row(
            str(run["seed"]),
            _yes(run["reached_target"]),
            str(run["epochs"]),
            *map(format_value, accuracies),
            format_value(run["perfect_rate"]),
            _yes(run["collapsed"]),
            _yes(run["ended_black"]),
        )
    return table


def _summary_table(record: dict[str, Any]) -> Table:
    """An overfit study's summary: a row per arm."""
    from rich.table import Table

    from ..report import TARGET_NAMES
    from ..study import format_value

    epochs = _count(record["epochs"], "epoch")
    target = f"{TARGET_NAMES[record['target_metric']]} {record['target_accuracy']:.0%}"
    summary = Table(title=f"Overfit study: target {target}, at most {epochs}", title_justify="left")
    columns = (
        "reached target",
        "median epochs to target",
        "median pixel acc",
        "median fg acc",
        "min class acc",
        "median perfect grids",
        "collapsed to black",
        "ended black",
    )
    summary.add_column("arm", justify="left")
    for column in columns:
        summary.add_column(column, justify="right")
    for arm, entry in record["arms"].items():
        arm_summary = entry["summary"]
        runs = arm_summary["runs"]
        medians = (arm_summary["median_pixel_accuracy"], arm_summary["median_foreground_accuracy"])
        summary.add_row(
            arm,
            f"{arm_summary['reached_target']}/{runs}",
            format_value(arm_summary["median_epochs_to_target"], pct=False),
            *map(format_value, medians),
            format_value(arm_summary["min_class_accuracy"]),
            format_value(arm_summary["median_perfect_rate"]),
            f"{arm_summary['collapsed']}/{runs}",
            f"{arm_summary['ended_black']}/{runs}",
        )
    return summary


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def print_normal_study(record: dict[str, Any], console: Console) -> None:
    """One table: a row per batch size and arm, each measure's median over seeds (with its range for some)."""
    from rich.table import Table

    from ..report import TARGET_NAMES

    seeds = _count(len(record["seeds"]), "seed")
    target = f"{TARGET_NAMES[record['target_metric']]} {record['target_accuracy']:.0%}"
    table = Table(
        title=f"Normal study: last validation after {_count(record['epochs'], 'epoch')}, in %; median over {seeds} "
        f"(lowest-highest); target {target}",
        title_justify="left",
    )
    # two-line headers keep the table within 120 columns
    table.add_column("batch", justify="right")
    table.add_column("arm", no_wrap=True)
    for column in ("pixel\nacc", "fg acc\n(range)", "balanced acc\n(range)", "worst\ncolour", "perfect\ngrids"):
        table.add_column(column, justify="right", no_wrap=True)
    for column in ("reached\ntarget", "ended\nblack"):
        table.add_column(column, justify="right")
    for size in record["batch_sizes"]:
        for arm, cells in record["arms"].items():
            cell = cells[str(size)]["summary"]
            runs = cell["runs"]
            table.add_row(
                str(size),
                arm,
                _percent(cell["pixel_accuracy"]),
                _percent(cell["foreground_accuracy"], spread=True),
                _percent(cell["balanced_accuracy"], spread=True),
                _percent(cell["min_class_accuracy"]),
                _percent(cell["perfect_rate"]),
                f"{cell['reached_target']}/{runs}",
                f"{cell['ended_black']}/{runs}",
            )
        table.add_section()
    console.print(table)


def _percent(stats: dict[str, float | None], *, spread: bool = False) -> str:
    """``45.1``, or with ``spread`` ``45.1 (40.2-50.3)``: a median in percent, and the lowest and highest seed."""
    if stats["median"] is None:
        return "-"
    text = f"{100 * stats['median']:.1f}"
    if spread and stats["min"] is not None and stats["max"] is not None and stats["min"] != stats["max"]:
        text += f" ({100 * stats['min']:.1f}-{100 * stats['max']:.1f})"
    return text
