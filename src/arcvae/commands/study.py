"""``arcvae study overfit``: every weighting arm, several seeds, one table."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ._common import user_errors

if TYPE_CHECKING:
    from rich.console import Console

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
) -> None:
    """Overfit one batch with no class weights, batch weights and full-split weights, for several seeds.

    Prints a table per arm and a summary, and writes study.json and study.png
    (foreground accuracy against step, one line per run) to the study folder.
    """
    from ..console import default_console
    from ..data import resolve_data_path
    from ..report import Reporter
    from ..study import BASE_ARMS, arm_config

    arms = list(BASE_ARMS) + [f"full:{m.strip()}" for m in methods.split(",") if m.strip()]
    for arm in arms:
        arm_config(arm)  # unknown methods fail before any work
    if wandb:
        from ..tracking import require_wandb

        require_wandb()
    folder = out or Path("studies") / f"{time.strftime('%Y%m%d-%H%M%S')}-overfit"
    console = default_console()
    data_path = resolve_data_path(None if data is None else str(data), Reporter(console))[0].resolve()
    seed_list = [42 + k for k in range(seeds)]
    runs = _count(len(arms) * len(seed_list), "overfit run")
    plan = (
        f"{_count(len(arms), 'arm')} x {_count(len(seed_list), 'seed')} = {runs} of at most {_count(epochs, 'epoch')}"
    )
    console.print(f"[STUDY] {plan} on {data_path}")
    study = {"arms": arms, "seeds": seed_list, "epochs": epochs, "out": folder, "jobs": jobs, "wandb": wandb}
    record = _run_with_bar(console, data_path, study)
    print_study(record, console)
    files = f"{folder / 'study.json'}  {folder / 'study.png'}"
    console.print(f"[STUDY] {files}  ({record['seconds']:.0f} s, {record['jobs']} at a time)")


def _run_with_bar(console: Console, data_path: Path, study: dict[str, Any]) -> dict[str, Any]:
    """:func:`arcvae.study.run_study` with a bar counting the finished runs."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ..study import run_study

    columns = (TextColumn("Runs"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=not console.is_terminal) as bar:
        task = bar.add_task("runs", total=len(study["arms"]) * len(study["seeds"]))
        return run_study(data_path, **study, progress=lambda run: bar.advance(task))


def _count(n: int, noun: str) -> str:
    """``1 seed``, ``3 seeds``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def print_study(record: dict[str, Any], console: Console) -> None:
    """One table per arm (a row per seed), then the summary table."""
    from rich.table import Table

    from ..study import format_value

    def yes(flag: bool) -> str:
        return "yes" if flag else "no"

    for arm, entry in record["arms"].items():
        table = Table(title=f"arm {arm}", title_justify="left")
        for column in ("seed", "reached", "epochs", "pixel acc", "fg acc", "min class acc", "collapsed", "ended black"):
            table.add_column(column, justify="right")
        for run in entry["runs"]:
            accuracies = (run["pixel_accuracy"], run["final_foreground_accuracy"], run["min_class_accuracy"])
            table.add_row(
                str(run["seed"]),
                yes(run["reached_target"]),
                str(run["epochs"]),
                *map(format_value, accuracies),
                yes(run["collapsed"]),
                yes(run["ended_black"]),
            )
        console.print(table)
    epochs = _count(record["epochs"], "epoch")
    summary = Table(
        title=f"Overfit study: target pixel accuracy {record['target_accuracy']:.0%}, at most {epochs}",
        title_justify="left",
    )
    columns = (
        "reached target",
        "median epochs to target",
        "median pixel acc",
        "median fg acc",
        "min class acc",
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
            f"{arm_summary['collapsed']}/{runs}",
            f"{arm_summary['ended_black']}/{runs}",
        )
    console.print(summary)
