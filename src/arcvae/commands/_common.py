"""What every command shares: turning user errors into one red line and exit code 1."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer

from ..errors import ArcvaeError

F = TypeVar("F", bound=Callable[..., Any])


def is_user_error(exc: BaseException) -> bool:
    """ArcvaeError, or classweights' ClassWeightError (checked without importing classweights, which brings torch)."""
    if isinstance(exc, ArcvaeError):
        return True
    library = sys.modules.get("classweights")  # a ClassWeightError was raised by it, so it is imported
    return library is not None and isinstance(exc, library.ClassWeightError)


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print ``error: message`` in red on stderr; return the Exit to raise."""
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 alone reports (every rank meets the same error)
        styled_line("error:", "bold red", message)
    return typer.Exit(code)


def warn(message: str) -> None:
    """Print ``warning: message`` in yellow on stderr (the message literally)."""
    styled_line("warning:", "yellow", message)


def styled_line(label: str, style: str, message: str) -> None:
    from rich.text import Text

    from ..console import default_console

    default_console(stderr=True).print(Text.assemble((label, style), " ", message))


class Terminated(BaseException):
    """SIGTERM (``kill``, a job scheduler, torchrun stopping its workers), raised in the main thread like Ctrl-C's
    KeyboardInterrupt, so that a write in progress is undone (no temporary file is left) before the process ends."""


def raise_terminated(signum: int, frame: object) -> None:
    raise Terminated


def user_errors(command: F) -> F:
    """Decorate a command: bad input and I/O failures end in one line on stderr and exit 1."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except KeyboardInterrupt:
            raise fail("interrupted", 130) from None
        except Terminated:
            raise fail("terminated", 143) from None
        except OSError as exc:
            where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
            raise fail(f"{exc.strerror or exc}{where}") from None
        except Exception as exc:
            if is_user_error(exc):
                raise fail(str(exc)) from None
            raise

    return wrapper  # type: ignore[return-value]
