"""A crash image on the real disk: a plain directory tree the next mount starts from (and a person can read).

Only what the double models is kept: directories, regular files, their bytes and permission bits.
"""
from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

from .model import ROOT, Dir, Disk, File


def save(disk: Disk, directory: Path) -> None:
    """Replaces `directory` with the durable state of `disk` (a new tree, then a swap)."""
    tmp = directory.with_name(directory.name + ".new")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    _save_dir(disk, ROOT, tmp)
    old = directory.with_name(directory.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if directory.exists():
        directory.rename(old)
    tmp.rename(directory)
    shutil.rmtree(old, ignore_errors=True)


def _save_dir(disk: Disk, ino: int, path: Path) -> None:
    for name, child in disk.durable_entries.get(ino, {}).items():
        node = disk.node(child)
        target = path / name
        if isinstance(node, Dir):
            target.mkdir()
            _save_dir(disk, child, target)
        else:
            target.write_bytes(bytes(node.durable))
        target.chmod(stat.S_IMODE(node.mode))


def load(directory: Path, dirs: str) -> Disk:
    """A Disk whose every file and entry is durable, holding the tree under `directory`."""
    disk = Disk(dirs)
    if directory.exists():
        _load_dir(disk, ROOT, directory)
    return disk


def _load_dir(disk: Disk, ino: int, path: Path) -> None:
    parent = disk.node(ino)
    assert isinstance(parent, Dir)
    for entry in sorted(os.scandir(path), key=lambda e: e.name):
        mode = entry.stat(follow_symlinks=False).st_mode
        if stat.S_ISDIR(mode):
            child = disk.new_node(Dir(mode))
            _load_dir(disk, child, Path(entry.path))
        elif stat.S_ISREG(mode):
            content = Path(entry.path).read_bytes()
            child = disk.new_node(File(mode, bytearray(content), bytearray(content)))
        else:
            continue
        parent.entries[entry.name] = child
    disk.durable_entries[ino] = dict(parent.entries)
