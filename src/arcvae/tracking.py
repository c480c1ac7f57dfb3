"""Experiment tracking for arcvae runs: Weights & Biases as an optional extra.

``open_tracker(False, ...)`` gives a :class:`NullTracker`, which does nothing and
needs nothing installed. ``open_tracker(True, ...)`` imports ``wandb`` only then
(``pip install "classweights[wandb]"``) and starts a run whose files go under
``<run_dir>/wandb``. wandb's own environment variables are left to wandb:
``WANDB_MODE=offline`` logs without an account or network (``wandb sync`` uploads
later), ``WANDB_MODE=disabled`` turns it off, and ``WANDB_PROJECT`` wins over the
``project`` argument, which is only the default.

Tracking never stops training: the first exception raised by wandb while logging
or finishing is reported once through ``warn``, and from then on the tracker
does nothing (wandb's own exit hook still closes the run when Python exits).

Key scheme
----------
:func:`flatten_record` turns one record of ``metrics.jsonl`` into the flat
``{key: float}`` that wandb plots; the record's ``step`` is passed to wandb as
``step=`` instead.

* ``type`` picks the section of the plain metrics: ``"step"`` records (the
  training loop's every-N-steps logs) go under ``train/``, any other type under
  its own name (``"epoch"`` records under ``epoch/``, e.g. ``epoch/lr``); a record
  without a type keeps its keys bare.
* A key starting with a split name, ``train_``, ``val_``, ``eval_`` or ``test_``,
  goes under that split whatever the type: ``val_loss`` is ``val/loss`` and
  ``eval_pixel_accuracy`` (the overfit mode's evaluation of its batch) is
  ``eval/pixel_accuracy``.
* ``epoch`` stays bare, so that wandb can use it as an x-axis; ``step`` and
  ``type`` are not logged as values.
* Lists are expanded by index and dicts by key, joined with ``/``:
  ``per_class_accuracy`` becomes ``per_class_accuracy/0`` .. ``/9``.
* Numbers (bools too) become floats, NaN and inf included; ``None`` (a class
  absent from the targets, a foreground accuracy with no foreground) and strings
  are dropped. Arrays and tensors are read through their ``tolist()``.

>>> flatten_record({"type": "step", "epoch": 1, "step": 50, "loss": 0.5,
...                 "per_class_accuracy": [0.9, None, 0.25]})
{'epoch': 1.0, 'train/loss': 0.5, 'train/per_class_accuracy/0': 0.9, 'train/per_class_accuracy/2': 0.25}
>>> flatten_record({"type": "epoch", "epoch": 2, "step": 100, "lr": 0.001,
...                 "val_loss": 0.4, "val_foreground_accuracy": None})
{'epoch': 2.0, 'epoch/lr': 0.001, 'val/loss': 0.4}
"""

from __future__ import annotations

import numbers
import os
import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from .errors import ArcvaeError

__all__ = ["NullTracker", "Tracker", "WandbTracker", "flatten_record", "open_tracker", "require_wandb"]

INSTALL_HINT = 'pip install "classweights[wandb]"'
MISSING_WANDB = f"--wandb needs the optional wandb package: {INSTALL_HINT}"

#: key prefixes that name a data split: ``val_loss`` is logged as ``val/loss``
SPLITS = ("train", "val", "eval", "test")
#: the section of the plain metrics of each record type (other types use their own name)
SECTIONS = {"step": "train"}


@runtime_checkable
class Tracker(Protocol):
    """Where a training run sends its records; rank 0 only under torchrun."""

    def log(self, record: dict[str, Any], step: int) -> None:
        """Log one record (a line of ``metrics.jsonl``) at global step ``step``."""

    def finish(self, summary: dict[str, Any] | None = None) -> None:
        """Write the run's final ``summary`` (flattened like a record) and close the run."""


class NullTracker:
    """The tracker of a run without ``--wandb``: every call does nothing."""

    def log(self, record: dict[str, Any], step: int) -> None:
        pass

    def finish(self, summary: dict[str, Any] | None = None) -> None:
        pass

    def __repr__(self) -> str:
        return "NullTracker()"


def _warn_stderr(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class WandbTracker:
    """Logs flattened records to a wandb run (see the module docstring for the keys).

    The first exception wandb raises in :meth:`log` or :meth:`finish` is reported
    once through ``warn``; the tracker then does nothing, so the training goes on.
    """

    def __init__(self, run: Any, warn: Callable[[str], None] = _warn_stderr) -> None:
        self.run = run
        self._warn = warn
        self.active = True  # False once finished or after wandb failed

    def log(self, record: dict[str, Any], step: int) -> None:
        if not self.active:
            return
        values = flatten_record(record)
        try:
            self.run.log(values, step=int(step))
        except Exception as exc:  # noqa: BLE001 - whatever wandb raises, the training goes on
            self._fail("logging", exc)

    def finish(self, summary: dict[str, Any] | None = None) -> None:
        if not self.active:
            return
        try:
            if summary:
                self.run.summary.update(flatten_record(summary))
            self.run.finish()
        except Exception as exc:  # noqa: BLE001 - as in log()
            self._fail("finishing the run", exc)
        self.active = False

    def _fail(self, what: str, exc: Exception) -> None:
        self.active = False
        self._warn(f"wandb failed while {what} ({_one_line(exc)}); the run goes on without wandb")

    def __repr__(self) -> str:
        return f"WandbTracker({getattr(self.run, 'name', None)!r}, active={self.active})"


def flatten_record(record: Mapping[str, Any]) -> dict[str, float]:
    """The ``{key: float}`` that wandb logs for one record; the key scheme is in the module docstring."""
    kind = record.get("type")
    section = SECTIONS.get(kind, kind) if isinstance(kind, str) and kind else None
    out: dict[str, float] = {}
    for key, value in record.items():
        key = str(key)
        if key in ("type", "step"):
            continue
        if key == "epoch":
            _flatten_into(out, key, value)
            continue
        split, sep, rest = key.partition("_")
        if sep and rest and split in SPLITS:
            _flatten_into(out, f"{split}/{rest}", value)
        else:
            _flatten_into(out, f"{section}/{key}" if section else key, value)
    return out


def _flatten_into(out: dict[str, float], key: str, value: Any) -> None:
    if value is None or isinstance(value, (str, bytes)):
        return
    if isinstance(value, numbers.Real):  # bool, int, float, numpy scalars
        out[key] = float(value)
    elif isinstance(value, Mapping):
        for k, v in value.items():
            _flatten_into(out, f"{key}/{k}", v)
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _flatten_into(out, f"{key}/{i}", v)
    elif callable(getattr(value, "tolist", None)):  # numpy arrays and scalars, torch tensors
        _flatten_into(out, key, value.tolist())


def open_tracker(
    enabled: bool,
    *,
    config: dict[str, Any],
    run_dir: Path,
    name: str | None = None,
    wandb_group: str | None = None,
    project: str = "arcvae",
    warn: Callable[[str], None] = _warn_stderr,
) -> Tracker:
    """A :class:`NullTracker` when not ``enabled``, else a :class:`WandbTracker` on a new wandb run.

    ``config`` is the run's hyperparameters, ``run_dir`` the run folder (wandb
    writes under ``<run_dir>/wandb``), ``name`` and ``wandb_group`` the run's display
    name and its group in wandb, ``project`` the wandb project unless ``WANDB_PROJECT`` is set.
    ``WANDB_MODE`` (``online``, ``offline``, ``disabled``) is read by wandb itself.

    Raises:
        ArcvaeError: wandb is not installed (the message says how to install it),
            fails to import, or cannot start the run (e.g. online without a login).
    """
    if not enabled:
        return NullTracker()
    try:
        import wandb
    except ModuleNotFoundError as exc:
        if exc.name == "wandb":
            raise ArcvaeError(MISSING_WANDB) from None
        raise ArcvaeError(_broken_install(exc)) from exc  # wandb is there, one of its dependencies is not
    except Exception as exc:  # a broken install fails in many ways
        raise ArcvaeError(_broken_install(exc)) from exc
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        run = wandb.init(
            project=None if os.environ.get("WANDB_PROJECT") else project,  # None: wandb reads WANDB_PROJECT
            name=name,
            group=wandb_group,
            config=config,
            dir=str(run_dir),
            reinit=_finish_previous(getattr(wandb, "__version__", "")),
        )
    except Exception as exc:
        raise ArcvaeError(
            f"--wandb: wandb could not start a run ({_one_line(exc)}); "
            "log in with 'wandb login', or set WANDB_MODE=offline to log locally"
        ) from exc
    return WandbTracker(run, warn)


def _broken_install(exc: Exception) -> str:
    return f"--wandb: the wandb package could not be imported ({_one_line(exc)}); reinstall it: {INSTALL_HINT}"


def _finish_previous(version: str) -> str | bool:
    """``reinit`` that closes a run left open in this process: a string from wandb 0.19.10 on, True before."""
    parts = [int(p) for p in re.findall(r"\d+", version)[:3]]
    if parts and tuple(parts) < (0, 19, 10):
        return True
    return "finish_previous"


def require_wandb() -> None:
    """Fail early, in one line, if ``--wandb`` was asked for but the package is missing."""
    try:
        import wandb  # noqa: F401
    except ImportError:
        raise ArcvaeError(MISSING_WANDB) from None
