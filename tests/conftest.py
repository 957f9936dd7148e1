"""Shared test configuration: CPU only, few threads, paths to bundled and shared data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data"
SHARED_DATA = REPO.parent / "shared" / "data"


def pytest_configure(config: pytest.Config) -> None:
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The bundled ``data/`` folder of the repository."""
    return DATA


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """``../shared/data`` (not bundled); tests using it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not available on this machine")
    return SHARED_DATA
