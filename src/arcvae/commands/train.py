"""``arcvae train``: parse the options into a TrainConfig and run it."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from ._common import user_errors


class DeviceChoice(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"
    mps = "mps"


class WeightsFrom(str, Enum):
    full = "full"
    batch = "batch"


class BetaChoice(str, Enum):
    linear_warmup = "linear_warmup"
    cyclical = "cyclical"
    constant = "constant"


@user_errors
def train_command(
    ctx: typer.Context,
    data: Annotated[Optional[Path], typer.Option(help="Corpus .npz with train/val/test (default: the synthetic corpus in the cache folder, generated on first use).", show_default=False)] = None,
    overfit_batch: Annotated[bool, typer.Option("--overfit-batch", help="Memorise one batch of 32 training grids (50 steps per epoch) until --target-accuracy.")] = False,
    quick_test: Annotated[bool, typer.Option("--quick-test", help="A short smoke run: at most 3 epochs, small subsets.")] = False,
    no_class_weights: Annotated[bool, typer.Option("--no-class-weights", help="Plain focal loss without class weights (for comparison).")] = False,
    use_cached_weights: Annotated[bool, typer.Option("--use-cached-weights", help="Reuse cached weights for the same data and parameters instead of recounting.")] = False,
    weights_method: Annotated[str, typer.Option(help="Class-weight method from classweights.METHODS.")] = "sqrt_inverse",
    weights_smooth: Annotated[float, typer.Option(min=0, help="Pseudo-count added to every class count.")] = 1.0,
    weights_from: Annotated[WeightsFrom, typer.Option(help="Count the full training split, or (with --overfit-batch, for comparison) only the batch.")] = WeightsFrom.full,
    epochs: Annotated[int, typer.Option(min=1, help="Maximum epochs.")] = 50,
    batch_size: Annotated[int, typer.Option(min=1, help="Batch size in normal mode (overfit mode uses its batch of 32).")] = 128,
    lr: Annotated[float, typer.Option(min=0, help="Adam learning rate (cosine-annealed to 1e-5).")] = 5e-4,
    latent_dim: Annotated[int, typer.Option(min=1, help="Latent dimensions of the VAE.")] = 32,
    beta_schedule: Annotated[BetaChoice, typer.Option(help="KL weight schedule.")] = BetaChoice.linear_warmup,
    beta_max: Annotated[float, typer.Option(min=0, help="Final (or constant) KL weight.")] = 1.0,
    beta_warmup_epochs: Annotated[float, typer.Option(min=0, help="linear_warmup: epochs with beta = 0 before the ramp.")] = 10.0,
    beta_ramp_epochs: Annotated[float, typer.Option(min=0, help="linear_warmup: epochs to ramp beta from 0 to --beta-max.")] = 10.0,
    free_bits: Annotated[float, typer.Option(min=0, help="Free bits: minimum KL per latent dimension in nats (0 = off).")] = 0.0,
    target_accuracy: Annotated[float, typer.Option(min=0, max=1, help="Overfit mode stops when pixel accuracy reaches this.")] = 0.95,
    seed: Annotated[int, typer.Option(min=0, max=2**63 - 1, help="Random seed, any integer from 0 to 2**63 - 1 (a timestamp in ms will do).")] = 42,
    device: Annotated[DeviceChoice, typer.Option(help="Where to train.")] = DeviceChoice.auto,
    out: Annotated[Optional[Path], typer.Option(help="Run folder (default: runs/<time>).", show_default=False)] = None,
    resume: Annotated[Optional[Path], typer.Option(help="Continue the run in this folder from its last checkpoint; its saved options apply (only --device may be given too).", show_default=False)] = None,
    log_every_n_steps: Annotated[int, typer.Option(min=1, help="Print per-class accuracy and log metrics every N steps.")] = 10,
    wandb: Annotated[bool, typer.Option("--wandb", help='Also log to Weights & Biases (pip install "classweights\\[wandb]"; WANDB_MODE=offline logs without network).')] = False,
) -> None:
    """Train the Beta-VAE with focal loss and class weights from the full training split."""
    from ..config import TrainConfig
    from ..trainer import train

    if resume is not None:
        given = [p.opts[0] for p in ctx.command.params if p.name not in ("resume", "device") and _on_command_line(ctx, p.name)]
        if given:
            raise typer.BadParameter(f"it continues a run with its saved options; these cannot be changed: {', '.join(given)}", param_hint="--resume")
        train(TrainConfig(), resume=resume, device=None if device is DeviceChoice.auto and not _on_command_line(ctx, "device") else device.value)
        return
    config = TrainConfig(
        data=None if data is None else str(data),
        out=None if out is None else str(out),
        overfit_batch=overfit_batch,
        quick_test=quick_test,
        use_class_weights=not no_class_weights,
        use_cached_weights=use_cached_weights,
        weights_method=weights_method,
        weights_smooth=weights_smooth,
        weights_source=weights_from.value,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        latent_dim=latent_dim,
        beta_schedule=beta_schedule.value,
        beta_max=beta_max,
        beta_warmup_epochs=beta_warmup_epochs,
        beta_ramp_epochs=beta_ramp_epochs,
        free_bits=free_bits,
        target_accuracy=target_accuracy,
        seed=seed,
        device=device.value,
        log_every_n_steps=log_every_n_steps,
        wandb=wandb,
    )
    if wandb:
        from ..tracking import require_wandb

        require_wandb()  # before any work
    if config.use_class_weights:
        import classweights.methods

        classweights.methods.get_method(config.weights_method)  # fail before loading data
    train(config)


def _on_command_line(ctx: typer.Context, name: str | None) -> bool:
    source = None if name is None else ctx.get_parameter_source(name)
    return source is not None and source.name == "COMMANDLINE"  # by name: Typer may bundle its own click
