"""Hidden folders a killed ``prepare`` leaves beside its store are cleaned by the next one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from diffst.config import ConfigError
from diffst.keys import StoreFile
from diffst.preparation.api import prepare
from diffst.preparation.store import StoreWriter, recover_leftovers
from tests.prepare.synthetic import small_config, synthetic_sample


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _leftover(parent: Path, name: str, *, manifest: bool = False) -> Path:
    folder = parent / name
    (folder / "train").mkdir(parents=True)
    (folder / "train" / "hr.npy").write_bytes(b"partial")
    if manifest:
        (folder / StoreFile.MANIFEST.value).write_text("{}")
    return folder


def test_next_prepare_removes_dead_writers_temporaries(tmp_path: Path) -> None:
    dead = _dead_pid()
    stale = [
        _leftover(tmp_path, f".store.tmp-{dead}-0a1b2c3d"),
        _leftover(tmp_path, ".store.tmp-9f8e7d6c"),  # name written by earlier versions
        _leftover(tmp_path, f".store.old-{dead}-11223344"),  # store exists: the old one goes
    ]
    live = _leftover(tmp_path, f".store.tmp-{os.getpid()}-deadbeef")  # a writer at work
    other = _leftover(tmp_path, f".other.tmp-{dead}-0a1b2c3d")  # another store's
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / StoreFile.MANIFEST.value).write_text("{}")
    prepare(synthetic_sample(8000), tmp_path / "store", small_config(), overwrite=True)
    assert not any(p.exists() for p in stale)
    assert live.exists() and other.exists()
    assert (tmp_path / "store" / "train" / "hr.npy").stat().st_size > 100


def test_store_moved_aside_by_a_killed_swap_is_put_back(tmp_path: Path) -> None:
    """Killed between moving the old store aside and moving the new one in."""
    aside = _leftover(tmp_path, f".store.old-{_dead_pid()}-11223344", manifest=True)
    assert recover_leftovers(tmp_path / "store") == [aside]
    assert (tmp_path / "store" / StoreFile.MANIFEST.value).is_file() and not aside.exists()
    with pytest.raises(ConfigError, match="output folder exists; pass --overwrite"):
        prepare(synthetic_sample(8000), tmp_path / "store", small_config())


def test_writer_names_carry_its_pid(tmp_path: Path) -> None:
    with StoreWriter(tmp_path / "store") as writer:
        assert writer.tmp.name.startswith(f".store.tmp-{os.getpid()}-")
        assert recover_leftovers(tmp_path / "store") == []  # its own folder is kept
        assert writer.tmp.is_dir()
    assert list(tmp_path.iterdir()) == []
