"""The ``arcvae`` command line: ``train``, ``show``, ``weights``, ``data`` and ``study``.

Only Typer and the standard library are imported here, so ``arcvae --help``
stays fast; each command imports torch and the library when it runs.
"""

from __future__ import annotations

import typer

from .commands.data import app as data_app
from .commands.show import show_command
from .commands.study import app as study_app
from .commands.train import train_command
from .commands.weights import app as weights_app

app = typer.Typer(
    name="arcvae",
    help="Train a Beta-VAE on 16x16 ARC-style colour grids, with class weights from classweights.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
app.add_typer(weights_app, name="weights")
app.add_typer(data_app, name="data")
app.add_typer(study_app, name="study")
app.command("train")(train_command)
app.command("show")(show_command)


def _version(value: bool) -> None:
    if value:
        from . import __version__

        typer.echo(f"arcvae {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Train a Beta-VAE on 16x16 ARC-style colour grids, with class weights from classweights."""


def main() -> None:
    """Entry point of the ``arcvae`` console script."""
    import signal

    from .commands._common import raise_terminated

    signal.signal(signal.SIGTERM, raise_terminated)  # unwind like Ctrl-C: interrupted writes are cleaned up
    app()
