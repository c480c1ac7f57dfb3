"""The arcvae command line, end to end, including every error path."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from typer.testing import CliRunner

from arcvae.cli import app

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def assert_one_line_error(result, *fragments: str, code: int = 1) -> None:
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def test_help_does_not_import_torch():
    code = "import sys; from arcvae.cli import app; from typer.testing import CliRunner; CliRunner().invoke(app, ['--help']); CliRunner().invoke(app, ['train', '--help']); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_help_lists_the_groups():
    result = run("--help")
    assert result.exit_code == 0 and all(word in result.stdout for word in ("weights", "data", "train"))


# ------------------------------------------------------------- weights ----


def test_weights_compute_table_and_file(tiny_corpus, tmp_path):
    result = run("weights", "compute", tiny_corpus, "--out", tmp_path / "w.json")
    assert result.exit_code == 0, result.output
    assert "sqrt_inverse weights" in result.stdout and "Weight ratio (max/min):" in result.stdout
    saved = json.loads((tmp_path / "w.json").read_text())
    assert saved["metadata"]["method"] == "sqrt_inverse" and len(saved["weights"]) == 10
    shown = run("weights", "show", tmp_path / "w.json")
    assert shown.exit_code == 0 and "Class weights in" in shown.stdout and "method: sqrt_inverse" in shown.stdout


def test_weights_compute_json(tiny_corpus):
    from arcvae.data import load_split
    from classweights import weights_from_counts

    result = run("weights", "compute", tiny_corpus, "--json", "--key", "val", "--method", "inverse", "--smooth", "0")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert set(record) == {"counts", "weights", "method", "ratio", "source"}
    expected_counts = np.bincount(load_split(tiny_corpus, "val").reshape(-1), minlength=10)
    assert record["counts"] == expected_counts.tolist()
    assert record["weights"] == pytest.approx(weights_from_counts(expected_counts, "inverse", smooth=0).tolist())
    assert record["ratio"] == pytest.approx(max(record["weights"]) / min(record["weights"]))


def test_weights_compute_options(tmp_path):
    labels = np.array([[0, 0, 1, 255], [2, 2, 255, 0]], dtype=np.uint8)
    np.save(tmp_path / "l.npy", labels)
    result = run("weights", "compute", tmp_path / "l.npy", "--num-classes", "3", "--ignore-index", "255",
                 "--method", "balanced", "--smooth", "0", "--no-normalize", "--json")  # fmt: skip
    record = json.loads(result.stdout)
    assert record["counts"] == [3, 1, 2] and record["weights"] == pytest.approx([6 / 9, 2.0, 1.0])
    median = run(
        "weights",
        "compute",
        tmp_path / "l.npy",
        "--num-classes",
        "3",
        "--ignore-index",
        "255",
        "--method",
        "median_frequency",
        "--json",
    )
    assert median.exit_code == 0 and len(json.loads(median.stdout)["weights"]) == 3


def _corrupt(tmp_path):
    path = tmp_path / "corrupt.npz"
    np.savez_compressed(path, train=np.zeros((50, 16, 16), np.uint8))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.mark.parametrize(
    ("make", "extra", "fragments"),
    [
        (lambda p: p / "missing.npz", [], ["missing.npz", "does not exist"]),
        (
            lambda p: (np.savez(p / "k.npz", val=np.zeros((2, 16, 16), np.uint8)), p / "k.npz")[1],
            ["--key", "train"],
            ["key 'train' not found", "available keys: 'val'"],
        ),
        (
            lambda p: (np.savez(p / "r.npz", train=np.full((2, 16, 16), 12, np.uint8)), p / "r.npz")[1],
            [],
            ["label 12 at flat index 0 is out of range for num_classes=10", "r.npz"],
        ),
        (_corrupt, [], ["corrupt.npz"]),
        (
            lambda p: (np.save(p / "f.npy", np.array([0.5, 1.0])), p / "f.npy")[1],
            [],
            ["label 0.5 at flat index 0 is not a class index"],
        ),
        (
            lambda p: (np.save(p / "ok.npy", np.array([0, 1])), p / "ok.npy")[1],
            ["--method", "nope"],
            ["Expected `method` to be one of"],
        ),
        (
            lambda p: (np.save(p / "ok.npy", np.array([0, 1])), p / "ok.npy")[1],
            ["--smooth", "-1"],
            ["Expected `smooth` to be a finite number >= 0, but got -1.0"],
        ),
        (
            lambda p: (np.save(p / "ok.npy", np.array([0, 1])), p / "ok.npy")[1],
            ["--out", "/nonexistent-dir/w.json"],
            ["the folder of --out '/nonexistent-dir/w.json'", "does not exist"],
        ),
    ],
)
def test_weights_compute_errors(tmp_path, make, extra, fragments):
    assert_one_line_error(run("weights", "compute", make(tmp_path), *extra), *fragments)


def test_weights_show_errors(tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    assert_one_line_error(
        run("weights", "show", tmp_path / "bad.json"), "bad.json", "is not a valid class-weights file"
    )
    assert_one_line_error(run("weights", "show", tmp_path / "none.json"), "does not exist")


def test_usage_errors_exit_2(tmp_path):
    assert run("weights", "compute").exit_code == 2
    assert run("train", "--device", "tpu").exit_code == 2


# ---------------------------------------------------------------- data ----


def test_data_generate_info_and_no_silent_overwrite(tmp_path):
    out = tmp_path / "c.npz"
    result = run("data", "generate", "--out", out, "--num-images", "500", "--seed", "3")
    assert result.exit_code == 0, result.output
    assert "train 400, val 50, test 50" in result.stdout
    before = out.read_bytes()
    assert_one_line_error(run("data", "generate", "--out", out, "--num-images", "100"), "already exists; pass --force")
    assert out.read_bytes() == before
    assert run("data", "generate", "--out", out, "--num-images", "100", "--force").exit_code == 0
    info = run("data", "info", out)
    assert info.exit_code == 0 and "train" in info.stdout and "80" in info.stdout


def test_data_arc(tmp_path):
    result = run("data", "arc", "--out", tmp_path / "arc.npz", "--num-images", "300")
    assert result.exit_code == 0, result.output
    with np.load(tmp_path / "arc.npz") as data:
        assert data["train"].shape == (240, 16, 16) and data["train"].max() <= 9


def test_data_errors(tmp_path):
    assert_one_line_error(
        run("data", "generate", "--out", tmp_path / "nodir" / "c.npz", "--num-images", "10"), "does not exist"
    )
    assert_one_line_error(run("data", "generate", "--out", tmp_path / "c.txt", "--num-images", "10"), "end in .npz")
    assert not list(tmp_path.iterdir())


# --------------------------------------------------------------- train ----


@pytest.mark.parametrize(
    ("arrays", "fragments"),
    [
        ({"train": np.zeros((4, 8, 8), np.uint8)}, ["bad.npz", "'train'", "[4, 8, 8]", "expected [N, 16, 16]"]),
        ({"train": np.full((4, 16, 16), 11, np.uint8)}, ["bad.npz", "'train'", "11"]),
        ({"images": np.zeros((4, 16, 16), np.uint8)}, ["bad.npz", "'train'", "images"]),
    ],
)
def test_train_rejects_bad_data_in_one_line(tmp_path, arrays, fragments):
    np.savez(tmp_path / "bad.npz", **arrays)
    result = run("train", "--overfit-batch", "--data", tmp_path / "bad.npz", "--out", tmp_path / "run")
    assert_one_line_error(result, *fragments)
    assert not (tmp_path / "run").exists()


def test_train_other_errors(tmp_path, tiny_corpus):
    assert_one_line_error(run("train", "--data", tmp_path / "none.npz"), "none.npz", "does not exist")
    assert_one_line_error(run("train", "--resume", tmp_path / "norun"), "no checkpoint at")
    assert_one_line_error(
        run("train", "--data", tiny_corpus, "--weights-method", "nope"), "Expected `method` to be one of"
    )
    assert run("train", "--data", tiny_corpus, "--target-accuracy", "1.5").exit_code == 2
    assert run("train", "--data", tiny_corpus, "--epochs", "0").exit_code == 2
    (tmp_path / "zip.npz").write_bytes(b"PK\x03\x04" + b"\x00" * 40)
    assert_one_line_error(run("train", "--data", tmp_path / "zip.npz"), "zip.npz")


def test_train_overfit_quick_test_end_to_end(tiny_corpus, tmp_path):
    result = run(
        "train",
        "--overfit-batch",
        "--quick-test",
        "--data",
        tiny_corpus,
        "--out",
        tmp_path / "run",
        "--use-cached-weights",
    )
    assert result.exit_code == 0, result.output
    for line in ("[DATA] Train: 320 samples (32 unique × 10 repeats), 10 batches", "[OVERFIT MODE] Single batch statistics:",
                 "Class Weight Analysis", "[MODEL] Created: 801,034 parameters", "Epoch 1/3 [Train]", "Per-class accuracy: ["):  # fmt: skip
        assert line in result.stdout, line
    assert (tmp_path / "run" / "class_weights.json").exists()


def test_written_npz_is_a_zip_with_three_members(tiny_corpus):
    with zipfile.ZipFile(tiny_corpus) as archive:
        assert sorted(archive.namelist()) == ["test.npy", "train.npy", "val.npy"]


def test_resume_refuses_other_options_but_accepts_device(tiny_corpus, tmp_path):
    assert (
        run("train", "--overfit-batch", "--quick-test", "--data", tiny_corpus, "--out", tmp_path / "run").exit_code == 0
    )
    refused = run("train", "--resume", tmp_path / "run", "--epochs", "5", "--lr", "0.1")
    assert refused.exit_code == 2 and "cannot be changed: --epochs, --lr" in refused.stderr
    result = run("train", "--resume", tmp_path / "run", "--device", "cpu")
    assert result.exit_code == 0 and "already finished" in result.stdout


def test_weights_compute_warns_about_absent_classes(tmp_path):
    np.save(tmp_path / "l.npy", np.array([0, 1, 1, 0]))
    result = run("weights", "compute", tmp_path / "l.npy", "--num-classes", "4")
    assert result.exit_code == 0 and "classes 2, 3 never occur" in result.stderr
    assert_one_line_error(run("weights", "compute", tmp_path / "l.npy", "--key", "train"), "is a .npy file")
