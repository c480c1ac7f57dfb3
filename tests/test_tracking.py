"""arcvae.tracking: the wandb key scheme, the no-op tracker, a fake wandb, and a real offline run."""

from __future__ import annotations

import math
import sys
import types

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from arcvae.errors import ArcvaeError
from arcvae.tracking import (
    NullTracker,
    Tracker,
    WandbTracker,
    flatten_record,
    open_tracker,
)

STEP_RECORD = {"type": "step", "epoch": 1, "step": 50, "loss": 0.5, "recon_loss": 0.4, "kl": 0.1, "beta": 0.02, "lr": 1e-3,
               "pixel_accuracy": 0.93, "foreground_accuracy": None, "balanced_accuracy": 0.5, "perfect_rate": 0.0,
               "per_class_accuracy": [0.99, None, 0.5, None, None, None, None, None, None, 0.0]}  # fmt: skip
EPOCH_RECORD = {"type": "epoch", "epoch": 1, "step": 50, "lr": 1e-3, "val_loss": 0.45, "val_objective": 0.47,
                "val_foreground_accuracy": 0.25, "val_per_class_accuracy": [1.0, 0.5] + [None] * 8}  # fmt: skip


# ---- flatten_record -------------------------------------------------------------------------


def test_step_record_goes_under_train():
    flat = flatten_record(STEP_RECORD)
    assert flat == {"epoch": 1.0, "train/loss": 0.5, "train/recon_loss": 0.4, "train/kl": 0.1, "train/beta": 0.02, "train/lr": 1e-3,
                    "train/pixel_accuracy": 0.93, "train/balanced_accuracy": 0.5, "train/perfect_rate": 0.0,
                    "train/per_class_accuracy/0": 0.99, "train/per_class_accuracy/2": 0.5, "train/per_class_accuracy/9": 0.0}  # fmt: skip


def test_epoch_record_splits_by_prefix():
    flat = flatten_record(EPOCH_RECORD)
    assert flat == {"epoch": 1.0, "epoch/lr": 1e-3, "val/loss": 0.45, "val/objective": 0.47, "val/foreground_accuracy": 0.25,
                    "val/per_class_accuracy/0": 1.0, "val/per_class_accuracy/1": 0.5}  # fmt: skip


def test_overfit_step_record_keeps_eval_apart_from_train():
    flat = flatten_record({"type": "step", "step": 3, "loss": 2.0, "pixel_accuracy": 0.5, "eval_pixel_accuracy": 0.75})
    assert flat == {"train/loss": 2.0, "train/pixel_accuracy": 0.5, "eval/pixel_accuracy": 0.75}


def test_untyped_record_nested_values_and_odd_types():
    record = {"loss": 1, "done": True, "note": "text", "final": {"pixel_accuracy": 0.9, "per_class_accuracy": (0.5, None)},
              "arr": np.array([1.5, 2.5]), "t": torch.tensor(3.0), "np_scalar": np.float32(0.25), "nan": float("nan")}  # fmt: skip
    flat = flatten_record(record)
    assert {k: v for k, v in flat.items() if k != "nan"} == {
        "loss": 1.0, "done": 1.0, "final/pixel_accuracy": 0.9, "final/per_class_accuracy/0": 0.5,
        "arr/0": 1.5, "arr/1": 2.5, "t": 3.0, "np_scalar": 0.25}  # fmt: skip
    assert math.isnan(flat["nan"])
    assert all(type(v) is float for v in flat.values())


def test_other_record_types_use_their_own_section():
    assert flatten_record({"type": "test", "loss": 1.0, "val_x": 3.0}) == {"test/loss": 1.0, "val/x": 3.0}
    # a key named exactly like a split, or with nothing after the underscore, is a plain metric
    assert flatten_record({"type": "step", "val": 1.0, "eval_": 2.0}) == {"train/val": 1.0, "train/eval_": 2.0}


values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**6), 10**6) | st.floats(allow_nan=False) | st.text(max_size=3),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text("abc", min_size=1, max_size=2), inner, max_size=3)
    ),
    max_leaves=12,
)
records = st.builds(
    lambda kind, epoch, step, rest: {**kind, **epoch, **step, **rest},
    st.sampled_from([{}, {"type": "step"}, {"type": "epoch"}, {"type": "test"}, {"type": ""}, {"type": 3}]),
    st.dictionaries(st.just("epoch"), st.none() | st.integers(0, 100) | st.floats(allow_nan=False)),
    st.dictionaries(st.just("step"), values),
    st.dictionaries(
        st.sampled_from(["loss", "val_loss", "eval_acc", "per_class_accuracy", "lr", "x"]), values, max_size=6
    ),
)


@given(records)
def test_flatten_properties(record):
    flat = flatten_record(record)
    assert all(isinstance(k, str) and type(v) is float for k, v in flat.items())
    assert "step" not in flat and "type" not in flat
    assert not any(k.startswith(("step/", "type/")) for k in flat)
    assert flatten_record(record) == flat  # pure: the record is not changed

    # one float per number in the record (None and strings dropped), nothing invented
    def leaves(v):
        if isinstance(v, dict):
            return sum(leaves(x) for x in v.values())
        if isinstance(v, list):
            return sum(leaves(x) for x in v)
        return int(v is not None and not isinstance(v, str))

    assert len(flat) == sum(leaves(v) for k, v in record.items() if k not in ("type", "step"))
    if isinstance(record.get("loss"), (int, float)):
        section = (
            {"step": "train"}.get(record.get("type"), record.get("type"))
            if isinstance(record.get("type"), str)
            else None
        )
        assert flat[f"{section}/loss" if section else "loss"] == float(record["loss"])


# ---- NullTracker ----------------------------------------------------------------------------


def test_disabled_gives_a_null_tracker_without_importing_wandb(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # would fail if it were imported
    tracker = open_tracker(False, config={"lr": 1e-3}, run_dir=tmp_path / "run")
    assert isinstance(tracker, NullTracker) and isinstance(tracker, Tracker)
    assert tracker.log(STEP_RECORD, step=50) is None
    assert tracker.finish({"best": 1.0}) is None
    tracker.finish()
    assert not (tmp_path / "run").exists()


# ---- missing or broken wandb ----------------------------------------------------------------


def test_missing_wandb_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` raises ImportError
    with pytest.raises(ArcvaeError) as info:
        open_tracker(True, config={}, run_dir=tmp_path)
    message = str(info.value)
    assert message == '--wandb needs the optional wandb package: pip install "classweights[wandb]"'
    assert "\n" not in message


def test_broken_wandb_install_is_reported_as_such(tmp_path, monkeypatch):
    class BrokenWandb:  # `import wandb` fails on a missing dependency of wandb's
        def find_spec(self, name, path=None, target=None):
            if name == "wandb":
                raise ModuleNotFoundError("No module named 'google.protobuf'", name="google.protobuf")

    monkeypatch.delitem(sys.modules, "wandb", raising=False)
    monkeypatch.setattr(sys, "meta_path", [BrokenWandb(), *sys.meta_path])
    with pytest.raises(ArcvaeError) as info:
        open_tracker(True, config={}, run_dir=tmp_path)
    message = str(info.value)
    assert message.startswith("--wandb: the wandb package could not be imported (ModuleNotFoundError: No module named")
    assert "google.protobuf" in message and message.endswith('reinstall it: pip install "classweights[wandb]"')


# ---- a fake wandb ---------------------------------------------------------------------------


class FakeRun:
    def __init__(self, fail_log_at: int | None = None, fail_finish: bool = False):
        self.logged: list[tuple[dict, int]] = []
        self.summary: dict = {}
        self.finished = 0
        self.log_calls = 0
        self.fail_log_at, self.fail_finish = fail_log_at, fail_finish
        self.name = "fake-run"

    def log(self, data, step=None):
        self.log_calls += 1
        if self.fail_log_at is not None and self.log_calls >= self.fail_log_at:
            raise RuntimeError("wandb service\nwent away")
        self.logged.append((dict(data), step))

    def finish(self):
        if self.fail_finish:
            raise OSError("disk full")
        self.finished += 1


@pytest.fixture
def fake_wandb(monkeypatch):
    module = types.ModuleType("wandb")
    module.inits = []
    module.next_run = FakeRun()

    def init(**kwargs):
        module.inits.append(kwargs)
        return module.next_run

    module.init = init
    monkeypatch.setitem(sys.modules, "wandb", module)
    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    return module


def test_open_passes_the_run_settings(fake_wandb, tmp_path):
    run_dir = tmp_path / "runs" / "r1"
    tracker = open_tracker(True, config={"lr": 1e-3}, run_dir=run_dir, name="r1", wandb_group="sweep")
    assert isinstance(tracker, WandbTracker) and isinstance(tracker, Tracker)
    assert fake_wandb.inits == [{"project": "arcvae", "name": "r1", "group": "sweep", "config": {"lr": 1e-3},
                                 "dir": str(run_dir), "reinit": "finish_previous"}]  # fmt: skip
    assert run_dir.is_dir()  # created for wandb to write into


def test_wandb_project_env_wins_over_the_default(fake_wandb, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_PROJECT", "mine")
    open_tracker(True, config={}, run_dir=tmp_path, project="arcvae")
    assert fake_wandb.inits[0]["project"] is None  # wandb reads WANDB_PROJECT itself
    assert "mode" not in fake_wandb.inits[0]  # nor is WANDB_MODE overridden


@pytest.mark.parametrize(
    ("version", "reinit"),
    [("0.16.0", True), ("0.19.9", True), ("0.19.10", "finish_previous"), ("0.31.0", "finish_previous")],
)
def test_reinit_matches_the_wandb_version(fake_wandb, tmp_path, version, reinit):
    fake_wandb.__version__ = version
    open_tracker(True, config={}, run_dir=tmp_path)
    assert fake_wandb.inits[0]["reinit"] == reinit


def test_log_and_finish_send_flattened_records(fake_wandb, tmp_path):
    warnings: list[str] = []
    tracker = open_tracker(True, config={}, run_dir=tmp_path, warn=warnings.append)
    tracker.log(STEP_RECORD, step=50)
    tracker.log(EPOCH_RECORD, step=50)
    tracker.finish({"best_val": 0.47, "final": {"pixel_accuracy": 0.9, "foreground_accuracy": None}, "run_dir": "x"})
    run = fake_wandb.next_run
    assert run.logged == [(flatten_record(STEP_RECORD), 50), (flatten_record(EPOCH_RECORD), 50)]
    assert run.summary == {"best_val": 0.47, "final/pixel_accuracy": 0.9}
    assert run.finished == 1
    tracker.finish()  # a second finish, and logging after it, do nothing
    tracker.log(STEP_RECORD, step=60)
    assert run.finished == 1 and len(run.logged) == 2
    assert warnings == []


def test_a_failing_log_warns_once_and_stops_logging(fake_wandb, tmp_path):
    fake_wandb.next_run = run = FakeRun(fail_log_at=2)
    warnings: list[str] = []
    tracker = open_tracker(True, config={}, run_dir=tmp_path, warn=warnings.append)
    for step in range(1, 6):
        tracker.log({"type": "step", "loss": 1.0 / step}, step=step)
    tracker.finish({"best": 1.0})
    assert run.logged == [({"train/loss": 1.0}, 1)]
    assert run.log_calls == 2  # nothing is sent after the failure
    assert run.finished == 0 and run.summary == {}
    assert len(warnings) == 1
    assert "RuntimeError: wandb service went away" in warnings[0] and "\n" not in warnings[0]


def test_a_failing_finish_warns(fake_wandb, tmp_path):
    fake_wandb.next_run = FakeRun(fail_finish=True)
    warnings: list[str] = []
    tracker = open_tracker(True, config={}, run_dir=tmp_path, warn=warnings.append)
    tracker.finish()
    tracker.finish()
    assert len(warnings) == 1 and "OSError: disk full" in warnings[0]


def test_default_warning_goes_to_stderr(fake_wandb, tmp_path, capsys):
    fake_wandb.next_run = FakeRun(fail_log_at=1)
    tracker = open_tracker(True, config={}, run_dir=tmp_path)
    tracker.log({"loss": 1.0}, step=1)
    tracker.log({"loss": 1.0}, step=2)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("wandb failed while logging") == 1


def test_a_failing_init_is_an_arcvae_error(fake_wandb, tmp_path):
    def init(**kwargs):
        raise RuntimeError("api_key not configured (no-tty)")

    fake_wandb.init = init
    with pytest.raises(ArcvaeError, match=r"could not start a run .*api_key not configured.*WANDB_MODE=offline"):
        open_tracker(True, config={}, run_dir=tmp_path)


# ---- the real wandb, offline ----------------------------------------------------------------


@pytest.fixture
def offline_wandb(tmp_path, monkeypatch):
    """The real wandb in offline mode, its files under tmp_path."""
    wandb = pytest.importorskip(
        "wandb", reason='the optional wandb package is not installed: pip install -e ".[test,wandb]"'
    )
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for var in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    # wandb reads its environment once per process, at its first setup: start afresh on each side
    wandb.teardown()
    yield tmp_path
    wandb.teardown()


def test_real_wandb_offline_run(offline_wandb):
    run_dir = offline_wandb / "run"
    tracker = open_tracker(
        True, config={"lr": 1e-3, "epochs": 2}, run_dir=run_dir, name="offline-test", wandb_group="tests"
    )
    assert isinstance(tracker, WandbTracker)
    assert tracker.run.project == "arcvae" and tracker.run.name == "offline-test"
    for step in (10, 20):
        tracker.log({**STEP_RECORD, "step": step}, step=step)
    tracker.log(EPOCH_RECORD, step=20)
    tracker.finish({"best_val": 0.47})
    runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and any(runs[0].glob("*.wandb"))
    assert not tracker.active


def test_real_wandb_disabled_mode_is_quiet(offline_wandb, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    warnings: list[str] = []
    tracker = open_tracker(True, config={}, run_dir=offline_wandb / "run", warn=warnings.append)
    tracker.log(STEP_RECORD, step=1)
    tracker.finish({"x": 1.0})
    assert warnings == []
    assert not list(offline_wandb.rglob("offline-run-*"))


# ---- arcvae train --wandb, end to end ---------------------------------------------------------


def test_train_with_wandb_offline_logs_the_run(offline_wandb, tiny_corpus):
    from typer.testing import CliRunner

    from arcvae.cli import app

    run_dir = offline_wandb / "train-run"
    result = CliRunner().invoke(
        app, ["train", "--overfit-batch", "--quick-test", "--data", str(tiny_corpus), "--out", str(run_dir), "--wandb"]
    )
    assert result.exit_code == 0, result.output
    [offline] = (run_dir / "wandb").glob("offline-run-*")
    assert any(offline.glob("*.wandb"))


def test_train_with_wandb_but_without_the_package_says_how_to_install(monkeypatch, tiny_corpus, tmp_path):
    from typer.testing import CliRunner

    from arcvae.cli import app

    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb now raises ImportError
    result = CliRunner().invoke(
        app, ["train", "--overfit-batch", "--data", str(tiny_corpus), "--out", str(tmp_path / "run"), "--wandb"]
    )
    assert result.exit_code == 1 and 'pip install "classweights[wandb]"' in result.stderr
    assert not (tmp_path / "run").exists()
