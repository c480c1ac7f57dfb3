"""What a user passes to the command line can never destroy data, hang a command, or be trusted wrongly.

One test (or a parametrised family) per class of failure: files written over
the command's own inputs or a run's files, non-regular ``--out`` targets, two
runs in one folder, torn logs, inconsistent checkpoints, seeds, Rich markup in
user text, caches that cannot be written, and SIGTERM in the middle of a write.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from forked import forked_pool, invoke_together
from typer.testing import CliRunner

from arcvae import checkpoints, trainer
from arcvae.cli import app
from arcvae.config import TrainConfig
from arcvae.errors import ArcvaeError
from arcvae.rundir import RunClaim

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()

ONE_QUICK_EPOCH = ("train", "--overfit-batch", "--quick-test", "--epochs", "1")  # arguments of a short run


def run(*args: object):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def one_line_error(result, *fragments: str, code: int = 1) -> str:
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def quiet():
    import io

    from rich.console import Console

    from arcvae.report import Reporter

    buffer = io.StringIO()
    return Reporter(Console(file=buffer, width=200, soft_wrap=True)), buffer


def snapshot(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


@pytest.fixture(scope="module")
def finished_run(tiny_corpus, tmp_path_factory) -> Path:
    """A finished overfit quick-test run (read, never written, by the tests that use it)."""
    folder = tmp_path_factory.mktemp("finished") / "run"
    trainer.train(
        TrainConfig(data=str(tiny_corpus), out=str(folder), overfit_batch=True, quick_test=True, epochs=1), quiet()[0]
    )
    return folder


# --------------------------------------------------- 1. --out destroys nothing ----


def test_weights_compute_never_writes_over_its_data(tmp_path):
    data = tmp_path / "labels.npy"
    np.save(data, np.array([0, 1, 1, 2]))
    before = data.read_bytes()
    link = tmp_path / "alias.npy"
    link.symlink_to(data)
    hard = tmp_path / "hard.npy"
    os.link(data, hard)
    for target in (data, hard):
        one_line_error(run("weights", "compute", data, "--num-classes", "3", "--out", target, "--force"), "own input")
    one_line_error(run("weights", "compute", link, "--num-classes", "3", "--out", data, "--force"), "own input")
    assert data.read_bytes() == before and link.is_symlink()


@pytest.mark.parametrize(
    "name", ["config.json", "metrics.jsonl", "result.json", "checkpoints/last.pt", "class_weights.json", "curves.png"]
)
def test_no_command_writes_over_a_runs_files(finished_run, tmp_path, name):
    before = snapshot(finished_run)
    target = finished_run / name
    data = tmp_path / "labels.npy"
    np.save(data, np.array([0, 1]))
    one_line_error(run("show", finished_run, "--n", "1", "--out", target, "--force"), "file of the run folder")
    one_line_error(
        run("weights", "compute", data, "--num-classes", "2", "--out", target, "--force"), "file of the run folder"
    )
    assert snapshot(finished_run) == before


def test_show_may_save_beside_a_run(finished_run, tmp_path):
    out = tmp_path / "show.png"
    assert run("show", finished_run, "--n", "1", "--out", out).exit_code == 0 and out.exists()
    one_line_error(run("show", finished_run, "--n", "1", "--out", out), "already exists; pass --force")
    assert run("show", finished_run, "--n", "1", "--out", out, "--force").exit_code == 0


def _not_regular(tmp_path: Path, kind: str, suffix: str) -> Path:
    """A ``kind`` of file that is not a regular one, named with ``suffix``; a regular file elsewhere must survive."""
    keep = tmp_path / f"regular{suffix}"
    keep.write_text("keep me")
    target = tmp_path / f"target{suffix}"
    if kind == "symbolic link":
        target.symlink_to(keep)
    elif kind == "FIFO":
        os.mkfifo(target)
    elif kind == "folder":
        target.mkdir()
    return target


@pytest.mark.parametrize("kind", ["symbolic link", "FIFO", "folder"])
@pytest.mark.parametrize("command", ["weights compute", "data generate"])
def test_out_that_is_not_a_regular_file_is_refused_at_once(tmp_path, kind, command):
    data = tmp_path / "labels.npy"
    np.save(data, np.array([0, 1]))
    args = (
        ["weights", "compute", data, "--num-classes", "2"]
        if command == "weights compute"
        else ["data", "generate", "--num-images", "3"]
    )
    target = _not_regular(tmp_path, kind, ".json" if command == "weights compute" else ".npz")
    start = time.monotonic()
    one_line_error(run(*args, "--out", target, "--force"), f"is a {kind}")
    assert time.monotonic() - start < 10  # a FIFO is never opened
    assert target.is_symlink() or target.is_dir() or target.is_fifo()
    assert (tmp_path / ("regular.json" if command == "weights compute" else "regular.npz")).read_text() == "keep me"


def test_a_device_as_out_is_refused(tmp_path):
    if not Path("/dev/null").exists():
        pytest.skip("no /dev/null here")
    data = tmp_path / "labels.npy"
    np.save(data, np.array([0, 1]))
    one_line_error(
        run("weights", "compute", data, "--num-classes", "2", "--out", "/dev/null", "--force"), "is a character device"
    )


def test_an_existing_out_needs_force(tmp_path):
    data = tmp_path / "labels.npy"
    np.save(data, np.array([0, 1]))
    out = tmp_path / "w.json"
    out.write_text("mine")
    one_line_error(run("weights", "compute", data, "--num-classes", "2", "--out", out), "already exists; pass --force")
    assert out.read_text() == "mine"
    assert run("weights", "compute", data, "--num-classes", "2", "--out", out, "--force").exit_code == 0
    assert json.loads(out.read_text())["format"] == "classweights"


# --------------------------------------------------- 2. one run per folder ----


def test_a_claimed_folder_is_refused_and_left_alone(tiny_corpus, tmp_path):
    folder = tmp_path / "run"
    with RunClaim.take(folder, create=True):
        with pytest.raises(ArcvaeError, match=f"in use by another arcvae run \\(process {os.getpid()}\\)"):
            trainer.train(
                TrainConfig(data=str(tiny_corpus), out=str(folder), overfit_batch=True, quick_test=True, epochs=1),
                quiet()[0],
            )
        assert sorted(p.name for p in folder.iterdir()) == [".lock"]
    trainer.train(
        TrainConfig(data=str(tiny_corpus), out=str(folder), overfit_batch=True, quick_test=True, epochs=1), quiet()[0]
    )
    assert (folder / "result.json").exists()


def test_a_killed_runs_claim_is_stale_at_once(tiny_corpus, tmp_path):
    folder = tmp_path / "run"
    code = f"import sys, time; from arcvae.rundir import RunClaim; RunClaim.take(__import__('pathlib').Path({str(folder)!r}), create=True); print('held', flush=True); time.sleep(60)"
    holder = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(REPO / "src")}
    )
    assert holder.stdout.readline().strip() == b"held"
    with pytest.raises(ArcvaeError, match="in use by another arcvae run"):
        trainer.train(
            TrainConfig(data=str(tiny_corpus), out=str(folder), overfit_batch=True, quick_test=True, epochs=1),
            quiet()[0],
        )
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    trainer.train(
        TrainConfig(data=str(tiny_corpus), out=str(folder), overfit_batch=True, quick_test=True, epochs=1), quiet()[0]
    )


def test_a_running_run_cannot_be_resumed_twice(tiny_corpus, tmp_path, monkeypatch):
    from test_reliability import interrupted

    folder = tmp_path / "run"
    interrupted(TrainConfig(data=str(tiny_corpus), out=str(folder), quick_test=True, batch_size=256), monkeypatch)
    before = snapshot(folder)
    # as a resume in progress holds it
    with RunClaim.take(folder, create=False), pytest.raises(ArcvaeError, match="in use by another arcvae run"):
        trainer.train(TrainConfig(), quiet()[0], resume=folder)
    assert {k: v for k, v in snapshot(folder).items() if k != ".lock"} == {
        k: v for k, v in before.items() if k != ".lock"
    }


@pytest.mark.slow
def test_two_runs_started_together_in_one_folder(tiny_corpus, tmp_path):
    out = tmp_path / "run"
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [*ONE_QUICK_EPOCH, "--data", str(tiny_corpus), "--out", str(out)]
    with forked_pool(2) as pool:  # two processes that wait for each other, then start their runs
        jobs = [(command + ["--seed", str(seed)], env, str(barrier), str(seed), 2) for seed in (1, 2)]
        results = pool.starmap(invoke_together, jobs, chunksize=1)
    winners = [r for r in results if r[0] == 0]
    losers = [r for r in results if r[0] != 0]
    assert len(winners) == 1 and len(losers) == 1, results
    assert "in use by another arcvae run" in losers[0][2] or "already holds a run" in losers[0][2], losers[0][2]
    assert json.loads((out / "result.json").read_text())["steps"] == 10
    winner_seed = 1 if results[0][0] == 0 else 2
    assert json.loads((out / "config.json").read_text())["seed"] == winner_seed  # the folder holds the winner's run


# ------------------------------------------------------- 5. torn metrics.jsonl ----


@pytest.mark.parametrize("tail", [b'{"type": "step", "epoch": 2, "st', b"\x00" * 300, b'{"type": "step", "step": 10000}\n\x00\x00\n'],
                         ids=["partial line", "NUL bytes", "NULs after a line"])  # fmt: skip
def test_resume_repairs_a_torn_log(interrupted_normal_run, tmp_path, tail):
    import shutil

    from test_reliability import metric_lines

    run = shutil.copytree(interrupted_normal_run / "resumed", tmp_path / "resumed")
    with (run / "metrics.jsonl").open("ab") as f:
        f.write(tail)
    report, out = quiet()
    trainer.train(TrainConfig(), report, resume=run)
    assert out.getvalue().count("[WARNING]") == 1 and "damaged line" in out.getvalue()
    assert metric_lines(interrupted_normal_run / "straight") == metric_lines(run)


# --------------------------------------------------- 6. inconsistent checkpoints ----


def _damaged(state: dict, damage: str) -> dict:
    state = dict(state)
    if damage == "empty model":
        state["model"] = {}
    elif damage == "num_colors -1":
        state["config"] = {**state["config"], "num_colors": -1}
    elif damage == "bad rng":
        state["rng"] = {**state["rng"], "torch": torch.zeros(7, dtype=torch.uint8)}
    elif damage == "wrong shape":
        state["model"] = {**state["model"], "encoder.0.weight": torch.zeros(3, 3)}
    elif damage == "NaN weights":
        state["class_weights"] = torch.full((10,), float("nan"))
    elif damage == "negative step":
        state["step"] = -5
    elif damage == "string epoch":
        state["epoch"] = "one"
    elif damage == "config not a dict":
        state["config"] = [1, 2]
    elif damage == "digest not hex":
        state["data_fingerprint"] = {**state["data_fingerprint"], "train": "blake3:" + "zz" * 32}
    elif damage == "digests of two hashes":  # a blake3 digest beside an earlier version's sha256 one
        state["data_fingerprint"] = {**state["data_fingerprint"], "val": "ab" * 32}
    return state


DAMAGES = ["empty model", "num_colors -1", "bad rng", "wrong shape", "NaN weights", "negative step", "string epoch", "config not a dict",
           "digest not hex", "digests of two hashes"]  # fmt: skip


@pytest.mark.parametrize("damage", DAMAGES)
def test_inconsistent_checkpoints_are_one_line_errors(finished_run, tmp_path, damage):
    import shutil

    folder = tmp_path / "run"
    shutil.copytree(finished_run, folder)
    path = folder / "checkpoints" / "last.pt"
    state = checkpoints.load_checkpoint(path)
    state["finished"] = False  # so that --resume goes past the "already finished" report
    checkpoints.save_checkpoint(path, _damaged(state, damage))
    before = snapshot(folder)
    for result in (run("show", folder, "--n", "1"), run("train", "--resume", folder)):
        one_line_error(result, "checkpoint")
    assert snapshot(folder) == before


# ------------------------------------------------------------------ 11. seeds ----


def test_any_seed_up_to_2_63_trains_and_others_are_usage_errors(tiny_corpus, tmp_path):
    millis = 1_732_912_345_678
    result = run(*ONE_QUICK_EPOCH, "--data", tiny_corpus, "--out", tmp_path / "run", "--seed", millis)
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "run" / "config.json").read_text())["seed"] == millis
    for bad in (-1, 2**63):
        result = run("train", "--quick-test", "--data", tiny_corpus, "--seed", bad)
        assert result.exit_code == 2 and "--seed" in result.output and not (tmp_path / "runs").exists()
    with pytest.raises(ArcvaeError, match="seed to be an integer from 0 to 2\\*\\*63 - 1"):
        TrainConfig(seed=2**64)


# ----------------------------------------------------- 12. user text printed as is ----


MARKUP = "m[/]g[bold]x[red]"  # a folder "m[" and a name "]g[bold]x[red]..."


def test_paths_and_values_with_rich_markup_are_printed_literally(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m[").mkdir()
    result = run("data", "generate", "--num-images", "3", "--out", f"{MARKUP}.npz")
    assert result.exit_code == 0, result.output
    assert f"[DATA] {MARKUP}.npz: train" in result.stdout
    np.save(f"{MARKUP}.npy", np.array([0, 1, 1]))
    folder = tmp_path / "data[v2]"
    folder.mkdir()
    result = run("weights", "compute", f"{MARKUP}.npy", "--num-classes", "2", "--out", folder / "w.json")
    assert result.exit_code == 0, result.output
    assert f"weights for {MARKUP}.npy" in result.stdout and "Saved to: " + str(folder / "w.json") in result.stdout
    from classweights import save_class_weights

    save_class_weights([1.0, 2.0], tmp_path / "m.json", note=MARKUP, source="[/]")
    result = run("weights", "show", tmp_path / "m.json")
    assert result.exit_code == 0, result.output
    assert f"note: {MARKUP}" in result.stdout and "source: [/]" in result.stdout
    one_line_error(run("weights", "compute", f"missing{MARKUP}.npz"), f"missing{MARKUP}.npz")


def test_a_run_folder_with_markup_in_its_name(tiny_corpus, tmp_path):
    (tmp_path / "m[").mkdir()
    out = tmp_path / MARKUP
    result = run("train", "--overfit-batch", "--quick-test", "--epochs", "1", "--data", tiny_corpus, "--out", out)
    assert result.exit_code == 0, result.output
    assert f"[RUN] {out}" in result.stdout and f"[WEIGHTS] Saved to: {out / 'class_weights.json'}" in result.stdout


# ------------------------------------------- 14. a cache that cannot be written ----


def test_training_on_the_default_corpus_survives_an_unwritable_cache(tmp_path, monkeypatch):
    from arcvae.data import default, generate_corpus

    blocked = tmp_path / "cache"
    blocked.mkdir()
    (blocked / "arcvae").write_text("not a folder")  # every write below the cache folder fails
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))
    tiny = generate_corpus(100, seed=0)
    monkeypatch.setattr(default, "generate_corpus", lambda n, seed, progress=None: tiny)
    result = run("train", "--overfit-batch", "--quick-test", "--epochs", "1", "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    assert result.stdout.count("[WARNING]") == 1 and "could not write the default corpus" in result.stdout
    assert json.loads((tmp_path / "run" / "result.json").read_text())["steps"] == 10


# ------------------------------------------------ 14. SIGTERM in the middle of it ----


WRITER = textwrap.dedent(
    """
    import signal, sys
    from pathlib import Path
    import torch
    from arcvae.checkpoints import save_checkpoint
    from arcvae.commands._common import raise_terminated
    signal.signal(signal.SIGTERM, raise_terminated)
    folder = Path(sys.argv[1])
    big = torch.arange(4_000_000, dtype=torch.float32)
    print("ready", flush=True)
    while True:
        save_checkpoint(folder / "last.pt", {"big": big})
    """
)


@pytest.mark.parametrize("delay", [0.05, 0.3])
def test_sigterm_leaves_no_temporary_file(tmp_path, delay):
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(REPO / "src")})  # fmt: skip
    assert proc.stdout.readline().strip() == b"ready"
    time.sleep(delay)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)
    assert proc.returncode != 0 and [p.name for p in tmp_path.iterdir()] in ([], ["last.pt"])  # no temporary file
    if (tmp_path / "last.pt").exists():  # and what is there is whole
        assert torch.equal(
            torch.load(tmp_path / "last.pt", weights_only=True)["big"], torch.arange(4_000_000, dtype=torch.float32)
        )


def test_sigterm_stops_a_run_with_one_line_and_it_resumes(tiny_corpus, tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "arcvae", "train", "--data", str(tiny_corpus), "--batch-size", "64", "--epochs", "2",
                             "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)  # fmt: skip
    deadline = time.monotonic() + 120
    while not (out / "checkpoints" / "last.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and err.decode().strip().splitlines()[-1] == "error: terminated"
    assert not list(out.rglob("*.tmp"))
    result = run("train", "--resume", out)
    assert result.exit_code == 0, result.output


# ------------------------------------------- 3. the cache folder is untrusted ----


@pytest.fixture
def no_quiet_period(monkeypatch):
    """Digest notes are written only for files left alone for 2 s; these tests use files they have just made."""
    from arcvae import weight_cache

    monkeypatch.setattr(weight_cache, "QUIET_NS", -1)


def cache_files(folder: str) -> list[Path]:
    root = Path(os.environ["XDG_CACHE_HOME"]) / "arcvae" / folder
    return sorted(root.iterdir()) if root.exists() else []


def labels_npy(tmp_path: Path, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, size=(300, 16, 16), dtype=np.uint8)
    labels[rng.random(labels.shape) < 0.9] = 0
    path = tmp_path / "labels.npy"
    np.save(path, labels)
    return path


def weights_of(path: Path, method: str = "sqrt_inverse") -> list[float]:
    import classweights

    return classweights.compute_class_weights(path, 10, method=method, smooth=1.0).tolist()


def plant(target: Path, kind: str) -> None:
    """Replace a cache file by something hostile."""
    target.unlink()
    if kind == "deep JSON":
        target.write_text("[" * 200_000 + "]" * 200_000)
    elif kind == "FIFO":
        os.mkfifo(target)
    elif kind == "link to /dev/zero":
        target.symlink_to("/dev/zero")
    elif kind == "oversized":
        with open(target, "wb") as handle:
            handle.truncate(1 << 30)  # sparse: no disk used
    elif kind == "directory":
        target.mkdir()


def in_thread(call, seconds: float = 60.0):
    """``call()`` with a bound: a command blocked on a FIFO fails the test instead of hanging the suite."""
    import threading

    box: list = []
    thread = threading.Thread(target=lambda: box.append(call()), daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s (blocked on a cache file?)"
    return box[0]


HOSTILE = ["deep JSON", "FIFO", "link to /dev/zero", "oversized", "directory"]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs and devices are POSIX")
@pytest.mark.parametrize("folder", ["weights", "digests"])
@pytest.mark.parametrize("kind", HOSTILE)
def test_a_hostile_cache_file_costs_one_warning_and_is_replaced(tmp_path, kind, folder, no_quiet_period):
    data = labels_npy(tmp_path)
    assert run("weights", "compute", data, "--json").exit_code == 0
    [target] = cache_files(folder)
    plant(target, kind)
    result = in_thread(lambda: run("weights", "compute", data, "--json"))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["weights"] == pytest.approx(weights_of(data))
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and target.name in warnings[0], result.stderr
    if kind != "directory":  # a folder cannot be replaced by a file (the one warning says so); anything else is
        assert target.is_file() and not target.is_symlink() and target.stat().st_size < 10_000
        again = in_thread(lambda: run("weights", "compute", data, "--json"))
        assert again.exit_code == 0 and "warning" not in again.stderr


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs and devices are POSIX")
@pytest.mark.parametrize("kind", ["deep JSON", "FIFO", "link to /dev/zero"])
def test_no_cache_reads_nothing_in_the_cache(tmp_path, kind, no_quiet_period):
    data = labels_npy(tmp_path)
    assert run("weights", "compute", data, "--json").exit_code == 0
    for target in cache_files("weights") + cache_files("digests"):
        plant(target, kind)
    result = in_thread(lambda: run("weights", "compute", data, "--json", "--no-cache"))
    assert result.exit_code == 0 and result.stderr == "", result.stderr
    assert json.loads(result.stdout)["weights"] == pytest.approx(weights_of(data))


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs and devices are POSIX")
@pytest.mark.parametrize("kind", ["deep JSON", "FIFO"])
def test_training_with_a_hostile_cache(tiny_corpus, tmp_path, kind, no_quiet_period):
    base = {"data": str(tiny_corpus), "overfit_batch": True, "quick_test": True, "epochs": 1}
    trainer.train(TrainConfig(out=str(tmp_path / "a"), use_cached_weights=True, **base), quiet()[0])
    for target in cache_files("weights") + cache_files("digests"):
        plant(target, kind)
    report, out = quiet()
    in_thread(lambda: trainer.train(TrainConfig(out=str(tmp_path / "b"), use_cached_weights=True, **base), report))
    assert out.getvalue().count("[WARNING]") == 1, out.getvalue()
    report, out = quiet()
    in_thread(
        lambda: trainer.train(TrainConfig(out=str(tmp_path / "c"), **base), report)
    )  # without --use-cached-weights
    assert "WARNING" not in out.getvalue()
    first, second = (json.loads((tmp_path / name / "class_weights.json").read_text())["weights"] for name in "ab")
    assert first == second


# ----------------------------------------- 8. one content, one identity ----


def corpus_with(path: Path, **members: np.ndarray) -> Path:
    """An .npz written member by member (names given with their .npy suffix), as any zip tool could."""
    import io
    import zipfile

    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, array in members.items():
            buffer = io.BytesIO()
            np.save(buffer, array)
            archive.writestr(name.replace("__", "."), buffer.getvalue())
    return path


def train_digest(corpus: Path, out: Path) -> str:
    trainer.train(
        TrainConfig(data=str(corpus), out=str(out), overfit_batch=True, quick_test=True, epochs=1), quiet()[0]
    )
    return json.loads((out / "class_weights.json").read_text())["metadata"]["data_digest"]


def test_train_and_weights_compute_digest_the_same_content(tmp_path):
    """An int64 corpus is digested as stored by both commands, so clearing the cache never orphans a run."""
    import classweights

    grids = np.random.default_rng(0).integers(0, 10, size=(3, 40, 16, 16))
    grids[grids > 3] = 0
    corpus = corpus_with(tmp_path / "wide.npz", train__npy=grids[0], val__npy=grids[1], test__npy=grids[2])
    expected = classweights.count_label_stats(corpus, 10, key="train", fingerprint=True).fingerprint
    assert run("weights", "compute", corpus, "--key", "train", "--json").exit_code == 0
    [entry] = cache_files("weights")
    assert json.loads(entry.read_text())["metadata"]["data_digest"] == expected
    assert train_digest(corpus, tmp_path / "run") == expected


def test_one_key_names_one_member_for_every_command(tmp_path):
    """An .npz holding members 'train.npy' and 'train.npy.npy': key 'train' is the first for every command."""
    import classweights

    rng = np.random.default_rng(1)
    first, other = (rng.integers(0, 10, size=(40, 16, 16), dtype=np.uint8) for _ in range(2))
    corpus = corpus_with(
        tmp_path / "two.npz", train__npy=first, train__npy__npy=other, val__npy=first[:8], test__npy=first[:8]
    )
    digest_of_first = classweights.count_label_stats(first, 10, fingerprint=True).fingerprint
    assert classweights.count_label_stats(corpus, 10, key="train", fingerprint=True).fingerprint == digest_of_first
    assert (classweights.read_labels(corpus, key="train").labels == first).all()
    assert (classweights.read_labels(corpus, key="train.npy").labels == other).all()  # the member named so, always
    assert train_digest(corpus, tmp_path / "run") == digest_of_first


# ------------------------------------ 9. what was read, not what the path says ----


def replace_during_count(monkeypatch, data: Path, replacement: bytes) -> None:
    """The file at ``data`` is atomically replaced just before the labels are read (after the stamp)."""
    from arcvae import weights

    real = weights.count_and_weigh

    def racing(labels, *args, **kwargs):
        temporary = data.with_suffix(".new.npy")
        temporary.write_bytes(replacement)
        os.replace(temporary, data)
        return real(labels, *args, **kwargs)

    monkeypatch.setattr(weights, "count_and_weigh", racing)


@pytest.mark.parametrize("cache", ["--cache", "--no-cache"])
def test_a_file_replaced_during_a_count_leaves_no_wrong_cache_entry(tmp_path, monkeypatch, cache, no_quiet_period):
    data = labels_npy(tmp_path, seed=0)
    original = data.read_bytes()
    other_path = tmp_path / "other"
    other_path.mkdir()
    other = labels_npy(other_path, seed=1).read_bytes()
    assert run("weights", "compute", data, "--json").exit_code == 0  # a note and an entry for the original
    with monkeypatch.context() as patch:
        replace_during_count(patch, data, other)
        raced = run("weights", "compute", data, "--json", "--method", "inverse", cache)
    if cache == "--cache":  # the noted digest is the original's, the labels read are not: refused
        one_line_error(raced, "was replaced while it was being read")
    else:  # nothing of the cache was read: the weights and their digest are the new file's
        assert raced.exit_code == 0 and json.loads(raced.stdout)["weights"] == pytest.approx(
            weights_of(data, "inverse")
        )
    temporary = tmp_path / "restore.npy"
    temporary.write_bytes(original)
    os.replace(temporary, data)  # the original content again, in a new file
    result = run("weights", "compute", data, "--json", "--method", "inverse")
    assert json.loads(result.stdout)["weights"] == pytest.approx(weights_of(data, "inverse"))


# ------------------------------------------------- 4. hostile data files, every command ----


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs and devices are POSIX")
@pytest.mark.parametrize("kind", ["FIFO", "link to /dev/zero", "directory"])
@pytest.mark.parametrize(
    "command", [["weights", "compute"], ["data", "info"], ["train", "--overfit-batch", "--data"]], ids=" ".join
)
def test_every_command_refuses_a_data_path_that_is_not_a_regular_file(tmp_path, kind, command):
    data = tmp_path / "data.npz"
    data.touch()
    plant(data, kind)
    result = in_thread(
        lambda: run(*command, data, *(["--out", tmp_path / "run"] if command[0] == "train" else [])), seconds=30
    )
    line = one_line_error(result)
    assert "data.npz" in line or "'/dev/zero'" in line  # train names the file its --data resolves to
    assert any(word in line for word in ("FIFO", "device", "directory")), line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "command", [["weights", "compute"], ["data", "info"], ["train", "--overfit-batch", "--data"]], ids=" ".join
)
def test_every_command_refuses_a_header_claiming_a_terabyte_at_once(tmp_path, command):
    import io
    import zipfile

    header = b"{'descr': '|u1', 'fortran_order': False, 'shape': (1, 1099511627776), }"
    header += b" " * (-(len(header) + 11) % 64) + b"\n"
    member = b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + b"\x00" * 256
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for key in ("train", "val", "test"):
            archive.writestr(f"{key}.npy", member)
    data = tmp_path / "huge.npz"
    data.write_bytes(buffer.getvalue())
    started = time.perf_counter()
    result = run(*command, data, *(["--out", tmp_path / "run"] if command[0] == "train" else []))
    one_line_error(result, "huge.npz", "truncated")
    assert time.perf_counter() - started < 20
