"""Training: overfit-one-batch mode and normal mode, with checkpoints and metrics.

``train(config)`` is the whole job: data, class weights, model, loop. The loop
stages are labelled (forward, backward, step, log, evaluate, stop).
"""

from __future__ import annotations

import io
import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

import classweights
from classweights.storage import atomic_write_bytes

from . import data as corpus
from .config import TrainConfig
from .errors import ArcvaeError
from .losses import BetaSchedule, FocalLoss, kl_divergence
from .metrics import Tally
from .model import BetaVAE, count_parameters
from .report import Reporter
from .weights import ClassWeights, resolve_class_weights, save_weights_record

QUICK_TEST = {"epochs": 3, "overfit_repeats": 10, "train_samples": 2048, "val_samples": 512}
CHECKPOINT_VERSION = 1


@dataclass
class RunResult:
    """What a finished run reports back."""

    run_dir: Path
    epochs_run: int
    steps: int
    reached_target: bool
    final: dict[str, Any] = field(default_factory=dict)  # last evaluation metrics
    best_val_loss: float | None = None


# ------------------------------------------------------------ set-up ----


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA, then MPS, then CPU; an explicit device must exist."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ArcvaeError("device 'cuda' was requested, but CUDA is not available on this machine (use --device auto or cpu)")
    if name == "mps" and not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
        raise ArcvaeError("device 'mps' was requested, but MPS is not available on this machine (use --device auto or cpu)")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def new_run_dir(config: TrainConfig) -> Path:
    if config.out is not None:
        return Path(config.out)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path("runs") / (stamp + ("-overfit" if config.overfit_batch else ""))
    candidate, n = base, 1
    while candidate.exists():
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate


def resolve_data_path(config: TrainConfig, report: Reporter) -> Path:
    """``--data`` if given; else the default corpus, generated on first use."""
    if config.data is not None:
        return Path(config.data)
    path = corpus.default_corpus_path()
    if not path.exists():
        report.print(f"[DATA] No --data given and no default corpus yet: generating it at {path}")
        with report.epoch_bar("Generating grids", 100_000) as bar:
            done = [0]

            def advance(n: int, total: int) -> None:
                bar.advance(n - done[0])
                done[0] = n

            splits = corpus.generate_corpus(100_000, seed=42, progress=advance)
        path.parent.mkdir(parents=True, exist_ok=True)
        corpus.save_corpus(splits, path)
    else:
        report.print(f"[DATA] No --data given: using the default corpus at {path}")
    return path


def write_json(path: Path, value: Any) -> None:
    atomic_write_bytes(path, (json.dumps(value, indent=2) + "\n").encode())


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """``torch.save`` into memory, then an atomic write: a crash never leaves half a checkpoint."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load with ``weights_only=True``: a checkpoint can hold tensors and plain data, never code."""
    if not path.exists():
        raise ArcvaeError(f"no checkpoint at {str(path)!r}; expected a run folder written by 'arcvae train'")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unpickling failure is a bad file, reported in one line
        raise ArcvaeError(f"could not load checkpoint {str(path)!r}: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}") from None
    if not isinstance(state, dict) or state.get("version") != CHECKPOINT_VERSION:
        raise ArcvaeError(f"{str(path)!r} is not an arcvae checkpoint of version {CHECKPOINT_VERSION}")
    return state


# ---------------------------------------------------------- the job ----


class _Logger:
    """Appends one JSON object per line to ``metrics.jsonl``."""

    def __init__(self, path: Path) -> None:
        self._file = path.open("a", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def train(config: TrainConfig, report: Reporter | None = None, *, resume: str | Path | None = None) -> RunResult:
    """Run one training job; see :class:`TrainConfig` for every option.

    With ``resume`` (a run folder), the configuration and state come from its
    last checkpoint and training continues where it stopped.
    """
    report = report or Reporter()
    checkpoint = None
    if resume is not None:
        run_dir = Path(resume)
        checkpoint = load_checkpoint(run_dir / "checkpoints" / "last.pt")
        config = TrainConfig.from_dict(checkpoint["config"])
        report.print(f"[RESUME] {run_dir}: continuing after epoch {checkpoint['epoch']} (step {checkpoint['step']})")
    device = resolve_device(config.device)
    seed_everything(config.seed)

    # -- data
    report.section("Loading data...")
    data_path = resolve_data_path(config, report)
    config.data = str(data_path)
    full_train = corpus.load_split(data_path, "train")
    train_grids = full_train
    if config.overfit_batch:
        repeats = QUICK_TEST["overfit_repeats"] if config.quick_test else config.overfit_repeats
        unique = min(config.overfit_samples, len(train_grids))
        batch = torch.from_numpy(train_grids[:unique].astype(np.int64)).to(device)
        report.print(f"[DATA] Train: {unique * repeats} samples ({unique} unique × {repeats} repeats), {repeats} batches")
        report.print(f"[DATA] Val:   {unique} samples (the same batch, reconstructed from mu in eval mode)")
        val_grids = None
    else:
        val_grids = corpus.load_split(data_path, "val")
        if config.quick_test:
            train_grids, val_grids = train_grids[: QUICK_TEST["train_samples"]], val_grids[: QUICK_TEST["val_samples"]]
        steps = math.ceil(len(train_grids) / config.batch_size)
        report.print(f"[DATA] Train: {len(train_grids)} samples, {steps} batches of {config.batch_size}")
        report.print(f"[DATA] Val:   {len(val_grids)} samples")

    if resume is None:
        run_dir = new_run_dir(config)
        if (run_dir / "checkpoints" / "last.pt").exists():
            raise ArcvaeError(f"run folder {str(run_dir)!r} already holds a run; pass --resume {run_dir} to continue it, or another --out")
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "checkpoints").mkdir(exist_ok=True)
    write_json(run_dir / "config.json", config.to_dict())

    # -- class weights, from the FULL training split (also in overfit mode)
    weights = _class_weights(config, full_train, data_path, run_dir, report, batch=batch if config.overfit_batch else None)
    if checkpoint is not None and weights is not None and checkpoint.get("weights_fingerprint") != weights.fingerprint:
        raise ArcvaeError(f"cannot resume {str(run_dir)!r}: its class weights came from other data or parameters than {str(data_path)!r} now gives")

    # -- model
    report.section("Creating model...")
    model = BetaVAE(config.num_colors, config.latent_dim).to(device)
    loss_fn = FocalLoss(alpha=None if weights is None else weights.weights, gamma=config.focal_gamma).to(device)
    report.print(f"[MODEL] Created: {count_parameters(model):,} parameters")
    report.print(f"[MODEL] Using Focal Loss (γ={config.focal_gamma})")
    if weights is not None:
        report.print(f"[MODEL] Using class weights (method={weights.method}, source=full_dataset)")
    else:
        report.print("[MODEL] No class weights (uniform)")
    report.print(f"[MODEL] Device: {device}")

    epochs = min(config.epochs, QUICK_TEST["epochs"]) if config.quick_test else config.epochs
    steps_per_epoch = repeats if config.overfit_batch else math.ceil(len(train_grids) / config.batch_size)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs * steps_per_epoch), eta_min=config.min_lr)
    schedule = BetaSchedule(config.beta_schedule, config.beta_max, config.beta_warmup_epochs, config.beta_ramp_epochs, config.beta_cycle_epochs)
    loader_rng = torch.Generator().manual_seed(config.seed)
    start_epoch, step = 0, 0
    best_val = float("inf")
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        torch.set_rng_state(checkpoint["rng"]["torch"])
        loader_rng.set_state(checkpoint["rng"]["loader"])
        if device.type == "cuda" and "cuda" in checkpoint["rng"]:
            torch.cuda.set_rng_state_all(checkpoint["rng"]["cuda"])
        start_epoch, step = int(checkpoint["epoch"]), int(checkpoint["step"])
        best_val = float(checkpoint.get("best_val_loss", best_val))

    state = _LoopState(config, run_dir, model, optimizer, scheduler, schedule, loss_fn, device, report,
                       _Logger(run_dir / "metrics.jsonl"), loader_rng, weights, step, best_val)
    try:
        if config.overfit_batch:
            return _overfit_loop(state, batch, start_epoch, epochs, repeats)
        return _normal_loop(state, train_grids, val_grids, start_epoch, epochs)
    finally:
        state.logger.close()


def _class_weights(config: TrainConfig, train_grids: np.ndarray, data_path: Path, run_dir: Path, report: Reporter,
                   *, batch: torch.Tensor | None) -> ClassWeights | None:
    if not config.use_class_weights:
        if config.overfit_batch:
            report.warn("--overfit-batch without class weights: the model will likely collapse to all-black (93% pixel accuracy)")
        return None
    overfit = config.overfit_batch
    report.section("[OVERFIT MODE] Computing class weights from FULL dataset..." if overfit else "Computing class weights...")
    report.print(f"Loading full dataset for class weight computation... ({data_path})")
    report.print(f"Computing class weights from {len(train_grids)} samples...")
    step = max(1, len(train_grids) // 8)
    reported = [0]

    def progress(done: int, total: int | None) -> None:
        if done - reported[0] >= step or done == total:
            report.print(f"  Processed {done}/{total} samples...")
            reported[0] = done

    result = resolve_class_weights(
        train_grids, key="train", num_classes=config.num_colors, method=config.weights_method,
        smooth=config.weights_smooth, cache_dir=corpus.default_cache_dir(), use_cache=config.use_cached_weights,
        source=str(data_path), progress=progress, warn=report.warn,
    )  # fmt: skip
    values = result.weights.tolist()
    if result.from_cache:
        report.print(f"[WEIGHTS] Loaded cached weights from: {result.cache_path}")
    elif result.cache_path is not None and result.cache_path.exists():
        report.print(f"[WEIGHTS] Cached for future use: {result.cache_path}")
    report.print(f"  Class counts: {result.counts.tolist()}")
    report.print(f"  Class weights: [{', '.join(f'{w:.3f}' for w in values)}]")
    report.print(f"  Weight ratio (max/min): {max(values) / min(values):.2f}x")
    if batch is not None:
        counts = classweights.count_labels(batch, config.num_colors)
        report.print()
        report.print("[OVERFIT MODE] Single batch statistics:")
        report.print(f"  Batch class counts: {counts.tolist()}")
        report.print(f"  Batch total pixels: {int(counts.sum())}")
        report.print("  Note: Using global weights (not batch weights) for better statistical significance")
    report.class_weight_analysis(method=result.method, source=f"Full dataset ({result.num_samples} samples)", weights=values)
    save_weights_record(result, run_dir / "class_weights.json", source=str(data_path), key="train")
    report.print()
    report.print(f"[WEIGHTS] Saved to: {run_dir / 'class_weights.json'}")
    return result


# -------------------------------------------------------------- loops ----


@dataclass
class _LoopState:
    config: TrainConfig
    run_dir: Path
    model: BetaVAE
    optimizer: torch.optim.Optimizer
    scheduler: Any
    schedule: BetaSchedule
    loss_fn: FocalLoss
    device: torch.device
    report: Reporter
    logger: _Logger
    loader_rng: torch.Generator
    weights: ClassWeights | None
    step: int
    best_val: float


def _train_step(s: _LoopState, grids: torch.Tensor, beta: float, tally: Tally) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    # forward
    logits, mu, logvar = s.model(grids)
    recon = s.loss_fn(logits, grids)
    kl = kl_divergence(mu, logvar, s.config.free_bits)
    loss = recon + beta * kl
    # backward, step
    s.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if s.config.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(s.model.parameters(), s.config.grad_clip)
    s.optimizer.step()
    s.scheduler.step()
    s.step += 1
    tally.update(logits.detach().argmax(dim=1), grids)
    return loss.detach(), recon.detach(), kl.detach()


@torch.no_grad()
def evaluate(model: BetaVAE, loss_fn: FocalLoss, grids: torch.Tensor | DataLoader, *, beta: float, free_bits: float) -> dict[str, Any]:
    """Reconstruct from ``mu`` in eval mode; return loss terms and metrics."""
    was_training = model.training
    model.eval()
    tally = Tally.zeros(model.num_colors, next(model.parameters()).device)
    recon_sum = kl_sum = torch.zeros((), device=tally.total.device)
    batches = [grids] if isinstance(grids, torch.Tensor) else grids
    n = 0
    for batch in batches:
        batch = batch[0] if isinstance(batch, (list, tuple)) else batch
        batch = batch.to(tally.total.device, non_blocking=True).long()
        logits, mu, logvar = model(batch)
        recon_sum = recon_sum + loss_fn(logits, batch) * len(batch)
        kl_sum = kl_sum + kl_divergence(mu, logvar, free_bits) * len(batch)
        tally.update(logits.argmax(dim=1), batch)
        n += len(batch)
    model.train(was_training)
    recon, kl = float(recon_sum) / n, float(kl_sum) / n
    return {"loss": recon + beta * kl, "recon_loss": recon, "kl": kl, **tally.summary()}


def _check_finite(s: _LoopState, loss: torch.Tensor) -> None:
    if not math.isfinite(float(loss)):
        raise ArcvaeError(f"the loss became {float(loss)} at step {s.step}; stopping without saving (try a lower --lr)")


def _log_step(s: _LoopState, epoch: int, beta: float, loss: torch.Tensor, recon: torch.Tensor, kl: torch.Tensor, tally: Tally, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    _check_finite(s, loss)
    record = {"type": "step", "epoch": epoch + 1, "step": s.step, "loss": float(loss), "recon_loss": float(recon), "kl": float(kl),
              "beta": beta, "lr": s.scheduler.get_last_lr()[0], **tally.summary()}  # fmt: skip
    if extra:
        record.update(extra)
    s.logger.write(record)
    return record


def _save(s: _LoopState, epoch: int, name: str = "last.pt") -> None:
    rng = {"torch": torch.get_rng_state(), "loader": s.loader_rng.get_state()}
    if s.device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state_all()
    state = {
        "version": CHECKPOINT_VERSION,
        "model": s.model.state_dict(),
        "optimizer": s.optimizer.state_dict(),
        "scheduler": s.scheduler.state_dict(),
        "epoch": epoch,
        "step": s.step,
        "rng": rng,
        "config": s.config.to_dict(),
        "class_weights": None if s.weights is None else s.weights.weights,
        "weights_fingerprint": None if s.weights is None else s.weights.fingerprint,
        "best_val_loss": s.best_val,
    }
    save_checkpoint(s.run_dir / "checkpoints" / name, state)


def _overfit_loop(s: _LoopState, batch: torch.Tensor, start_epoch: int, epochs: int, repeats: int) -> RunResult:
    c, report = s.config, s.report
    final: dict[str, Any] = {}
    report.print()
    for epoch in range(start_epoch, epochs):
        tally = Tally.zeros(c.num_colors, s.device)
        reached = False
        with report.epoch_bar(f"Epoch {epoch + 1}/{epochs} [Train]", repeats) as bar:
            for i in range(repeats):
                beta = s.schedule(epoch + i / repeats)
                loss, recon, kl = _train_step(s, batch, beta, tally)
                bar.advance()
                # log and evaluate every log_every_n_steps (the only host syncs of the loop)
                if s.step % c.log_every_n_steps == 0 or i == repeats - 1:
                    final = evaluate(s.model, s.loss_fn, batch, beta=beta, free_bits=c.free_bits)
                    record = _log_step(s, epoch, beta, loss, recon, kl, tally, {f"eval_{k}": v for k, v in final.items()})
                    bar.show(loss=record["loss"], acc=final["pixel_accuracy"], fg=final["foreground_accuracy"] or 0.0, β=beta)
                    report.per_class(final["per_class_accuracy"])
                    tally = Tally.zeros(c.num_colors, s.device)
                    # stop: the batch is memorised
                    if final["pixel_accuracy"] >= c.target_accuracy:
                        reached = True
                        break
        s.logger.write({"type": "epoch", "epoch": epoch + 1, "step": s.step, **{f"eval_{k}": v for k, v in final.items()}})
        _save(s, epoch + 1)
        if reached:
            report.print()
            report.print(f"✓ Overfitting target achieved! ({final['pixel_accuracy']:.1%} >= {c.target_accuracy:.1%})", style="bold green")
            report.print("Stopping early as model has successfully memorized the batch.")
            report.print(f"  Foreground accuracy: {final['foreground_accuracy']:.1%}, balanced accuracy: {final['balanced_accuracy']:.1%}")
            report.print(f"[RUN] {s.run_dir}")
            return RunResult(s.run_dir, epoch + 1, s.step, True, final)
    report.print()
    pixel = final.get("pixel_accuracy", float("nan"))
    report.print(f"✗ Target not reached: pixel accuracy {pixel:.1%} < {c.target_accuracy:.1%} after {epochs} epochs.", style="bold red")
    report.print(f"[RUN] {s.run_dir}")
    return RunResult(s.run_dir, epochs, s.step, False, final)


def _normal_loop(s: _LoopState, train_grids: np.ndarray, val_grids: np.ndarray, start_epoch: int, epochs: int) -> RunResult:
    c, report = s.config, s.report
    train_loader = DataLoader(TensorDataset(torch.from_numpy(train_grids)), batch_size=c.batch_size, shuffle=True,
                              generator=s.loader_rng, pin_memory=s.device.type == "cuda")  # fmt: skip
    val_loader = DataLoader(TensorDataset(torch.from_numpy(val_grids)), batch_size=512)
    stale = 0
    final: dict[str, Any] = {}
    epochs_run = start_epoch
    report.print()
    for epoch in range(start_epoch, epochs):
        epochs_run = epoch + 1
        tally = Tally.zeros(c.num_colors, s.device)
        with report.epoch_bar(f"Epoch {epoch + 1}/{epochs} [Train]", len(train_loader)) as bar:
            for i, (grids,) in enumerate(train_loader):
                grids = grids.to(s.device, non_blocking=True).long()
                beta = s.schedule(epoch + i / len(train_loader))
                loss, recon, kl = _train_step(s, grids, beta, tally)
                bar.advance()
                if s.step % c.log_every_n_steps == 0:
                    record = _log_step(s, epoch, beta, loss, recon, kl, tally)
                    bar.show(loss=record["loss"], acc=record["pixel_accuracy"], β=beta)
                    tally = Tally.zeros(c.num_colors, s.device)
        # evaluate
        final = evaluate(s.model, s.loss_fn, val_loader, beta=s.schedule(epoch + 1), free_bits=c.free_bits)
        _check_finite(s, torch.tensor(final["loss"]))
        improved = final["loss"] < s.best_val
        s.best_val = min(s.best_val, final["loss"])
        s.logger.write({"type": "epoch", "epoch": epoch + 1, "step": s.step, "lr": s.scheduler.get_last_lr()[0],
                        **{f"val_{k}": v for k, v in final.items()}})  # fmt: skip
        fg = final["foreground_accuracy"]
        report.print(f"  [Val] loss={final['loss']:.4f} acc={final['pixel_accuracy']:.3f} fg={fg if fg is not None else float('nan'):.3f} "
                     f"balanced={final['balanced_accuracy']:.3f} perfect={final['perfect_rate']:.3f}" + ("  (best)" if improved else ""))  # fmt: skip
        report.per_class(final["per_class_accuracy"], prefix="  [Val] Per-class accuracy")
        # checkpoint and stop
        _save(s, epoch + 1)
        if improved:
            stale = 0
            _save(s, epoch + 1, "best.pt")
        else:
            stale += 1
            if stale >= c.patience:
                report.print(f"Early stopping: validation loss has not improved for {c.patience} epochs.")
                break
    report.print(f"[RUN] {s.run_dir} (best validation loss {s.best_val:.4f})")
    return RunResult(s.run_dir, epochs_run, s.step, False, final, s.best_val)
