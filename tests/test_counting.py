"""count_labels / count_label_stats against numpy references, for every source type."""

from __future__ import annotations

import zipfile
from pathlib import Path

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch.utils.data import DataLoader, TensorDataset

from classweights import ClassWeightError, count_label_stats, count_labels

INT_DTYPES = [np.uint8, np.int8, np.int16, np.int32, np.int64, np.uint16, np.uint32, np.uint64]


def reference_counts(labels: np.ndarray, num_classes: int, ignore_index: int | None = None) -> np.ndarray:
    flat = np.asarray(labels).reshape(-1).astype(np.int64)
    if ignore_index is not None:
        flat = flat[flat != ignore_index]
    return np.bincount(flat, minlength=num_classes)


def reference_image_pixels(labels: np.ndarray, num_classes: int, ignore_index: int | None = None) -> np.ndarray:
    """Per image, by a plain loop: total kept labels of the images containing each class."""
    rows = (
        np.asarray(labels).astype(np.int64).reshape(len(labels), -1)
        if np.ndim(labels) > 1
        else np.asarray(labels).reshape(-1, 1)
    )
    out = np.zeros(num_classes, dtype=np.int64)
    for row in rows:
        kept = row if ignore_index is None else row[row != ignore_index]
        for c in np.unique(kept):
            out[c] += kept.size
    return out


@st.composite
def label_arrays(draw, *, allow_ignore=True):
    num_classes = draw(st.integers(1, 12))
    dtype = draw(st.sampled_from(INT_DTYPES))
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=7))
    labels = draw(hnp.arrays(dtype, shape, elements=st.integers(0, num_classes - 1)))
    ignore_index = None
    if allow_ignore and draw(st.booleans()):
        candidates = [c for c in (num_classes - 1, num_classes + 3, 255) if np.can_cast(np.min_scalar_type(c), dtype)]
        if candidates:
            ignore_index = draw(st.sampled_from(candidates))
            mask = draw(hnp.arrays(np.bool_, shape))
            labels = labels.copy()
            labels[mask] = ignore_index
    if ignore_index is not None and reference_counts(labels, num_classes, ignore_index).sum() == 0:
        ignore_index = None
        labels = np.zeros_like(labels)
    chunk_size = draw(st.sampled_from([1, 3, 17, 64, None]))
    return labels, num_classes, ignore_index, chunk_size


def _sources(labels: np.ndarray, tmp: Path):
    """The same labels as every kind of source count_labels accepts."""
    yield "ndarray", labels
    tensor = torch.from_numpy(labels.astype(np.int64) if labels.dtype in (np.uint32, np.uint64) else labels)
    yield "tensor", tensor
    np.save(tmp / "a.npy", labels)
    yield "npy", tmp / "a.npy"
    yield "memmap", np.load(tmp / "a.npy", mmap_mode="r")
    np.savez_compressed(tmp / "c.npz", train=labels, other=labels[:1])
    yield "npz", tmp / "c.npz"
    np.savez(tmp / "u.npz", labels=labels)
    yield "npz-uncompressed-single", str(tmp / "u.npz")
    yield "dataset", [(labels[i], i) for i in range(len(labels))]
    yield "dict-items", DictDataset(labels)
    yield "batches", (labels[i : i + 2] for i in range(0, len(labels), 2))
    yield "dataloader", DataLoader(TensorDataset(tensor.long()), batch_size=3)
    yield "tensordataset", TensorDataset(tensor)


class DictDataset:
    def __init__(self, labels):
        self.labels = labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"image": np.zeros(3), "mask": self.labels[i]}


@given(case=label_arrays())
def test_counts_equal_bincount_for_every_source(case, tmp_path_factory):
    labels, num_classes, ignore_index, chunk_size = case
    expected = reference_counts(labels, num_classes, ignore_index)
    tmp = tmp_path_factory.mktemp("src")
    for name, source in _sources(labels, tmp):
        key = "mask" if name == "dict-items" else None
        counts = count_labels(source, num_classes, ignore_index=ignore_index, chunk_size=chunk_size, key=key)
        assert counts.dtype == torch.int64 and counts.shape == (num_classes,), name
        np.testing.assert_array_equal(counts.numpy(), expected, err_msg=name)


@given(case=label_arrays(), threads=st.integers(1, 4))
def test_presence_statistic_matches_a_per_image_loop(case, threads):
    labels, num_classes, ignore_index, chunk_size = case
    stats = count_label_stats(
        labels, num_classes, ignore_index=ignore_index, chunk_size=chunk_size, num_threads=threads, presence=True
    )
    np.testing.assert_array_equal(stats.counts.numpy(), reference_counts(labels, num_classes, ignore_index))
    np.testing.assert_array_equal(stats.image_pixels.numpy(), reference_image_pixels(labels, num_classes, ignore_index))
    assert stats.num_images == (len(labels) if labels.ndim else 1)
    assert stats.num_labels == int(stats.counts.sum())


@given(st.lists(st.integers(0, 4), min_size=1, max_size=50), st.integers(1, 4))
def test_thread_count_does_not_change_the_result(values, threads):
    labels = np.array(values, dtype=np.int32)
    assert (
        count_labels(labels, 5, chunk_size=3, num_threads=threads).tolist() == np.bincount(labels, minlength=5).tolist()
    )


def test_plain_python_list_and_scalar_tensor():
    assert count_labels([0, 2, 2, 1], 3).tolist() == [1, 1, 2]
    assert count_labels(torch.tensor(2), 3).tolist() == [0, 0, 1]


def test_bool_and_whole_number_float_labels():
    assert count_labels(np.array([[True, False], [True, True]]), 2).tolist() == [1, 3]
    assert count_labels(torch.tensor([0.0, 1.0, 1.0, 2.0]), 3).tolist() == [1, 2, 1]


def test_non_contiguous_tensor_and_array():
    base = torch.arange(60).reshape(3, 4, 5) % 7
    view = base.transpose(0, 2)
    assert count_labels(view, 7, chunk_size=4).tolist() == np.bincount(base.reshape(-1).numpy(), minlength=7).tolist()
    fortran = np.asfortranarray(base.numpy())
    assert count_labels(fortran, 7, chunk_size=4).tolist() == np.bincount(fortran.reshape(-1), minlength=7).tolist()


def test_fortran_ordered_npz_member(tmp_path):
    labels = np.asfortranarray(np.arange(24).reshape(2, 3, 4) % 5)
    np.savez_compressed(tmp_path / "f.npz", train=labels)
    stats = count_label_stats(tmp_path / "f.npz", 5, presence=True)
    assert stats.counts.tolist() == reference_counts(labels, 5).tolist()
    assert stats.image_pixels.tolist() == reference_image_pixels(labels, 5).tolist()


def test_progress_reports_samples_up_to_the_total(grids):
    seen = []
    count_labels(grids, 10, chunk_size=16 * 16 * 50, progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (300, 300)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen) and len(seen) == 6


def test_progress_total_is_none_for_plain_iterables(grids):
    seen = []
    count_labels(iter([grids[:10], grids[10:]]), 10, progress=lambda d, t: seen.append((d, t)))
    assert seen[-1] == (300, None)


def test_real_corpus_counts_equal_numpy(real_corpus):
    with np.load(real_corpus) as data:
        for key in ("train", "val"):
            expected = np.bincount(data[key].reshape(-1), minlength=10)
            assert count_labels(real_corpus, 10, key=key).tolist() == expected.tolist()
    assert int(expected[0]) / expected.sum() > 0.9  # the corpus is mostly background


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_tensor_is_counted_on_its_device(grids):
    labels = torch.from_numpy(grids).cuda()
    assert count_labels(labels, 10).tolist() == reference_counts(grids, 10).tolist()
    assert count_labels(grids, 10, device="cuda").tolist() == reference_counts(grids, 10).tolist()


# ----------------------------------------------------------------- errors ----


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (np.array([[0, 1], [12, 3]]), "label 12 at flat index 2 is out of range for num_classes=10"),
        (np.array([0, -1, 2]), "label -1 at flat index 1 is out of range for num_classes=10"),
        (np.array([0.0, 1.5]), "label 1.5 at flat index 1 is not a class index"),
        (np.array([0.0, np.nan]), "label nan at flat index 1 is not a class index"),
        (np.array([0.0, np.inf]), "label inf at flat index 1 is not a class index"),
        (np.zeros((0, 16, 16), dtype=np.uint8), "Expected at least one label, but labels is empty"),
        (np.array([1 + 2j]), "expected integer labels, but got an array of dtype complex128"),
        (np.array(["a", "b"]), "dtype <U1"),
        (np.array([2**63 + 5], dtype=np.uint64), "out of range"),
    ],
)
def test_bad_labels_raise_with_value_and_place(labels, message):
    with pytest.raises(ClassWeightError, match=None) as info:
        count_labels(labels, 10)
    assert message.lower() in str(info.value).lower()


def test_out_of_range_index_is_global_across_chunks():
    labels = np.zeros(1000, dtype=np.uint8)
    labels[777] = 10
    with pytest.raises(ClassWeightError, match="label 10 at flat index 777"):
        count_labels(labels, 10, chunk_size=100, num_threads=3)


def test_ignored_labels_outside_the_range_are_allowed_but_others_are_not():
    assert count_labels(np.array([0, 255, 1, 255]), 2, ignore_index=255).tolist() == [1, 1]
    assert count_labels(np.array([0, -100, 1]), 2, ignore_index=-100).tolist() == [1, 1]
    with pytest.raises(ClassWeightError, match="label 7"):
        count_labels(np.array([0, 255, 7]), 2, ignore_index=255)


def test_everything_ignored_is_an_error():
    with pytest.raises(ClassWeightError, match="every label .* equals ignore_index=0"):
        count_labels(np.zeros(5, dtype=np.int64), 3, ignore_index=0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_classes": 0}, "Expected `num_classes` to be a positive integer, but got 0"),
        ({"num_classes": True}, "Expected `num_classes` to be a positive integer, but got True"),
        ({"num_classes": 3, "chunk_size": 0}, "Expected `chunk_size` to be a positive integer, but got 0"),
        ({"num_classes": 3, "num_threads": 0}, "Expected `num_threads` to be a positive integer or None, but got 0"),
        ({"num_classes": 3, "ignore_index": 1.5}, "Expected `ignore_index` to be an integer or None, but got 1.5"),
        ({"num_classes": 3, "device": "gpu9"}, "Expected `device` to be a torch device"),
    ],
)
def test_bad_options(kwargs, message):
    with pytest.raises(ClassWeightError) as info:
        count_labels(np.array([0, 1]), **kwargs)
    assert message in str(info.value)


def test_unsupported_source_type():
    with pytest.raises(ClassWeightError, match="Expected `source` to be a tensor, an array, .* but got int"):
        count_labels(5, 3)


def test_missing_file(tmp_path):
    with pytest.raises(ClassWeightError, match="nope.npz' does not exist"):
        count_labels(tmp_path / "nope.npz", 3)


def test_wrong_suffix_and_directory(tmp_path):
    (tmp_path / "x.csv").write_text("0,1")
    with pytest.raises(ClassWeightError, match="ending in .npy or .npz"):
        count_labels(tmp_path / "x.csv", 3)
    with pytest.raises(ClassWeightError, match="is a directory"):
        count_labels(str(tmp_path) + "/", 3)


def test_missing_npz_key_lists_the_keys(tmp_path):
    np.savez(tmp_path / "d.npz", train=np.zeros(3, np.uint8), val=np.zeros(3, np.uint8))
    with pytest.raises(ClassWeightError, match="key 'test' not found in .*d.npz'; available keys: 'train', 'val'"):
        count_labels(tmp_path / "d.npz", 3, key="test")
    np.savez(tmp_path / "e.npz", a=np.zeros(3, np.uint8), b=np.zeros(3, np.uint8))
    with pytest.raises(ClassWeightError, match="pass key= one of: 'a', 'b'"):
        count_labels(tmp_path / "e.npz", 3)


def test_corrupt_npz_and_npy(tmp_path):
    (tmp_path / "bad.npz").write_bytes(b"this is not a zip file at all")
    with pytest.raises(ClassWeightError, match="could not read .*bad.npz' as a .npz file"):
        count_labels(tmp_path / "bad.npz", 3)
    (tmp_path / "bad.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(ClassWeightError, match="could not read .*bad.npy' as a .npy file"):
        count_labels(tmp_path / "bad.npy", 3)


def test_truncated_npz_member(tmp_path):
    labels = np.ones((100, 16, 16), dtype=np.uint8)
    buffer = tmp_path / "t.npy"
    np.save(buffer, labels)
    data = buffer.read_bytes()
    with zipfile.ZipFile(tmp_path / "t.npz", "w") as archive:  # header promises 100 samples, data holds 40
        archive.writestr("train.npy", data[: len(data) - 60 * 256])
    with pytest.raises(ClassWeightError, match=r"t.npz'\['train'\] is truncated"):
        count_labels(tmp_path / "t.npz", 3)


def test_object_npz_member_is_never_unpickled(tmp_path):
    np.savez(tmp_path / "o.npz", train=np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(ClassWeightError, match="object arrays are never loaded"):
        count_labels(tmp_path / "o.npz", 3)


def test_dict_batches_need_a_key():
    with pytest.raises(ClassWeightError, match="pass key= to pick the labels"):
        count_labels([{"mask": np.zeros(3)}], 3)
    assert count_labels([{"mask": np.array([0, 2])}], 3, key="mask").tolist() == [1, 0, 1]


def test_npz_error_names_file_and_key(tmp_path):
    np.savez_compressed(tmp_path / "d.npz", val=np.array([[0, 11]], dtype=np.uint8))
    with pytest.raises(ClassWeightError, match=r"d.npz'\['val'\]: label 11 at flat index 1"):
        count_labels(tmp_path / "d.npz", 10, key="val")


def test_integer_key_picks_the_labels_of_tuple_items_and_collated_batches():
    images = torch.rand(6, 4, 4)
    masks = torch.tensor([0, 1, 2, 1, 1, 0]).repeat_interleave(16).reshape(6, 4, 4)
    dataset = TensorDataset(images, masks)
    expected = np.bincount(masks.reshape(-1).numpy(), minlength=3).tolist()
    assert count_labels([dataset[i] for i in range(6)], 3, key=1).tolist() == expected
    assert count_labels(DataLoader(dataset, batch_size=4), 3, key=1).tolist() == expected
    with pytest.raises(
        ClassWeightError, match="Expected key= to index dataset item 0, a sequence of 2 elements, but got 2"
    ):
        count_labels([dataset[i] for i in range(6)], 3, key=2)


@st.composite
def byte_arrays(draw):
    """uint8 arrays whose largest value is below 64, 128 or 256: the three one-byte paths."""
    high = draw(st.sampled_from([2, 64, 128, 256]))
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=40))
    return draw(hnp.arrays(np.uint8, shape, elements=st.integers(0, high - 1)))


@given(
    values=byte_arrays(),
    num_classes=st.integers(1, 300),
    signed=st.booleans(),
    ignore=st.sampled_from([None, 0, 3, 127, 128, 255, -1, -100]),
    chunk_size=st.sampled_from([1, 5, 64, None]),
)
def test_one_byte_fast_path_is_exact_or_reports_the_first_bad_label(values, num_classes, signed, ignore, chunk_size):
    labels = values.view(np.int8) if signed else values
    if chunk_size is not None:  # tiny chunks on small arrays; at most ~200 chunks on large ones (for speed)
        chunk_size = max(chunk_size, values.size // 200)
    for source in (labels, torch.from_numpy(labels), torch.from_numpy(labels).reshape(-1)[1:]):
        flat = np.asarray(source).reshape(-1).astype(np.int64)
        source_bad = ((flat < 0) | (flat >= num_classes)) & (flat != (ignore if ignore is not None else 10**9))
        source_kept = flat[flat != ignore] if ignore is not None else flat
        if source_bad.any():
            first = int(np.flatnonzero(source_bad)[0])
            with pytest.raises(ClassWeightError, match=f"label {flat[first]} at flat index {first} "):
                count_labels(source, num_classes, ignore_index=ignore, chunk_size=chunk_size, num_threads=2)
        elif source_kept.size:
            got = count_labels(source, num_classes, ignore_index=ignore, chunk_size=chunk_size, num_threads=2)
            assert got.tolist() == np.bincount(source_kept, minlength=num_classes)[:num_classes].tolist()


@pytest.mark.parametrize("dtype", [">i4", ">u2", "<i2"])
def test_non_native_byte_order_files(tmp_path, dtype):
    labels = (np.arange(60) % 7).astype(dtype).reshape(3, 4, 5)
    np.save(tmp_path / "b.npy", labels)
    np.savez_compressed(tmp_path / "b.npz", train=labels)
    for path in (tmp_path / "b.npy", tmp_path / "b.npz"):
        assert (
            count_labels(path, 7, chunk_size=8).tolist()
            == np.bincount(labels.reshape(-1).astype(np.int64), minlength=7).tolist()
        )


def test_truncated_npy_file(tmp_path):
    np.save(tmp_path / "t.npy", np.ones((100, 16, 16), dtype=np.uint8))
    data = (tmp_path / "t.npy").read_bytes()
    (tmp_path / "t.npy").write_bytes(data[: len(data) - 1000])
    with pytest.raises(ClassWeightError, match=r"t.npy is truncated: expected 100 samples"):
        count_labels(tmp_path / "t.npy", 3)


def test_fortran_ordered_npy_file(tmp_path):
    labels = np.asfortranarray(np.arange(24).reshape(2, 3, 4) % 5)
    np.save(tmp_path / "f.npy", labels)
    stats = count_label_stats(tmp_path / "f.npy", 5, presence=True)
    assert stats.image_pixels.tolist() == reference_image_pixels(labels, 5).tolist()


def test_counting_works_in_a_forked_child_after_the_parent_used_threads(grids):
    import multiprocessing

    count_labels(grids, 10, num_threads=2)  # the parent now holds a thread pool
    context = multiprocessing.get_context("fork")
    with context.Pool(1) as pool:
        child = pool.apply_async(_count_in_child, (grids,)).get(timeout=60)
    assert child == reference_counts(grids, 10).tolist()


def _count_in_child(grids):
    return count_labels(grids, 10, num_threads=2, chunk_size=4096).tolist()


@given(
    values=hnp.arrays(np.uint8, st.integers(1, 400), elements=st.integers(0, 63)),
    block=st.integers(1, 7),
    start=st.integers(0, 9),
)
def test_tagged_pairs_over_many_small_blocks(values, block, start):
    from unittest import mock

    import classweights._chunk_counts as counting

    source = torch.from_numpy(values)[start:]
    if source.numel() == 0:
        return
    with mock.patch.object(counting, "_TAG_BLOCK", block):
        got = count_labels(source, 64, num_threads=1)
    assert got.tolist() == np.bincount(source.numpy(), minlength=64).tolist()


def test_a_read_buffer_is_lent_again_only_when_nothing_refers_to_it():
    from classweights._npfiles import _Buffers

    buffers = _Buffers(64)
    lent = buffers.take()
    tensor = torch.from_numpy(lent[:16].view(np.int64))  # what the counting threads hold: a tensor over a view
    first = id(lent)
    del lent
    other = buffers.take()
    assert id(other) != first
    del tensor
    assert id(buffers.take()) == first  # free again; `other` is still held, so it is not the one lent


@pytest.mark.parametrize("suffix", [".npy", ".npz"])
def test_a_file_read_in_many_chunks_reuses_its_buffers_and_counts_right(tmp_path, grids, suffix, monkeypatch):
    from classweights import _npfiles

    path = tmp_path / f"g{suffix}"
    np.save(path, grids) if suffix == ".npy" else np.savez_compressed(path, train=grids)
    fresh = []
    take = _npfiles._Buffers.take

    def counted_take(self):
        before = list(self._kept)
        buffer = take(self)
        fresh.append(all(buffer is not b for b in before))
        return buffer

    monkeypatch.setattr(_npfiles._Buffers, "take", counted_take)
    stats = count_label_stats(path, 10, chunk_size=grids[0].size * 5, num_threads=2, fingerprint=True)
    assert stats.counts.tolist() == reference_counts(grids, 10).tolist()
    assert stats.fingerprint == count_label_stats(grids, 10, fingerprint=True).fingerprint
    assert len(fresh) >= 40 and sum(fresh) <= 3  # the chunks in flight: one per thread, and the one being read


def test_the_counting_threads_run_torch_on_one_thread_and_leave_everyone_else_s_number(grids):
    """Nested parallelism stalls under load (see _threads._thread_pool); the caller's setting must survive it."""
    import os
    import threading

    from classweights._threads import _thread_pool

    before = torch.get_num_threads()
    count_labels(grids, 10, num_threads=3)
    assert torch.get_num_threads() == before
    later: list[int] = []
    thread = threading.Thread(target=lambda: later.append(torch.get_num_threads()))
    thread.start()
    thread.join()
    assert later == [before]  # a thread starting now takes the process's number, not the pool's
    if "ATen parallel backend: OpenMP" in torch.__config__.parallel_info():
        pool = _thread_pool(3, os.getpid())
        assert {pool.submit(torch.get_num_threads).result() for _ in range(9)} == {1}
