"""``arcvae study overfit``: every weighting arm, several seeds, one table."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from ._common import user_errors

app = typer.Typer(help="Experiments that compare ways of weighting the loss.", no_args_is_help=True)


@app.command("overfit")
@user_errors
def overfit(
    data: Annotated[Optional[Path], typer.Option(help="Corpus .npz (default: the synthetic corpus in the cache folder).", show_default=False)] = None,
    seeds: Annotated[int, typer.Option(min=1, help="Runs per arm (seeds 42, 43, ...).")] = 5,
    epochs: Annotated[int, typer.Option(min=1, help="Maximum epochs per run (50 steps each); a run stops at the target accuracy.")] = 10,
    methods: Annotated[str, typer.Option(help="Extra arms: comma-separated classweights methods, each weighing the full split (e.g. inverse,balanced).")] = "",
    jobs: Annotated[Optional[int], typer.Option(min=1, help="Runs trained at once, one thread each (default: the number of CPU cores).", show_default=False)] = None,
    out: Annotated[Optional[Path], typer.Option(help="Study folder (default: studies/<time>-overfit).", show_default=False)] = None,
    wandb: Annotated[bool, typer.Option("--wandb", help="Log every run to Weights & Biases (needs the optional wandb package; honours WANDB_MODE=offline).")] = False,
) -> None:
    """Overfit one batch with no class weights, batch weights and full-split weights, for several seeds.

    Prints a table per arm and a summary, and writes study.json and study.png
    (foreground accuracy against step, one line per run) to the study folder.
    """
    from ..console import default_console
    from ..data import resolve_data_path
    from ..report import Reporter
    from ..study import BASE_ARMS, arm_config, run_study

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
    total = len(arms) * len(seed_list)
    console.print(f"[STUDY] {_count(len(arms), 'arm')} x {_count(len(seed_list), 'seed')} = {_count(total, 'overfit run')} "
                  f"of at most {_count(epochs, 'epoch')} on {data_path}")  # fmt: skip

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("Runs"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console, transient=not console.is_terminal) as bar:
        task = bar.add_task("runs", total=total)
        record = run_study(data_path, arms=arms, seeds=seed_list, epochs=epochs, out=folder, jobs=jobs, wandb=wandb,
                           progress=lambda run: bar.advance(task))  # fmt: skip
    print_study(record, console)
    console.print(f"[STUDY] {folder / 'study.json'}  {folder / 'study.png'}  ({record['seconds']:.0f} s, {record['jobs']} at a time)")


def _count(n: int, noun: str) -> str:
    """``1 seed``, ``3 seeds``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def print_study(record: dict, console) -> None:  # type: ignore[no-untyped-def]
    """One table per arm (a row per seed), then the summary table."""
    from rich.table import Table

    from ..study import format_value

    for arm, entry in record["arms"].items():
        table = Table(title=f"arm {arm}", title_justify="left")
        for column in ("seed", "reached", "epochs", "pixel acc", "fg acc", "min class acc", "collapsed", "ended black"):
            table.add_column(column, justify="right")
        for run in entry["runs"]:
            table.add_row(str(run["seed"]), "yes" if run["reached_target"] else "no", str(run["epochs"]), format_value(run["pixel_accuracy"]),
                          format_value(run["final_foreground_accuracy"]), format_value(run["min_class_accuracy"]), "yes" if run["collapsed"] else "no",
                          "yes" if run["ended_black"] else "no")  # fmt: skip
        console.print(table)
    summary = Table(title=f"Overfit study: target pixel accuracy {record['target_accuracy']:.0%}, at most {_count(record['epochs'], 'epoch')}",
                    title_justify="left")  # fmt: skip
    for column in ("arm", "reached target", "median epochs to target", "median pixel acc", "median fg acc", "min class acc",
                   "collapsed to black", "ended black"):  # fmt: skip
        summary.add_column(column, justify="right" if column != "arm" else "left")
    for arm, entry in record["arms"].items():
        s = entry["summary"]
        summary.add_row(arm, f"{s['reached_target']}/{s['runs']}", format_value(s["median_epochs_to_target"], pct=False),
                        format_value(s["median_pixel_accuracy"]), format_value(s["median_foreground_accuracy"]),
                        format_value(s["min_class_accuracy"]), f"{s['collapsed']}/{s['runs']}", f"{s['ended_black']}/{s['runs']}")  # fmt: skip
    console.print(summary)
