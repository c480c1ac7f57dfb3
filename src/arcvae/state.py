"""What a training run carries from step to step: the model, its optimiser and schedules, the counters.

:meth:`TrainingState.start` builds it for a run; the loops (:mod:`arcvae.loop`)
advance it; a checkpoint saves it and a resumed run restores it
(:mod:`arcvae.checkpoints`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .config import TrainConfig
from .distributed import Dist
from .errors import ArcvaeError
from .losses import BetaSchedule, FocalLoss, focal_loss
from .model import BetaVAE
from .report import Reporter
from .run_data import RunData
from .run_files import BackgroundWriter, MetricsLog
from .tracking import NullTracker, Tracker
from .weight_cache import ClassWeights, WeightSpec
from .weights import batch_weights


@dataclass
class TrainingState:
    """One run's model and optimiser, its schedules, where it logs, and its counters (a checkpoint saves them)."""

    config: TrainConfig
    run_dir: Path
    model: BetaVAE
    net: torch.nn.Module  # what the training step calls: the model, or its DistributedDataParallel wrapper
    loss_fn: FocalLoss
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    schedule: BetaSchedule
    loader_rng: torch.Generator  # shuffles the training split (one process)
    device: torch.device
    group: Dist
    report: Reporter
    weights: ClassWeights | None
    per_batch: WeightSpec | None  # normal mode with --weights-from batch: how each training batch weighs itself
    data_fingerprint: dict[str, str | None]  # content digests of the splits trained on
    first_bad_step: torch.Tensor  # on the device; -1 while every loss and gradient is finite
    step: int = 0
    best_val: float = -math.inf  # best validation balanced accuracy (of an epoch that beat an all-black model)
    best_epoch: int | None = None  # the epoch (1-based) that scored it, saved as best.pt
    stale: int = 0  # epochs since it improved, counted once the beta schedule has settled
    log: MetricsLog | None = None  # metrics.jsonl (rank 0)
    tracker: Tracker = field(default_factory=NullTracker)  # Weights & Biases with --wandb (rank 0)
    writer: BackgroundWriter = field(default_factory=BackgroundWriter)  # writes checkpoints while training goes on

    @classmethod
    def start(
        cls,
        config: TrainConfig,
        run_dir: Path,
        data: RunData,
        weights: ClassWeights | None,
        *,
        device: torch.device,
        group: Dist,
        report: Reporter,
    ) -> TrainingState:
        """A new model, its focal loss and optimiser, and the learning-rate and beta schedules over the run.

        Under ``torchrun`` the model is wrapped in ``DistributedDataParallel``
        (gradients are averaged over the processes) and each rank draws its own noise.
        """
        model = BetaVAE(config.num_colors, config.latent_dim).to(device)
        loss_fn = FocalLoss(alpha=None if weights is None else weights.weights, gamma=config.focal_gamma).to(device)
        optimizer = make_optimizer(model.parameters(), config.lr)
        scheduler = make_scheduler(optimizer, config, _steps_per_epoch(config, data, group))
        schedule = BetaSchedule(
            config.beta_schedule,
            config.beta_max,
            config.beta_warmup_epochs,
            config.beta_ramp_epochs,
            config.beta_cycle_epochs,
        )
        per_batch = None
        if config.per_batch_weights:
            per_batch = WeightSpec(config.num_colors, config.weights_method, config.weights_smooth)
        net: torch.nn.Module = model
        if group.enabled:
            net = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None
            )
            torch.manual_seed(config.seed + 1000 * group.rank)
        return cls(
            config=config,
            run_dir=run_dir,
            model=model,
            net=net,
            loss_fn=loss_fn,
            optimizer=optimizer,
            scheduler=scheduler,
            schedule=schedule,
            loader_rng=torch.Generator().manual_seed(config.seed),
            device=device,
            group=group,
            report=report,
            weights=weights,
            per_batch=per_batch,
            data_fingerprint=data.fingerprint,
            first_bad_step=torch.tensor(-1, device=device),
        )

    def reconstruction_loss(self, logits: torch.Tensor, grids: torch.Tensor) -> torch.Tensor:
        """The focal loss of a training step: with the run's weights, or those counted on ``grids`` (per batch)."""
        if self.per_batch is None:
            return self.loss_fn(logits, grids)
        alpha = batch_weights(grids, self.per_batch, self.group)
        return focal_loss(logits, grids, alpha, self.config.focal_gamma)

    def step_scheduler(self) -> None:
        """Advance the learning rate one step; at the end of its cosine it stays at the floor (``min_lr``)."""
        if self.scheduler.last_epoch < self.scheduler.T_max:  # type: ignore[attr-defined]
            self.scheduler.step()

    def check_finite(self, loss: torch.Tensor | None = None) -> None:
        """Stop, before anything is logged or saved, if a loss or gradient has gone non-finite."""
        first = int(self.first_bad_step)
        if first >= 0:
            raise ArcvaeError(
                f"the loss or its gradients became non-finite (NaN or inf) at step {first}; "
                "stopping without saving a checkpoint (try a lower --lr)"
            )
        if loss is not None and not math.isfinite(float(loss)):
            raise ArcvaeError(
                f"the loss became {float(loss)} at step {self.step}; stopping without saving a checkpoint (try a lower --lr)"
            )

    def record(self, record: dict[str, Any]) -> None:
        """Write ``record`` to metrics.jsonl and the tracker (rank 0 alone has them)."""
        if self.log is not None:
            self.log.write(record)
            self.tracker.log(record, step=self.step)


def make_optimizer(params: Any, lr: float) -> torch.optim.Optimizer:
    """Adam; its fused kernel where this torch has one (5-15% faster steps on CPU, same update rule)."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError, ValueError):  # older torch, or a device without the fused kernel
        return torch.optim.Adam(params, lr=lr)


def make_scheduler(
    optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.CosineAnnealingLR:
    """The learning rate, cosine-annealed per step from ``lr`` to ``min_lr`` over ``config.schedule_epochs``.

    In overfit mode the cosine spans a fixed number of epochs, so the rate at
    step k is the same whatever ``--epochs``; a run longer than the cosine
    stays at ``min_lr`` (:meth:`TrainingState.step_scheduler`).
    """
    steps = max(1, config.schedule_epochs * steps_per_epoch)
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps, eta_min=config.min_lr)


def _steps_per_epoch(config: TrainConfig, data: RunData, group: Dist) -> int:
    if config.overfit_batch:
        return config.steps_per_overfit_epoch
    # under torchrun each process takes ceil(N / world) grids per epoch in batches of batch_size // world
    return math.ceil(math.ceil(len(data.train_grids) / group.world) / (config.batch_size // group.world))
