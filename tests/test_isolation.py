"""The test session never reads or writes the user's HOME or caches, whatever a fixture's scope."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ISOLATED_ENV, _snapshot, changes_in_real_home

from arcvae.data import default_cache_dir


@pytest.fixture(scope="module")
def module_cache_dir() -> Path:
    """Resolved once per module, before any per-test fixture: still inside the session's temporary HOME."""
    return default_cache_dir()


def test_home_and_caches_are_temporary_from_the_start(module_cache_dir):
    home = Path(ISOLATED_ENV["HOME"])
    assert Path(os.path.expanduser("~")) == home
    for name, value in ISOLATED_ENV.items():
        assert os.environ[name] == value or name == "XDG_CACHE_HOME"  # a test's own cache folder may override it
        assert name == "WANDB_MODE" or Path(value).is_relative_to(home), name
    assert module_cache_dir.is_relative_to(home)


def test_subprocesses_inherit_the_isolation(tmp_path):
    out = subprocess.run(
        [sys.executable, "-c", "import os; print(os.path.expanduser('~'))"], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == ISOLATED_ENV["HOME"]


def test_the_guard_sees_what_appears_in_home_and_the_arcvae_cache(tmp_path):
    home, cache = tmp_path / "home", tmp_path / "home" / ".cache"
    (cache / "arcvae" / "weights").mkdir(parents=True)
    (home / ".bash_history").write_text("ls\n")
    weights = cache / "arcvae" / "weights" / "a.json"
    weights.write_text("{}")
    before = _snapshot(home, cache)
    assert changes_in_real_home(before, _snapshot(home, cache)) == []
    (home / ".bash_history").write_text("ls\npwd\n")  # a shell's history may change while the tests run
    assert changes_in_real_home(before, _snapshot(home, cache)) == []
    (home / ".wandb").mkdir()
    (cache / "torch").mkdir()
    weights.write_text('{"weights": [1.0]}')
    (cache / "arcvae" / "weights" / "b.json").write_text("{}")
    assert changes_in_real_home(before, _snapshot(home, cache)) == sorted(
        str(p) for p in (home / ".wandb", cache / "torch", weights, weights.parent, weights.parent / "b.json")
    )  # the folder too: an entry appeared in it
