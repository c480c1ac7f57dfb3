"""Hostile files and option values handed to the library: each is a one-line ClassWeightError, fast,
without a large allocation, or (where the input is valid after all) the right answer.

The fuzz tests mutate valid .npy, .npz and weights files byte by byte and check the contract on every
mutant: the same counts as numpy reading the same bytes, or a ClassWeightError; never another exception,
never more than a few MiB of allocation, never more than a second.
"""

from __future__ import annotations

import io
import json
import os
import struct
import sys
import threading
import time
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import classweights as cw
from classweights import ClassWeightError
from classweights.storage import MAX_WEIGHTS_FILE_BYTES, read_small_file

MiB = 1 << 20
posix_only = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs and devices are POSIX")


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def npy_with_header(header: str, payload: bytes = b"", version: tuple[int, int] = (1, 0)) -> bytes:
    """A .npy file whose header says whatever the test wants (numpy's own writer would refuse)."""
    text = header.encode("latin1")
    text += b" " * (-(len(text) + 11) % 64) + b"\n"
    return b"\x93NUMPY" + bytes(version) + struct.pack("<H", len(text)) + text + payload


def bounded(call, *, seconds: float = 5.0, bytes_: int = 32 * MiB):
    """Run ``call``; return (result or exception, elapsed, peak traced allocation)."""
    tracemalloc.start()
    start = time.perf_counter()
    try:
        outcome = call()
    except Exception as exc:  # noqa: BLE001 - the caller checks which
        outcome = exc
    elapsed = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert elapsed < seconds, f"took {elapsed:.1f} s"
    assert peak < bytes_, f"allocated {peak / MiB:.0f} MiB"
    return outcome


def one_line_error(outcome, *fragments: str) -> str:
    assert isinstance(outcome, ClassWeightError), f"expected a ClassWeightError, got {outcome!r}"
    text = str(outcome)
    assert "\n" not in text, text
    for fragment in fragments:
        assert fragment in text, text
    return text


def count(path, num_classes: int = 10, **options):
    return cw.count_labels(path, num_classes, **options)


# ------------------------------------------------------------ .npy headers ----

HEADERS = {
    "billions of empty rows": (
        "{'descr': '|u1', 'fortran_order': False, 'shape': (4611686018427387904, 0), }",
        b"",
        "empty",
    ),
    "one row of 2**40 labels": (
        "{'descr': '|u1', 'fortran_order': False, 'shape': (1, 1099511627776), }",
        b"\0" * 64,
        "truncated",
    ),
    "2**62 rows of 16": (
        "{'descr': '<i8', 'fortran_order': False, 'shape': (4611686018427387904, 16), }",
        b"\0" * 64,
        "truncated",
    ),
    "negative shape": ("{'descr': '|u1', 'fortran_order': False, 'shape': (-4, 4), }", b"\0" * 16, "non-negative"),
    "shape not a tuple": ("{'descr': '|u1', 'fortran_order': False, 'shape': 'x', }", b"", "shape"),
    "V0 dtype": ("{'descr': '|V0', 'fortran_order': False, 'shape': (4,), }", b"", "dtype"),
    "object dtype": ("{'descr': '|O', 'fortran_order': False, 'shape': (4,), }", b"\0" * 32, "object"),
    "structured dtype": (
        "{'descr': [('a', '<i4')], 'fortran_order': False, 'shape': (4,), }",
        b"\0" * 16,
        "structured",
    ),
    "unknown dtype": ("{'descr': '<q9', 'fortran_order': False, 'shape': (4,), }", b"", "dtype"),
    "not a dict": ("[1, 2, 3]", b"", "keys"),
    "code in the header": ("__import__('os').system('false')", b"", "dictionary literal"),
    "deep nesting": ("(" * 5000 + ")" * 5000, b"", "dictionary literal"),
    "longer payload than shape": (
        "{'descr': '|u1', 'fortran_order': False, 'shape': (4,), }",
        b"\0" * 8,
        "describes 4",
    ),
    "fortran order, truncated": (
        "{'descr': '|u1', 'fortran_order': True, 'shape': (1024, 1024), }",
        b"\0" * 64,
        "truncated",
    ),
    "fortran_order not a bool": (
        "{'descr': '|u1', 'fortran_order': 'yes', 'shape': (4,), }",
        b"\0" * 4,
        "fortran_order",
    ),
}


@pytest.mark.parametrize("name", list(HEADERS))
def test_npy_headers_are_checked_before_anything_is_allocated(tmp_path, name):
    header, payload, fragment = HEADERS[name]
    path = tmp_path / "x.npy"
    path.write_bytes(npy_with_header(header, payload))
    one_line_error(bounded(lambda: count(path, 10)), fragment)


def test_unsupported_npy_versions_and_bad_magic(tmp_path):
    good = npy_bytes(np.zeros(4, np.uint8))
    for name, blob in {
        "version 9.0": good[:6] + b"\x09\x00" + good[8:],
        "no magic": b"PK" + good[2:],
        "empty": b"",
    }.items():
        path = tmp_path / f"{name}.npy"
        path.write_bytes(blob)
        one_line_error(bounded(lambda p=path: count(p)), repr(str(path)))


def test_format_2_and_3_headers_are_read(tmp_path):
    labels = np.arange(24, dtype=np.uint8).reshape(6, 4) % 10
    raw = npy_bytes(labels)
    start = 10 + struct.unpack("<H", raw[8:10])[0]
    header = raw[10:start].decode("latin1").strip()
    for version in [(2, 0), (3, 0)]:
        text = header.encode() + b" " * (-(len(header) + 13) % 64) + b"\n"
        blob = b"\x93NUMPY" + bytes(version) + struct.pack("<I", len(text)) + text + raw[start:]
        path = tmp_path / f"v{version[0]}.npy"
        path.write_bytes(blob)
        assert count(path).tolist() == np.bincount(labels.ravel(), minlength=10).tolist()


def test_zero_label_arrays_are_reported_empty_at_once():
    """Millions of rows of no labels are not stepped through: a source without labels is an error at once."""
    for array in [
        np.zeros((10**7, 0), np.uint8),
        np.zeros((0, 16, 16), np.int64),
        torch.zeros(10**7, 0, dtype=torch.long),
    ]:
        one_line_error(bounded(lambda a=array: cw.count_label_stats(a, 4), seconds=0.5), "empty")


# ------------------------------------------------------------ paths that are not regular files ----


def call_with_timeout(call, seconds: float = 10.0):
    """Run ``call`` in a thread; fail (instead of hanging the suite) if it blocks."""
    box: dict[str, object] = {}

    def target():
        try:
            box["value"] = call()
        except BaseException as exc:  # noqa: BLE001
            box["value"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"blocked for more than {seconds} s"
    return box["value"]


@posix_only
@pytest.mark.parametrize("kind", ["fifo", "directory", "dev-zero link", "dev-null link"])
@pytest.mark.parametrize("suffix", [".npy", ".npz"])
def test_data_paths_that_are_not_regular_files_are_refused_without_blocking(tmp_path, kind, suffix):
    path = tmp_path / f"data{suffix}"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    else:
        if not os.path.exists(f"/dev/{kind.split()[0][4:]}"):
            pytest.skip("no such device here")
        path.symlink_to(f"/dev/{kind.split()[0][4:]}")
    outcome = call_with_timeout(lambda: count(path))
    one_line_error(outcome, repr(str(path)))
    assert any(word in str(outcome) for word in ("FIFO", "directory", "device")), outcome


@posix_only
def test_weights_files_that_are_not_regular_files_are_refused_without_blocking(tmp_path):
    fifo = tmp_path / "w.json"
    os.mkfifo(fifo)
    one_line_error(call_with_timeout(lambda: cw.load_class_weights(fifo)), "FIFO")
    link = tmp_path / "zero.json"
    link.symlink_to("/dev/zero")
    one_line_error(call_with_timeout(lambda: cw.load_class_weights(link)), "device")
    one_line_error(call_with_timeout(lambda: read_small_file(link, max_bytes=10)), "device")


def test_read_small_file_bounds_size_and_links(tmp_path):
    path = tmp_path / "a.json"
    path.write_bytes(b"x" * 100)
    assert read_small_file(path, max_bytes=100) == b"x" * 100
    one_line_error(_raises(lambda: read_small_file(path, max_bytes=99)), "99")
    link = tmp_path / "link.json"
    link.symlink_to(path)
    assert read_small_file(link, max_bytes=100) == b"x" * 100
    one_line_error(_raises(lambda: read_small_file(link, max_bytes=100, follow_symlinks=False)), "symbolic link")


def _raises(call):
    try:
        call()
    except Exception as exc:  # noqa: BLE001
        return exc
    raise AssertionError("no error")


def test_a_weights_file_over_the_size_limit_is_refused_unread(tmp_path):
    path = tmp_path / "big.json"
    with open(path, "wb") as handle:  # sparse: costs no disk
        handle.truncate(MAX_WEIGHTS_FILE_BYTES + 1)
    one_line_error(bounded(lambda: cw.load_class_weights(path), seconds=2), "bytes")


# ------------------------------------------------------------ .npz members ----


def npz_bytes(arrays: dict[str, np.ndarray], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, array in arrays.items():
            archive.writestr(f"{name}.npy", npy_bytes(array))
    return buffer.getvalue()


LABELS = (np.arange(4096, dtype=np.uint8) * 7 % 10).reshape(16, 16, 16)


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA])
def test_every_zip_compression_is_counted(tmp_path, compression):
    path = tmp_path / "d.npz"
    path.write_bytes(npz_bytes({"train": LABELS}, compression))
    assert count(path, key="train").tolist() == np.bincount(LABELS.ravel(), minlength=10).tolist()


@pytest.mark.parametrize("compression", [zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA])
def test_a_damaged_compressed_stream_is_one_line(tmp_path, compression):
    blob = bytearray(npz_bytes({"train": LABELS}, compression))
    middle = len(blob) // 2
    blob[middle : middle + 16] = b"\xff" * 16
    path = tmp_path / "d.npz"
    path.write_bytes(bytes(blob))
    one_line_error(bounded(lambda: count(path, key="train")), "d.npz")


def test_a_zip_directory_claiming_a_huge_member_costs_no_memory(tmp_path):
    """A member whose directory entry claims 2**40 bytes, holding a .npy header that claims the same."""
    header = npy_with_header("{'descr': '|u1', 'fortran_order': False, 'shape': (1, 1099511627776), }", b"\0" * 4096)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("train.npy", header)
    blob = bytearray(buffer.getvalue())
    # patch the central directory's uncompressed size (offset 24 in the entry) to claim 4 GiB - 1
    central = blob.rfind(b"PK\x01\x02")
    blob[central + 24 : central + 28] = struct.pack("<I", 0xFFFFFFFF)
    path = tmp_path / "d.npz"
    path.write_bytes(bytes(blob))
    one_line_error(bounded(lambda: count(path, key="train"), bytes_=16 * MiB))


def test_an_lzma_dictionary_larger_than_the_data_needs_is_refused(tmp_path):
    blob = bytearray(npz_bytes({"train": LABELS}, zipfile.ZIP_LZMA))
    local = blob.find(b"PK\x03\x04")
    name_length, extra_length = struct.unpack("<HH", blob[local + 26 : local + 30])
    properties = local + 30 + name_length + extra_length + 4  # after zip's LZMA version and size
    blob[properties + 1 : properties + 5] = struct.pack("<I", 0xFFFFFFF0)  # a 4 GiB dictionary
    path = tmp_path / "d.npz"
    path.write_bytes(bytes(blob))
    one_line_error(bounded(lambda: count(path, key="train"), bytes_=16 * MiB), "dictionary")


def test_missing_and_ambiguous_keys(tmp_path):
    path = tmp_path / "d.npz"
    path.write_bytes(npz_bytes({"a": LABELS, "b": LABELS}))
    one_line_error(_raises(lambda: count(path)), "pass key=", "'a', 'b'")
    one_line_error(_raises(lambda: count(path, key="c")), "'c'", "'a', 'b'")


def test_names_in_errors_are_quoted_and_their_list_bounded(tmp_path):
    """A key, column or member name is the file's text: one with a newline or a comma stays one quoted item on the
    error's one line, and a file of many arrays does not make a message of them all."""
    path = tmp_path / "names.npz"
    path.write_bytes(npz_bytes({"\nrain": LABELS, "x, y": LABELS, **{f"k{i:02d}": LABELS for i in range(40)}}))
    text = one_line_error(_raises(lambda: count(path)), "pass key=", "'\\nrain'", "'x, y'", "(42 in all)")
    assert "k39" not in text
    one_line_error(_raises(lambda: count(path, key="train")), "'\\nrain'")
    one_line_error(_raises(lambda: cw.count_labels([{"a\nb": LABELS}], 10)), "'a\\nb'")
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"y\n": [0, 1], "x": [1, 1]})
    one_line_error(_raises(lambda: cw.count_labels(frame, 2)), "'y\\n'")


def test_a_member_damaged_after_its_data_is_refused_where_numpy_refuses_it(tmp_path):
    """Every value of each of the LZMA stream's bytes 4-9 from its end. Where the byte falls after the data (the data
    decodes whole and its CRC-32 matches, but the end marker is damaged), zipfile, and so numpy, refuses the member:
    so does counting (found by the fuzz test below; 60 of these cases were counted before). Elsewhere both read the
    same labels, or counting refuses."""
    labels = (np.arange(256, dtype=np.uint8) % 10).reshape(16, 16)  # the fuzz test's
    blob = npz_bytes({"train": labels}, zipfile.ZIP_LZMA)
    [info] = zipfile.ZipFile(io.BytesIO(blob)).infolist()
    end = info.header_offset + 30 + len(info.filename.encode()) + info.compress_size
    path = tmp_path / "d.npz"
    for position in range(end - 9, end - 3):
        for value in range(256):
            path.write_bytes(blob[:position] + bytes([value]) + blob[position + 1 :])
            try:
                counts = count(path, key="train")
            except ClassWeightError as exc:
                one_line_error(exc)
                continue
            expected = numpy_reading(path, "train")
            assert expected is not None, (position - end, value)
            assert counts.tolist() == np.bincount(expected.ravel(), minlength=10).tolist()


# ------------------------------------------------------------ fuzzing the readers ----

FUZZ = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def mutate(blob: bytes, edits: list[tuple[int, int]], cut: int | None) -> bytes:
    data = bytearray(blob)
    for position, value in edits:
        data[position % len(data)] = value
    return bytes(data[:cut] if cut is not None else data)


def numpy_reading(path: Path, key: str | None) -> np.ndarray | None:
    """What numpy reads from the same bytes, when it reads a plain label array; None otherwise."""
    try:
        if key is None:
            array = np.load(path, allow_pickle=False)
        else:
            with np.load(path, allow_pickle=False) as archive:
                array = archive[key]
    except Exception:  # noqa: BLE001 - numpy's own errors on damaged files are many
        return None
    return array if array.dtype.kind in "biu" else None


edits = st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=4)
cuts = st.none() | st.integers(0, 700)


@FUZZ
@given(edits=edits, cut=cuts)
def test_fuzzed_npy_files_count_as_numpy_reads_them_or_raise(tmp_path, edits, cut):
    labels = (np.arange(256, dtype=np.uint8) % 10).reshape(16, 16)
    path = tmp_path / "f.npy"
    path.write_bytes(mutate(npy_bytes(labels), edits, cut))
    outcome = bounded(lambda: count(path, 10), seconds=2, bytes_=8 * MiB)
    expected = numpy_reading(path, None)
    if isinstance(outcome, torch.Tensor):
        assert expected is not None, "counted a file numpy cannot read as labels"
        assert outcome.tolist() == np.bincount(expected.ravel().astype(np.int64), minlength=10).tolist()
    else:
        one_line_error(outcome)


@FUZZ
@given(edits=edits, cut=cuts, compression=st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_LZMA]))
def test_fuzzed_npz_files_count_as_numpy_reads_them_or_raise(tmp_path, edits, cut, compression):
    labels = (np.arange(256, dtype=np.uint8) % 10).reshape(16, 16)
    path = tmp_path / "f.npz"
    path.write_bytes(mutate(npz_bytes({"train": labels}, compression), edits, cut))
    outcome = bounded(lambda: count(path, 10, key="train"), seconds=2, bytes_=16 * MiB)  # LZMA's dictionary: 8 MiB
    if isinstance(outcome, torch.Tensor):
        expected = numpy_reading(path, "train")
        assert expected is not None, "counted a member numpy cannot read as labels"
        assert outcome.tolist() == np.bincount(expected.ravel().astype(np.int64), minlength=10).tolist()
    else:
        one_line_error(outcome)


@FUZZ
@given(edits=edits, cut=st.none() | st.integers(0, 400), checksum=st.booleans())
def test_fuzzed_weights_files_load_unchanged_or_raise(tmp_path, edits, cut, checksum):
    path = tmp_path / "w.json"
    cw.save_class_weights([0.25, 1.5, 2.25], path, method="inverse", counts=[90, 5, 3])
    good = cw.load_class_weights(path, with_metadata=True)
    path.write_bytes(mutate(path.read_bytes(), edits, cut))
    outcome = bounded(
        lambda: cw.load_class_weights(path, with_metadata=True, require_checksum=checksum), seconds=2, bytes_=8 * MiB
    )
    if isinstance(outcome, tuple):
        weights, meta = outcome
        assert weights.dtype == torch.float32 and torch.isfinite(weights).all() and (weights >= 0).all()
        if checksum:  # with its checksum required, a file loads only as it was written
            assert weights.tolist() == good[0].tolist() and meta == good[1]
    else:
        one_line_error(outcome)


HOSTILE_JSON = {
    "deep nesting": "[" * 100000 + "]" * 100000,
    "deep nesting in metadata": '{"format_version": 1, "num_classes": 1, "weights": [1.0], "metadata": '
    + "[" * 50000
    + "]" * 50000
    + "}",
    "a 5000-digit integer": '{"format_version": 1, "num_classes": ' + "9" * 5000 + ', "weights": [1.0]}',
    "a huge num_classes": '{"format_version": 1, "num_classes": 1000000000000, "weights": [1.0]}',
    "NaN literal": '{"format_version": 1, "num_classes": 1, "weights": [NaN]}',
    "weights not a list": '{"format_version": 1, "num_classes": 1, "weights": {"a": 1}}',
    "version as text": '{"format_version": "1", "num_classes": 1, "weights": [1.0]}',
    "metadata not an object": '{"format_version": 1, "num_classes": 1, "weights": [1.0], "metadata": [1]}',
    "counts of the wrong length": '{"format_version": 1, "num_classes": 2, "weights": [1.0, 1.0], "metadata": {"counts": [1]}}',
    "negative counts": '{"format_version": 1, "num_classes": 2, "weights": [1.0, 1.0], "metadata": {"counts": [1, -1]}}',
    "not UTF-8": b'{"format_version": 1, "\xff": 1}',
    "top level not an object": "[1.0, 2.0]",
}


@pytest.mark.parametrize("name", list(HOSTILE_JSON))
def test_hostile_weights_json_is_one_line(tmp_path, name):
    path = tmp_path / "w.json"
    content = HOSTILE_JSON[name]
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    one_line_error(bounded(lambda: cw.load_class_weights(path), seconds=2))


def test_require_checksum_refuses_a_hand_edited_file(tmp_path):
    path = tmp_path / "w.json"
    cw.save_class_weights([1.0, 2.0], path)
    record = json.loads(path.read_text())
    del record["sha256"]
    path.write_text(json.dumps(record))
    assert cw.load_class_weights(path).tolist() == [1.0, 2.0]  # hand-written files are welcome by default
    one_line_error(_raises(lambda: cw.load_class_weights(path, require_checksum=True)), "sha256")


# ------------------------------------------------------------ files changed while read ----


def test_a_file_changed_while_it_is_read_is_an_error(tmp_path):
    path = tmp_path / "d.npy"
    np.save(path, np.zeros((4096, 16, 16), np.uint8))

    def append(done: int, total: int) -> None:
        if done < total:
            with open(path, "ab") as handle:
                handle.write(b"\0")

    one_line_error(_raises(lambda: cw.count_labels(path, 10, chunk_size=1 << 16, progress=append)), "changed while")


def test_source_identity_names_the_file_read(tmp_path):
    path = tmp_path / "d.npy"
    np.save(path, np.zeros((8, 4), np.uint8))
    stats = cw.count_label_stats(path, 2)
    info = os.stat(path)
    assert stats.source_identity == (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
    assert cw.count_label_stats(np.zeros(3, np.uint8), 2).source_identity is None


# ------------------------------------------------------------ tensors and option values ----


def test_uint64_tensors_are_counted_and_huge_values_are_out_of_range():
    labels = torch.tensor([0, 1, 1, 2], dtype=torch.uint64)
    assert cw.count_labels(labels, 3).tolist() == [1, 2, 1]
    huge = torch.tensor([0, 2**63 + 5], dtype=torch.uint64)
    one_line_error(_raises(lambda: cw.count_labels(huge, 3)), "out of range")
    assert cw.count_labels(np.array([0, 1, 1], np.uint64), 2).tolist() == [1, 2]
    one_line_error(_raises(lambda: cw.count_labels(np.array([2**64 - 1], np.uint64), 2)))


@pytest.mark.parametrize(
    ("tensor", "fragment"),
    [
        (lambda: torch.zeros(4, dtype=torch.long, device="meta"), "meta"),
        (lambda: torch.zeros(4, dtype=torch.long).to_sparse(), "dense"),
        (lambda: torch.zeros(4, dtype=torch.complex64), "complex64"),
    ],
    ids=["meta", "sparse", "complex"],
)
def test_tensors_without_plain_values_are_refused(tensor, fragment):
    one_line_error(_raises(lambda: cw.count_labels(tensor(), 3)), fragment)


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"num_classes": True}, "num_classes"),
        ({"num_classes": 2.0}, "num_classes"),
        ({"num_classes": cw.MAX_CLASSES + 1}, "MAX_CLASSES"),
        ({"num_classes": 10**30}, "MAX_CLASSES"),
        ({"ignore_index": True}, "ignore_index"),
        ({"ignore_index": 1.5}, "ignore_index"),
        ({"ignore_index": "255"}, "ignore_index"),
        ({"chunk_size": 0}, "chunk_size"),
        ({"num_threads": True}, "num_threads"),
        ({"presence": "false"}, "presence"),
    ],
)
def test_option_values_are_checked(options, fragment):
    options = {"num_classes": 3, **options}
    num_classes = options.pop("num_classes")
    outcome = bounded(
        lambda: cw.count_label_stats(np.zeros(4, np.uint8), num_classes, **options), seconds=1, bytes_=MiB
    )
    one_line_error(outcome, fragment)


def test_a_string_key_for_a_tensor_dataset_is_an_error():
    dataset = torch.utils.data.TensorDataset(torch.zeros(4, 2), torch.zeros(4, dtype=torch.long))
    one_line_error(_raises(lambda: cw.count_labels(dataset, 2, key="labels")), "integer index")
    assert cw.count_labels(dataset, 2, key=1).tolist() == [4, 0]


@pytest.mark.parametrize(
    ("counts", "options", "fragment"),
    [
        ([1e300, 1.0], {"method": "inverse"}, "float32"),
        ([1, 1], {"method": "inverse", "smooth": 1e-300, "normalize": False}, None),
        ([0, 1], {"method": "inverse", "smooth": 1e-60, "normalize": False}, "float32"),
        ([1, 1], {"method": "inverse", "smooth": True}, "smooth"),
        ([1, 1], {"method": "inverse", "smooth": 10**400}, "smooth"),
    ],
    ids=["float counts far apart", "tiny smooth is fine", "weight overflows", "bool smooth", "huge smooth"],
)
def test_weights_float32_cannot_hold_are_refused(counts, options, fragment):
    outcome = _raises_or_value(lambda: cw.weights_from_counts(counts, **options))
    if fragment is None:
        assert torch.isfinite(outcome).all() and (outcome > 0).all()
    else:
        one_line_error(outcome, fragment)


def _raises_or_value(call):
    try:
        return call()
    except Exception as exc:  # noqa: BLE001
        return exc


def test_validate_weights_refuses_values_float32_cannot_hold():
    one_line_error(_raises(lambda: cw.validate_weights([1e39, 1.0], 2)), "float32")
    one_line_error(_raises(lambda: cw.validate_weights(np.array([1e-50, 1.0]), 2)), "float32")
    assert cw.validate_weights([0.0, 1.0], 2).tolist() == [0.0, 1.0]  # an explicit 0 switches a class off


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX paths")
def test_a_nul_byte_in_a_path_is_one_line(tmp_path):
    one_line_error(_raises(lambda: count(str(tmp_path / "a\0b.npy"))), "could not read")
