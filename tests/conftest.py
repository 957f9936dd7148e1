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


CPU_BF16_PROBES = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--cpu-bf16",
        choices=("auto", "native", "absent"),
        default="auto",
        help="CPU bf16 support the suite sees: this machine's (auto), or as on a CPU with "
        "AVX512-BF16/AMX (native) or without (absent). `make test` runs the tests marked "
        "cpu_features once more under each.",
    )


def pytest_configure(config: pytest.Config) -> None:
    import torch

    torch.set_num_threads(1)
    mode = config.getoption("--cpu-bf16")
    if mode != "auto":
        # torch.cpu's probes are what diffst.precision.native_bf16 asks; pretending the other
        # answer exercises the fallback (or the bf16 path, emulated) on any CPU.
        for name in CPU_BF16_PROBES:
            setattr(torch.cpu, name, (lambda: True) if mode == "native" else (lambda: False))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Every test, and every fixture it sets up (of any scope), starts with one torch thread:
    some libraries change the OpenMP thread count torch shares (scanpy's neighbours, through
    numba, set it to the core count), and tests that compare an in-process run with a
    subprocess run bit for bit depend on it."""
    import torch

    if torch.get_num_threads() != 1:
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
