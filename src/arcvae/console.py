"""The one way arcvae makes a Rich console (imports only Rich, so the CLI stays light)."""

from __future__ import annotations

from rich.console import Console


def default_console(*, stderr: bool = False) -> Console:
    """Lines are never wrapped; output that is not a terminal (logs, pipes) gets 120 columns.

    Strings are printed as they are: Rich markup is off, so a path or a value
    holding ``[/]`` or ``[red]`` is shown literally (styles come from ``Text``
    objects and ``style=`` arguments, never from the text itself).
    """
    console = Console(highlight=False, soft_wrap=True, stderr=stderr, markup=False)
    return (
        console
        if console.is_terminal
        else Console(highlight=False, soft_wrap=True, stderr=stderr, width=120, markup=False)
    )
