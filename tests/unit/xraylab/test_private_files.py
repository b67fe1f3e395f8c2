"""xraylab.private_files: folders made 0700, files 0600, whatever the umask; existing folders left alone."""

import os
import stat
from pathlib import Path

import pytest

from xraylab.private_files import private_dir, private_file, write_private


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(autouse=True)
def open_umask():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def test_private_dir_makes_missing_folders_0700_and_leaves_existing_ones(tmp_path: Path) -> None:
    os.chmod(tmp_path, 0o755)
    leaf = private_dir(tmp_path / "a" / "b" / "c")
    assert leaf.is_dir()
    assert [mode(p) for p in (tmp_path / "a", tmp_path / "a" / "b", leaf)] == [0o700] * 3
    assert mode(tmp_path) == 0o755
    assert private_dir(leaf) == leaf  # again: nothing to do


def test_private_file_makes_0600_and_takes_an_open_file_down(tmp_path: Path) -> None:
    new = private_file(tmp_path / "state" / "new.db")
    assert mode(new) == 0o600 and new.read_bytes() == b"" and mode(new.parent) == 0o700
    old = tmp_path / "old.db"
    old.write_bytes(b"kept")
    os.chmod(old, 0o644)
    private_file(old)
    assert mode(old) == 0o600 and old.read_bytes() == b"kept"
    os.chmod(old, 0o400)  # narrower already: kept
    private_file(old)
    assert mode(old) == 0o400


def test_write_private_replaces_atomically_with_0600(tmp_path: Path) -> None:
    path = tmp_path / "cache" / "sessions.json"
    write_private(path, b"one")
    path.chmod(0o644)
    write_private(path, b"two")
    assert path.read_bytes() == b"two" and mode(path) == 0o600 and mode(path.parent) == 0o700
    assert [p.name for p in path.parent.iterdir()] == ["sessions.json"]  # no temporary file left
