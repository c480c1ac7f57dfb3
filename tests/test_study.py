"""``arcvae study overfit`` and the pictures every run leaves behind."""

from __future__ import annotations

import json
import struct

import pytest
from typer.testing import CliRunner

from arcvae.cli import app
from arcvae.errors import ArcvaeError
from arcvae.study import RunSummary, arm_config, summarise_arm

runner = CliRunner()


def png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", path
    return struct.unpack(">II", data[16:24])


@pytest.mark.slow
def test_study_on_a_tiny_corpus_writes_a_table_json_and_plot(tiny_corpus, tmp_path):
    # --jobs 1 trains in this process; the pool of worker processes runs in the example of docs/cli.md
    out = tmp_path / "study"
    result = runner.invoke(app, ["study", "overfit", "--data", str(tiny_corpus), "--seeds", "1", "--epochs", "1",
                                 "--methods", "inverse", "--target-metric", "foreground", "--jobs", "1", "--out", str(out)],
                           catch_exceptions=False)  # fmt: skip
    assert result.exit_code == 0, result.output
    for arm in ("none", "batch", "full", "full:inverse"):
        assert f"arm {arm}" in result.stdout
    assert "Overfit study: target foreground accuracy 95%, at most 1 epoch" in result.stdout
    assert "collapsed" in result.stdout and "ended" in result.stdout and "perfect" in result.stdout
    record = json.loads((out / "study.json").read_text())
    assert (record["target_metric"], record["target_accuracy"]) == ("foreground", 0.95)
    assert set(record["arms"]) == {"none", "batch", "full", "full:inverse"}
    for arm, entry in record["arms"].items():
        [run] = entry["runs"]
        assert (
            run["seed"] == 42
            and run["epochs"] == 1
            and run["steps"]
            and len(run["steps"]) == len(run["foreground_accuracy"])
        )
        assert entry["summary"]["runs"] == 1 and 0 <= entry["summary"]["reached_target"] <= 1
        assert run["perfect_rate"] == entry["summary"]["median_perfect_rate"]
        assert (
            json.loads((out / "runs" / f"{arm.replace(':', '-')}-seed42" / "config.json").read_text())["target_metric"]
            == "foreground"
        )
        assert (out / "runs" / f"{arm.replace(':', '-')}-seed42" / "reconstructions.png").exists()
    config = json.loads((out / "runs" / "batch-seed42" / "config.json").read_text())
    assert config["weights_from"] == "batch" and config["overfit_batch"]
    assert json.loads((out / "runs" / "none-seed42" / "config.json").read_text())["use_class_weights"] is False
    width, height = png_size(out / "study.png")
    assert width > 200 and height > 150
    again = runner.invoke(
        app, ["study", "overfit", "--data", str(tiny_corpus), "--seeds", "1", "--epochs", "1", "--out", str(out)]
    )
    assert again.exit_code == 1 and "already holds study runs" in again.stderr  # never mixes two studies


def test_arms_and_bad_methods():
    assert arm_config("none") == {"use_class_weights": False}
    assert arm_config("batch") == {"weights_from": "batch"}
    assert arm_config("full:enet") == {"weights_method": "enet"}
    with pytest.raises(ArcvaeError, match="Expected an arm"):
        arm_config("half")
    result = runner.invoke(app, ["study", "overfit", "--methods", "nope"])
    assert result.exit_code == 1 and "Expected `method` to be one of" in result.stderr


def test_summary_counts_targets_and_collapses():
    runs = [RunSummary("full", 42, "a", True, 6, pixel_accuracy=0.96, final_foreground_accuracy=0.9, min_class_accuracy=0.8,
                       perfect_rate=0.25),
            RunSummary("full", 43, "b", False, 10, pixel_accuracy=0.93, final_foreground_accuracy=0.0, min_class_accuracy=0.0, collapsed=True,
                       ended_black=True),
            RunSummary("full", 44, "c", True, 8, pixel_accuracy=0.97, final_foreground_accuracy=0.95, min_class_accuracy=0.9)]  # fmt: skip
    s = summarise_arm(runs, 0.95)
    assert (s["runs"], s["reached_target"], s["median_epochs_to_target"], s["collapsed"], s["ended_black"]) == (
        3,
        2,
        7.0,
        1,
        1,
    )
    assert s["median_pixel_accuracy"] == 0.96 and s["min_class_accuracy"] == 0.0
    assert s["median_perfect_rate"] == 0.25  # the median of the runs that have one
