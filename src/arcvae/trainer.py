"""Training: one run of the Beta-VAE, from its data to its results.

:func:`train` is the whole job, in the order it happens: where it runs, the
data, the class weights, the run folder, the model, the loop, the results.
Each stage is one call into the module that does it; the console output is
the :class:`~arcvae.report.Reporter`'s.
"""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from . import runtime
from .checkpoints import check_same_data, data_digest_algorithm, load_checkpoint, restore_state
from .config import TrainConfig
from .distributed import Dist
from .loop import train_epochs
from .model import count_parameters
from .report import Reporter
from .run_data import load_run_data
from .run_files import RunResult, save_pictures, write_json
from .rundir import check_fresh, claim_run_dir, new_run_dir
from .state import TrainingState
from .weight_cache import DIGEST_ALGORITHM, ClassWeights, save_weights_record
from .weights import run_weights


def train(
    config: TrainConfig, report: Reporter | None = None, *, resume: str | Path | None = None, device: str | None = None
) -> RunResult:
    """Run one training job; see :class:`TrainConfig` for every option.

    With ``resume`` (a run folder), the configuration and state come from its
    last checkpoint and training continues where it stopped; ``device``
    overrides the saved device. A finished run is reported, not retrained.
    """
    resumed = None if resume is None else Path(resume)
    config, checkpoint = _starting_point(config, resumed, device)
    group, device_used = runtime.start(config.device)  # under torchrun: join the process group
    report = (report or Reporter()) if group.is_main else Reporter(Console(quiet=True))  # rank 0 alone prints
    if resumed is not None and checkpoint is not None and checkpoint["finished"]:
        report.print(
            f"[RESUME] {resumed} already finished after epoch {checkpoint['epoch']} (step {checkpoint['step']}); nothing to do."
        )
        return RunResult.of_checkpoint(resumed, checkpoint)
    with contextlib.ExitStack() as claims:  # the run folder is this run's alone from its claim to the end
        run_dir = _run_dir(config, resumed, checkpoint, group, report, claims)
        runtime.seed_everything(config.seed)

        # data
        report.section("Loading data...")
        # a run resumed from an earlier version checks (and goes on recording) its data with the hash it started with
        algorithm = (checkpoint is not None and data_digest_algorithm(checkpoint)) or DIGEST_ALGORITHM
        data = load_run_data(config, report, group, device_used, algorithm)
        config.data = str(data.path)
        report.data(config, data, group, device_used)

        # class weights, from the full training split (also in overfit mode); a resumed run keeps its own
        report.weights_started(config, data.path, resumed=checkpoint is not None)
        progress = report.counting_progress(len(data.train.grids))
        weights = run_weights(config, data, checkpoint=checkpoint, progress=progress, group=group)
        report.weights_resolved(weights, batch=data.batch, processes=group.world)
        data.fingerprint["train"] = data.train_digest(weights, group)
        if checkpoint is not None:
            check_same_data(run_dir, checkpoint, data.path, data.fingerprint)

        # the run folder: claimed and written (by rank 0) only once data and weights are known to be good
        if config.out is not None:
            config.out = str(run_dir.resolve())
        if checkpoint is None:
            claims.enter_context(claim_run_dir(run_dir, new=True, group=group))
        if group.is_main:
            _write_start(run_dir, config, None if checkpoint is not None else weights, report)

        # model
        report.section("Creating model...")
        state = TrainingState.start(config, run_dir, data, weights, device=device_used, group=group, report=report)
        report.model(config, weights, parameters=count_parameters(state.model), device=device_used)
        start_epoch = 0 if checkpoint is None else restore_state(state, checkpoint)

        # the loop
        result = train_epochs(state, data, start_epoch)

        # results
        if group.enabled:
            group.check_identical(
                torch.cat([p.detach().reshape(-1) for p in state.model.parameters()]), "model parameters"
            )
            report.print(f"[DDP] Class weights and final model parameters are identical on all {group.world} processes")
        if group.is_main:
            record = result.record(overfit=config.overfit_batch)
            write_json(run_dir / "result.json", record)
            state.tracker.finish(record)
            save_pictures(run_dir, state.model, data.shown_grids(), report)
        group.barrier()  # no process leaves (and tears the group down) while rank 0 still writes
    return dataclasses.replace(result, model=state.model, class_weights=None if weights is None else weights.weights)


def _starting_point(
    config: TrainConfig, resume: Path | None, device: str | None
) -> tuple[TrainConfig, dict[str, Any] | None]:
    """The run's configuration and, with ``resume``, the checkpoint it continues from (whose options apply)."""
    if resume is None:
        return dataclasses.replace(config), None  # resolved paths are written into this copy, not the caller's
    checkpoint = load_checkpoint(resume / "checkpoints" / "last.pt")
    config = TrainConfig.from_dict(checkpoint["config"])
    if device is not None:
        config.device = device  # type: ignore[assignment]
    return config, checkpoint


def _run_dir(
    config: TrainConfig,
    resume: Path | None,
    checkpoint: dict[str, Any] | None,
    group: Dist,
    report: Reporter,
    claims: contextlib.ExitStack,
) -> Path:
    """The run folder: a resumed run's own, claimed at once; or a new one, checked now and claimed later."""
    if resume is not None and checkpoint is not None:
        claims.enter_context(claim_run_dir(resume, new=False, group=group))
        report.print(f"[RESUME] {resume}: continuing after epoch {checkpoint['epoch']} (step {checkpoint['step']})")
        return resume
    run_dir = Path(group.broadcast(str(new_run_dir(config.out, overfit=config.overfit_batch)) if group.is_main else ""))
    check_fresh(run_dir)
    return run_dir


def _write_start(run_dir: Path, config: TrainConfig, new_weights: ClassWeights | None, report: Reporter) -> None:
    """``config.json``, and the weights of a new run in ``class_weights.json``."""
    (run_dir / "checkpoints").mkdir(exist_ok=True)
    write_json(run_dir / "config.json", config.to_dict())
    if new_weights is not None:
        save_weights_record(new_weights, run_dir / "class_weights.json", source=str(config.data), key="train")
        report.weights_saved(run_dir / "class_weights.json")
