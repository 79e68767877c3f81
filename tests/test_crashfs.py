"""The power-loss disk double itself: what survives a cut, first on the model, then through the kernel (FUSE)."""
from __future__ import annotations

import mmap
import os
from pathlib import Path

import pytest

from crashfs.model import Disk, File
from crashfs.mount import CrashFS

OLD, NEW = b"o", b"n"


def _file(disk: Disk, path: str) -> bytes:
    node = disk.node(disk.lookup(path))
    assert isinstance(node, File)
    return bytes(node.data)


def _exists(disk: Disk, path: str) -> bool:
    try:
        disk.lookup(path)
    except FileNotFoundError:
        return False
    return True


def _synced(disk: Disk, path: str, data: bytes) -> int:
    """A file holding `data`, durable with its directory entry."""
    ino = disk.create(path, 0o644)
    disk.write(ino, 0, data)
    disk.fsync(ino)
    disk.fsync(disk.lookup(str(Path(path).parent)))
    return ino


def _runs(data: bytes, unit: int) -> set[bytes]:
    """The distinct `unit`-sized pieces of `data`."""
    return {data[i : i + unit] for i in range(0, len(data), unit)}


# -- the model ---------------------------------------------------------------------------------------
def test_model_unsynced_write_is_lost_synced_write_kept():
    disk = Disk()
    ino = _synced(disk, "/f", b"a" * 100)
    disk.write(ino, 0, b"b" * 100)
    assert _file(disk, "/f") == b"b" * 100  # readers see it (the page cache)
    image, _ = disk.crash_image(seed=1, data="durable")
    assert _file(image, "/f") == b"a" * 100
    disk.fsync(ino)
    image, _ = disk.crash_image(seed=1, data="durable")
    assert _file(image, "/f") == b"b" * 100


def test_model_create_and_rename_need_a_directory_fsync():
    disk = Disk()
    disk.mkdir("/d", 0o755)
    disk.fsync(disk.lookup("/"))
    _synced(disk, "/d/old", b"1")
    ino = disk.create("/d/new", 0o644)
    disk.write(ino, 0, b"2")
    disk.fsync(ino)  # the data, not the name
    disk.rename("/d/old", "/d/moved")
    image, _ = disk.crash_image(seed=1, data="durable")
    assert not _exists(image, "/d/new") and not _exists(image, "/d/moved") and _file(image, "/d/old") == b"1"
    disk.fsync(disk.lookup("/d"))
    image, _ = disk.crash_image(seed=1, data="durable")
    assert _file(image, "/d/new") == b"2" and _file(image, "/d/moved") == b"1" and not _exists(image, "/d/old")


def test_model_new_directory_needs_its_parent_synced():
    disk = Disk()
    disk.mkdir("/a", 0o755)
    disk.mkdir("/a/b", 0o755)
    _synced(disk, "/a/b/f", b"x")  # b's entry for f is durable, b itself is not
    image, _ = disk.crash_image(seed=1, data="durable")
    assert not _exists(image, "/a")
    disk.fsync(disk.lookup("/"))
    image, _ = disk.crash_image(seed=1, data="durable")
    assert _exists(image, "/a") and not _exists(image, "/a/b")
    disk.fsync(disk.lookup("/a"))
    image, _ = disk.crash_image(seed=1, data="durable")
    assert _file(image, "/a/b/f") == b"x"


@pytest.mark.parametrize("gran", [512, 4096])
def test_model_torn_writes_at_the_granularity(gran):
    disk = Disk()
    ino = _synced(disk, "/f", OLD * 65536)
    disk.write(ino, 0, NEW * 65536)
    image, report = disk.crash_image(seed=3, data="torn", granularity=gran)
    assert f"granularity={gran}" in str(report)
    got = _file(image, "/f")
    assert len(got) == 65536
    assert _runs(got, gran) == {OLD * gran, NEW * gran}  # whole blocks, some old, some new
    if gran == 512:
        assert any(len(p) > 1 for p in map(set, (got[i : i + 4096] for i in range(0, 65536, 4096)))), "no torn page"


def test_model_reordered_writes():
    """A later write may survive while an earlier one is lost, and a block may keep an older version."""
    disk = Disk()
    ino = _synced(disk, "/f", OLD * 8192)
    disk.write(ino, 0, b"1" * 4096)
    disk.write(ino, 4096, b"2" * 4096)
    disk.write(ino, 4096, b"3" * 4096)
    outcomes = set()
    for seed in range(64):
        got = _file(disk.crash_image(seed, "torn", 4096)[0], "/f")
        outcomes.add((got[0:1], got[4096:4097]))
    assert (OLD, b"3") in outcomes and (b"1", b"2") in outcomes and (OLD, OLD) in outcomes


def test_model_size_changes_are_unsynced_too():
    disk = Disk()
    ino = _synced(disk, "/f", b"x" * 10000)
    disk.truncate(ino, 0)
    disk.write(ino, 0, b"y" * 100)
    sizes = {len(_file(disk.crash_image(seed, "torn")[0], "/f")) for seed in range(64)}
    assert sizes == {0, 100, 10000}


def test_model_ordered_mode_keeps_a_prefix_of_directory_operations():
    disk = Disk("ordered")
    for name in "abcdef":
        disk.create(f"/{name}", 0o644)
    kept = set()
    for seed in range(64):
        image, _ = disk.crash_image(seed, "durable")
        names = "".join(n for n in "abcdef" if _exists(image, f"/{n}"))
        assert "abcdef".startswith(names), names
        kept.add(names)
    assert len(kept) > 3
    disk.fsync(disk.lookup("/a"))  # any fsync commits the journal
    assert all(_exists(disk.crash_image(s, "durable")[0], "/f") for s in range(8))


def test_model_ignored_syncs_make_nothing_durable():
    disk = Disk()
    ino = _synced(disk, "/f", b"a")
    disk.ignore_syncs = True
    disk.write(ino, 0, b"b")
    disk.fsync(ino)
    assert _file(disk.crash_image(1, "durable")[0], "/f") == b"a"


# -- through the kernel --------------------------------------------------------------------------------
def _write(path: Path, data: bytes, sync: bool) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        if sync:
            os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def test_fuse_unsynced_lost_synced_kept_renames_and_creates_need_dir_fsync(crashfs: CrashFS):
    root = crashfs.path
    _write(root / "synced", b"s" * 5000, sync=True)
    _write(root / "renamed", b"r" * 10, sync=True)
    _fsync_dir(root)
    (root / "renamed").rename(root / "moved")
    _write(root / "created", b"c" * 10, sync=True)  # data synced, name not
    with open(root / "synced", "r+b") as f:
        f.write(b"u" * 5000)  # not synced
    assert (root / "synced").read_bytes() == b"u" * 5000  # readers see it before the cut
    crashfs.cut(seed=1, data="durable")
    assert (root / "synced").read_bytes() == b"s" * 5000
    assert sorted(os.listdir(root)) == ["renamed", "synced"]
    assert (root / "renamed").read_bytes() == b"r" * 10


def test_fuse_truncating_open_and_appends_are_unsynced_changes(crashfs: CrashFS):
    f = crashfs.path / "f"
    _write(f, b"old" * 1000, sync=True)
    _fsync_dir(crashfs.path)
    with open(f, "w") as out:  # O_TRUNC
        out.write("new")
    with open(f, "a") as out:  # O_APPEND
        out.write("+")
    assert f.read_text() == "new+"
    crashfs.cut(seed=1, data="durable")
    assert f.read_bytes() == b"old" * 1000


def test_fuse_directory_fsync_keeps_renames_and_creates(crashfs: CrashFS):
    root = crashfs.path
    (root / "d").mkdir()
    _fsync_dir(root)
    _write(root / "d" / "tmp", b"t" * 100, sync=True)
    os.replace(root / "d" / "tmp", root / "d" / "final")
    _fsync_dir(root / "d")
    crashfs.cut(seed=1, data="durable")
    assert os.listdir(root / "d") == ["final"] and (root / "d" / "final").read_bytes() == b"t" * 100


@pytest.mark.parametrize("gran", [512, 4096])
def test_fuse_torn_write_at_granularity(crashfs: CrashFS, gran: int):
    f = crashfs.path / "f"
    _write(f, OLD * 65536, sync=True)
    _fsync_dir(crashfs.path)
    fd = os.open(f, os.O_WRONLY)
    os.pwrite(fd, NEW * 65536, 0)
    os.close(fd)
    crashfs.cut(seed=5, data="torn", granularity=gran)
    got = f.read_bytes()
    assert len(got) == 65536 and _runs(got, gran) == {OLD * gran, NEW * gran}, crashfs.reports[-1]
    pages = [set(got[i : i + 4096]) for i in range(0, 65536, 4096)]
    assert any(len(p) > 1 for p in pages) == (gran == 512), crashfs.reports[-1]


def test_fuse_ordered_mode_keeps_directory_operations_in_order(crashfs_ordered: CrashFS):
    root = crashfs_ordered.path
    for i in range(20):
        _write(root / f"f{i:02d}", b"x", sync=False)
    crashfs_ordered.cut(seed=2, data="durable")
    names = sorted(os.listdir(root))
    assert names == [f"f{i:02d}" for i in range(len(names))], crashfs_ordered.reports[-1]


def test_fuse_direct_io_and_preallocation(crashfs: CrashFS):
    """What the C++ core uses: posix_fallocate, O_DIRECT (accepted here), fdatasync."""
    f = crashfs.path / "pre"
    fd = os.open(f, os.O_RDWR | os.O_CREAT, 0o644)
    os.posix_fallocate(fd, 0, 1 << 20)
    os.fsync(fd)
    os.close(fd)
    _fsync_dir(crashfs.path)
    fd = os.open(f, os.O_RDWR | os.O_DIRECT)
    buf = mmap.mmap(-1, 4096)  # page-aligned, as O_DIRECT wants
    buf.write(b"d" * 4096)
    os.pwritev(fd, [buf], 8192)
    os.fdatasync(fd)
    os.close(fd)
    crashfs.cut(seed=1, data="durable")
    got = f.read_bytes()
    assert len(got) == 1 << 20 and got[8192:12288] == b"d" * 4096 and got[:8192] == bytes(8192)
