"""Pictures: PNG files of the documented size and colours, grids in the terminal, and ``arcvae show``."""

from __future__ import annotations

import io
import json
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console
from typer.testing import CliRunner

from arcvae.cli import app
from arcvae.errors import ArcvaeError
from arcvae.plots import (
    ARC_PALETTE,
    grids_panel,
    save_curves,
    save_reconstructions,
    save_study_plot,
)

runner = CliRunner()


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from the IHDR chunk, after checking the PNG signature."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def run_dir(tiny_corpus, tmp_path_factory) -> Path:
    """A finished overfit quick-test run, on its own copy of the corpus."""
    from arcvae.config import TrainConfig
    from arcvae.report import Reporter
    from arcvae.trainer import train

    folder = tmp_path_factory.mktemp("show")
    corpus = shutil.copy(tiny_corpus, folder / "corpus.npz")
    config = TrainConfig(data=str(corpus), out=str(folder / "run"), overfit_batch=True, quick_test=True, device="cpu")
    train(config, Reporter(Console(file=io.StringIO())))
    return folder / "run"


# ------------------------------------------------------------ PNG files ----


@pytest.mark.parametrize("n", [1, 3])
def test_reconstructions_png_has_the_documented_size(grids, tmp_path, n):
    path = tmp_path / "r.png"
    save_reconstructions(grids[:n], grids[n : 2 * n], path, title="a title")
    assert png_size(path) == (50 + 125 * n, 275)


def test_reconstructions_draw_cells_in_the_arc_colours(tmp_path):
    from matplotlib.colors import to_rgb
    from matplotlib.image import imread

    original = np.full((1, 16, 16), 1, np.uint8)  # blue, with one yellow cell
    original[0, 2, 5] = 4
    path = tmp_path / "r.png"
    save_reconstructions(original, np.full_like(original, 2), path)
    pixels = imread(path)[..., :3]
    ys, xs = np.nonzero(np.all(np.abs(pixels - to_rgb(ARC_PALETTE[1])) < 2 / 255, axis=-1))  # the blue grid's extent
    cell_h, cell_w = (ys.max() + 1 - ys.min()) / 16, (xs.max() + 1 - xs.min()) / 16
    assert cell_h > 4 and abs(cell_h - cell_w) < 0.5
    centre = pixels[int(ys.min() + 2.5 * cell_h), int(xs.min() + 5.5 * cell_w)]
    assert np.allclose(centre, to_rgb(ARC_PALETTE[4]), atol=2 / 255)
    red = np.nonzero(np.all(np.abs(pixels - to_rgb(ARC_PALETTE[2])) < 2 / 255, axis=-1))[0]
    assert red.min() > ys.max() and len(red) > 0.8 * len(ys)  # the reconstruction, below the original


def test_reconstructions_reject_mismatched_grids(grids, tmp_path):
    with pytest.raises(ArcvaeError, match="same shape"):
        save_reconstructions(grids[:2], grids[:3], tmp_path / "r.png")
    assert not list(tmp_path.iterdir())


def test_curves_cope_with_empty_one_record_and_real_logs(run_dir, tmp_path):
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any("eval_per_class_accuracy" in r for r in records)
    normal = [{"type": "step", "step": 5, "loss": 0.3, "pixel_accuracy": 0.5, "foreground_accuracy": None, "per_class_accuracy": [0.5] + [None] * 9},
              {"type": "epoch", "step": 8, "val_loss": 0.2, "val_pixel_accuracy": 0.9, "val_foreground_accuracy": 0.1}]  # fmt: skip
    for name, logs in {"empty": [], "one": records[:1], "real": records, "normal": normal}.items():
        save_curves(logs, tmp_path / f"{name}.png")
        assert png_size(tmp_path / f"{name}.png") == (1000, 700)


def test_study_plot_with_two_arms(tmp_path):
    runs = [{"arm": "none", "seed": s, "steps": [10, 20, 30], "foreground_accuracy": [0.0, None, 0.1]} for s in (1, 2)]
    runs.append({"arm": "full", "seed": 1, "steps": [10, 20], "foreground_accuracy": [0.2, 0.9]})
    save_study_plot(runs, tmp_path / "study.png")
    assert png_size(tmp_path / "study.png") == (800, 500)
    with pytest.raises(ArcvaeError, match="as many steps"):
        save_study_plot([{"arm": "x", "seed": 1, "steps": [1, 2], "foreground_accuracy": [0.5]}], tmp_path / "bad.png")


def test_a_failed_drawing_leaves_the_old_file_and_no_temporary_file(grids, tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    path = tmp_path / "r.png"
    save_reconstructions(grids[:2], grids[:2], path)
    save_reconstructions(grids[:2], grids[:2], path)  # overwritten in place
    before = path.read_bytes()
    monkeypatch.setattr(Figure, "savefig", lambda *args, **kwargs: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError):
        save_reconstructions(grids[:2], grids[:2], path)
    assert [p.name for p in tmp_path.iterdir()] == ["r.png"] and path.read_bytes() == before


# ------------------------------------------------------------- terminal ----


@pytest.mark.parametrize("width", [80, 200])
def test_grids_panel_renders_pairs_with_headers(grids, width):
    recons = grids[:3].copy()
    recons[1, 0, :3] = (recons[1, 0, :3] + 1) % 10
    console = Console(file=io.StringIO(), width=width, force_terminal=True, color_system="truecolor", record=True)
    console.print(grids_panel(grids[:3], recons))
    text = console.export_text()
    assert text.count("██") == 3 * 2 * 256 and max(map(len, text.splitlines())) <= width
    assert "#0 perfect" in text and "#1 3 wrong" in text and "#2 perfect" in text
    r, g, b = (int(ARC_PALETTE[7][i : i + 2], 16) for i in (1, 3, 5))
    assert f"38;2;{r};{g};{b}m██" in console.file.getvalue()  # a cell in ARC orange


# ----------------------------------------------------------- arcvae show ----


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_show_prints_grids_and_summary_and_saves_the_png(run_dir, tmp_path):
    result = runner.invoke(app, ["show", str(run_dir), "--n", "4", "--out", str(tmp_path / "show.png")])
    assert result.exit_code == 0, result.output
    assert "4 of the 32 grids of the overfit batch" in result.stdout
    assert "██" not in result.stdout and ". . . ." in result.stdout  # no colours off a terminal: digits, '.' for black
    assert (
        "pixel accuracy" in result.stdout
        and "foreground accuracy" in result.stdout
        and "perfect grids" in result.stdout
    )
    assert "/4" in result.stdout.splitlines()[-2]
    assert png_size(tmp_path / "show.png") == (50 + 125 * 4, 275)


def test_show_takes_the_split_in_normal_mode(tiny_corpus):
    from arcvae.config import TrainConfig
    from arcvae.data import load_split
    from arcvae.run_files import grids_trained_on

    grids, source = grids_trained_on(TrainConfig(data=str(tiny_corpus)), "val", 3)
    assert np.array_equal(grids, load_split(tiny_corpus, "val")[:3]) and "val split" in source


def test_show_errors(run_dir, tmp_path):
    assert_one_line_error(runner.invoke(app, ["show", str(tmp_path)]), str(tmp_path), "not a run folder")
    assert_one_line_error(
        runner.invoke(app, ["show", str(run_dir), "--out", str(tmp_path / "no" / "x.png")]), "does not exist"
    )
    assert runner.invoke(app, ["show", str(run_dir), "--n", "0"]).exit_code == 2
    corpus = run_dir.parent / "corpus.npz"
    corpus.rename(corpus.with_suffix(".moved"))
    try:
        assert_one_line_error(runner.invoke(app, ["show", str(run_dir)]), str(corpus), "missing")
    finally:
        corpus.with_suffix(".moved").rename(corpus)


def test_show_help_imports_neither_torch_nor_matplotlib():
    code = ("import sys; from arcvae.cli import app; from typer.testing import CliRunner; CliRunner().invoke(app, ['--help']); "
            "CliRunner().invoke(app, ['show', '--help']); print('torch' in sys.modules or 'matplotlib' in sys.modules)")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_grids_panel_draws_coloured_blocks_or_digits():
    from io import StringIO

    from rich.console import Console

    from arcvae.plots import grids_panel

    grid = np.zeros((1, 2, 2), np.uint8)
    grid[0, 0, 1] = 3
    for colour, expected in ((True, "██"), (False, ". 3")):
        console = Console(
            file=StringIO(), width=80, force_terminal=colour, color_system="truecolor" if colour else None
        )
        console.print(grids_panel(grid, grid, colour=colour))
        text = console.file.getvalue()
        assert expected in text and "perfect" in text
