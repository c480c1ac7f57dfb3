"""The ``arcvae`` command line."""

from __future__ import annotations

import typer

app = typer.Typer(name="arcvae", help="Train a Beta-VAE on 16x16 ARC-style colour grids, with class weights.", no_args_is_help=True)


@app.callback()
def _root() -> None:
    """Train a Beta-VAE on 16x16 ARC-style colour grids, with class weights."""


def main() -> None:
    """Entry point of the ``arcvae`` console script."""
    app()
