"""torch.distributed: sharded counting on spawned 2-process gloo groups (CPU), and DDP training."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from forked import run_ranks
from hypothesis import given
from hypothesis import strategies as st

import classweights
from classweights import ClassWeightError

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def torchrun(
    *args: str, nproc: int = 2, timeout: float = 300, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """``torchrun --standalone`` (rendezvous on localhost, a free port), two CPU processes."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
    }
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *args]
    return subprocess.run(command, check=False, capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd)


def test_distributed_without_a_process_group_is_a_clear_error():
    with pytest.raises(
        ClassWeightError, match="Expected an initialised torch.distributed process group for distributed=True"
    ):
        classweights.count_labels(np.zeros((2, 2), np.uint8), 2, distributed=True)


@pytest.fixture(scope="module")
def two_rank_counts(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dist")
    rng = np.random.default_rng(0)
    grids = rng.integers(1, 10, size=(301, 16, 16), dtype=np.uint8)
    grids[rng.random(grids.shape) < 0.9] = 0
    masks = grids.copy()
    masks[rng.random(masks.shape) < 0.2] = 255
    np.save(folder / "grids.npy", grids)
    np.save(folder / "masks.npy", masks)
    np.savez(folder / "grids.npz", train=grids[:10], val=grids)
    np.savez_compressed(folder / "packed.npz", train=grids)
    run_ranks(HERE / "dist_worker.py", str(folder))  # two ranks of a gloo group, as torchrun starts them
    ranks = [json.loads((folder / f"rank{r}.json").read_text()) for r in range(2)]
    return grids, masks, ranks


def single(source, **options) -> dict:
    stats = classweights.count_label_stats(source, 10, **options)
    return {"counts": stats.counts.tolist(), "num_images": stats.num_images, "num_labels": stats.num_labels,
            "image_pixels": None if stats.image_pixels is None else stats.image_pixels.tolist(), "fingerprint": stats.fingerprint}  # fmt: skip


@pytest.mark.slow
def test_sharded_counts_equal_single_process_counts_for_every_source(two_rank_counts):
    grids, masks, ranks = two_rank_counts
    expected = {
        "array": single(grids),
        "array, presence": single(grids, presence=True),
        "one sample (an empty shard)": single(grids[:1]),
        "tensor int64": single(grids),
        "npy path": single(grids),
        "npz member": single(grids),
        "npz compressed": single(grids),
        "map-style dataset": single(grids),
        "TensorDataset": single(masks, ignore_index=255),
        "ignore_index": single(masks, ignore_index=255, presence=True),
        "DataLoader + DistributedSampler": single(grids[:300]),
    }
    for name, want in expected.items():
        for rank in ranks:
            got = rank[name]
            assert "error" not in got, (name, got)
            assert {k: got[k] for k in ("counts", "num_images", "num_labels", "image_pixels")} == {
                k: want[k] for k in ("counts", "num_images", "num_labels", "image_pixels")
            }, name
    assert (
        ranks[0]["weights"]
        == ranks[1]["weights"]
        == pytest.approx(classweights.compute_class_weights(grids, 10).tolist())
    )


@pytest.mark.slow
def test_sharded_fingerprint_equals_the_single_process_one(two_rank_counts, monkeypatch):
    grids, _, ranks = two_rank_counts
    a, b = ranks[0]["fingerprint"]["fingerprint"], ranks[1]["fingerprint"]["fingerprint"]
    assert a == b == single(grids, fingerprint=True)["fingerprint"]  # whatever the number of processes
    legacy = [rank["fingerprint, sha256"]["fingerprint"] for rank in ranks]
    assert legacy[0] == legacy[1] == single(grids, fingerprint="sha256")["fingerprint"] != a
    monkeypatch.setattr(
        classweights._fingerprint, "HASH_BLOCK_BYTES", 4096
    )  # as the ranks did: 19 blocks, split 9 + 10
    small = single(grids, fingerprint=True)["fingerprint"]
    for name in ("fingerprint, 4 KiB blocks", "fingerprint, npy, 4 KiB blocks"):
        assert ranks[0][name]["fingerprint"] == ranks[1][name]["fingerprint"] == small, name
    assert small != a


@pytest.mark.slow
def test_an_error_on_one_rank_is_raised_on_every_rank(two_rank_counts):
    _, _, ranks = two_rank_counts
    errors = [rank["bad label on rank 1 only"]["error"] for rank in ranks]
    assert "label 12 at flat index 38400 is out of range" in errors[1]  # rank 1's own message, with the global index
    assert errors[0].startswith("counting failed on rank 1: ") and "label 12" in errors[0]


@given(
    n=st.integers(0, 500),
    world=st.integers(1, 9),
    row_bytes=st.integers(1, 300),
    block=st.sampled_from([None, 1, 64, 4096]),
)
def test_shards_partition_the_samples_contiguously(n, world, row_bytes, block):
    from classweights._stream import Shard, _shard_rows

    bounds = [_shard_rows(n, Shard(r, world, block), row_bytes) for r in range(world)]
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(a[1] == b[0] and a[0] <= a[1] for a, b in itertools.pairwise(bounds))
    if block is not None:  # every boundary but the end falls on a whole hash block
        rows = max(1, block // row_bytes)
        assert all(lo % rows == 0 for lo, _ in bounds)


@given(n=st.integers(0, 500), world=st.integers(1, 9))
def test_each_process_takes_a_contiguous_share_of_the_grids(n, world):
    import itertools

    from arcvae.distributed import Dist

    shares = [Dist(rank, world).shard(n) for rank in range(world)]
    assert shares[0].start == 0 and shares[-1].stop == n
    assert all(a.stop == b.start for a, b in itertools.pairwise(shares))
    sizes = [share.stop - share.start for share in shares]
    assert max(sizes) - min(sizes) <= 1


@given(chunk=st.integers(1, 5000), block_rows=st.integers(1, 40))
def test_fingerprint_does_not_depend_on_chunking_across_many_blocks(chunk, block_rows):
    import unittest.mock

    grids = np.random.default_rng(1).integers(0, 10, size=(97, 8, 8), dtype=np.uint8)
    with unittest.mock.patch.object(classweights._fingerprint, "HASH_BLOCK_BYTES", block_rows * 64):
        whole = classweights.count_label_stats(grids, 10, fingerprint=True).fingerprint
        assert classweights.count_label_stats(grids, 10, fingerprint=True, chunk_size=chunk).fingerprint == whole
        assert classweights.count_label_stats(list(grids), 10, fingerprint=True, chunk_size=chunk).fingerprint == whole


# ----------------------------------------------------------- DDP training ----


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    from arcvae.data import generate_corpus, save_corpus

    return save_corpus(generate_corpus(2000, seed=7), tmp_path_factory.mktemp("ddp") / "tiny.npz")


@pytest.mark.slow
def test_ddp_ranks_end_identical_and_resume_step_for_step(tiny_data, tmp_path):
    # both modes in one launch: overfit mode splits one batch between the ranks; normal mode shards every batch, here
    # with weights counted on each batch, the ranks summing the counts of their shares (normal mode with the full
    # split's weights differs only in where its weights come from, which overfit mode checks; docs/distributed.md
    # interrupts and resumes such a run)
    # the two ranks of a gloo group, started as torchrun starts them (docs/distributed.md and
    # test_torchrun_bad_data_is_one_error_line run torchrun itself)
    outputs = run_ranks(HERE / "dist_train_worker.py", str(tiny_data), str(tmp_path), "overfit,per-batch")
    weights = classweights.compute_class_weights(np.load(tiny_data)["train"], 10)
    for mode in ("overfit", "per-batch"):
        folder = tmp_path / mode
        for run in ("straight", "resumed"):
            a, b = (torch.load(folder / f"{run}-rank{r}.pt", weights_only=True) for r in range(2))
            assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"]), (mode, run)
            if mode == "per-batch":  # each rank counted its share of every batch, and the shares' sum weighed it
                assert a["weights"] is None and b["weights"] is None
                assert a["batches"] is not None and torch.equal(a["batches"], b["batches"]), run
                assert len({tuple(w.tolist()) for w in a["batches"]}) > 1  # batches of other colour counts
            else:
                assert torch.equal(a["weights"], b["weights"]) and torch.allclose(a["weights"], weights)
        straight, resumed = ((folder / r / "metrics.jsonl").read_text().splitlines() for r in ("straight", "resumed"))
        assert straight == resumed and len(straight) > 5, mode  # the resumed run logs the same numbers, step for step
        steps = [json.loads(line)["step"] for line in straight if '"type": "step"' in line]
        assert steps == sorted(set(steps)) and steps, mode  # one writer: each step logged once
    # rank 0 alone prints: once per run (straight, interrupted, resumed; two modes), or per finished run
    out = "".join(out for out, _ in outputs)
    for line, times in (
        ("[MODEL] Created: 801,034 parameters", 6),
        ("[DDP] 2 processes (gloo)", 6),
        ("Counted 1600 samples in 2 shards", 2),
        ("[DDP] Class weights and final model parameters are identical on all 2 processes", 4),
        ("[RUN] Pictures: ", 4),
    ):
        assert out.count(line) == times, (line, out.count(line))
    assert outputs[1][0] == ""  # rank 1 prints nothing
    for _, err in outputs:
        assert "error" not in err.lower() and "Traceback" not in err, err
    for rank in range(2):  # the group is really gone once destroyed: no gloo thread is left to abort the exit
        threads = json.loads((tmp_path / f"threads-rank{rank}.json").read_text())
        assert threads is None or not [name for name in threads if "gloo" in name], threads


@pytest.mark.slow
def test_torchrun_bad_data_is_one_error_line(tmp_path):
    np.savez(tmp_path / "bad.npz", train=np.full((40, 16, 16), 12, np.uint8), val=np.zeros((4, 16, 16), np.uint8))
    result = torchrun(
        "-m", "arcvae", "train", "--overfit-batch", "--data", str(tmp_path / "bad.npz"), "--out", str(tmp_path / "run")
    )
    assert result.returncode != 0
    assert (
        result.stderr.count("error: ") == 1 and "holds value 12" in result.stderr
    )  # rank 0 reports; torchrun adds its summary
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(
    not torch.cuda.is_available() or torch.cuda.device_count() < 2, reason="needs 2 CUDA devices for NCCL"
)
def test_nccl_two_gpus_train_identically(tiny_data, tmp_path):
    result = torchrun(str(HERE / "dist_train_worker.py"), str(tiny_data), str(tmp_path), "overfit", "cuda")
    assert result.returncode == 0, result.stderr[-3000:]
    a, b = (torch.load(tmp_path / "overfit" / f"straight-rank{r}.pt", weights_only=True) for r in range(2))
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
