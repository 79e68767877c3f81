"""Durable file-system steps: fsync of files and directories, atomic replace, durable directory creation.

A power cut loses every write not yet fsynced with its file, and every create, rename or unlink not yet
fsynced with its directory (docs/power-loss.md). A crashed process leaves its unsynced writes in the page
cache, where the next process reads them: what a reader trusts it makes durable first (make_durable).
"""
from __future__ import annotations

import errno
import os
from pathlib import Path

# fsync's answer on a file system that has no fsync (squashfs images such as uenvs, procfs): read-only, so
# nothing written through it can be lost by it.
_NO_FSYNC = errno.EINVAL


def fsync_dir(path: Path) -> None:
    """Makes a create, rename or unlink in `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_durable(path: Path) -> None:
    """fsync of the file `path` and of its directory, for a reader about to trust (load, report) what it
    read: an earlier process that crashed may have left it in the page cache only."""
    path = Path(path)
    for target, flags in ((path, os.O_RDONLY), (path.parent, os.O_RDONLY | os.O_DIRECTORY)):
        fd = os.open(target, flags)
        try:
            os.fsync(fd)
        except OSError as exc:
            if exc.errno != _NO_FSYNC:
                raise
        finally:
            os.close(fd)


def mkdir_durable(path: Path) -> None:
    """Creates directory `path` and its missing parents so that they survive a power cut: the parent of
    each one created is fsynced, and so is the parent of `path` when it existed already (a run that
    crashed may have created it and never synced it)."""
    path = Path(path)
    missing = []
    probe = path
    while not probe.exists():
        missing.append(probe)
        probe = probe.parent
    for directory in reversed(missing):
        directory.mkdir(exist_ok=True)  # another rank may be first: its sync may not have happened yet
        fsync_dir(directory.parent)
    if not missing:
        if not path.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(path))
        fsync_dir(path.parent)


def write_atomic(path: Path, data: bytes, durable: bool = True) -> None:
    """Replaces `path` with `data` so a reader sees the old or the new content, never a mix."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        if durable:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)
    if durable:
        fsync_dir(path.parent)
