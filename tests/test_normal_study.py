"""``arcvae study normal``, per-batch class weights in normal mode, and how normal mode picks its best epoch."""

from __future__ import annotations

import io
import json
import math
import struct
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

import classweights
from arcvae import state as state_module
from arcvae import trainer
from arcvae.cli import app
from arcvae.config import TrainConfig
from arcvae.errors import ArcvaeError
from arcvae.loop import _track_best
from arcvae.losses import BetaSchedule
from arcvae.metrics import batch_metrics, one_colour_score
from arcvae.normal_study import NormalRun, arm_config, study_arms, summarise_cell
from arcvae.report import Reporter
from arcvae.weight_cache import WeightSpec
from arcvae.weights import batch_weights

runner = CliRunner()


def quiet() -> Reporter:
    return Reporter(Console(file=io.StringIO(), width=200))


def png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", path
    return struct.unpack(">II", data[16:24])


# ---------------------------------------------------------------- the study ----


@pytest.mark.slow
def test_normal_study_on_a_tiny_corpus_writes_a_table_json_and_plot(tiny_corpus, tmp_path):
    out = tmp_path / "study"
    args = ["study", "normal", "--data", str(tiny_corpus), "--batch-sizes", "16,64", "--seeds", "1", "--epochs", "1",
            "--train-samples", "64", "--val-samples", "32", "--target-metric", "balanced", "--target-accuracy", "0.05",
            "--jobs", "1", "--out", str(out)]  # fmt: skip
    result = runner.invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "3 arms x 2 batch sizes x 1 seed = 6 normal runs of 1 epoch on the first 64 training grids" in result.stdout
    assert (
        "Normal study: last validation after 1 epoch" in result.stdout
        and "target balanced accuracy 5%" in result.stdout
    )
    record = json.loads((out / "study.json").read_text())
    assert (
        record["kind"] == "normal"
        and record["batch_sizes"] == [16, 64]
        and set(record["arms"]) == {"none", "per-batch", "full"}
    )
    for arm, cells in record["arms"].items():
        for size in (16, 64):
            [run] = cells[str(size)]["runs"]
            assert run["batch_size"] == size and run["epochs"] == 1 and run["steps"] == 64 // size
            summary = cells[str(size)]["summary"]
            assert summary["runs"] == 1 and summary["balanced_accuracy"]["median"] == run["balanced_accuracy"]
            # every balanced accuracy is at least 5%, so every run reached the target in its only epoch
            assert run["epoch_reached"] == 1 and summary["reached_target"] == 1
            config = json.loads((out / "runs" / f"{arm}-b{size}-seed42" / "config.json").read_text())
            limits = (config["batch_size"], config["train_samples"], config["val_samples"], config["max_epochs"])
            assert limits == (size, 64, 32, 1)
    per_batch = out / "runs" / "per-batch-b16-seed42"
    assert json.loads((per_batch / "config.json").read_text())["weights_from"] == "batch"
    assert not (per_batch / "class_weights.json").exists()  # no one set of weights: each batch has its own
    assert (out / "runs" / "full-b16-seed42" / "class_weights.json").exists()
    assert png_size(out / "study.png") == (1000, 700)
    again = runner.invoke(app, args)
    assert again.exit_code == 1 and "already holds study runs" in again.stderr


def test_normal_arms_and_bad_input():
    assert arm_config("none") == {"use_class_weights": False}
    assert arm_config("per-batch") == {"weights_from": "batch"}
    assert arm_config("full") == {}
    assert arm_config("per-batch:inverse") == {"weights_from": "batch", "weights_method": "inverse"}
    assert study_arms(["inverse"]) == ["none", "per-batch", "full", "per-batch:inverse", "full:inverse"]
    for bad in ("batch", "full:", "none:inverse"):
        with pytest.raises(ArcvaeError, match="Expected an arm"):
            arm_config(bad)
    result = runner.invoke(app, ["study", "normal", "--methods", "nope"])
    assert result.exit_code == 1 and "Expected `method` to be one of" in result.stderr
    result = runner.invoke(app, ["study", "normal", "--batch-sizes", "8,x"])
    assert result.exit_code == 1 and "Expected --batch-sizes to be comma-separated integers >= 1" in result.stderr


def test_a_cell_summarises_its_seeds_by_median_and_range():
    runs = [NormalRun("full", 8, seed, "r", 5, 100, pixel_accuracy=p, foreground_accuracy=f, balanced_accuracy=f,
                      min_class_accuracy=m, perfect_rate=0.0, ended_black=f == 0.0, epoch_reached=e)
            for seed, p, f, m, e in ((42, 0.9, 0.0, 0.0, None), (43, 0.95, 0.5, 0.2, 4), (44, 0.97, 0.7, 0.4, 2))]  # fmt: skip
    cell = summarise_cell(runs)
    assert cell["foreground_accuracy"] == {"median": 0.5, "min": 0.0, "max": 0.7}
    assert cell["min_class_accuracy"]["median"] == 0.2 and cell["pixel_accuracy"]["max"] == 0.97
    assert (cell["runs"], cell["reached_target"], cell["median_epoch_reached"], cell["ended_black"]) == (3, 2, 3.0, 1)


# ---------------------------------------------------------- per-batch weights ----


def reference_weights(grids: np.ndarray, num_classes: int = 10) -> np.ndarray:
    """sqrt_inverse with smooth 1, normalised to sum to the number of classes, from numpy's own counts."""
    raw = 1.0 / np.sqrt(np.bincount(grids.reshape(-1), minlength=num_classes) + 1.0)
    return raw * num_classes / raw.sum()


def test_batch_weights_are_the_batchs_own_counts_weighed():
    grids = torch.from_numpy(np.random.default_rng(0).choice(10, size=(8, 16, 16), p=[0.91] + [0.01] * 9))
    weights = batch_weights(grids, WeightSpec(10, "sqrt_inverse", 1.0))
    assert weights.dtype == torch.float32 and weights.device == grids.device
    np.testing.assert_allclose(weights.numpy(), reference_weights(grids.numpy()), rtol=1e-6)
    counts = classweights.count_labels(grids, 10)
    assert torch.equal(
        batch_weights(grids, WeightSpec(10, "inverse", 0.5)),
        classweights.weights_from_counts(counts, "inverse", smooth=0.5),
    )


@pytest.mark.slow
def test_normal_mode_with_weights_from_batch_weighs_every_training_batch_by_its_own_counts(
    tiny_corpus, tmp_path, monkeypatch
):
    seen: list[tuple[np.ndarray, torch.Tensor]] = []

    def recorded(grids, spec, group):
        weights = batch_weights(grids, spec, group)
        seen.append((grids.cpu().numpy().copy(), weights))
        return weights

    monkeypatch.setattr(state_module, "batch_weights", recorded)
    config = TrainConfig(data=str(tiny_corpus), out=str(tmp_path / "run"), weights_from="batch", batch_size=24,
                         train_samples=100, val_samples=20, max_epochs=1)  # fmt: skip
    result = trainer.train(config, quiet())
    assert result.steps == 5 and len(seen) == 5  # ceil(100 / 24) batches, each weighed once
    assert [len(grids) for grids, _ in seen] == [24, 24, 24, 24, 4]
    assert sorted(np.concatenate([g.reshape(len(g), -1) for g, _ in seen]).tolist()) == sorted(
        np.load(tiny_corpus)["train"][:100].reshape(100, -1).astype(np.int64).tolist()
    )  # the training grids, each once
    for grids, weights in seen:
        np.testing.assert_allclose(weights.numpy(), reference_weights(grids), rtol=1e-6)
    assert len({tuple(w.tolist()) for _, w in seen}) == 5  # five batches, five sets of weights
    assert result.class_weights is None and not (tmp_path / "run" / "class_weights.json").exists()


# ------------------------------------------------------- the best checkpoint ----


def tracker(epochs_to_settle: float = 20.0) -> SimpleNamespace:
    schedule = BetaSchedule("linear_warmup", 1.0, epochs_to_settle / 2, epochs_to_settle / 2)
    group = SimpleNamespace(is_main=False)
    return SimpleNamespace(schedule=schedule, best_val=-math.inf, best_epoch=None, stale=0, group=group, run_dir=None)


def evaluation(preds: np.ndarray, targets: np.ndarray) -> dict:
    return batch_metrics(torch.from_numpy(preds), torch.from_numpy(targets))


def test_an_all_black_model_is_never_the_best_epoch():
    targets = np.random.default_rng(1).choice(10, size=(16, 16, 16), p=[0.9] + [0.1 / 9] * 9)
    black = evaluation(np.zeros_like(targets), targets)
    assert black["balanced_accuracy"] == one_colour_score(black["per_class_accuracy"])  # exactly, not only nearly
    state = tracker()
    assert not _track_best(state, 0, black) and state.best_epoch is None and state.best_val == -math.inf
    assert not _track_best(state, 1, evaluation(np.full_like(targets, 3), targets))  # nor any one colour everywhere
    better = targets.copy()
    better[:, :8] = 0  # right in half of each grid, black in the other half
    assert _track_best(state, 2, evaluation(better, targets)) and state.best_epoch == 3
    assert not _track_best(state, 3, black) and state.best_epoch == 3  # a collapse later on does not replace it
    assert state.stale == 0  # beta is still moving: patience has not started


def test_once_beta_settles_earlier_epochs_stop_competing():
    targets = np.random.default_rng(2).choice(10, size=(8, 16, 16), p=[0.9] + [0.1 / 9] * 9)
    good, fair = targets.copy(), targets.copy()
    fair[:, :12] = 0
    state = tracker(epochs_to_settle=2)
    assert _track_best(state, 0, evaluation(good, targets)) and state.best_epoch == 1
    assert _track_best(state, 1, evaluation(fair, targets)) and state.best_epoch == 2  # beta reached its final value
    assert not _track_best(state, 2, evaluation(np.zeros_like(targets), targets)) and state.stale == 1


def test_a_run_no_epoch_of_which_beats_one_colour_everywhere_keeps_no_best_checkpoint(tiny_corpus, tmp_path):
    from arcvae.data import load_corpus, save_corpus

    splits = load_corpus(tiny_corpus)
    splits["val"][:] = 0  # black alone is present: predicting black everywhere is perfect, and nothing beats it
    path = save_corpus(splits, tmp_path / "black-val.npz")
    report = quiet()
    config = TrainConfig(
        data=str(path), out=str(tmp_path / "run"), batch_size=64, train_samples=64, val_samples=16, max_epochs=1
    )
    result = trainer.train(config, report)
    assert result.best_epoch is None and result.best_val_balanced_accuracy is None
    assert not (tmp_path / "run" / "checkpoints" / "best.pt").exists()
    saved = json.loads((tmp_path / "run" / "result.json").read_text())
    assert saved["best_epoch"] is None and saved["best_val_balanced_accuracy"] is None
    assert (
        "(no best.pt: no epoch beat the balanced accuracy of predicting one colour everywhere, 100.0%)"
        in report.console.file.getvalue()
    )
