"""Caches and checkpoints under faults: every promise of docs/reliability.md, injected and checked.

Each test names the promise it proves (P1-P9, as numbered in docs/reliability.md).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import pickle
import shutil
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
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

import classweights
from arcvae import checkpoints, loop, trainer, weight_cache
from arcvae import state as training_state
from arcvae.cli import app
from arcvae.config import TrainConfig
from arcvae.errors import ArcvaeError
from arcvae.losses import FocalLoss
from arcvae.weight_cache import DigestNotes, FileStamp, WeightCache, WeightSpec
from arcvae.weights import resolve_class_weights
from classweights import ClassWeightError, load_class_weights, save_class_weights

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()

ONE_QUICK_EPOCH = ("train", "--overfit-batch", "--quick-test", "--epochs", "1")  # arguments of a short run


def run(*args: object):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def cache_root() -> Path:
    return Path(os.environ["XDG_CACHE_HOME"]) / "arcvae"


def cached_weight_files() -> list[Path]:
    folder = cache_root() / "weights"
    return sorted(folder.glob("*.json")) if folder.exists() else []


def snapshot(*folders: Path) -> dict[str, bytes]:
    """Every file below ``folders`` with its bytes: to prove nothing was touched."""
    return {
        str(p): p.read_bytes()
        for folder in folders
        if folder.exists()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def temp_files(*folders: Path) -> list[Path]:
    return [p for folder in folders if folder.exists() for p in folder.rglob("*.tmp")]


def labels_file(tmp_path: Path, name: str = "labels.npy", seed: int = 0, n: int = 400) -> Path:
    rng = np.random.default_rng(seed)
    labels = rng.integers(1, 10, size=(n, 16, 16), dtype=np.uint8)
    labels[rng.random(labels.shape) < 0.9] = 0
    np.save(tmp_path / name, labels)
    return tmp_path / name


def reference_weights(path: Path, **options) -> list[float]:
    return classweights.compute_class_weights(np.load(path), 10, **options).tolist()


def compute(path: Path, *extra: object):
    return run("weights", "compute", path, "--json", *extra)


@pytest.fixture
def no_quiet_period(monkeypatch):
    """Digest notes are written only for files left alone for 2 s; tests use files they have just made."""
    monkeypatch.setattr(weight_cache, "QUIET_NS", -1)


class Planted:
    """A pickle whose loading would write ``marker``: proof of code execution if the file appears."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('code ran')",))


# ------------------------------------------------------ P1 fingerprint ----


BASE = {
    "key": "train",
    "num_classes": 10,
    "method": "sqrt_inverse",
    "smooth": 1.0,
    "normalize": True,
    "ignore_index": None,
}


def fingerprint(digest: str, key: str | None, **spec) -> str:
    return WeightSpec(**spec).fingerprint(digest, key)


@pytest.mark.parametrize(
    "change",
    [
        {"key": "val"},
        {"num_classes": 11},
        {"method": "inverse"},
        {"smooth": 0.5},
        {"normalize": False},
        {"ignore_index": 0},
    ],
    ids=lambda c: next(iter(c)),
)
def test_p1_every_parameter_is_in_the_fingerprint(change):
    digest = "ab" * 32
    assert fingerprint(digest, **{**BASE, **change}) != fingerprint(digest, **BASE)


def test_p1_data_digest_and_format_version_are_in_the_fingerprint(monkeypatch):
    before = fingerprint("ab" * 32, **BASE)
    assert fingerprint("cd" * 32, **BASE) != before
    monkeypatch.setattr(weight_cache, "FORMAT_VERSION", 2)
    assert fingerprint("ab" * 32, **BASE) != before


@given(data=st.data())
def test_p1_label_fingerprint_sees_every_label_and_not_the_container(data):
    shape = data.draw(st.tuples(st.integers(1, 6), st.integers(1, 5), st.integers(1, 5)))
    labels = np.asarray(
        data.draw(st.lists(st.integers(0, 3), min_size=int(np.prod(shape)), max_size=int(np.prod(shape)))), np.uint8
    ).reshape(shape)
    chunk = data.draw(st.integers(1, 40))

    def fp(source, **kw):
        return classweights.count_label_stats(source, 4, fingerprint=True, **kw).fingerprint

    a = fp(labels)
    assert (
        a == fp(torch.from_numpy(labels)) == fp(labels, chunk_size=chunk) == fp(list(labels))
    )  # list: a map-style dataset
    i = data.draw(st.integers(0, labels.size - 1))
    changed = labels.copy().reshape(-1)
    changed[i] = (changed[i] + 1) % 4
    assert fp(changed.reshape(shape)) != a
    assert fp(labels.astype(np.int64)) != a  # the dtype is content too
    if shape[0] > 1:
        assert fp(labels[:-1]) != a  # so is the number of samples


def test_p1_changing_one_label_in_the_file_is_a_miss(tmp_path, no_quiet_period):
    path = labels_file(tmp_path)
    first = compute(path)
    assert first.exit_code == 0, first.output
    second = run("weights", "compute", path)
    assert "Loaded from the cache" in second.stdout
    labels = np.load(path)
    labels[123, 4, 5] = 9 if labels[123, 4, 5] != 9 else 8
    np.save(path, labels)  # same size, same name: only the content differs
    third = compute(path)
    assert json.loads(third.stdout)["counts"] == classweights.count_labels(labels, 10).tolist()
    assert json.loads(third.stdout)["counts"] != json.loads(first.stdout)["counts"]
    assert (
        "Loaded from the cache" not in run("weights", "compute", path, "--smooth", "2").stdout
    )  # a new parameter: a miss


def test_p1_a_hit_reads_no_labels_and_a_miss_reads_them_once(tmp_path, monkeypatch, no_quiet_period):
    path = labels_file(tmp_path)
    reads: list[int] = []
    real_open = classweights._npfiles._npy_stream

    def counting_stream(*args, **kwargs):
        reads.append(1)
        return real_open(*args, **kwargs)

    monkeypatch.setattr(classweights._npfiles, "_npy_stream", counting_stream)
    common = {"key": None, "cache": WeightCache(tmp_path / "c", read=True), "source": "t"}
    spec = WeightSpec(num_classes=10, method="sqrt_inverse", smooth=1.0)
    miss = resolve_class_weights(path, spec, stamp=FileStamp.of(path), **common)
    assert not miss.from_cache and len(reads) == 1  # counted and hashed in the same pass
    hit = resolve_class_weights(path, spec, stamp=FileStamp.of(path), **common)
    assert hit.from_cache and len(reads) == 1  # the digest note answered: no read at all
    assert hit.weights.tolist() == miss.weights.tolist() and hit.counts.tolist() == miss.counts.tolist()


def test_p1_a_file_rewritten_in_its_quiet_period_is_rehashed(tmp_path):
    path = labels_file(tmp_path)
    notes = DigestNotes(tmp_path / "c")
    stamp = FileStamp.of(path)
    notes.remember(stamp, None, "blake3:" + "ab" * 32)
    said: list[str] = []
    assert notes.lookup(stamp, None, said.append) is None and not said  # written just now: not trusted yet
    labels_file(tmp_path, seed=1)
    assert FileStamp.of(path) != stamp


def test_p1_notes_and_entries_of_the_sha256_era_are_recomputed_once_never_used(tmp_path, no_quiet_period):
    """Earlier versions noted sha256 digests and named entries by them: the first call recounts, without a warning."""
    path = labels_file(tmp_path)
    spec = WeightSpec(num_classes=10, method="sqrt_inverse", smooth=1.0)
    said: list[str] = []
    cache = WeightCache(tmp_path / "c", read=True, warn=said.append)
    # what an earlier version left: a note of the file's sha256 digest, and an entry filed under it (self-consistent,
    # with a valid checksum, but of other counts, so that using it would show)
    old = classweights.count_label_stats(path, 10, fingerprint="sha256").fingerprint
    DigestNotes(cache.folder).remember(FileStamp.of(path), None, old)
    other = torch.arange(1, 11) * 1000
    planted = weight_cache.ClassWeights(spec.weigh(other), other, spec, 400, spec.fingerprint(old, None), old)
    cache.entry(planted.fingerprint).parent.mkdir(parents=True)
    weight_cache.save_weights_record(planted, cache.entry(planted.fingerprint), source="old", key=None)
    assert DigestNotes(cache.folder).lookup(FileStamp.of(path), None, said.append, algorithm="sha256") == old
    common = {"key": None, "cache": cache, "source": "t"}
    miss = resolve_class_weights(path, spec, stamp=FileStamp.of(path), **common)
    assert not miss.from_cache and miss.counts.tolist() == classweights.count_labels(path, 10).tolist() and not said
    assert classweights.fingerprint_algorithm(miss.data_digest) == "blake3" and miss.cache_path != cache.entry(
        planted.fingerprint
    )
    assert DigestNotes(cache.folder).lookup(FileStamp.of(path), None, said.append) == miss.data_digest  # noted anew
    hit = resolve_class_weights(path, spec, stamp=FileStamp.of(path), **common)
    assert hit.from_cache and hit.cache_path == miss.cache_path and hit.counts.tolist() == miss.counts.tolist()


# ------------------------------------------------ P2 no code execution ----


@pytest.mark.parametrize("kind", ["pickle", "torch.save"])
def test_p2_a_planted_pickle_in_the_weights_cache_never_runs(tmp_path, kind, no_quiet_period):
    path = labels_file(tmp_path)
    assert compute(path).exit_code == 0
    [cached] = cached_weight_files()
    marker = tmp_path / "marker"
    if kind == "pickle":
        cached.write_bytes(pickle.dumps({"class_weights": Planted(marker)}))
    else:
        torch.save({"class_weights": Planted(marker)}, cached)
    result = compute(path)
    assert result.exit_code == 0, result.output
    assert not marker.exists()
    assert result.stderr.count("warning:") == 1 and "damaged cached weights" in result.stderr
    assert json.loads(result.stdout)["weights"] == pytest.approx(reference_weights(path))
    assert load_class_weights(cached).tolist() == pytest.approx(reference_weights(path))  # replaced by a valid file
    with pytest.raises(ClassWeightError):  # the library refuses it outright
        cached.write_bytes(pickle.dumps(Planted(marker)))
        load_class_weights(cached)
    assert not marker.exists()


@pytest.mark.parametrize("kind", ["pickle", "torch.save"])
def test_p2_a_planted_checkpoint_never_runs(tmp_path, kind):
    marker = tmp_path / "marker"
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    path = tmp_path / "run" / "checkpoints" / "last.pt"
    payload = {"version": checkpoints.CHECKPOINT_VERSION, "model": Planted(marker)}
    if kind == "pickle":
        path.write_bytes(pickle.dumps(payload))
    else:
        torch.save(payload, path)
    with pytest.raises(ArcvaeError, match="could not load checkpoint"):
        checkpoints.load_checkpoint(path)
    result = run("train", "--resume", tmp_path / "run")
    assert result.exit_code == 1 and "could not load checkpoint" in result.stderr and "Traceback" not in result.output
    assert not marker.exists()


def test_p2_a_planted_digest_note_is_ignored(tmp_path, no_quiet_period):
    path = labels_file(tmp_path)
    stamp = FileStamp.of(path)
    notes = DigestNotes(cache_root())
    notes.remember(stamp, None, "ab" * 32)
    [note] = (cache_root() / "digests").glob("*.json")
    marker = tmp_path / "marker"
    note.write_bytes(pickle.dumps(Planted(marker)))
    said: list[str] = []
    assert notes.lookup(stamp, None, said.append) is None and not marker.exists()
    assert len(said) == 1 and "damaged digest note" in said[0]
    assert json.loads(compute(path).stdout)["weights"] == pytest.approx(reference_weights(path))


# -------------------------------------------------- P3 corrupt files ----


def saved_weights(tmp_path: Path) -> tuple[Path, bytes]:
    path = tmp_path / "w.json"
    save_class_weights([0.0993, 1.1039, 0.9, 1.2], path, method="sqrt_inverse", counts=[934, 10, 11, 9])
    return path, path.read_bytes()


def test_p3_every_single_bit_flip_is_caught_or_harmless(tmp_path):
    path, good = saved_weights(tmp_path)
    original = load_class_weights(path, with_metadata=True)
    for i in range(len(good) * 8):
        flipped = bytearray(good)
        flipped[i // 8] ^= 1 << (i % 8)
        path.write_bytes(bytes(flipped))
        try:
            weights, meta = load_class_weights(path, with_metadata=True)
        except ClassWeightError:
            continue
        # only a flip that leaves the data intact (e.g. in the checksum's own key) may load
        assert weights.tolist() == original[0].tolist() and meta == original[1], f"bit {i} changed the content silently"


@pytest.mark.parametrize("cut", [0, 1, 10, 0.5, -2])
def test_p3_truncated_files_raise(tmp_path, cut):
    path, good = saved_weights(tmp_path)
    path.write_bytes(good[: int(len(good) * cut) if isinstance(cut, float) else cut if cut >= 0 else len(good) + cut])
    with pytest.raises(ClassWeightError):
        load_class_weights(path)


@given(st.binary(max_size=400))
def test_p3_random_bytes_raise_classweighterror(tmp_path_factory, blob):
    path = tmp_path_factory.mktemp("r") / "w.json"
    path.write_bytes(blob)
    with pytest.raises(ClassWeightError):
        load_class_weights(path, num_classes=10)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda r: r.update(num_classes=3, weights=[1.0, 1.0, 1.0]), "shape \\[10\\]"),
        (lambda r: r.update(weights=[1.0] * 9 + ["NaN"]), "list of numbers"),
        (lambda r: r.update(weights=[1.0] * 9 + [True]), "list of numbers"),
        (lambda r: r.update(weights=[[1.0]] * 10), "list of numbers"),
        (lambda r: r["weights"].__setitem__(0, 1e400), "too large for a float"),
    ],
    ids=["other num_classes", "NaN as text", "bool", "nested", "infinite"],
)
def test_p3_files_that_parse_but_are_wrong_raise(tmp_path, edit, message):
    path = tmp_path / "w.json"
    save_class_weights([1.0] * 10, path)
    record = json.loads(path.read_text())
    del record["sha256"]  # as a hand edit would
    edit(record)
    path.write_text(json.dumps(record).replace("Infinity", "1e400"))  # overflows to inf when parsed
    with pytest.raises(ClassWeightError, match=message):
        load_class_weights(path, num_classes=10)


@pytest.mark.parametrize(
    "damage", ["empty", "truncated", "random", "bitflip", "wrong fingerprint", "other num_classes"]
)
def test_p3_the_cli_warns_once_recomputes_and_rewrites(tmp_path, damage, no_quiet_period):
    path = labels_file(tmp_path)
    assert compute(path).exit_code == 0
    [cached] = cached_weight_files()
    good = cached.read_bytes()
    record = json.loads(good)
    bad = {
        "empty": b"",
        "truncated": good[: len(good) // 2],
        "random": os.urandom(300),
        "bitflip": good[:100] + bytes([good[100] ^ 0x04]) + good[101:],
        "wrong fingerprint": None,
        "other num_classes": None,
    }[damage]
    if bad is None:
        path_other = tmp_path / "other.json"
        if damage == "wrong fingerprint":
            save_class_weights(record["weights"], path_other, **{**record["metadata"], "fingerprint": "0" * 64})
        else:
            save_class_weights([1.0] * 3, path_other, **{**record["metadata"], "counts": [1, 2, 3]})
        bad = path_other.read_bytes()
    cached.write_bytes(bad)
    result = compute(path)
    assert result.exit_code == 0, result.output
    assert result.stderr.count("warning:") == 1 and "recomputing" in result.stderr
    assert json.loads(result.stdout)["weights"] == pytest.approx(reference_weights(path))
    assert cached.read_bytes() == good  # rewritten, complete
    assert not temp_files(cache_root())


def test_p3_a_damaged_cache_is_recomputed_in_training(tiny_corpus, tmp_path, no_quiet_period):
    base = {
        "data": str(tiny_corpus),
        "overfit_batch": True,
        "quick_test": True,
        "epochs": 1,
        "use_cached_weights": True,
    }
    trainer.train(TrainConfig(out=str(tmp_path / "a"), **base), quiet_reporter()[0])
    [cached] = cached_weight_files()
    good = cached.read_bytes()
    cached.write_bytes(good[:-40])
    report, out = quiet_reporter()
    trainer.train(TrainConfig(out=str(tmp_path / "b"), **base), report)
    assert out.getvalue().count("[WARNING]") == 1 and "damaged cached weights" in out.getvalue()
    assert cached.read_bytes() == good
    a, b = (json.loads((tmp_path / r / "class_weights.json").read_text())["weights"] for r in "ab")
    assert a == b


# ---------------------------------------------- P4 crashes mid-write ----


def test_p4_an_exception_mid_write_keeps_the_old_file_and_no_temp(tmp_path, monkeypatch):
    path, good = saved_weights(tmp_path)
    ckpt = tmp_path / "last.pt"
    checkpoints.save_checkpoint(ckpt, {"version": 2, "x": torch.ones(3)})
    old_ckpt = ckpt.read_bytes()

    def broken_fsync(fd):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(ClassWeightError, match="Input/output error"):
        save_class_weights([5.0, 5.0, 5.0, 5.0], path)
    with pytest.raises(OSError):
        checkpoints.save_checkpoint(ckpt, {"version": 2, "x": torch.zeros(1000)})
    assert path.read_bytes() == good and ckpt.read_bytes() == old_ckpt
    assert not temp_files(tmp_path)


WRITER = textwrap.dedent(
    """
    import sys, torch
    from classweights import save_class_weights
    from arcvae.checkpoints import save_checkpoint
    folder = sys.argv[1]
    big = torch.arange(2_000_000, dtype=torch.float32)
    print("ready", flush=True)
    i = 0
    while True:  # alternate two complete versions of each file until killed
        i += 1
        save_class_weights([float(i % 2 + 1)] * 10, folder + "/w.json", i=i % 2)
        save_checkpoint(__import__("pathlib").Path(folder + "/last.pt"), {"version": 2, "i": i % 2, "big": big + i % 2})
    """
)


@pytest.mark.slow
def test_p4_sigkill_mid_write_leaves_a_complete_file(tmp_path):
    save_class_weights([1.0] * 10, tmp_path / "w.json", i=0)
    checkpoints.save_checkpoint(
        tmp_path / "last.pt", {"version": 2, "i": 0, "big": torch.arange(2_000_000, dtype=torch.float32)}
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    for delay in (0.05, 0.2, 0.37, 0.6):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE, env=env)
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        w, meta = load_class_weights(tmp_path / "w.json", with_metadata=True)  # whole, and one of the two versions
        assert w.tolist() == [float(meta["i"] + 1)] * 10
        state = torch.load(tmp_path / "last.pt", weights_only=True)
        assert torch.equal(state["big"], torch.arange(2_000_000, dtype=torch.float32) + state["i"])
    # the next writer succeeds, whatever temp files the killed ones left
    save_class_weights([3.0] * 10, tmp_path / "w.json")
    assert load_class_weights(tmp_path / "w.json").tolist() == [3.0] * 10


# -------------------------------------------- P5 concurrent writers ----


@pytest.mark.slow
def test_p5_eight_processes_caching_the_same_weights(tmp_path):
    path = labels_file(tmp_path, n=3000)
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    # eight processes (forked from a server that has imported arcvae once) wait for each other, so all compute and
    # write at (nearly) the same moment
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with forked_pool(8) as pool:
        jobs = [(["weights", "compute", str(path), "--json"], env, str(barrier), str(i), 8) for i in range(8)]
        outputs = pool.starmap(invoke_together, jobs, chunksize=1)
    expected = reference_weights(path)
    assert len(outputs) == 8
    for code, out, err in outputs:
        assert code == 0, err
        assert json.loads(out)["weights"] == pytest.approx(expected, rel=1e-6)
    [cached] = cached_weight_files()
    assert load_class_weights(cached).tolist() == pytest.approx(expected, rel=1e-6)
    assert not temp_files(cache_root())
    second = run("weights", "compute", path)  # and the file left behind serves the next run
    assert second.exit_code == 0


# ------------------------------------------ P6 read-only or full disk ----


@pytest.fixture(params=[errno.EACCES, errno.EROFS, errno.ENOSPC], ids=["permission", "read-only", "disk-full"])
def failing_cache(request, monkeypatch):
    """Every write below the cache folder fails with the given errno; other writes work."""
    code = request.param
    real_mkstemp, real_fsync = classweights.storage.tempfile.mkstemp, os.fsync
    root = str(cache_root())

    def mkstemp(*args, dir=None, **kwargs):
        if code != errno.ENOSPC and str(dir).startswith(root):
            raise OSError(code, os.strerror(code), dir)
        return real_mkstemp(*args, dir=dir, **kwargs)

    def fsync(fd):
        if code == errno.ENOSPC and os.readlink(f"/proc/self/fd/{fd}").startswith(root):
            raise OSError(code, os.strerror(code))  # the disk fills up while the file is written
        return real_fsync(fd)

    monkeypatch.setattr(classweights.storage.tempfile, "mkstemp", mkstemp)
    monkeypatch.setattr(os, "fsync", fsync)
    if code == errno.ENOSPC and not Path("/proc/self/fd").exists():
        pytest.skip("needs /proc to tell which file is written")
    return os.strerror(code)


def test_p6_weights_compute_succeeds_with_one_warning(tmp_path, failing_cache, no_quiet_period):
    path = labels_file(tmp_path)
    result = compute(path)
    assert result.exit_code == 0, result.output
    assert result.stderr.count("warning:") == 1 and failing_cache in result.stderr, result.stderr
    assert json.loads(result.stdout)["weights"] == pytest.approx(reference_weights(path))
    assert not cached_weight_files() and not temp_files(cache_root())


def test_p6_training_succeeds_with_one_warning(tiny_corpus, tmp_path, failing_cache, no_quiet_period):
    report, out = quiet_reporter()
    result = trainer.train(
        TrainConfig(data=str(tiny_corpus), out=str(tmp_path / "run"), overfit_batch=True, quick_test=True, epochs=1),
        report,
    )
    assert result.steps > 0 and (tmp_path / "run" / "checkpoints" / "last.pt").exists()
    assert out.getvalue().count("[WARNING]") == 1 and "continuing without the cache" in out.getvalue()


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes to read-only folders anyway")
def test_p6_a_really_read_only_cache_folder(tmp_path):
    path = labels_file(tmp_path)
    cache_root().mkdir(parents=True)
    cache_root().chmod(0o555)
    try:
        result = compute(path)
    finally:
        cache_root().chmod(0o755)
    assert result.exit_code == 0 and result.stderr.count("warning:") == 1


# ------------------------------------------ P7 bad input, nothing lost ----

# (id, arrays written to bad.npz or its bytes, fragments of the error of 'weights compute', and of 'train')
BAD_INPUTS = [
    (
        "negative label",
        {"train": np.full((4, 16, 16), -1, np.int8)},
        ["label -1 at flat index 0", "bad.npz"],
        ["value -1 at index [0, 0, 0]", "'train'"],
    ),
    (
        "label >= num_classes",
        {"train": np.full((4, 16, 16), 12, np.uint8)},
        ["label 12 at flat index 0", "num_classes=10"],
        ["value 12 at index [0, 0, 0]", "colours 0-9"],
    ),
    (
        "non-integer float",
        {"train": np.full((4, 16, 16), 1.5)},
        ["label 1.5 at flat index 0 is not a class index"],
        ["non-integer value 1.5 at flat index 0"],
    ),
    (
        "NaN",
        {"train": np.full((4, 16, 16), np.nan)},
        ["label nan at flat index 0"],
        ["non-integer value nan at flat index 0"],
    ),
    ("wrong shape", {"train": np.zeros((4, 8, 8), np.uint8)}, None, ["'train'", "[4, 8, 8]", "expected [N, 16, 16]"]),
    ("empty", {"train": np.zeros((0, 16, 16), np.uint8)}, ["bad.npz", "empty"], ["'train'", "empty"]),
    ("missing key", {"images": np.zeros((4, 16, 16), np.uint8)}, ["'train'", "images"], ["'train'", "images"]),
    ("corrupt npz", b"PK\x03\x04" + b"\x00" * 60, ["bad.npz"], ["bad.npz"]),
    ("not a zip", b"hello, world\n", ["bad.npz"], ["bad.npz"]),
    ("object array", {"train": np.array([[None] * 16] * 16, dtype=object)[None]}, ["bad.npz"], ["bad.npz"]),
]


def write_bad(tmp_path: Path, content) -> Path:
    bad = tmp_path / "bad.npz"
    if isinstance(content, bytes):
        bad.write_bytes(content)
    else:
        np.savez(bad, **content, **({} if "val" in content else {"val": np.zeros((2, 16, 16), np.uint8)}))
    return bad


def one_line_error(result, fragments) -> str:
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def existing_state(tiny_corpus, tmp_path_factory) -> Path:
    """A folder holding what bad input must never touch: a cache (weights and digest notes), a weights file
    and a finished run. Made once; each test works on its own copy."""
    folder = tmp_path_factory.mktemp("existing-state")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(folder / "xdg-cache"))  # the per-test cache folder, relative to tmp_path
        patch.setattr(weight_cache, "QUIET_NS", -1)
        assert compute(labels_file(folder)).exit_code == 0
        assert run("weights", "compute", tiny_corpus, "--out", folder / "weights.json").exit_code == 0
        assert run(*ONE_QUICK_EPOCH, "--data", tiny_corpus, "--out", folder / "run").exit_code == 0
    return folder


@pytest.mark.parametrize(
    ("name", "content", "compute_fragments", "train_fragments"), BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS]
)
def test_p7_bad_input_is_one_line_and_touches_nothing(
    existing_state, tmp_path, name, content, compute_fragments, train_fragments, no_quiet_period
):
    shutil.copytree(existing_state, tmp_path, dirs_exist_ok=True)
    assert cached_weight_files() and (tmp_path / "run" / "checkpoints" / "last.pt").exists()
    out = tmp_path / "weights.json"
    bad = write_bad(tmp_path, content)
    before = snapshot(cache_root(), tmp_path)

    if compute_fragments is not None:  # any shape is fine for weights compute
        one_line_error(run("weights", "compute", bad, "--out", out, "--force"), compute_fragments)
    one_line_error(run("train", "--overfit-batch", "--data", bad, "--out", tmp_path / "new-run"), train_fragments)
    assert snapshot(cache_root(), tmp_path) == before  # nothing written, changed or left behind


def test_p7_docs_list_every_bad_input_tried():
    table = (REPO / "docs" / "reliability.md").read_text()
    for name, *_ in BAD_INPUTS:
        assert f"| {name} |" in table, f"docs/reliability.md lacks a row for {name!r}"


# --------------------------------------------------- P8 exact resume ----


def quiet_reporter():
    import io

    from rich.console import Console

    from arcvae.report import Reporter

    buffer = io.StringIO()
    return Reporter(Console(file=buffer, width=200, soft_wrap=True)), buffer


def interrupted(config: TrainConfig, monkeypatch, after_epoch: int = 1) -> None:
    real_save = checkpoints.save_state

    def crash(training, epoch, name="last.pt", **kwargs):
        real_save(training, epoch, name, **kwargs)
        if epoch == after_epoch and name == "last.pt":
            raise KeyboardInterrupt

    monkeypatch.setattr(checkpoints, "save_state", crash)
    with pytest.raises(KeyboardInterrupt):
        trainer.train(config, quiet_reporter()[0])
    monkeypatch.setattr(checkpoints, "save_state", real_save)


def metric_lines(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["normal", "overfit"])
def test_p8_resume_matches_an_uninterrupted_run_step_for_step(tiny_corpus, tmp_path, monkeypatch, request, mode):
    if mode == "normal":  # the shared pair of runs (conftest.py): quick test, batch 64, a log line every 4 steps
        runs = request.getfixturevalue("interrupted_normal_run")
        shutil.copytree(runs / "straight", tmp_path / "straight")
        shutil.copytree(runs / "resumed", tmp_path / "resumed")
    else:
        config = {
            "data": str(tiny_corpus),
            "overfit_batch": True,
            "quick_test": True,
            "target_accuracy": 1.0,
            "log_every_n_steps": 3,
            "seed": 5,
        }
        trainer.train(TrainConfig(out=str(tmp_path / "straight"), **config), quiet_reporter()[0])
        interrupted(TrainConfig(out=str(tmp_path / "resumed"), **config), monkeypatch)
    # a partial epoch's log lines after the checkpoint (as a kill would leave) are dropped on resume
    with (tmp_path / "resumed" / "metrics.jsonl").open("a") as f:
        f.write(json.dumps({"type": "step", "epoch": 2, "step": 10_000, "loss": 0.0}) + "\n")
    trainer.train(TrainConfig(), quiet_reporter()[0], resume=tmp_path / "resumed")
    straight, resumed = metric_lines(tmp_path / "straight"), metric_lines(tmp_path / "resumed")
    assert len(straight) == len(resumed) > 6
    assert straight == resumed  # every logged number, bit for bit
    a = torch.load(tmp_path / "straight" / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed" / "checkpoints" / "last.pt", weights_only=True)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


@pytest.mark.parametrize("split", ["train", "val"])
def test_p8_resume_refuses_other_data(tiny_corpus, tmp_path, monkeypatch, split):
    from arcvae.data import load_corpus, save_corpus

    splits = load_corpus(tiny_corpus)
    copy = save_corpus(splits, tmp_path / "copy.npz")
    interrupted(TrainConfig(data=str(copy), out=str(tmp_path / "run"), quick_test=True, batch_size=256), monkeypatch)
    before = snapshot(tmp_path / "run")
    splits[split] = splits[split].copy()
    splits[split][0, 0, 0] = (splits[split][0, 0, 0] + 1) % 10  # one label
    save_corpus(splits, copy)
    with pytest.raises(
        ArcvaeError, match=f"cannot resume .*: the {split} split of .* is not the data it was trained on"
    ):
        trainer.train(TrainConfig(), quiet_reporter()[0], resume=tmp_path / "run")
    assert snapshot(tmp_path / "run") == before


@pytest.mark.parametrize("changed", [False, True], ids=["same data", "one label changed"])
def test_p8_a_run_recorded_with_sha256_digests_resumes_on_its_data_only(tiny_corpus, tmp_path, monkeypatch, changed):
    """A checkpoint of an earlier version holds sha256 digests: the resumed run checks its data with sha256."""
    from arcvae.data import load_corpus, save_corpus

    splits = load_corpus(tiny_corpus)
    copy = save_corpus(splits, tmp_path / "copy.npz")
    interrupted(TrainConfig(data=str(copy), out=str(tmp_path / "run"), quick_test=True, batch_size=256), monkeypatch)
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    state = checkpoints.load_checkpoint(last)
    with np.load(copy) as stored:
        state["data_fingerprint"] = {split: classweights.count_label_stats(stored[split], 10, fingerprint="sha256").fingerprint
                                     for split in ("train", "val")}  # fmt: skip
    checkpoints.save_checkpoint(last, state)
    if changed:
        splits["val"] = splits["val"].copy()
        splits["val"][0, 0, 0] = (splits["val"][0, 0, 0] + 1) % 10
        save_corpus(splits, copy)
        with pytest.raises(
            ArcvaeError, match="cannot resume .*: the val split of .* is not the data it was trained on"
        ):
            trainer.train(TrainConfig(), quiet_reporter()[0], resume=tmp_path / "run")
        return
    trainer.train(TrainConfig(), quiet_reporter()[0], resume=tmp_path / "run")
    resumed = checkpoints.load_checkpoint(last)
    assert resumed["epoch"] > state["epoch"] and resumed["data_fingerprint"] == state["data_fingerprint"]


def test_p8_resume_trains_on_the_weights_it_started_with(tiny_corpus, tmp_path, monkeypatch, no_quiet_period):
    config = {
        "data": str(tiny_corpus),
        "overfit_batch": True,
        "quick_test": True,
        "target_accuracy": 1.0,
        "use_cached_weights": True,
    }
    interrupted(TrainConfig(out=str(tmp_path / "run"), **config), monkeypatch)
    started_with = checkpoints.load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["class_weights"]
    # the cache now holds other weights under a valid checksum, and a newer formula would give others again
    [cached] = cached_weight_files()
    weights, meta = load_class_weights(cached, with_metadata=True)
    save_class_weights((weights * torch.arange(1, 11)).tolist(), cached, **meta)
    monkeypatch.setattr(weight_cache, "FORMAT_VERSION", 99)
    report, out = quiet_reporter()
    result = trainer.train(TrainConfig(), report, resume=tmp_path / "run")
    assert torch.equal(result.class_weights, started_with)
    assert "Source: the resumed run's checkpoint" in out.getvalue() and "Loaded cached weights" not in out.getvalue()


def test_p8_checkpoints_load_with_weights_only(tmp_path, monkeypatch):
    seen = []
    real_load = torch.load

    def spy(*args, **kwargs):
        seen.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    checkpoints.save_checkpoint(tmp_path / "c.pt", {"version": checkpoints.CHECKPOINT_VERSION})
    monkeypatch.setattr(torch, "load", spy)
    with pytest.raises(ArcvaeError, match="incomplete"):
        checkpoints.load_checkpoint(tmp_path / "c.pt")
    assert seen == [True]


# ------------------------------------------------ P9 numeric guards ----


def nan_after(calls: int):
    """A BetaVAE whose gradients turn NaN from the ``calls``-th backward pass on."""
    from arcvae.model import BetaVAE

    class Poisoned(BetaVAE):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.backwards = 0

            def hook(grad):
                self.backwards += 1
                return grad * float("nan") if self.backwards >= calls else grad

            next(self.parameters()).register_hook(hook)

    return Poisoned


@pytest.mark.parametrize("bad_step", [7, 14])
def test_p9_non_finite_gradients_stop_at_the_named_step_and_save_nothing_bad(
    tiny_corpus, tmp_path, monkeypatch, bad_step
):
    monkeypatch.setattr(training_state, "BetaVAE", nan_after(bad_step))
    config = TrainConfig(
        data=str(tiny_corpus),
        out=str(tmp_path / "run"),
        overfit_batch=True,
        quick_test=True,
        target_accuracy=1.0,
        log_every_n_steps=5,
    )
    with pytest.raises(ArcvaeError, match=f"non-finite .* at step {bad_step}; stopping without saving"):
        trainer.train(config, quiet_reporter()[0])
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    if bad_step <= 10:  # inside the first epoch (10 steps): no checkpoint yet
        assert not last.exists()
    else:
        state = torch.load(last, weights_only=True)
        assert state["step"] < bad_step and all(bool(torch.isfinite(v).all()) for v in state["model"].values())
    assert all(np.isfinite(r.get("loss", 0.0)) for r in metric_lines(tmp_path / "run"))


def test_p9_a_non_finite_loss_is_named(tiny_corpus, tmp_path, monkeypatch):
    real_kl = loop.kl_divergence
    calls = [0]

    def kl(*args, **kwargs):
        calls[0] += 1
        value = real_kl(*args, **kwargs)
        return value * float("inf") if calls[0] >= 3 else value

    monkeypatch.setattr(loop, "kl_divergence", kl)
    config = TrainConfig(
        data=str(tiny_corpus), out=str(tmp_path / "run"), overfit_batch=True, quick_test=True, beta_schedule="constant"
    )
    with pytest.raises(ArcvaeError, match="non-finite .* at step 3"):
        trainer.train(config, quiet_reporter()[0])


@pytest.mark.parametrize(
    ("alpha", "message"),
    [
        ([1.0, float("nan")], "finite"),
        ([1.0, float("inf")], "finite"),
        ([[1.0, 2.0]], "shape"),
        ([1.0, -1.0], ">= 0"),
        ([0.0, 0.0], "positive"),
    ],
)
def test_p9_weights_are_validated_before_use(alpha, message):
    with pytest.raises(ArcvaeError, match=f"FocalLoss alpha: .*{message}"):
        FocalLoss(alpha=torch.tensor(alpha))


def test_p9_cached_weights_are_validated_on_load(tmp_path, no_quiet_period):
    path = labels_file(tmp_path)
    assert compute(path).exit_code == 0
    [cached] = cached_weight_files()
    record = json.loads(cached.read_text())
    record["weights"][3] = -1.0
    cached.write_text(json.dumps(with_checksum(record)))
    result = compute(path)
    assert "weight of class 3 to be >= 0" in result.stderr and json.loads(result.stdout)["weights"] == pytest.approx(
        reference_weights(path)
    )


def with_checksum(record: dict) -> dict:
    """``record`` with the checksum a program that writes the format would give it (the documented canonical JSON)."""
    record = {k: v for k, v in record.items() if k != "sha256"}
    canonical = json.dumps(record, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return {**record, "sha256": hashlib.sha256(canonical.encode()).hexdigest()}


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (lambda r: r.pop("sha256"), 'no "sha256" checksum'),
        (
            lambda r: r.update(with_checksum({**r, "weights": [2.0] + r["weights"][1:]})),
            "do not follow from its counts",
        ),
        (
            lambda r: (
                r["metadata"].update(counts=[c + 1 for c in r["metadata"]["counts"]]) or r.update(with_checksum(r))
            ),
            "do not follow from its counts",
        ),
        (lambda r: r["metadata"].pop("counts") and r.update(with_checksum(r)), "lacks the counts"),
    ],
    ids=["no checksum", "forged weight, valid checksum", "forged counts, valid checksum", "no counts"],
)
def test_p3_a_cache_entry_is_trusted_only_with_its_checksum_and_consistent_weights(
    tmp_path, edit, reason, no_quiet_period
):
    path = labels_file(tmp_path)
    assert compute(path).exit_code == 0
    [cached] = cached_weight_files()
    record = json.loads(cached.read_text())
    edit(record)
    cached.write_text(json.dumps(record))
    result = compute(path)
    assert result.exit_code == 0 and result.stderr.count("warning:") == 1 and reason in result.stderr, result.stderr
    assert json.loads(result.stdout)["weights"] == pytest.approx(reference_weights(path))
    assert load_class_weights(cached, require_checksum=True).tolist() == pytest.approx(
        reference_weights(path)
    )  # replaced


def test_the_checksum_covers_the_record_as_compact_sorted_json(tmp_path):
    """As docs/api.md describes the file: ``sha256`` is the checksum of the rest of the record, as compact JSON with
    sorted keys, so anyone can check a file without the library."""
    path = tmp_path / "w.json"
    save_class_weights([0.5, 1.5], path, method="inverse", counts=[3, 1])
    record = json.loads(path.read_text())
    checksum = record.pop("sha256")
    assert checksum == hashlib.sha256(json.dumps(record, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
