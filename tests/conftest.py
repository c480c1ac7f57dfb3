"""Shared fixtures: the real corpus when it is there, and generated labels always.

Isolation from the user's files happens here, when pytest loads this file,
before any fixture of any scope runs and before any test module is imported:
``HOME``, the XDG folders and the folders of the libraries the tests use
(matplotlib, wandb, torch) and the temporary folder of subprocesses point
into one temporary folder for the whole session, removed at its end, and
every subprocess inherits that. Each test then gets its own
cache folder on top (``_isolated_cache``). At the end of the session,
``pytest_sessionfinish`` fails the run if anything appeared in the real
``HOME`` (its top level, and the arcvae cache under it) while the tests ran.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings

settings.register_profile("ci", max_examples=60, deadline=None)
settings.register_profile("dev", max_examples=30, deadline=None)
settings.load_profile("ci")

REAL_CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "simplified_dataset_100k.npz"

# ------------------------------------------------------- session isolation ----

_REAL_HOME = Path(os.path.expanduser("~"))
_REAL_CACHE = (
    Path(os.environ["XDG_CACHE_HOME"]) if os.path.isabs(os.environ.get("XDG_CACHE_HOME", "")) else _REAL_HOME / ".cache"
)
_SESSION_HOME = Path(tempfile.mkdtemp(prefix="classweights-tests-home-"))
ISOLATED_ENV = {
    "HOME": str(_SESSION_HOME),
    "XDG_CACHE_HOME": str(_SESSION_HOME / ".cache"),
    "XDG_CONFIG_HOME": str(_SESSION_HOME / ".config"),
    "XDG_DATA_HOME": str(_SESSION_HOME / ".local" / "share"),
    "XDG_STATE_HOME": str(_SESSION_HOME / ".local" / "state"),
    "MPLCONFIGDIR": str(_SESSION_HOME / ".config" / "matplotlib"),
    "TORCH_HOME": str(_SESSION_HOME / ".cache" / "torch"),
    "WANDB_DIR": str(_SESSION_HOME / "wandb"),
    "WANDB_CONFIG_DIR": str(_SESSION_HOME / ".config" / "wandb"),
    "WANDB_CACHE_DIR": str(_SESSION_HOME / ".cache" / "wandb"),
    "WANDB_DATA_DIR": str(_SESSION_HOME / ".local" / "share" / "wandb"),
    "WANDB_MODE": "offline",  # never the network, whatever the user's wandb settings
    "TMPDIR": str(_SESSION_HOME / "tmp"),  # what subprocesses leave there (torchrun, wandb) goes with the session
}
(_SESSION_HOME / "tmp").mkdir()


def _snapshot(home: Path, cache: Path) -> dict[str, tuple[int, int] | None]:
    """What the isolation guards: the names at the top of ``home`` and of ``cache``, and everything under
    ``cache/arcvae`` with its size and time (a top-level entry's time is not kept: a shell's history file,
    say, may change while the tests run)."""
    seen: dict[str, tuple[int, int] | None] = {}
    for folder in (home, cache):
        try:
            seen.update((entry.path, None) for entry in os.scandir(folder))
        except OSError:
            pass
    for root, dirs, files in os.walk(cache / "arcvae"):
        for name in dirs + files:
            path = os.path.join(root, name)
            try:
                info = os.lstat(path)
            except OSError:
                continue
            seen[path] = (info.st_mtime_ns, info.st_size)
    return seen


_BEFORE = _snapshot(_REAL_HOME, _REAL_CACHE)
os.environ.update(ISOLATED_ENV)
# pytest-xdist runs one worker per core: one thread each keeps the cores busy without oversubscribing them
# (set before torch is imported; a value of the user's is kept)
os.environ.setdefault("OMP_NUM_THREADS", "1")


def changes_in_real_home(before: dict, after: dict) -> list[str]:
    """Paths that appeared in, or changed under, the guarded places since ``before``."""
    return sorted(path for path, stamp in after.items() if path not in before or before[path] != stamp)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The longest tests first on every worker, so that they start at once instead of finishing last.

    The longest are the executed docs (largest page first), then the other ``slow`` tests. pytest-xdist's
    work-stealing scheduler gives each of its N workers one contiguous share of the collection, and an idle
    worker later steals from the end of a busy one's share: so the long tests are dealt round-robin to the
    front of the N shares, not all put in the first.
    """

    def rank(item: pytest.Item) -> tuple[int, int]:
        if item.get_closest_marker("slow") is None:
            return (2, 0)
        page = item.callspec.params.get("path") if hasattr(item, "callspec") else None
        return (0, -page.stat().st_size) if isinstance(page, Path) else (1, 0)

    items.sort(key=rank)  # stable: the order within each group is the file order
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    slow = [item for item in items if rank(item)[0] < 2]
    if workers < 2 or not slow:
        return
    fast = items[len(slow) :]
    shares: list[list[pytest.Item]] = [slow[w::workers] for w in range(workers)]
    left = len(items)
    for w, share in enumerate(shares):  # the sizes the scheduler deals: what is left, split among the rest
        size = left // (workers - w)
        take = max(0, size - len(share))
        share += fast[:take]
        del fast[:take]
        left -= len(share)
    shares[-1] += fast
    items[:] = [item for share in shares for item in share]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    changed = changes_in_real_home(_BEFORE, _snapshot(_REAL_HOME, _REAL_CACHE))
    shutil.rmtree(_SESSION_HOME, ignore_errors=True)
    if changed:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        message = "the tests wrote into the real HOME or cache: " + ", ".join(changed)
        if reporter is not None:
            reporter.write_line(f"ERROR: {message}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


# ---------------------------------------------------------------- fixtures ----


@pytest.fixture(scope="session")
def real_corpus() -> Path:
    """The spec authors' 100k-grid corpus; tests that use it skip where it is absent."""
    if not REAL_CORPUS.exists():
        pytest.skip(f"real corpus not found at {REAL_CORPUS}")
    return REAL_CORPUS


@pytest.fixture
def grids() -> np.ndarray:
    """300 generated 16x16 grids, ~93% background, colours 1-9 sprinkled in."""
    rng = np.random.default_rng(0)
    labels = rng.integers(1, 10, size=(300, 16, 16), dtype=np.uint8)
    labels[rng.random((300, 16, 16)) < 0.93] = 0
    return labels


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> Path:
    """A 2,000-grid synthetic corpus (1,600 train grids) on disk."""
    from arcvae.data import generate_corpus, save_corpus

    return save_corpus(generate_corpus(2000, seed=7), tmp_path_factory.mktemp("corpus") / "tiny.npz")


@pytest.fixture(scope="session")
def interrupted_normal_run(tiny_corpus, tmp_path_factory) -> Path:
    """``straight/``: a short normal-mode run; ``resumed/``: the same run interrupted after its first epoch.

    Shared by the tests of resuming (tests/test_reliability.py, tests/test_safety.py); each copies
    ``resumed/`` before it resumes or damages it, and never writes ``straight/``.
    """
    from test_reliability import interrupted, quiet_reporter

    from arcvae import trainer
    from arcvae.config import TrainConfig

    folder = tmp_path_factory.mktemp("interrupted")
    config = {"data": str(tiny_corpus), "quick_test": True, "batch_size": 64, "log_every_n_steps": 4, "seed": 3}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(folder / "xdg-cache"))
        trainer.train(TrainConfig(out=str(folder / "straight"), **config), quiet_reporter()[0])
        interrupted(TrainConfig(out=str(folder / "resumed"), **config), patch)
    return folder


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Every test gets its own cache folder on top of the session's isolated HOME."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
