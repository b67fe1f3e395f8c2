"""State files only their owner reads: folders 0700, files 0600, whatever the umask. ``private_dir`` makes the
folders that are missing (an existing folder is left as it is: it may be shared, /tmp or a site's choice);
``private_file`` makes a file 0600, or takes an existing one down to 0600; ``write_private`` writes one
atomically (a 0600 temporary file beside it, then a rename)."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

__all__ = ["DIR_MODE", "FILE_MODE", "private_dir", "private_file", "write_private"]

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path | str) -> Path:
    """``path`` and any missing folder above it, each made with mode 0700 (the umask can only narrow a
    ``mkdir``, so the mode is set after). Folders that already exist keep their mode."""
    path = Path(path)
    missing: list[Path] = []
    folder = path
    while not folder.exists():
        missing.append(folder)
        if folder.parent == folder:
            break
        folder = folder.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=DIR_MODE)
        except FileExistsError:  # made meanwhile by another process: its mode is that process's
            continue
        os.chmod(folder, DIR_MODE)
    return path


def private_file(path: Path | str) -> Path:
    """``path`` as a file only its owner reads: made empty with mode 0600 if missing (its folder by
    ``private_dir``), else the group's and others' bits of its mode taken away (its content is kept)."""
    path = Path(path)
    private_dir(path.parent)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            os.chmod(path, mode & ~0o077)
        return path
    try:
        os.fchmod(fd, FILE_MODE)  # the umask may have narrowed the owner's bits too
    finally:
        os.close(fd)
    return path


def write_private(path: Path | str, data: bytes) -> Path:
    """``data`` into ``path`` (mode 0600) atomically: readers see the old content or the new one, never a
    part, and never a moment where the file is open to others."""
    path = Path(path)
    private_dir(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)  # mkstemp: 0600
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
