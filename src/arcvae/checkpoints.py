"""Checkpoints: a training state saved atomically, loaded without running code, checked before anything uses it.

A checkpoint is a dict of tensors and plain data (see docs/cli.md, the run
folder): :func:`save_state` writes one at the end of an epoch (the file
reaches the disk in a background thread while training goes on), and
:func:`restore_state` puts it back into a resumed run. ``torch.load(..., weights_only=True)`` guarantees that loading runs
no code; :func:`check_checkpoint` then checks that what loaded is a complete,
consistent checkpoint of this version (a model of the right shape for its
configuration, random states torch can restore, counters that make sense), so
that ``--resume`` and ``arcvae show`` fail in one line on a damaged or foreign
file instead of deep inside torch.
"""

from __future__ import annotations

import io
import math
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

import classweights

from .config import TrainConfig
from .errors import ArcvaeError
from .model import BetaVAE
from .run_files import BackgroundWriter

if TYPE_CHECKING:
    from .state import TrainingState

CHECKPOINT_VERSION = 3  # 3: best_val is the best validation balanced accuracy, with best_epoch
_RNG_BYTES = torch.get_rng_state().numel()  # a CPU generator's state; the loader's generator has the same size
_REQUIRED = {
    "model": dict,
    "optimizer": dict,
    "scheduler": dict,
    "epoch": int,
    "step": int,
    "rng": dict,
    "config": dict,
    "data_fingerprint": dict,
    "best_val": float,
    "stale": int,
    "finished": bool,
}


def save_checkpoint(path: Path, state: dict[str, Any], writer: BackgroundWriter | None = None) -> None:
    """``torch.save`` into memory, then an atomic write: a crash never leaves half a checkpoint.

    With ``writer`` the write (and its ``fsync``) happens in the writer's
    thread; ``state`` is serialised first, so later changes to its tensors do
    not reach the file.
    """
    buffer = io.BytesIO()
    torch.save(state, buffer)
    if writer is None:
        classweights.atomic_write_bytes(path, buffer.getvalue())
    else:
        writer.write(path, buffer.getvalue())


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` and check it (:func:`check_checkpoint`)."""
    if not path.exists():
        raise ArcvaeError(f"no checkpoint at {str(path)!r}; expected a run folder written by 'arcvae train'")
    if not path.is_file():
        raise ArcvaeError(f"{str(path)!r} is not a regular file; expected a checkpoint written by 'arcvae train'")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on foreign pickles; a failure is reported below
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad file, reported in one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ArcvaeError(f"could not load checkpoint {str(path)!r}: {first}") from None
    check_checkpoint(state, str(path))
    return state


def save_state(
    state: TrainingState,
    epoch: int,
    name: str = "last.pt",
    *,
    finished: bool = False,
    reached_target: bool = False,
    final: dict[str, Any] | None = None,
) -> None:
    """Checkpoint ``state`` after ``epoch`` as ``checkpoints/<name>``: everything a resume needs to go on bit for bit.

    Never a model that took a non-finite step. One process writes the file in
    the background (the state's :class:`~arcvae.run_files.BackgroundWriter`)
    while training goes on: it is on disk before the next save, a removal
    (:func:`remove`) or the end of the loop (:func:`arcvae.loop.train_epochs`
    waits for it). Under ``torchrun`` every process's random state is
    gathered, rank 0 writes, and no process goes on (or stops) before the file
    is on disk.
    """
    state.check_finite()
    rng: dict[str, Any] = {"torch": torch.get_rng_state(), "loader": state.loader_rng.get_state()}
    if state.device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state_all()
    if state.device.type == "mps":
        rng["mps"] = torch.mps.get_rng_state()
    if state.group.enabled:
        rng = {**rng, "ranks": state.group.gather(rng)}
    if state.group.is_main:
        record = {
            "version": CHECKPOINT_VERSION,
            "model": state.model.state_dict(),
            "optimizer": state.optimizer.state_dict(),
            "scheduler": state.scheduler.state_dict(),
            "epoch": epoch,
            "step": state.step,
            "rng": rng,
            "config": state.config.to_dict(),
            "class_weights": None if state.weights is None else state.weights.weights,
            "data_fingerprint": state.data_fingerprint,
            "weights_fingerprint": None if state.weights is None else state.weights.fingerprint,
            "best_val": state.best_val,
            "best_epoch": state.best_epoch,
            "stale": state.stale,
            "finished": finished,
            "reached_target": reached_target,
            "final": final or {},
        }
        save_checkpoint(state.run_dir / "checkpoints" / name, record, state.writer)
        if state.group.enabled:
            state.writer.wait()
    state.group.barrier()  # under torchrun no process goes on (or stops) before the file is on disk


def remove(state: TrainingState, name: str) -> None:
    """Remove ``checkpoints/<name>`` (rank 0), once no write of it is under way."""
    if state.group.is_main:
        state.writer.wait()
        (state.run_dir / "checkpoints" / name).unlink(missing_ok=True)


def restore_state(state: TrainingState, checkpoint: dict[str, Any]) -> int:
    """Load model, optimiser, scheduler, counters and random states into ``state``; return the epoch to start at."""
    state.model.load_state_dict(checkpoint["model"])
    state.optimizer.load_state_dict(checkpoint["optimizer"])
    state.scheduler.load_state_dict(checkpoint["scheduler"])
    rng = checkpoint["rng"]
    ranks = rng.get("ranks")
    if state.group.enabled:
        if ranks is not None and len(ranks) == state.group.world:
            rng = ranks[state.group.rank]
        else:
            state.report.warn(
                f"the checkpoint holds no random state for {state.group.world} processes; the run continues, not bit-for-bit"
            )
    torch.set_rng_state(rng["torch"])
    state.loader_rng.set_state(rng["loader"])
    try:
        if state.device.type == "cuda" and "cuda" in rng:
            torch.cuda.set_rng_state_all(rng["cuda"])
        if state.device.type == "mps" and "mps" in rng:
            torch.mps.set_rng_state(rng["mps"])
    except (RuntimeError, IndexError) as exc:
        state.report.warn(
            f"could not restore the {state.device.type} random state ({exc}); the run continues, not bit-for-bit"
        )
    state.step, state.best_val, state.best_epoch, state.stale = (
        int(checkpoint["step"]),
        float(checkpoint["best_val"]),
        checkpoint["best_epoch"],
        int(checkpoint["stale"]),
    )
    return int(checkpoint["epoch"])


def check_same_data(
    run_dir: Path, checkpoint: dict[str, Any], data_path: Path, fingerprint: dict[str, str | None]
) -> None:
    """A run resumes only on the data it started with: the content digests of its splits must be the saved ones.

    ``fingerprint`` must be taken with the hash of the saved digests (:func:`data_digest_algorithm`).
    """
    for split, digest in fingerprint.items():
        saved = checkpoint["data_fingerprint"].get(split)
        if saved != digest:
            raise ArcvaeError(
                f"cannot resume {str(run_dir)!r}: the {split} split of {str(data_path)!r} is not the data it was trained on "
                f"(content digest {_digits(digest)}, expected {_digits(saved)})"
            )


def data_digest_algorithm(checkpoint: dict[str, Any]) -> str | None:
    """The hash of a checkpoint's data digests (``"blake3"``, or ``"sha256"`` for a run of an earlier version); None
    if it holds none. A resumed run digests its data with it, so a run started by an earlier version resumes."""
    saved = [digest for digest in checkpoint["data_fingerprint"].values() if digest is not None]
    return classweights.fingerprint_algorithm(saved[0]) if saved else None


def _digits(digest: str | None) -> str:
    """The first 12 hex digits of a content digest, for messages (without its ``blake3:``)."""
    return str(digest).rpartition(":")[2][:12]


def load_run(run_dir: str | Path, *, best: bool = True) -> tuple[BetaVAE, TrainConfig, dict[str, Any]]:
    """The model, configuration and checkpoint of a run folder (``best.pt`` if there is one and ``best``, else ``last.pt``)."""
    folder = Path(run_dir)
    name = "best.pt" if best and (folder / "checkpoints" / "best.pt").exists() else "last.pt"
    checkpoint = load_checkpoint(folder / "checkpoints" / name)
    config = TrainConfig.from_dict(checkpoint["config"])
    model = BetaVAE(config.num_colors, config.latent_dim)
    model.load_state_dict(checkpoint["model"])
    return model.eval(), config, checkpoint


def check_checkpoint(state: Any, where: str) -> None:
    """Raise an :class:`ArcvaeError` naming the first problem unless ``state`` is a usable checkpoint."""
    if not isinstance(state, dict) or state.get("version") != CHECKPOINT_VERSION:
        raise ArcvaeError(f"{where!r} is not an arcvae checkpoint of version {CHECKPOINT_VERSION}")
    missing = sorted((set(_REQUIRED) | {"weights_fingerprint", "best_epoch"}) - set(state))
    if missing:
        raise ArcvaeError(f"checkpoint {where!r} is incomplete: it lacks {', '.join(missing)}")
    for key, kind in _REQUIRED.items():
        value = state[key]
        ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
        if kind is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)
        if not ok:
            raise ArcvaeError(f"checkpoint {where!r} is damaged: {key} is {_describe(value)}, expected {kind.__name__}")
    if state["epoch"] < 0 or state["step"] < 0 or state["stale"] < 0:
        raise ArcvaeError(f"checkpoint {where!r} is damaged: negative epoch, step or patience counter")
    best_epoch = state["best_epoch"]
    if best_epoch is not None and (not isinstance(best_epoch, int) or isinstance(best_epoch, bool) or best_epoch < 1):
        raise ArcvaeError(
            f"checkpoint {where!r} is damaged: best_epoch is {_describe(best_epoch)}, expected None or an epoch"
        )
    try:
        config = TrainConfig.from_dict(state["config"])
    except (ArcvaeError, TypeError) as exc:
        raise ArcvaeError(f"checkpoint {where!r} holds an invalid configuration: {exc}") from None
    _check_model(state["model"], config, where)
    _check_rng(state["rng"], where)
    weights = state.get("class_weights")
    if weights is not None and not _usable_weights(weights, config.num_colors):
        raise ArcvaeError(
            f"checkpoint {where!r} is damaged: its class weights are not {config.num_colors} finite, non-negative numbers"
        )
    for split, digest in state["data_fingerprint"].items():
        if split not in ("train", "val") or not (digest is None or _is_digest(digest)):
            raise ArcvaeError(f"checkpoint {where!r} is damaged: unexpected data fingerprint entry {split!r}")
    if len({classweights.fingerprint_algorithm(d) for d in state["data_fingerprint"].values() if d is not None}) > 1:
        raise ArcvaeError(f"checkpoint {where!r} is damaged: its data fingerprints were made with different hashes")


def _is_digest(value: Any) -> bool:
    try:
        return isinstance(value, str) and bool(classweights.fingerprint_algorithm(value))
    except classweights.ClassWeightError:
        return False


def _usable_weights(weights: Any, num_classes: int) -> bool:
    """``num_classes`` finite, non-negative float weights, not all zero."""
    if not isinstance(weights, torch.Tensor) or weights.shape != (num_classes,) or not weights.is_floating_point():
        return False
    return bool(torch.isfinite(weights).all()) and not bool((weights < 0).any()) and bool((weights > 0).any())


def _check_model(model: dict[str, Any], config: TrainConfig, where: str) -> None:
    expected = BetaVAE(config.num_colors, config.latent_dim).state_dict()
    if set(model) != set(expected):
        raise ArcvaeError(
            f"checkpoint {where!r} holds a model that is not a BetaVAE with {config.num_colors} colours "
            f"and latent_dim {config.latent_dim} (its parameters differ)"
        )
    for name, tensor in expected.items():
        value = model[name]
        if not isinstance(value, torch.Tensor) or value.shape != tensor.shape or value.dtype != tensor.dtype:
            raise ArcvaeError(
                f"checkpoint {where!r} is damaged: parameter {name} is {_describe(value)}, expected {tuple(tensor.shape)}"
            )
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise ArcvaeError(f"checkpoint {where!r} is damaged: parameter {name} holds NaN or infinite values")


def _check_rng(rng: dict[str, Any], where: str) -> None:
    states = [rng] + list(rng.get("ranks") or [])
    for state in states:
        if not isinstance(state, dict):
            raise ArcvaeError(f"checkpoint {where!r} is damaged: a random state is {_describe(state)}")
        for key in ("torch", "loader"):
            value = state.get(key)
            if not isinstance(value, torch.Tensor) or value.dtype != torch.uint8 or value.shape != (_RNG_BYTES,):
                raise ArcvaeError(
                    f"checkpoint {where!r} is damaged: its {key} random state is {_describe(value)}, "
                    f"expected {_RNG_BYTES} bytes"
                )


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {str(value.dtype).replace('torch.', '')} tensor of shape {tuple(value.shape)}"
    return f"{type(value).__name__} {value!r}"[:80]
