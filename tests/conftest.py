"""Shared fixtures: the real corpus when it is there, and generated labels always."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings

settings.register_profile("ci", max_examples=60, deadline=None)
settings.register_profile("dev", max_examples=30, deadline=None)
settings.load_profile("ci")

REAL_CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "simplified_dataset_100k.npz"


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


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Every test gets its own cache folder: no test reads or writes the user's ~/.cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
