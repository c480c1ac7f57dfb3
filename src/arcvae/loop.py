"""The training loops: overfit one batch, or train on the split and validate each epoch.

Each loop advances a :class:`~arcvae.state.TrainingState` one step at a time;
a step's stages are labelled (forward, backward, step), and so are the loop's
(log, evaluate, checkpoint, stop). The loops return the run's result; they
print through the state's reporter.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from . import checkpoints
from .config import TrainConfig
from .distributed import SINGLE, Dist
from .losses import FocalLoss, kl_divergence
from .metrics import Tally, one_colour_score
from .model import BetaVAE, predictions
from .run_data import RunData
from .run_files import MetricsLog, RunResult, truncate_metrics
from .state import TrainingState
from .tracking import open_tracker

Losses = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # the loss, its reconstruction term and its KL term


def train_epochs(state: TrainingState, data: RunData, start_epoch: int) -> RunResult:
    """Train from ``start_epoch`` in the run's mode, logging to ``metrics.jsonl`` and the tracker (rank 0).

    The log keeps the records up to the state's step: a fresh run starts an
    empty one, a resumed run drops what was logged after its checkpoint.
    """
    config = state.config
    if state.group.is_main:
        truncate_metrics(state.run_dir / "metrics.jsonl", state.step, state.report.warn)
        state.log = MetricsLog(state.run_dir / "metrics.jsonl")
        state.tracker = open_tracker(
            config.wandb,
            config=config.to_dict(),
            run_dir=state.run_dir,
            name=state.run_dir.name,
            warn=state.report.warn,
        )
    try:
        if data.batch is not None:
            return overfit_loop(state, data.batch, start_epoch, config.epochs_to_run)
        assert data.val_grids is not None
        return normal_loop(state, data.train_grids, data.val_grids, start_epoch, config.epochs_to_run)
    finally:
        try:
            state.writer.wait()  # the last checkpoint is on disk, also when the loop was interrupted
        finally:
            if state.log is not None:
                state.log.close()


def overfit_loop(state: TrainingState, batch: torch.Tensor, start_epoch: int, epochs: int) -> RunResult:
    """Train on ``batch`` again and again, evaluating it every ``log_every_n_steps``, until it is memorised."""
    config, report = state.config, state.report
    grids = len(batch)
    batch = batch[state.group.shard(grids)]  # under torchrun: this process's share of the batch
    repeats = config.steps_per_overfit_epoch
    final: dict[str, Any] = {}
    report.print()
    for epoch in range(start_epoch, epochs):
        tally = Tally.zeros(config.num_colors, state.device)
        reached = False
        with report.epoch_bar(f"Epoch {epoch + 1}/{epochs} [Train]", repeats) as bar:
            for i in range(repeats):
                beta = state.schedule(epoch + i / repeats)
                losses = train_step(state, batch, beta, tally)
                bar.advance()
                # log and evaluate every log_every_n_steps (the only host syncs of the loop)
                if state.step % config.log_every_n_steps == 0 or i == repeats - 1:
                    final = _evaluate(state, batch, beta)
                    record = log_step(state, epoch, beta, losses, tally, {f"eval_{k}": v for k, v in final.items()})
                    bar.show(
                        loss=record["loss"], acc=final["pixel_accuracy"], fg=final["foreground_accuracy"] or 0.0, β=beta
                    )
                    report.per_class(final["per_class_accuracy"])
                    tally = Tally.zeros(config.num_colors, state.device)
                    # stop: the batch is memorised, by the target's measure
                    if reached_target(final, config):
                        reached = True
                        break
        done = reached or epoch + 1 == epochs
        state.record(_epoch_record(state, epoch, "eval", final))
        checkpoints.save_state(state, epoch + 1, finished=done, reached_target=reached, final=final)
        if reached:
            report.overfit_reached(final, config, grids, state.run_dir)
            return RunResult(state.run_dir, epoch + 1, state.step, True, final)  # the same decision on every rank
    report.overfit_missed(final, config, grids, epochs, state.run_dir)
    return RunResult(state.run_dir, epochs, state.step, False, final)


def reached_target(final: dict[str, Any], config: TrainConfig) -> bool:
    """Whether an evaluation reaches ``--target-accuracy`` in ``--target-metric`` (a metric without a value does not)."""
    value = final.get(config.target_key)
    return value is not None and value >= config.target_accuracy


def normal_loop(
    state: TrainingState, train_grids: np.ndarray, val_grids: np.ndarray, start_epoch: int, epochs: int
) -> RunResult:
    """Train on shuffled batches of ``train_grids``, validate each epoch, keep the best and stop when it stalls."""
    config, report = state.config, state.report
    train_loader, sampler = _train_loader(state, train_grids)
    val_loader = DataLoader(
        TensorDataset(torch.from_numpy(val_grids[state.group.shard(len(val_grids))])), batch_size=512
    )
    final: dict[str, Any] = {}
    epochs_run = start_epoch
    report.print()
    for epoch in range(start_epoch, epochs):
        epochs_run = epoch + 1
        if sampler is not None:
            sampler.set_epoch(epoch)
        tally = Tally.zeros(config.num_colors, state.device)
        with report.epoch_bar(f"Epoch {epoch + 1}/{epochs} [Train]", len(train_loader)) as bar:
            for i, (grids,) in enumerate(train_loader):
                grids = grids.to(state.device, non_blocking=True).long()
                beta = state.schedule(epoch + i / len(train_loader))
                losses = train_step(state, grids, beta, tally)
                bar.advance()
                if state.step % config.log_every_n_steps == 0:
                    record = log_step(state, epoch, beta, losses, tally)
                    bar.show(loss=record["loss"], acc=record["pixel_accuracy"], β=beta)
                    tally = Tally.zeros(config.num_colors, state.device)
        # evaluate
        final = _evaluate(state, val_loader, state.schedule(epoch + 1))
        state.check_finite(torch.tensor(final["loss"]))
        improved = _track_best(state, epoch, final)
        state.record(_epoch_record(state, epoch, "val", final))
        report.validation(final, improved=improved)
        # checkpoint and stop
        stop = state.stale >= config.patience
        checkpoints.save_state(state, epoch + 1, finished=stop or epoch + 1 == epochs, final=final)
        if improved:
            checkpoints.save_state(state, epoch + 1, "best.pt", final=final)
        if stop:
            report.print(
                f"Early stopping: the validation balanced accuracy has not improved for {config.patience} epochs."
            )
            break
    report.best(state.run_dir, state.best_epoch, state.best_val, one_colour_score(final.get("per_class_accuracy", [])))
    best = None if state.best_epoch is None else state.best_val
    return RunResult(state.run_dir, epochs_run, state.step, False, final, best, state.best_epoch)


def train_step(state: TrainingState, grids: torch.Tensor, beta: float, tally: Tally) -> Losses:
    """One optimiser step on ``grids``; adds its predictions to ``tally``. No host sync."""
    # forward
    logits, mu, logvar = state.net(grids)
    recon = state.reconstruction_loss(logits, grids)
    kl = kl_divergence(mu, logvar, state.config.free_bits)
    loss = recon + beta * kl
    # backward, step
    state.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    clip = state.config.grad_clip if state.config.grad_clip > 0 else math.inf
    norm = torch.nn.utils.clip_grad_norm_(state.model.parameters(), clip)
    state.step += 1
    # remember the first step with a non-finite loss or gradient, without a host sync (checked at log steps and saves)
    bad = ~(torch.isfinite(norm) & torch.isfinite(loss.detach()))
    state.first_bad_step = torch.where(bad & (state.first_bad_step < 0), state.step, state.first_bad_step)
    state.optimizer.step()
    state.step_scheduler()
    tally.update(predictions(logits.detach()), grids)
    return loss.detach(), recon.detach(), kl.detach()


@torch.no_grad()
def evaluate(
    model: BetaVAE,
    loss_fn: FocalLoss,
    grids: torch.Tensor | DataLoader,
    *,
    beta: float,
    beta_max: float,
    free_bits: float,
    group: Dist = SINGLE,
) -> dict[str, Any]:
    """Reconstruct from ``mu`` in eval mode; return loss terms and metrics.

    ``loss`` uses the current ``beta``; ``objective`` uses ``beta_max``, so it
    compares fairly across epochs whatever the schedule (early stopping and
    ``best.pt`` use it). Under ``torchrun`` each rank evaluates its share of
    the grids and the sums are added up, so every rank returns the same numbers.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    tally = Tally.zeros(model.num_colors, device)
    recon_sum = kl_sum = torch.zeros((), device=device)
    n = 0
    for batch in [grids] if isinstance(grids, torch.Tensor) else grids:
        batch = (batch[0] if isinstance(batch, (list, tuple)) else batch).to(device, non_blocking=True).long()
        logits, mu, logvar = model(batch)
        recon_sum = recon_sum + loss_fn(logits, batch) * len(batch)
        kl_sum = kl_sum + kl_divergence(mu, logvar, free_bits) * len(batch)
        tally.update(predictions(logits), batch)
        n += len(batch)
    model.train(was_training)
    count = torch.tensor(float(n), dtype=torch.float64, device=device)
    sums = group.sum_(torch.stack([recon_sum.double(), kl_sum.double(), count]))
    recon, kl = float(sums[0]) / float(sums[2]), float(sums[1]) / float(sums[2])
    return {
        "loss": recon + beta * kl,
        "objective": recon + beta_max * kl,
        "recon_loss": recon,
        "kl": kl,
        "beta": beta,
        **tally.summed(group.sum_).summary(),
    }


def log_step(
    state: TrainingState, epoch: int, beta: float, losses: Losses, tally: Tally, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Record a ``step`` line of ``metrics.jsonl``: the step's losses (averaged over the processes) and the tally."""
    terms = torch.stack(losses).double()
    if state.group.enabled:  # the mean over the processes' shares of the batch
        terms = state.group.sum_(terms) / state.group.world
    loss, recon, kl = terms.unbind()
    state.check_finite(loss)
    record = {
        "type": "step",
        "epoch": epoch + 1,
        "step": state.step,
        "loss": float(loss),
        "recon_loss": float(recon),
        "kl": float(kl),
        "beta": beta,
        "lr": state.scheduler.get_last_lr()[0],
        **tally.summed(state.group.sum_).summary(),
    }
    if extra:
        record.update(extra)
    state.record(record)
    return record


def _evaluate(state: TrainingState, grids: torch.Tensor | DataLoader, beta: float) -> dict[str, Any]:
    config = state.config
    return evaluate(
        state.model,
        state.loss_fn,
        grids,
        beta=beta,
        beta_max=config.beta_max,
        free_bits=config.free_bits,
        group=state.group,
    )


def _epoch_record(state: TrainingState, epoch: int, split: str, final: dict[str, Any]) -> dict[str, Any]:
    """The ``epoch`` line of ``metrics.jsonl``: the learning rate and the last evaluation, its keys under ``split``."""
    learning_rate = state.scheduler.get_last_lr()[0]
    evaluation = {f"{split}_{key}": value for key, value in final.items()}
    return {"type": "epoch", "epoch": epoch + 1, "step": state.step, "lr": learning_rate, **evaluation}


def _train_loader(state: TrainingState, train_grids: np.ndarray) -> tuple[DataLoader, DistributedSampler | None]:
    """Shuffled batches of ``train_grids``; under ``torchrun`` each process takes its share of every (global) batch."""
    train_set = TensorDataset(torch.from_numpy(train_grids))
    config, group, pin = state.config, state.group, state.device.type == "cuda"
    if not group.enabled:
        return DataLoader(
            train_set, batch_size=config.batch_size, shuffle=True, generator=state.loader_rng, pin_memory=pin
        ), None
    sampler = DistributedSampler(train_set, num_replicas=group.world, rank=group.rank, shuffle=True, seed=config.seed)
    return DataLoader(train_set, batch_size=config.batch_size // group.world, sampler=sampler, pin_memory=pin), sampler


def _track_best(state: TrainingState, epoch: int, final: dict[str, Any]) -> bool:
    """Whether this epoch is the best so far (``best.pt``); update the best and the epochs since it improved.

    The criterion is the validation balanced accuracy (the mean per-colour
    accuracy), and an epoch counts only if it beats predicting one colour
    everywhere: an all-black model is never the best. Once beta reaches its
    final value, the epochs trained before it stop competing (and their
    ``best.pt`` is removed): a model trained without the KL term's full
    weight is not the VAE the run is for.
    """
    settled = state.schedule.settled_epoch
    if epoch < settled <= epoch + 1:  # beta has just reached its final value: earlier epochs do not compete
        state.best_val, state.best_epoch, state.stale = -math.inf, None, 0
        checkpoints.remove(state, "best.pt")
    score = final["balanced_accuracy"]
    floor = one_colour_score(final["per_class_accuracy"])
    improved = score is not None and score > max(state.best_val, floor)
    if improved:
        state.best_val, state.best_epoch, state.stale = score, epoch + 1, 0
    elif epoch + 1 >= settled:  # patience counts only once beta has stopped moving
        state.stale += 1
    return improved
