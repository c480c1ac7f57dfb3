"""save_class_weights / load_class_weights: exact round-trips, atomic writes, no code execution."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from classweights import ClassWeightError, load_class_weights, save_class_weights, storage


@given(st.lists(st.floats(min_value=0, max_value=1e6, width=32), min_size=1, max_size=20).filter(lambda w: sum(w) > 0))
def test_round_trip_is_exact(tmp_path_factory, values):
    path = tmp_path_factory.mktemp("w") / "w.json"
    weights = torch.tensor(values, dtype=torch.float32)
    save_class_weights(weights, path, method="sqrt_inverse", counts=torch.arange(len(values)), smooth=1.0)
    loaded, meta = load_class_weights(path, with_metadata=True)
    assert loaded.dtype == torch.float32 and torch.equal(loaded, weights)
    assert meta == {"method": "sqrt_inverse", "counts": list(range(len(values))), "smooth": 1.0}


def test_file_is_readable_json(tmp_path):
    save_class_weights(np.array([0.25, 1.75]), tmp_path / "w.json", source=tmp_path / "d.npz", n=np.int64(3))
    record = json.loads((tmp_path / "w.json").read_text())
    assert record["format"] == "classweights" and record["format_version"] == 1 and record["num_classes"] == 2
    assert record["weights"] == [0.25, 1.75]
    assert record["metadata"] == {"source": str(tmp_path / "d.npz"), "n": 3}


def test_num_classes_is_checked_on_load(tmp_path):
    save_class_weights([1.0, 1.0], tmp_path / "w.json")
    with pytest.raises(ClassWeightError, match=r"Expected `weights` to have shape \[3\], but got \[2\]"):
        load_class_weights(tmp_path / "w.json", num_classes=3)


def test_invalid_weights_are_never_saved(tmp_path):
    with pytest.raises(ClassWeightError, match="class 1 to be finite"):
        save_class_weights([1.0, float("nan")], tmp_path / "w.json")
    with pytest.raises(ClassWeightError, match="1-D sequence"):
        save_class_weights(5.0, tmp_path / "w.json")
    with pytest.raises(ClassWeightError, match="metadata 'obj' to be JSON-serialisable, but got object"):
        save_class_weights([1.0], tmp_path / "w.json", obj=object())
    assert not (tmp_path / "w.json").exists()
    assert list(tmp_path.iterdir()) == []


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "w.json"
    save_class_weights([1.0, 2.0], path)
    before = path.read_bytes()

    def explode(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(storage.os, "fsync", explode)
    with pytest.raises(ClassWeightError, match="could not write class weights to .*No space left on device"):
        save_class_weights([3.0, 4.0], path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.json"]


def test_legacy_pth_files_load(tmp_path):
    torch.save({"class_weights": torch.tensor([0.1, 1.9])}, tmp_path / "class_weights.pth")
    assert load_class_weights(tmp_path / "class_weights.pth").tolist() == pytest.approx([0.1, 1.9])
    torch.save(torch.tensor([1.0, 1.0]), tmp_path / "bare.pth")
    assert load_class_weights(tmp_path / "bare.pth", num_classes=2).tolist() == [1.0, 1.0]


class Planted:
    """Unpickling this writes a file: proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pwned"))


@pytest.mark.parametrize("kind", ["torch.save", "pickle"])
def test_a_planted_pickle_never_runs(tmp_path, kind):
    marker = tmp_path / "marker"
    path = tmp_path / "class_weights.pth"
    payload = {"class_weights": Planted(marker)}
    if kind == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload))
    with pytest.raises(ClassWeightError, match="could not load .* safely"):
        load_class_weights(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is not a valid class-weights file"),
        (
            b'{"format": "classweights", "format_version": 1, "num_classes": 2, "weights": [1.0,',
            "is not a valid class-weights file",
        ),
        (b"\x00\xff\x13garbage", "is not a valid class-weights file"),
        (b"[1, 2, 3]", "is not a class-weights file"),
        (b'{"format": "other"}', "is not a class-weights file"),
        (b'{"format": "classweights", "format_version": 99}', "has format_version 99"),
        (
            b'{"format": "classweights", "format_version": 1, "num_classes": 2, "weights": [1.0, NaN]}',
            "NaN is not allowed",
        ),
        (
            b'{"format": "classweights", "format_version": 1, "num_classes": 2, "weights": [1.0, "x"]}',
            "list of numbers",
        ),
        (
            b'{"format": "classweights", "format_version": 1, "num_classes": 3, "weights": [1.0, 2.0]}',
            '"num_classes" is 3 but there are 2 weights',
        ),
        (
            b'{"format": "classweights", "format_version": 1, "num_classes": 2, "weights": [1.0, -2.0]}',
            "weight of class 1 to be >= 0",
        ),
        (b"PK\x03\x04 truncated zip", "could not load .* safely"),
    ],
)
def test_corrupt_files_raise(tmp_path, content, message):
    path = tmp_path / "w.json"
    path.write_bytes(content)
    with pytest.raises(ClassWeightError, match=message):
        load_class_weights(path)


@given(st.binary(max_size=200))
def test_random_bytes_never_load_as_weights_by_accident(tmp_path_factory, blob):
    path = tmp_path_factory.mktemp("r") / "w.json"
    path.write_bytes(blob)
    try:
        weights = load_class_weights(path)
    except ClassWeightError:
        return
    assert bool(torch.isfinite(weights).all()) and bool((weights >= 0).all())  # only a genuinely valid file loads


def test_missing_file(tmp_path):
    with pytest.raises(ClassWeightError, match="nope.json' does not exist"):
        load_class_weights(tmp_path / "nope.json")


def test_unwritable_folder(tmp_path, monkeypatch):
    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(storage.tempfile, "mkstemp", denied)
    with pytest.raises(ClassWeightError, match="could not write class weights to .*Permission denied"):
        save_class_weights([1.0], tmp_path / "w.json")
    assert list(tmp_path.iterdir()) == []


def test_saved_files_honour_the_umask(tmp_path):
    previous = os.umask(0o022)
    try:
        save_class_weights([1.0], tmp_path / "w.json")
    finally:
        os.umask(previous)
    assert (tmp_path / "w.json").stat().st_mode & 0o777 == 0o644
