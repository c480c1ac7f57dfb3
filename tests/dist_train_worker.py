"""Run by tests/test_distributed.py as each of two ranks (tests/forked.py: run_ranks, or torchrun): DDP training, straight and interrupted + resumed.

argv: corpus path, output folder, modes ("overfit", "normal", "per-batch": normal mode with weights counted on
every batch; comma-separated), optional device
(default cpu). For each mode, each rank saves its final model parameters and class weights to
``<folder>/<mode>/<run>-rank<r>.pt``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from arcvae import checkpoints, trainer
from arcvae.config import TrainConfig
from arcvae.run_files import RunResult

BATCH_WEIGHTS: list[torch.Tensor] = []  # per-batch mode: the weights of every training batch, in order


def record_batch_weights() -> None:
    from arcvae import state

    real = state.batch_weights

    def recorded(*args, **kwargs):
        weights = real(*args, **kwargs)
        BATCH_WEIGHTS.append(weights.detach().cpu().clone())
        return weights

    state.batch_weights = recorded


def save_state(result: RunResult, path: Path) -> None:
    assert result.model is not None
    batches = torch.stack(BATCH_WEIGHTS) if BATCH_WEIGHTS else None
    torch.save({"model": result.model.state_dict(), "weights": result.class_weights, "batches": batches}, path)
    BATCH_WEIGHTS.clear()


def main() -> None:
    corpus, root, modes = sys.argv[1], Path(sys.argv[2]), sys.argv[3].split(",")
    device = sys.argv[4] if len(sys.argv) > 4 else "cpu"
    record_batch_weights()
    for mode in modes:
        straight_and_resumed(corpus, root / mode, mode, device)
    stop_the_group(root)


def straight_and_resumed(corpus: str, folder: Path, mode: str, device: str) -> None:
    rank = int(__import__("os").environ["RANK"])
    options = {"data": corpus, "quick_test": True, "seed": 11, "log_every_n_steps": 3, "device": device}
    if mode == "overfit":
        options.update(overfit_batch=True, target_accuracy=1.0)
    else:
        options.update(batch_size=128, weights_from="batch" if mode == "per-batch" else "full")
    save_state(trainer.train(TrainConfig(out=str(folder / "straight"), **options)), folder / f"straight-rank{rank}.pt")

    real_save = checkpoints.save_state

    def stop_after_first_epoch(state, epoch, name="last.pt", **kwargs):
        real_save(state, epoch, name, **kwargs)
        if epoch == 1 and name == "last.pt":
            raise KeyboardInterrupt

    checkpoints.save_state = stop_after_first_epoch
    try:
        trainer.train(TrainConfig(out=str(folder / "resumed"), **options))
    except KeyboardInterrupt:
        pass
    checkpoints.save_state = real_save
    save_state(trainer.train(TrainConfig(), resume=folder / "resumed"), folder / f"resumed-rank{rank}.pt")


def stop_the_group(folder: Path) -> None:
    """What the exit handler does: afterwards no thread of the process group may be left to outlive Python."""
    from arcvae import distributed

    rank = int(__import__("os").environ["RANK"])

    distributed._destroy()
    tasks = Path("/proc/self/task")
    names = sorted((t / "comm").read_text().strip() for t in tasks.iterdir()) if tasks.is_dir() else None
    (folder / f"threads-rank{rank}.json").write_text(__import__("json").dumps(names))


if __name__ == "__main__":
    main()
