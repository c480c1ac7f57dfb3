"""Training: overfit-one-batch mode and normal mode, with checkpoints and metrics.

``train(config)`` is the whole job: data, class weights, model, loop. The loop
stages are labelled (forward, backward, step, log, evaluate, stop).
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

import classweights
from classweights.pipeline import count_and_weigh
from classweights.storage import atomic_write_bytes

from . import data as corpus
from . import distributed
from .checkpoints import CHECKPOINT_VERSION, load_checkpoint, save_checkpoint
from .distributed import SINGLE, Dist
from .config import TrainConfig
from .errors import ArcvaeError
from .rundir import RunClaim, check_fresh, new_run_dir, remove_leftovers, truncate_metrics
from .losses import BetaSchedule, FocalLoss, kl_divergence
from .metrics import Tally
from .model import BetaVAE, count_parameters
from .report import Reporter
from .tracking import NullTracker, Tracker, open_tracker
from .weights import ClassWeights, FileStamp, resolve_class_weights, save_weights_record, split_digest, weights_fingerprint

QUICK_TEST = {"epochs": 3, "overfit_repeats": 10, "train_samples": 2048, "val_samples": 512}


@dataclass
class RunResult:
    """What a finished run reports back."""

    run_dir: Path
    epochs_run: int
    steps: int
    reached_target: bool
    final: dict[str, Any] = field(default_factory=dict)  # last evaluation metrics
    best_val_objective: float | None = None  # normal mode: best recon + beta_max * KL
    model: BetaVAE | None = None  # the trained model (None when a finished run is only reported)
    class_weights: torch.Tensor | None = None  # the weights the loss used (None without class weights)


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


def make_optimizer(params: Any, lr: float) -> torch.optim.Optimizer:
    """Adam; its fused kernel where this torch has one (5-15% faster steps on CPU, same update rule)."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError, ValueError):  # older torch, or a device without the fused kernel
        return torch.optim.Adam(params, lr=lr)


def predictions(logits: torch.Tensor) -> torch.Tensor:
    """Predicted colour per pixel, ``[B, H, W]``: ``max(dim=1).indices``, the first maximum like
    ``argmax(dim=1)``, which is ~40x slower on CPU for ``[B, 10, 16, 16]`` logits."""
    return logits.max(dim=1).indices


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)  # numpy's global generator takes 32-bit seeds; torch takes them all
    torch.manual_seed(seed)


def resolve_data_path(config: TrainConfig, report: Reporter) -> tuple[Path, Path | None]:
    """``--data`` if given, else the default corpus (generated on first use); and the cache folder to use, ``None``
    when it cannot be written (the default corpus then lives in a temporary folder, with one warning)."""
    cache_dir = corpus.default_cache_dir()
    if config.data is not None:
        return Path(config.data), cache_dir
    path = corpus.default_corpus_path()
    if not path.exists():
        report.print(f"[DATA] No --data given and no default corpus yet: generating it at {path}")
        with report.epoch_bar("Generating grids", 100_000) as bar:
            done = [0]

            def advance(n: int, total: int) -> None:
                bar.advance(n - done[0])
                done[0] = n

            splits = corpus.generate_corpus(100_000, seed=42, progress=advance)
        try:
            corpus.save_corpus(splits, path)
        except (OSError, classweights.ClassWeightError) as exc:  # a cache that cannot be written costs a warning, not the run
            import tempfile

            fallback = Path(tempfile.mkdtemp(prefix="arcvae-corpus-")) / path.name
            report.warn(f"could not write the default corpus to the cache folder {cache_dir} ({getattr(exc, 'strerror', None) or exc}); "
                        f"this run uses a copy in {fallback.parent} and no cache")  # fmt: skip
            return corpus.save_corpus(splits, fallback), None
    else:
        report.print(f"[DATA] No --data given: using the default corpus at {path}")
    return path, cache_dir


def write_json(path: Path, value: Any) -> None:
    atomic_write_bytes(path, (json.dumps(value, indent=2) + "\n").encode())


PICTURE_GRIDS = 8  # grids shown in a run's reconstructions.png


def save_pictures(run_dir: Path, model: BetaVAE, grids: torch.Tensor, report: Reporter) -> None:
    """``reconstructions.png`` (originals over reconstructions) and ``curves.png`` in the run folder.

    Pictures are a convenience: if they cannot be drawn or written, the run
    still succeeds, with one warning.
    """
    try:
        from .plots import save_curves, save_reconstructions

        originals = grids.cpu().numpy().astype(np.uint8)
        save_reconstructions(originals, reconstruct(model, grids), run_dir / "reconstructions.png")
        records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
        save_curves(records, run_dir / "curves.png")
    except (ImportError, OSError, ValueError, RuntimeError) as exc:
        report.warn(f"could not draw the run's pictures ({type(exc).__name__}: {exc}); the run itself is complete")
        return
    report.print(f"[RUN] Pictures: {run_dir / 'reconstructions.png'}, {run_dir / 'curves.png'}")


@torch.no_grad()
def reconstruct(model: BetaVAE, grids: torch.Tensor | np.ndarray) -> np.ndarray:
    """The model's reconstructions of ``grids`` ``[N, 16, 16]``: decoded from ``mu`` in eval mode, as uint8 colours."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    batch = torch.as_tensor(np.asarray(grids) if isinstance(grids, np.ndarray) else grids).to(device).long()
    logits, _, _ = model(batch)
    model.train(was_training)
    return predictions(logits).to(torch.uint8).cpu().numpy()


def load_run(run_dir: str | Path, *, best: bool = True) -> tuple[BetaVAE, TrainConfig, dict[str, Any]]:
    """The model, configuration and checkpoint of a run folder (``best.pt`` if there is one and ``best``, else ``last.pt``)."""
    folder = Path(run_dir)
    name = "best.pt" if best and (folder / "checkpoints" / "best.pt").exists() else "last.pt"
    checkpoint = load_checkpoint(folder / "checkpoints" / name)
    config = TrainConfig.from_dict(checkpoint["config"])
    model = BetaVAE(config.num_colors, config.latent_dim)
    model.load_state_dict(checkpoint["model"])
    return model.eval(), config, checkpoint


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


def train(
    config: TrainConfig,
    report: Reporter | None = None,
    *,
    resume: str | Path | None = None,
    device: str | None = None,
) -> RunResult:
    """Run one training job; see :class:`TrainConfig` for every option.

    With ``resume`` (a run folder), the configuration and state come from its
    last checkpoint and training continues where it stopped; ``device``
    overrides the saved device. A finished run is reported, not retrained.
    """
    config = dataclasses.replace(config)  # resolved paths are written into this copy, not the caller's
    checkpoint = None
    if resume is not None:
        checkpoint = load_checkpoint(Path(resume) / "checkpoints" / "last.pt")
        config = TrainConfig.from_dict(checkpoint["config"])
        if device is not None:
            config.device = device
    group, target = distributed.setup(config.device)  # under torchrun: join the process group
    if not group.is_main:  # rank 0 alone prints
        report = Reporter(Console(quiet=True))
    return _train(config, report or Reporter(), group, target or resolve_device(config.device), checkpoint, resume)


def _train(config: TrainConfig, report: Reporter, group: Dist, target: torch.device,
           checkpoint: dict[str, Any] | None, resume: str | Path | None) -> RunResult:  # fmt: skip
    claims: list[RunClaim | None] = []  # the run folder is this run's alone from its claim to the end
    try:
        return _job(config, report, group, target, checkpoint, resume, claims)
    finally:
        for claim in claims:
            if claim is not None:  # ranks other than 0 hold no claim
                claim.release()


def _claim(run_dir: Path, *, new: bool, group: Dist) -> RunClaim | None:
    """Rank 0 claims the run folder (a new run checks again, under the claim, that it may use it) and removes the
    temporary files of interrupted writes; an error reaches every rank."""
    claim, error = None, None
    if group.is_main:
        try:
            claim = RunClaim.take(run_dir, create=new)
            if new:
                check_fresh(run_dir)
            remove_leftovers(run_dir)
        except ArcvaeError as exc:
            if claim is not None:
                claim.abandon()
                claim = None
            error = str(exc)
    error = group.broadcast(error)
    if error is not None:
        raise ArcvaeError(error)
    return claim


def _job(config: TrainConfig, report: Reporter, group: Dist, target: torch.device, checkpoint: dict[str, Any] | None,
         resume: str | Path | None, claims: list[RunClaim | None]) -> RunResult:  # fmt: skip
    if checkpoint is not None:
        run_dir = Path(resume)  # type: ignore[arg-type]
        if checkpoint["finished"]:
            report.print(f"[RESUME] {run_dir} already finished after epoch {checkpoint['epoch']} (step {checkpoint['step']}); nothing to do.")
            return _result_of(run_dir, checkpoint)
        claims.append(_claim(run_dir, new=False, group=group))
        report.print(f"[RESUME] {run_dir}: continuing after epoch {checkpoint['epoch']} (step {checkpoint['step']})")
    else:
        run_dir = Path(group.broadcast(str(new_run_dir(config.out, overfit=config.overfit_batch)) if group.is_main else ""))
        check_fresh(run_dir)
    seed_everything(config.seed)

    # -- data
    report.section("Loading data...")
    chosen = group.broadcast(resolve_data_path(config, report) if group.is_main else None)
    data_path, cache_dir = chosen[0].resolve(), chosen[1]
    config.data = str(data_path)
    train_split = corpus.read_split(data_path, "train")  # the grids, the labels as stored and the file they came from
    full_train = train_split.grids

    def digest(split: corpus.Split, key: str) -> str:
        """The content digest of a split as stored (the one ``weights compute --key`` gives), noted per file read."""
        return split_digest(split.stored, num_classes=config.num_colors, key=key, stamp=FileStamp.read(data_path, split.identity, split.read_ns),
                            cache_dir=cache_dir, use_cache=config.use_cached_weights, warn=report.warn, group=group)  # fmt: skip
    train_grids, val_grids, batch, repeats = full_train, None, None, 0
    data_fingerprint: dict[str, str | None] = {"train": None, "val": None}
    if config.overfit_batch:
        repeats = QUICK_TEST["overfit_repeats"] if config.quick_test else config.overfit_repeats
        unique = min(config.overfit_samples, len(full_train))
        if unique < group.world:
            raise ArcvaeError(f"the overfit batch has {unique} grids, fewer than the {group.world} processes; start fewer processes")
        batch = torch.from_numpy(full_train[:unique].astype(np.int64)).to(target)
        report.print(f"[DATA] Train: {unique * repeats} samples ({unique} unique × {repeats} repeats), {repeats} batches")
        report.print(f"[DATA] Val:   {unique} samples (the same batch, reconstructed from mu in eval mode)")
    else:
        if config.batch_size < group.world:
            raise ArcvaeError(f"--batch-size {config.batch_size} is smaller than the {group.world} processes; each needs at least one grid per batch")
        val_split = corpus.read_split(data_path, "val")
        val_grids = val_split.grids
        data_fingerprint["val"] = digest(val_split, "val")
        if config.quick_test:
            train_grids, val_grids = full_train[: QUICK_TEST["train_samples"]], val_grids[: QUICK_TEST["val_samples"]]
        if group.enabled:  # each process: ceil(N / world) grids in batches of batch_size // world
            per_batch = config.batch_size // group.world
            report.print(f"[DATA] Train: {len(train_grids)} samples, {math.ceil(math.ceil(len(train_grids) / group.world) / per_batch)} batches "
                         f"of {per_batch * group.world} ({per_batch} per process)")  # fmt: skip
        else:
            report.print(f"[DATA] Train: {len(train_grids)} samples, {math.ceil(len(train_grids) / config.batch_size)} batches of {config.batch_size}")
        report.print(f"[DATA] Val:   {len(val_grids)} samples")
    if group.enabled:
        report.print(f"[DDP] {group.world} processes ({'nccl' if target.type == 'cuda' else 'gloo'}): each trains on its "
                     f"{'share of the batch' if config.overfit_batch else 'share of every batch'} and evaluates its share of the grids")  # fmt: skip

    # -- class weights, from the FULL training split (also in overfit mode); a resumed run keeps its own
    if checkpoint is not None:
        weights = _checkpoint_weights(checkpoint, config, report)
        data_fingerprint["train"] = digest(train_split, "train")
        _check_same_data(run_dir, checkpoint, data_path, data_fingerprint)
    else:
        weights = _class_weights(config, train_split, data_path, report, batch=batch, digest=digest, cache_dir=cache_dir, group=group)
        data_fingerprint["train"] = weights.data_digest if weights is not None else digest(train_split, "train")

    # -- the run folder: claimed and written (by rank 0) only once data and weights are known to be good
    if config.out is not None:
        config.out = str(run_dir.resolve())
    if checkpoint is None:
        claims.append(_claim(run_dir, new=True, group=group))
    if group.is_main:
        (run_dir / "checkpoints").mkdir(exist_ok=True)
        write_json(run_dir / "config.json", config.to_dict())
        if weights is not None and checkpoint is None:
            save_weights_record(weights, run_dir / "class_weights.json", source=str(data_path), key="train")
            report.print()
            report.print(f"[WEIGHTS] Saved to: {run_dir / 'class_weights.json'}")

    # -- model
    report.section("Creating model...")
    model = BetaVAE(config.num_colors, config.latent_dim).to(target)
    loss_fn = FocalLoss(alpha=None if weights is None else weights.weights, gamma=config.focal_gamma).to(target)
    report.print(f"[MODEL] Created: {count_parameters(model):,} parameters")
    report.print(f"[MODEL] Using Focal Loss (γ={config.focal_gamma})")
    if weights is not None:
        report.print(f"[MODEL] Using class weights (method={weights.method}, source={'single_batch' if config.weights_source == 'batch' else 'full_dataset'})")
    else:
        report.print("[MODEL] No class weights (uniform)")
    report.print(f"[MODEL] Device: {target}")

    epochs = min(config.epochs, QUICK_TEST["epochs"]) if config.quick_test else config.epochs
    # under torchrun each process takes ceil(N / world) grids per epoch in batches of batch_size // world
    per_rank = math.ceil(len(train_grids) / group.world)
    steps_per_epoch = repeats if config.overfit_batch else math.ceil(per_rank / (config.batch_size // group.world))
    optimizer = make_optimizer(model.parameters(), config.lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs * steps_per_epoch), eta_min=config.min_lr)
    schedule = BetaSchedule(config.beta_schedule, config.beta_max, config.beta_warmup_epochs, config.beta_ramp_epochs, config.beta_cycle_epochs)
    net: torch.nn.Module = model
    if group.enabled:  # gradients are averaged over the processes; each rank draws its own noise
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[target.index] if target.type == "cuda" else None)
        torch.manual_seed(config.seed + 1000 * group.rank)
    state = _LoopState(config, run_dir, model, optimizer, scheduler, schedule, loss_fn, target, report,
                       None, torch.Generator().manual_seed(config.seed), weights, data_fingerprint, net=net, group=group)  # fmt: skip
    state.first_bad_step = torch.tensor(-1, device=target)
    start_epoch = 0
    if checkpoint is not None:
        start_epoch = _restore(state, checkpoint)
    if group.is_main:
        truncate_metrics(run_dir / "metrics.jsonl", state.step, report.warn)  # a fresh run starts an empty log
        state.logger = _Logger(run_dir / "metrics.jsonl")
        state.tracker = open_tracker(config.wandb, config=config.to_dict(), run_dir=run_dir, name=run_dir.name,
                                     group=None, warn=report.warn)  # fmt: skip
    try:
        run_epochs = min(epochs, config.max_epochs or epochs)  # the schedules above still span `epochs`
        if config.overfit_batch:
            assert batch is not None
            result = _overfit_loop(state, batch, start_epoch, run_epochs, repeats)
        else:
            result = _normal_loop(state, train_grids, val_grids, start_epoch, run_epochs)
    finally:
        if state.logger is not None:
            state.logger.close()
    if group.enabled:
        group.check_identical(torch.cat([p.detach().reshape(-1) for p in model.parameters()]), "model parameters")
        report.print(f"[DDP] Class weights and final model parameters are identical on all {group.world} processes")
    if group.is_main:
        write_json(run_dir / "result.json", _result_record(result, overfit=config.overfit_batch))
        state.tracker.finish(_result_record(result, overfit=config.overfit_batch))
        shown = batch if config.overfit_batch else torch.from_numpy(val_grids[:PICTURE_GRIDS])
        save_pictures(run_dir, model, shown[:PICTURE_GRIDS], report)
    group.barrier()  # no process leaves (and tears the group down) while rank 0 still writes
    return dataclasses.replace(result, model=model, class_weights=None if weights is None else weights.weights)


def _check_same_data(run_dir: Path, checkpoint: dict[str, Any], data_path: Path, data_fingerprint: dict[str, str | None]) -> None:
    """A run resumes only on the data it started with."""
    for split, digest in data_fingerprint.items():
        saved = checkpoint["data_fingerprint"].get(split)
        if saved != digest:
            raise ArcvaeError(f"cannot resume {str(run_dir)!r}: the {split} split of {str(data_path)!r} is not the data it was trained on "
                              f"(content digest {str(digest)[:12]}, expected {str(saved)[:12]})")  # fmt: skip


def _checkpoint_weights(checkpoint: dict[str, Any], config: TrainConfig, report: Reporter) -> ClassWeights | None:
    """A resumed run trains on exactly the class weights it started with: its checkpoint's, never a recount (the cache
    or a newer formula could give others)."""
    if not config.use_class_weights:
        if config.overfit_batch:
            report.warn("--overfit-batch without class weights: the model will likely collapse to all-black (93% pixel accuracy)")
        return None
    values = checkpoint.get("class_weights")
    if values is None or checkpoint["weights_fingerprint"] is None:
        raise ArcvaeError("cannot resume: the checkpoint holds no class weights, but the run uses them")
    report.section("Class weights: the run's own, from its checkpoint")
    listed = values.tolist()
    report.print(f"  Class weights: [{', '.join(f'{w:.3f}' for w in listed)}]")
    positive = [w for w in listed if w > 0]
    report.print(f"  Weight ratio (max/min): {max(positive) / min(positive):.2f}x")
    return ClassWeights(values.to(torch.float32), None, config.weights_method, config.weights_smooth, 0, checkpoint["weights_fingerprint"],
                        str(checkpoint["data_fingerprint"].get("train")), None, False)  # fmt: skip


def _restore(s: _LoopState, checkpoint: dict[str, Any]) -> int:
    """Load model, optimizer, scheduler, counters and RNG states; return the epoch to start at."""
    s.model.load_state_dict(checkpoint["model"])
    s.optimizer.load_state_dict(checkpoint["optimizer"])
    s.scheduler.load_state_dict(checkpoint["scheduler"])
    rng = checkpoint["rng"]
    ranks = rng.get("ranks")
    if s.group.enabled:
        if ranks is not None and len(ranks) == s.group.world:
            rng = ranks[s.group.rank]
        else:
            s.report.warn(f"the checkpoint holds no random state for {s.group.world} processes; the run continues, not bit-for-bit")
    torch.set_rng_state(rng["torch"])
    s.loader_rng.set_state(rng["loader"])
    try:
        if s.device.type == "cuda" and "cuda" in rng:
            torch.cuda.set_rng_state_all(rng["cuda"])
        if s.device.type == "mps" and "mps" in rng:
            torch.mps.set_rng_state(rng["mps"])
    except (RuntimeError, IndexError) as exc:
        s.report.warn(f"could not restore the {s.device.type} random state ({exc}); the run continues, not bit-for-bit")
    s.step, s.best_val, s.stale = int(checkpoint["step"]), float(checkpoint["best_val"]), int(checkpoint["stale"])
    return int(checkpoint["epoch"])


def _result_record(result: RunResult, *, overfit: bool) -> dict[str, Any]:
    return {"run_dir": str(result.run_dir.resolve()), "epochs_run": result.epochs_run, "steps": result.steps,
            "reached_target": result.reached_target if overfit else None,
            "best_val_objective": result.best_val_objective, "final": result.final}  # fmt: skip


def _result_of(run_dir: Path, checkpoint: dict[str, Any]) -> RunResult:
    best = float(checkpoint["best_val"])
    return RunResult(run_dir, int(checkpoint["epoch"]), int(checkpoint["step"]), bool(checkpoint.get("reached_target", False)),
                     dict(checkpoint.get("final") or {}), None if math.isinf(best) else best)  # fmt: skip


def _class_weights(config: TrainConfig, train: corpus.Split, data_path: Path, report: Reporter, *, batch: torch.Tensor | None,
                   digest: Callable[[corpus.Split, str], str], cache_dir: Path | None, group: Dist = SINGLE) -> ClassWeights | None:  # fmt: skip
    if not config.use_class_weights:
        if config.overfit_batch:
            report.warn("--overfit-batch without class weights: the model will likely collapse to all-black (93% pixel accuracy)")
        return None
    if config.weights_source == "batch":
        assert batch is not None
        return _batch_weights(config, train, batch, report, digest=digest)
    overfit = config.overfit_batch
    report.section("[OVERFIT MODE] Computing class weights from FULL dataset..." if overfit else "Computing class weights...")
    report.print(f"Loading full dataset for class weight computation... ({data_path})")
    total = len(train.grids)
    # One line per eighth of the split, as soon as the count has passed it: the same lines whatever the number of
    # threads, which decides how the counting is chunked (and so when it calls back).
    milestones = sorted({total * k // 8 for k in range(1, 9)} - {0})
    started: list[bool] = []

    def progress(done: int, _total: int | None) -> None:  # called only when the weights are counted
        if not started:
            report.print(f"Computing class weights from {total} samples...")
            started.append(True)
        while milestones and milestones[0] <= done:
            report.print(f"  Processed {milestones.pop(0)}/{total} samples...")

    result = resolve_class_weights(
        train.stored, key="train", num_classes=config.num_colors, method=config.weights_method,
        smooth=config.weights_smooth, cache_dir=cache_dir, use_cache=config.use_cached_weights,
        source=str(data_path), stamp=FileStamp.read(data_path, train.identity, train.read_ns),
        progress=None if group.enabled else progress, warn=report.warn, group=group,
    )  # fmt: skip
    if group.enabled and not result.from_cache:
        report.print(f"Counted {result.num_samples} samples in {group.world} shards, one per process (identical weights on every process: checked)")
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
    return result


def _batch_weights(config: TrainConfig, train: corpus.Split, batch: torch.Tensor, report: Reporter,
                   *, digest: Callable[[corpus.Split, str], str]) -> ClassWeights:  # fmt: skip
    """Weights from the overfit batch alone: the spec's counter-example to full-dataset weights (for studies)."""
    report.section("[OVERFIT MODE] Computing class weights from the SINGLE BATCH (not the full dataset)...")
    stats, weights = count_and_weigh(batch.cpu(), config.num_colors, config.weights_method, smooth=config.weights_smooth)
    data_digest = digest(train, "train")
    fingerprint = weights_fingerprint(data_digest, key=f"train[:{len(batch)}]", num_classes=config.num_colors, method=config.weights_method,
                                      smooth=config.weights_smooth)  # fmt: skip
    values = weights.tolist()
    report.print(f"  Batch class counts: {stats.counts.tolist()}")
    report.print(f"  Class weights: [{', '.join(f'{w:.3f}' for w in values)}]")
    report.print(f"  Weight ratio (max/min): {max(values) / min(values):.2f}x")
    report.class_weight_analysis(method=config.weights_method, source=f"Single batch ({len(batch)} samples)", weights=values)
    return ClassWeights(weights, stats.counts, config.weights_method, config.weights_smooth, len(batch), fingerprint, data_digest, None, False)


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
    logger: _Logger | None
    loader_rng: torch.Generator
    weights: ClassWeights | None
    data_fingerprint: dict[str, str | None] = field(default_factory=dict)  # content digests of the splits trained on
    tracker: Tracker = field(default_factory=NullTracker)  # Weights & Biases with --wandb (rank 0)
    net: torch.nn.Module | None = None  # what the training step calls: the model, or its DistributedDataParallel wrapper
    group: Dist = SINGLE
    step: int = 0
    first_bad_step: torch.Tensor = field(default_factory=lambda: torch.tensor(-1))  # on the device; -1 while all is finite
    best_val: float = math.inf  # best validation objective (recon + beta_max * KL)
    stale: int = 0  # epochs since it improved, counted once the beta schedule has settled


def _train_step(s: _LoopState, grids: torch.Tensor, beta: float, tally: Tally) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    # forward
    logits, mu, logvar = (s.net or s.model)(grids)
    recon = s.loss_fn(logits, grids)
    kl = kl_divergence(mu, logvar, s.config.free_bits)
    loss = recon + beta * kl
    # backward, step
    s.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(s.model.parameters(), s.config.grad_clip if s.config.grad_clip > 0 else math.inf)
    s.step += 1
    # remember the first step with a non-finite loss or gradient, without a host sync (checked at log steps and saves)
    bad = ~(torch.isfinite(norm) & torch.isfinite(loss.detach()))
    s.first_bad_step = torch.where(bad & (s.first_bad_step < 0), s.step, s.first_bad_step)
    s.optimizer.step()
    s.scheduler.step()
    tally.update(predictions(logits.detach()), grids)
    return loss.detach(), recon.detach(), kl.detach()


@torch.no_grad()
def evaluate(model: BetaVAE, loss_fn: FocalLoss, grids: torch.Tensor | DataLoader, *, beta: float, beta_max: float, free_bits: float,
             group: Dist = SINGLE) -> dict[str, Any]:  # fmt: skip
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
    sums = group.sum_(torch.stack([recon_sum.double(), kl_sum.double(), torch.tensor(float(n), dtype=torch.float64, device=device)]))
    recon, kl = float(sums[0]) / float(sums[2]), float(sums[1]) / float(sums[2])
    return {"loss": recon + beta * kl, "objective": recon + beta_max * kl, "recon_loss": recon, "kl": kl, "beta": beta,
            **tally.summed(group.sum_).summary()}  # fmt: skip


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _check_finite(s: _LoopState, loss: torch.Tensor | None = None) -> None:
    """Stop, before anything is logged or saved, if a loss or gradient has gone non-finite."""
    first = int(s.first_bad_step)
    if first >= 0:
        raise ArcvaeError(f"the loss or its gradients became non-finite (NaN or inf) at step {first}; "
                          "stopping without saving a checkpoint (try a lower --lr)")  # fmt: skip
    if loss is not None and not math.isfinite(float(loss)):
        raise ArcvaeError(f"the loss became {float(loss)} at step {s.step}; stopping without saving a checkpoint (try a lower --lr)")


def _log_step(s: _LoopState, epoch: int, beta: float, loss: torch.Tensor, recon: torch.Tensor, kl: torch.Tensor, tally: Tally, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    terms = torch.stack([loss, recon, kl]).double()
    if s.group.enabled:  # the mean over the processes' shares of the batch
        terms = s.group.sum_(terms) / s.group.world
    loss, recon, kl = terms.unbind()
    _check_finite(s, loss)
    record = {"type": "step", "epoch": epoch + 1, "step": s.step, "loss": float(loss), "recon_loss": float(recon), "kl": float(kl),
              "beta": beta, "lr": s.scheduler.get_last_lr()[0], **tally.summed(s.group.sum_).summary()}  # fmt: skip
    if extra:
        record.update(extra)
    _log_record(s, record)
    return record


def _log_record(s: _LoopState, record: dict[str, Any]) -> None:
    """Write ``record`` to metrics.jsonl and the tracker (rank 0 alone has them)."""
    if s.logger is not None:
        s.logger.write(record)
        s.tracker.log(record, step=s.step)


def _save(s: _LoopState, epoch: int, name: str = "last.pt", *, finished: bool = False, reached_target: bool = False,
          final: dict[str, Any] | None = None) -> None:
    _check_finite(s)  # never checkpoint a model that took a non-finite step
    rng: dict[str, Any] = {"torch": torch.get_rng_state(), "loader": s.loader_rng.get_state()}
    if s.device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state_all()
    if s.device.type == "mps":
        rng["mps"] = torch.mps.get_rng_state()
    if s.group.enabled:
        rng = {**rng, "ranks": s.group.gather(rng)}  # every process's random state, for an exact resume
    if s.group.is_main:
        _write_checkpoint(s, epoch, name, rng, finished=finished, reached_target=reached_target, final=final)
    s.group.barrier()  # no process goes on (or stops) before the checkpoint is on disk


def _write_checkpoint(s: _LoopState, epoch: int, name: str, rng: dict[str, Any], *, finished: bool, reached_target: bool,
                      final: dict[str, Any] | None) -> None:  # fmt: skip
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
        "data_fingerprint": s.data_fingerprint,
        "weights_fingerprint": None if s.weights is None else s.weights.fingerprint,
        "best_val": s.best_val,
        "stale": s.stale,
        "finished": finished,
        "reached_target": reached_target,
        "final": final or {},
    }
    save_checkpoint(s.run_dir / "checkpoints" / name, state)


def _overfit_loop(s: _LoopState, batch: torch.Tensor, start_epoch: int, epochs: int, repeats: int) -> RunResult:
    c, report = s.config, s.report
    batch = batch[s.group.shard(len(batch))]  # under torchrun: this process's share of the batch
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
                    final = evaluate(s.model, s.loss_fn, batch, beta=beta, beta_max=c.beta_max, free_bits=c.free_bits, group=s.group)
                    record = _log_step(s, epoch, beta, loss, recon, kl, tally, {f"eval_{k}": v for k, v in final.items()})
                    bar.show(loss=record["loss"], acc=final["pixel_accuracy"], fg=final["foreground_accuracy"] or 0.0, β=beta)
                    report.per_class(final["per_class_accuracy"])
                    tally = Tally.zeros(c.num_colors, s.device)
                    # stop: the batch is memorised
                    if final["pixel_accuracy"] >= c.target_accuracy:
                        reached = True
                        break
        done = reached or epoch + 1 == epochs
        _log_record(s, {"type": "epoch", "epoch": epoch + 1, "step": s.step, "lr": s.scheduler.get_last_lr()[0],
                       **{f"eval_{k}": v for k, v in final.items()}})  # fmt: skip
        _save(s, epoch + 1, finished=done, reached_target=reached, final=final)
        if reached:
            report.print()
            report.print(f"✓ Overfitting target achieved! ({final['pixel_accuracy']:.1%} >= {c.target_accuracy:.1%})", style="bold green")
            report.print("Stopping early as model has successfully memorized the batch.")
            report.print(f"  Foreground accuracy: {_pct(final['foreground_accuracy'])}, balanced accuracy: {_pct(final['balanced_accuracy'])}")
            report.print(f"[RUN] {s.run_dir}")
            return RunResult(s.run_dir, epoch + 1, s.step, True, final)  # the same decision on every rank: metrics are summed
    report.print()
    report.print(f"✗ Target not reached: pixel accuracy {_pct(final.get('pixel_accuracy'))} < {c.target_accuracy:.1%} after {epochs} epochs "
                 f"(foreground accuracy {_pct(final.get('foreground_accuracy'))}).", style="bold red")  # fmt: skip
    report.print(f"[RUN] {s.run_dir}")
    return RunResult(s.run_dir, epochs, s.step, False, final)


def _normal_loop(s: _LoopState, train_grids: np.ndarray, val_grids: np.ndarray, start_epoch: int, epochs: int) -> RunResult:
    c, report, group = s.config, s.report, s.group
    train_set = TensorDataset(torch.from_numpy(train_grids))
    sampler = None
    if group.enabled:  # each process takes its share of every (global) batch
        sampler = DistributedSampler(train_set, num_replicas=group.world, rank=group.rank, shuffle=True, seed=c.seed)
        train_loader = DataLoader(train_set, batch_size=c.batch_size // group.world, sampler=sampler, pin_memory=s.device.type == "cuda")
    else:
        train_loader = DataLoader(train_set, batch_size=c.batch_size, shuffle=True, generator=s.loader_rng, pin_memory=s.device.type == "cuda")
    val_loader = DataLoader(TensorDataset(torch.from_numpy(val_grids[group.shard(len(val_grids))])), batch_size=512)
    final: dict[str, Any] = {}
    epochs_run = start_epoch
    report.print()
    for epoch in range(start_epoch, epochs):
        epochs_run = epoch + 1
        if sampler is not None:
            sampler.set_epoch(epoch)
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
        final = evaluate(s.model, s.loss_fn, val_loader, beta=s.schedule(epoch + 1), beta_max=c.beta_max, free_bits=c.free_bits, group=group)
        _check_finite(s, torch.tensor(final["loss"]))
        settled = s.schedule.settled_epoch
        if epoch < settled <= epoch + 1:  # beta has just reached its final value: earlier epochs do not compete
            s.best_val, s.stale = math.inf, 0
        improved = final["objective"] < s.best_val
        s.best_val = min(s.best_val, final["objective"])
        if improved:
            s.stale = 0
        elif epoch + 1 >= settled:  # patience counts only once beta has stopped moving
            s.stale += 1
        _log_record(s, {"type": "epoch", "epoch": epoch + 1, "step": s.step, "lr": s.scheduler.get_last_lr()[0],
                       **{f"val_{k}": v for k, v in final.items()}})  # fmt: skip
        report.print(f"  [Val] loss={final['loss']:.4f} objective={final['objective']:.4f} acc={final['pixel_accuracy']:.3f} "
                     f"fg={_pct(final['foreground_accuracy'])} balanced={_pct(final['balanced_accuracy'])} "
                     f"perfect={final['perfect_rate']:.3f}" + ("  (best)" if improved else ""))  # fmt: skip
        report.per_class(final["per_class_accuracy"], prefix="  [Val] Per-class accuracy")
        # checkpoint and stop
        stop = s.stale >= c.patience
        _save(s, epoch + 1, finished=stop or epoch + 1 == epochs, final=final)
        if improved:
            _save(s, epoch + 1, "best.pt", final=final)
        if stop:
            report.print(f"Early stopping: the validation objective has not improved for {c.patience} epochs.")
            break
    report.print(f"[RUN] {s.run_dir} (best validation objective {s.best_val:.4f})")
    return RunResult(s.run_dir, epochs_run, s.step, False, final, s.best_val)
