"""The labels' fingerprint: BLAKE3 block by block, and the sha256 fingerprints earlier versions recorded."""

from __future__ import annotations

import json
import sys
import unittest.mock

import blake3
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import classweights
from classweights import ClassWeightError, count_label_stats, fingerprint_algorithm

# What the version before BLAKE3 returned for these labels (computed with it, then written down here).
GRIDS = (np.arange(6 * 4 * 4).reshape(6, 4, 4) % 5).astype(np.uint8)
EARLIER = {
    "uint8": "72016d85fe0f584d97e116d4a236b72658b7c7eab7e60f771799e93531415d90",
    "int64": "0f99faf055e0a32ad6054b3097aab2f574f9bcf044020b19d833ae98df27bca4",
    "uint8, 32-byte blocks": "e208e7d26cba2e59b35b3b6dbb07ef9ff4905555c4fbc58735b2871cbad38049",
    "three .npy label images": "2b8b5e27c4c73f608821a51e96a61fed683290d07adefb26025699e73551d311",
    "list column": "225919261569bbc565dad2eeb9aa2269ff19aa281d98cb357851d33c5c48f9c9",
}


def reference(labels: np.ndarray, block_bytes: int) -> str:
    """The definition, written out: BLAKE3 of each block of whole samples, then of the domain, the block digests and
    the dtype and shape."""
    rows = labels.reshape(len(labels), -1)
    block_rows = max(1, block_bytes // max(1, rows[0].nbytes))
    whole = blake3.blake3(b"classweights-labels-v2\0")
    for lo in range(0, len(rows), block_rows):
        whole.update(blake3.blake3(rows[lo : lo + block_rows].astype(rows.dtype.newbyteorder("<")).tobytes()).digest())
    shape = {"dtype": labels.dtype.name, "samples": len(rows), "per_sample": rows.shape[1]}
    whole.update(json.dumps(shape, sort_keys=True).encode())
    return "blake3:" + whole.hexdigest()


@settings(max_examples=60, deadline=None)
@given(
    labels=hnp.arrays(
        st.sampled_from([np.uint8, np.int16, np.int64, np.float32]),
        hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=9),
        elements=st.integers(0, 3),
    ),
    block_bytes=st.sampled_from([1, 7, 64, 1 << 24]),
    chunk_size=st.integers(1, 50),
)
def test_the_fingerprint_is_blake3_of_the_block_digests(labels, block_bytes, chunk_size):
    with unittest.mock.patch.object(classweights._fingerprint, "HASH_BLOCK_BYTES", block_bytes):
        got = count_label_stats(labels, 4, fingerprint=True, chunk_size=chunk_size).fingerprint
        assert count_label_stats(labels, 4, fingerprint="blake3", num_threads=3).fingerprint == got
    assert got == reference(labels, block_bytes)


def test_sha256_gives_the_fingerprints_earlier_versions_recorded(tmp_path):
    assert count_label_stats(GRIDS, 5, fingerprint="sha256").fingerprint == EARLIER["uint8"]
    assert (
        count_label_stats(torch.from_numpy(GRIDS.astype(np.int64)), 5, fingerprint="sha256").fingerprint
        == EARLIER["int64"]
    )
    with unittest.mock.patch.object(classweights._fingerprint, "HASH_BLOCK_BYTES", 32):
        assert (
            count_label_stats(GRIDS, 5, fingerprint="sha256", chunk_size=48).fingerprint
            == EARLIER["uint8, 32-byte blocks"]
        )
    for i in range(3):
        np.save(tmp_path / f"m{i}.npy", (np.arange(12 + i) % 3).astype(np.uint8))
    assert count_label_stats(tmp_path, 3, fingerprint="sha256").fingerprint == EARLIER["three .npy label images"]
    pa = pytest.importorskip("pyarrow")
    table = pa.table({"y": pa.array([[0, 1], [2], [1, 1, 1], []], pa.list_(pa.uint8()))})
    assert count_label_stats(table, 3, fingerprint="sha256").fingerprint == EARLIER["list column"]


@pytest.mark.parametrize("algorithm", ["blake3", "sha256"])
def test_every_route_to_the_same_labels_gives_one_fingerprint(tmp_path, algorithm):
    """One process or several threads, any chunking, a file or memory: one value for each hash."""
    rng = np.random.default_rng(1)
    grids = (rng.integers(1, 10, size=(3000, 16, 16)) * (rng.random((3000, 16, 16)) < 0.1)).astype(np.uint8)
    np.save(tmp_path / "grids.npy", grids)
    np.savez_compressed(tmp_path / "grids.npz", train=grids)
    with unittest.mock.patch.object(classweights._fingerprint, "HASH_BLOCK_BYTES", 100_000):  # blocks across chunks
        routes = [
            count_label_stats(grids, 10, fingerprint=algorithm),
            count_label_stats(grids, 10, fingerprint=algorithm, num_threads=1, chunk_size=777),
            count_label_stats(torch.from_numpy(grids), 10, fingerprint=algorithm, num_threads=4),
            count_label_stats(tmp_path / "grids.npy", 10, fingerprint=algorithm, chunk_size=50_000),
            count_label_stats(tmp_path / "grids.npz", 10, fingerprint=algorithm, num_threads=2),
        ]
    assert len({stats.fingerprint for stats in routes}) == 1
    assert fingerprint_algorithm(routes[0].fingerprint) == algorithm


def test_the_two_hashes_never_give_one_string():
    """A record names its hash by its form, so an earlier version's digest is never taken for a new one."""
    new, old = (count_label_stats(GRIDS, 5, fingerprint=a).fingerprint for a in ("blake3", "sha256"))
    assert new.startswith("blake3:") and len(new) == 71 and len(old) == 64 and new[7:] != old
    assert (fingerprint_algorithm(new), fingerprint_algorithm(old)) == ("blake3", "sha256")


@pytest.mark.parametrize(
    "value", ["", "blake3:", "ab" * 31, "AB" * 32, "blake3:" + "ab" * 31, "sha256:" + "ab" * 32, None, 7]
)
def test_fingerprint_algorithm_refuses_what_is_no_fingerprint(value):
    with pytest.raises(ClassWeightError, match="Expected a label fingerprint") as caught:
        fingerprint_algorithm(value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("value", ["md5", "true", 1, None, "BLAKE3"])
def test_the_fingerprint_option_is_checked(value):
    with pytest.raises(ClassWeightError, match="Expected `fingerprint` to be True, False or one of 'blake3', 'sha256'"):
        count_label_stats(GRIDS, 5, fingerprint=value)


def test_a_missing_blake3_is_one_line_saying_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "blake3", None)  # as if it were not installed: importing it raises ImportError
    with pytest.raises(ClassWeightError, match="pip install blake3") as caught:
        count_label_stats(GRIDS, 5, fingerprint=True)
    assert "\n" not in str(caught.value)
    assert count_label_stats(GRIDS, 5, fingerprint="sha256").fingerprint == EARLIER["uint8"]  # sha256 needs nothing
