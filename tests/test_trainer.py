"""Training end to end on generated data (CPU only)."""

from __future__ import annotations

import io
import json
import struct

import pytest
import torch
from rich.console import Console

from arcvae import trainer
from arcvae.config import TrainConfig
from arcvae.errors import ArcvaeError
from arcvae.loop import reached_target
from arcvae.model import predictions
from arcvae.report import Reporter
from arcvae.runtime import resolve_device
from arcvae.state import TrainingState, make_optimizer, make_scheduler


def quiet() -> tuple[Reporter, io.StringIO]:
    buffer = io.StringIO()
    return Reporter(Console(file=buffer, width=200, soft_wrap=True)), buffer


def records(run_dir, kind):
    return [r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if r["type"] == kind]


@pytest.mark.slow
def test_overfit_mode_memorises_the_batch_within_10_epochs(tiny_corpus, tmp_path):
    report, out = quiet()
    result = trainer.train(TrainConfig(data=str(tiny_corpus), out=str(tmp_path / "run"), overfit_batch=True), report)
    text = out.getvalue()
    assert result.reached_target and result.epochs_run <= 10
    assert result.final["pixel_accuracy"] >= 0.95 and result.final["foreground_accuracy"] > 0.8
    assert "✓ Overfitting target achieved!" in text and "[MODEL] Created: 801,034 parameters" in text
    assert "[OVERFIT MODE] Computing class weights from FULL dataset..." in text
    assert "Computing class weights from 1600 samples..." in text  # the full split, not the 32-grid batch
    assert "Batch total pixels: 8192" in text and "Class Weight Analysis" in text and "Per-class accuracy: [" in text
    saved = json.loads((tmp_path / "run" / "class_weights.json").read_text())
    assert sum(saved["metadata"]["counts"]) == 1600 * 256
    steps = records(tmp_path / "run", "step")
    assert steps and {"loss", "pixel_accuracy", "foreground_accuracy", "per_class_accuracy", "beta", "lr"} <= set(
        steps[0]
    )
    assert (tmp_path / "run" / "checkpoints" / "last.pt").exists()


def test_counting_progress_is_the_same_whatever_the_number_of_threads(tiny_corpus, tmp_path, monkeypatch):
    lines = []
    for n in (1, 3):
        # the counting pool's size, and so its chunks, follow torch's thread count (not set for real: a process
        # that has called torch.set_num_threads cannot use torch in a forked child any more)
        monkeypatch.setattr(torch, "get_num_threads", lambda n=n: n)
        report, out = quiet()
        trainer.train(
            TrainConfig(
                data=str(tiny_corpus), out=str(tmp_path / f"t{n}"), overfit_batch=True, quick_test=True, epochs=1
            ),
            report,
        )
        lines.append([line for line in out.getvalue().splitlines() if "samples..." in line])
    assert (
        lines[0]
        == lines[1]
        == ["Computing class weights from 1600 samples..."]
        + [f"  Processed {200 * k}/1600 samples..." for k in range(1, 9)]
    )


def test_normal_quick_test_writes_a_complete_run_folder(tiny_corpus, tmp_path):
    report, out = quiet()
    result = trainer.train(
        TrainConfig(
            data=str(tiny_corpus), out=str(tmp_path / "run"), quick_test=True, batch_size=64, log_every_n_steps=5
        ),
        report,
    )
    run = tmp_path / "run"
    assert result.epochs_run == 3 and (result.best_epoch is None) == (result.best_val_balanced_accuracy is None)
    assert {p.name for p in run.iterdir()} == {"config.json", "metrics.jsonl", "class_weights.json", "checkpoints", "result.json",
                                               "reconstructions.png", "curves.png", ".lock"}  # fmt: skip
    for name, size in (
        ("reconstructions.png", (50 + 125 * 8, 275)),
        ("curves.png", (1000, 700)),
    ):  # documented in arcvae.plots
        data = (run / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", data[16:24]) == size, name
    best = {"best.pt"} if result.best_epoch is not None else set()  # only an epoch that beat an all-black model
    assert {p.name for p in (run / "checkpoints").iterdir()} == {"last.pt"} | best
    epochs = records(run, "epoch")
    assert [e["epoch"] for e in epochs] == [1, 2, 3]
    assert {
        "val_loss",
        "val_pixel_accuracy",
        "val_foreground_accuracy",
        "val_balanced_accuracy",
        "val_per_class_accuracy",
        "lr",
    } <= set(epochs[0])
    assert json.loads((run / "config.json").read_text())["quick_test"] is True
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert {"model", "optimizer", "scheduler", "epoch", "step", "rng", "config", "weights_fingerprint"} <= set(state)
    assert state["epoch"] == 3 and "[Val] Per-class accuracy" in out.getvalue()


def test_an_existing_run_is_never_overwritten(tiny_corpus, tmp_path):
    config = TrainConfig(data=str(tiny_corpus), out=str(tmp_path / "run"), overfit_batch=True, quick_test=True)
    trainer.train(config, quiet()[0])
    before = (tmp_path / "run" / "metrics.jsonl").read_bytes()
    with pytest.raises(ArcvaeError, match="already holds a run; pass --resume"):
        trainer.train(
            TrainConfig(data=str(tiny_corpus), out=str(tmp_path / "run"), overfit_batch=True, quick_test=True),
            quiet()[0],
        )
    assert (tmp_path / "run" / "metrics.jsonl").read_bytes() == before


def test_cached_weights_are_reused(tiny_corpus, tmp_path):
    base = {"data": str(tiny_corpus), "overfit_batch": True, "quick_test": True}
    trainer.train(TrainConfig(out=str(tmp_path / "a"), **base), quiet()[0])
    report, out = quiet()
    trainer.train(TrainConfig(out=str(tmp_path / "b"), use_cached_weights=True, **base), report)
    assert "[WEIGHTS] Loaded cached weights from:" in out.getvalue()
    a, b = (json.loads((tmp_path / r / "class_weights.json").read_text()) for r in ("a", "b"))
    assert a["weights"] == b["weights"]


@pytest.mark.parametrize("device", ["cuda", "mps"])
def test_unavailable_device_is_a_clear_error(device):
    available = torch.cuda.is_available() if device == "cuda" else torch.backends.mps.is_available()
    if available:
        pytest.skip(f"{device} is available here")
    with pytest.raises(ArcvaeError, match=f"device '{device}' was requested, but"):
        resolve_device(device)


def test_resuming_a_finished_run_does_nothing(tiny_corpus, tmp_path):
    trainer.train(
        TrainConfig(data=str(tiny_corpus), out=str(tmp_path / "run"), overfit_batch=True, quick_test=True), quiet()[0]
    )
    before = {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()}
    report, out = quiet()
    result = trainer.train(TrainConfig(), report, resume=tmp_path / "run")
    assert "already finished" in out.getvalue() and result.epochs_run == 3
    assert {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()} == before
    assert json.loads((tmp_path / "run" / "result.json").read_text())["epochs_run"] == 3


def test_median_frequency_weights_in_training(tiny_corpus, tmp_path):
    config = TrainConfig(
        data=str(tiny_corpus),
        out=str(tmp_path / "run"),
        overfit_batch=True,
        quick_test=True,
        weights_method="median_frequency",
    )
    trainer.train(config, quiet()[0])
    saved = json.loads((tmp_path / "run" / "class_weights.json").read_text())
    assert saved["metadata"]["method"] == "median_frequency" and len(saved["weights"]) == 10


def test_an_all_black_batch_is_reported_without_crashing(tiny_corpus, tmp_path):

    from arcvae.data import load_corpus, save_corpus

    splits = load_corpus(tiny_corpus)
    splits["train"][:40] = 0
    path = save_corpus(splits, tmp_path / "black.npz")
    report, out = quiet()
    result = trainer.train(
        TrainConfig(data=str(path), out=str(tmp_path / "run"), overfit_batch=True, quick_test=True), report
    )
    assert result.final["foreground_accuracy"] is None
    assert "n/a" in out.getvalue() or "✓" in out.getvalue()


def test_early_stopping_waits_for_the_beta_schedule_to_settle(tiny_corpus, tmp_path):
    config = TrainConfig(data=str(tiny_corpus), out=str(tmp_path / "run"), quick_test=True, patience=1,
                         beta_warmup_epochs=1, beta_ramp_epochs=1, epochs=3, batch_size=256)  # fmt: skip
    result = trainer.train(config, quiet()[0])
    epochs = records(tmp_path / "run", "epoch")
    assert [e["val_beta"] for e in epochs][:2] == [0.0, 1.0]
    assert all(e["val_objective"] >= e["val_recon_loss"] for e in epochs)
    assert result.epochs_run >= 2  # patience could not fire while beta was still moving


def test_a_folder_left_before_the_first_checkpoint_can_be_reused(tiny_corpus, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(
        json.dumps(TrainConfig(data=str(tiny_corpus)).to_dict())
    )  # what a run writes first
    (run / "metrics.jsonl").write_text('{"type": "step", "step": 99}\n')
    (run / ".metrics.jsonl.k2x9_a.tmp").write_text('{"type": "st')  # a write cut short by a kill
    trainer.train(TrainConfig(data=str(tiny_corpus), out=str(run), overfit_batch=True, quick_test=True), quiet()[0])
    assert all(r["step"] <= 30 for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()))
    assert not list(run.glob("*.tmp"))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    (tmp_path / "other" / "a\nb").write_text("a name with a newline is shown quoted, on the one line")
    with pytest.raises(ArcvaeError, match="holds other files \\('a\\\\nb', 'notes.txt'\\)"):
        trainer.train(
            TrainConfig(data=str(tiny_corpus), out=str(tmp_path / "other"), overfit_batch=True, quick_test=True),
            quiet()[0],
        )


@pytest.mark.parametrize("files", [{"config.json": "{}"}, {"config.json": '{"lr": 1}', "metrics.jsonl": "mine\n"}, {"metrics.jsonl": "{}\n"}],
                         ids=["empty config", "someone's config", "log alone"])  # fmt: skip
def test_a_folder_with_files_of_run_names_that_are_not_a_runs_is_left_alone(tiny_corpus, tmp_path, files):
    folder = tmp_path / "mine"
    folder.mkdir()
    for name, text in files.items():
        (folder / name).write_text(text)
    with pytest.raises(ArcvaeError, match="not a run's|without a run's config.json"):
        trainer.train(
            TrainConfig(data=str(tiny_corpus), out=str(folder), overfit_batch=True, quick_test=True), quiet()[0]
        )
    assert {p.name: p.read_text() for p in folder.iterdir()} == files


def test_bad_schedule_options_fail_before_any_work():
    with pytest.raises(ArcvaeError, match="Expected beta_ramp_epochs to be a finite number > 0, but got 0"):
        TrainConfig(beta_ramp_epochs=0)


def test_predictions_equal_argmax_including_ties():
    g = torch.Generator().manual_seed(0)
    logits = torch.randint(0, 3, (8, 10, 16, 16), generator=g).float()  # many ties
    assert torch.equal(predictions(logits), logits.argmax(dim=1))


def test_make_optimizer_is_adam_with_the_learning_rate():
    optimizer = make_optimizer(torch.nn.Linear(2, 2).parameters(), 3e-4)
    assert isinstance(optimizer, torch.optim.Adam) and optimizer.param_groups[0]["lr"] == 3e-4


@pytest.mark.parametrize("origin", ["full", "batch", "checkpoint"])
def test_the_weights_are_printed_once(origin):
    from arcvae.weight_cache import ClassWeights, WeightSpec

    values = torch.tensor([0.1, 1.2, 0.7])
    counts = None if origin == "checkpoint" else torch.tensor([900, 10, 40])
    weights = ClassWeights(values, counts, WeightSpec(3, "sqrt_inverse", 1.0), 5, "f", "d", origin=origin)
    report, out = quiet()
    batch = torch.zeros(2, 4, 4, dtype=torch.long) if origin == "full" else None
    report.weights_resolved(weights, batch=batch, processes=1)
    text = out.getvalue()
    assert text.count("Weight ratio (max/min): 12.00x") == 1 and text.count("Class Weight Analysis") == 1
    assert text.count("0.1000") == 2 and "Color 1: 1.2000" in text  # once in the range line, once in the table
    assert "Class weights: [" not in text
    assert ("Class counts: [900, 10, 40]" in text) == (origin == "full")
    assert ("Batch class counts: [32, 0, 0]" in text) == (origin == "full")


def learning_rates(config: TrainConfig, steps: int, steps_per_epoch: int = 50) -> list[float]:
    optimizer = make_optimizer([torch.nn.Parameter(torch.zeros(1))], config.lr)
    scheduler = make_scheduler(optimizer, config, steps_per_epoch)
    holder = type("Holder", (), {"scheduler": scheduler})()
    rates = []
    for _ in range(steps):
        rates.append(scheduler.get_last_lr()[0])
        optimizer.step()
        TrainingState.step_scheduler(holder)  # type: ignore[arg-type]
    return rates


def test_the_overfit_learning_rate_does_not_depend_on_epochs():
    short, default = (learning_rates(TrainConfig(overfit_batch=True, epochs=epochs), 500) for epochs in (10, 50))
    assert short == default  # --epochs only stops an overfit run sooner
    assert default[0] == 5e-4 and default[250] < default[0]  # a cosine, 2,500 steps long
    assert learning_rates(TrainConfig(epochs=10), 500) != learning_rates(
        TrainConfig(epochs=50), 500
    )  # normal mode: over --epochs


def test_the_learning_rate_stays_at_its_floor_after_the_cosine():
    rates = learning_rates(TrainConfig(overfit_batch=True, overfit_schedule_epochs=2), 250)  # a cosine of 100 steps
    assert rates[100:] == [pytest.approx(1e-5)] * 150
    assert rates[:100] == sorted(rates[:100], reverse=True)


@pytest.mark.parametrize(
    ("metric", "key"),
    [
        ("pixel", "pixel_accuracy"),
        ("foreground", "foreground_accuracy"),
        ("balanced", "balanced_accuracy"),
        ("perfect", "perfect_rate"),
    ],
)
def test_the_target_applies_to_the_target_metric(metric, key):
    config = TrainConfig(overfit_batch=True, target_metric=metric, target_accuracy=0.9)
    others = {name: 0.0 for name in ("pixel_accuracy", "foreground_accuracy", "balanced_accuracy", "perfect_rate")}
    assert config.target_key == key
    assert reached_target({**others, key: 0.9}, config) and not reached_target({**others, key: 0.89}, config)
    assert not reached_target({**others, key: None}, config)  # e.g. no foreground pixel at all: not reached
    assert not reached_target({name: 1.0 for name in others if name != key} | {key: 0.5}, config)


def test_a_perfect_grid_target_is_reported_by_its_name(tiny_corpus, tmp_path):
    from typer.testing import CliRunner

    from arcvae.cli import app

    args = ["train", "--data", str(tiny_corpus), "--overfit-batch", "--quick-test", "--epochs", "1", "--target-metric", "perfect",
            "--out", str(tmp_path / "run")]  # fmt: skip
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    # ten steps from scratch reconstruct no grid perfectly, on any CPU
    assert "✗ Target not reached: perfect-grid rate 0.0% < 95.0% after 1 epochs" in result.stdout
    assert "perfect grids: 0/32 (0.0%)" in result.stdout
    saved = json.loads((tmp_path / "run" / "result.json").read_text())
    assert saved["reached_target"] is False and saved["final"]["perfect_rate"] == 0.0
    assert json.loads((tmp_path / "run" / "config.json").read_text())["target_metric"] == "perfect"


def slow_writes(monkeypatch, seconds: float = 0.2) -> list[str]:
    """Make every atomic write take ``seconds`` longer; returns the names of the threads that wrote."""
    import threading
    import time

    import classweights

    real, threads = classweights.atomic_write_bytes, []

    def slow(path, data):
        time.sleep(seconds)
        threads.append(threading.current_thread().name)
        real(path, data)

    monkeypatch.setattr(classweights, "atomic_write_bytes", slow)
    return threads


def test_the_background_writer_writes_in_order_and_hands_on_a_failure(tmp_path, monkeypatch):
    from arcvae.run_files import BackgroundWriter

    slow_writes(monkeypatch, 0.05)
    writer = BackgroundWriter()
    for i in range(3):
        writer.write(tmp_path / "f", str(i).encode())
    writer.wait()
    assert (tmp_path / "f").read_bytes() == b"2" and [p.name for p in tmp_path.iterdir()] == ["f"]
    writer.write(tmp_path / "missing" / "f", b"x")  # its folder does not exist: the error comes with the next call
    with pytest.raises(FileNotFoundError):
        writer.wait()
    writer.wait()  # reported once


def test_a_checkpoint_being_written_is_removed_only_once_written(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from arcvae import checkpoints
    from arcvae.distributed import SINGLE

    slow_writes(monkeypatch)
    (tmp_path / "checkpoints").mkdir()
    state = SimpleNamespace(group=SINGLE, writer=checkpoints.BackgroundWriter(), run_dir=tmp_path)
    checkpoints.save_checkpoint(tmp_path / "checkpoints" / "best.pt", {"epoch": 1}, state.writer)
    checkpoints.remove(state, "best.pt")  # e.g. when beta settles: an earlier best must not come back
    state.writer.wait()
    assert list((tmp_path / "checkpoints").iterdir()) == []


def test_checkpoints_are_written_in_the_background_and_whole_when_the_run_ends(tiny_corpus, tmp_path, monkeypatch):
    threads = slow_writes(monkeypatch)
    config = TrainConfig(data=str(tiny_corpus), out=str(tmp_path / "run"), overfit_batch=True, quick_test=True,
                         target_accuracy=1.0, epochs=2)  # fmt: skip
    result = trainer.train(config, quiet()[0])
    checkpoint = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert checkpoint["step"] == result.steps and checkpoint["finished"]
    assert any(name.startswith("arcvae: write last.pt") for name in threads)
    assert not list((tmp_path / "run").rglob("*.tmp"))


def test_a_checkpoint_that_cannot_be_written_ends_the_run_in_one_line(tiny_corpus, tmp_path, monkeypatch):
    import errno

    from typer.testing import CliRunner

    import classweights
    from arcvae.cli import app

    real = classweights.atomic_write_bytes

    def disk_full_for_checkpoints(path, data):  # in the writer's thread; the error reaches the training thread
        if str(path).endswith(".pt"):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, data)

    monkeypatch.setattr(classweights, "atomic_write_bytes", disk_full_for_checkpoints)
    out = tmp_path / "run"
    result = CliRunner().invoke(
        app, ["train", "--overfit-batch", "--quick-test", "--data", str(tiny_corpus), "--out", str(out)]
    )
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [f"error: No space left on device ({out / 'checkpoints' / 'last.pt'})"]
    assert not list(out.rglob("*.tmp")) and not (out / "result.json").exists()
