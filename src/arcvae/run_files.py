"""The files a run writes in its folder, and the grids it trained on.

``config.json`` and ``class_weights.json`` when it starts, ``metrics.jsonl`` as
it trains, ``result.json``, ``reconstructions.png`` and ``curves.png`` when it
ends. The checkpoints are :mod:`arcvae.checkpoints`' (with :func:`load_run`,
which reads a run's model back), written by a :class:`BackgroundWriter`; who
may write the folder is :mod:`arcvae.rundir`'s.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

import classweights

from .config import TrainConfig
from .data import load_split
from .errors import ArcvaeError
from .model import BetaVAE, reconstruct

if TYPE_CHECKING:
    from .report import Reporter

PICTURE_GRIDS = 8  # grids shown in a run's reconstructions.png


class BackgroundWriter:
    """Writes one file at a time in a thread of its own, so that training goes on while a checkpoint reaches the disk.

    A write first waits for the one before it; :meth:`wait` returns once the
    last file is on disk, and raises the error of a write that failed. The
    thread is not a daemon: the interpreter finishes a write before it exits.
    """

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def write(self, path: Path, data: bytes) -> None:
        self.wait()
        thread = threading.Thread(target=self._write, args=(path, data), name=f"arcvae: write {path.name}")
        thread.start()  # before it is kept: wait() never joins a thread that did not start
        self._thread = thread

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        error, self._error = self._error, None
        if error is not None:
            raise error

    def _write(self, path: Path, data: bytes) -> None:
        try:
            classweights.atomic_write_bytes(path, data)
        except BaseException as exc:  # noqa: BLE001 - handed to the training thread by wait()
            self._error = exc


@dataclass
class RunResult:
    """What a finished run reports back."""

    run_dir: Path
    epochs_run: int
    steps: int
    reached_target: bool
    final: dict[str, Any] = field(default_factory=dict)  # last evaluation metrics
    best_val_balanced_accuracy: float | None = None  # normal mode: the validation balanced accuracy of best.pt
    best_epoch: int | None = None  # normal mode: the epoch best.pt holds (None: no epoch beat an all-black model)
    model: BetaVAE | None = None  # the trained model (None when a finished run is only reported)
    class_weights: torch.Tensor | None = None  # the weights the loss used (None without class weights)

    def record(self, *, overfit: bool) -> dict[str, Any]:
        """What ``result.json`` holds."""
        return {
            "run_dir": str(self.run_dir.resolve()),
            "epochs_run": self.epochs_run,
            "steps": self.steps,
            "reached_target": self.reached_target if overfit else None,
            "best_epoch": self.best_epoch,
            "best_val_balanced_accuracy": self.best_val_balanced_accuracy,
            "final": self.final,
        }

    @classmethod
    def of_checkpoint(cls, run_dir: Path, checkpoint: dict[str, Any]) -> RunResult:
        """The result a finished run's last checkpoint holds."""
        best_epoch = checkpoint.get("best_epoch")
        return cls(
            run_dir,
            int(checkpoint["epoch"]),
            int(checkpoint["step"]),
            bool(checkpoint.get("reached_target", False)),
            dict(checkpoint.get("final") or {}),
            None if best_epoch is None else float(checkpoint["best_val"]),
            best_epoch,
        )


def write_json(path: Path, value: Any) -> None:
    """``config.json``, ``result.json``: indented JSON, written atomically."""
    classweights.atomic_write_bytes(path, (json.dumps(value, indent=2) + "\n").encode())


# ----------------------------------------------------------- metrics.jsonl ----


class MetricsLog:
    """Appends one JSON object per line to ``metrics.jsonl``."""

    def __init__(self, path: Path) -> None:
        self._file = path.open("a", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def truncate_metrics(path: Path, step: int, warn: Callable[[str], None]) -> None:
    """Keep the records of ``metrics.jsonl`` up to ``step`` (the checkpoint's), so a resumed run logs each step once.

    A log torn by a crash or a full disk (a partial last line, NUL bytes) is
    cut at its last complete record, with one warning; nothing after a torn
    line is trusted.
    """
    if not path.exists():
        return
    kept: list[str] = []
    torn = False
    for line in path.read_bytes().split(b"\n"):
        if not line.strip():
            continue
        record = _record(line)
        if record is None:
            torn = True
            break
        if record.get("step", 0) <= step:
            kept.append(line.decode("utf-8"))
    if torn:
        warn(f"{path} ends in a damaged line (an interrupted write); it is cut back to its last complete record")
    classweights.atomic_write_bytes(path, "".join(line + "\n" for line in kept).encode())


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The records of a run's ``metrics.jsonl``."""
    text = (run_dir / "metrics.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _record(line: bytes) -> dict[str, Any] | None:
    try:
        record = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    if (
        not isinstance(record, dict)
        or not isinstance(record.get("step", 0), int)
        or isinstance(record.get("step"), bool)
    ):
        return None
    return record


# ---------------------------------------------------------------- pictures ----


def save_pictures(run_dir: Path, model: BetaVAE, grids: torch.Tensor, report: Reporter) -> None:
    """``reconstructions.png`` (the first grids over their reconstructions) and ``curves.png`` in the run folder.

    Pictures are a convenience: if they cannot be drawn or written, the run
    still succeeds, with one warning.
    """
    grids = grids[:PICTURE_GRIDS]
    try:
        from .plots import save_curves, save_reconstructions

        originals = grids.cpu().numpy().astype(np.uint8)
        save_reconstructions(originals, reconstruct(model, grids), run_dir / "reconstructions.png")
        save_curves(read_metrics(run_dir), run_dir / "curves.png")
    except (ImportError, OSError, ValueError, RuntimeError) as exc:
        report.warn(f"could not draw the run's pictures ({type(exc).__name__}: {exc}); the run itself is complete")
        return
    report.print(f"[RUN] Pictures: {run_dir / 'reconstructions.png'}, {run_dir / 'curves.png'}")


# ---------------------------------------------- the grids a run trained on ----


def grids_trained_on(config: TrainConfig, split: str, n: int) -> tuple[np.ndarray, str]:
    """The first ``n`` grids of ``split`` a run trained on (its batch in overfit mode), and a phrase saying which.

    Raises:
        ArcvaeError: the run's corpus is gone.
    """
    if config.data is None or not Path(config.data).exists():
        raise ArcvaeError(
            f"the run's corpus {config.data!r} is missing; it is needed to show the grids the run trained on"
        )
    if config.overfit_batch:
        batch = load_split(config.data, "train")[: config.overfit_samples]
        return batch[:n], f"{min(n, len(batch))} of the {len(batch)} grids of the overfit batch"
    grids = load_split(config.data, split)[:n]
    return grids, f"the first {len(grids)} grids of the {split} split of {config.data}"
