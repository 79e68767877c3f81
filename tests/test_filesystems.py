"""Checkpoint directories on the file systems of shared clusters, at the Python level: tmpfs, one without
O_DIRECT (the `--durability auto` fallback, power cuts included), a full one and a read-only one. A failure is
one clear CheckpointError, and the last commit stays loadable."""
from __future__ import annotations

import contextlib
import os
import subprocess
from functools import partial
from pathlib import Path
from typing import Iterator

import pytest

from crashfs.fixtures import CI_ENV, seeds
from crashfs.mount import CrashFS
from pccheck.checkpointer import Checkpointer
from pccheck.errors import CheckpointError
from pccheck.fsutil import make_durable
from powerloss_helpers import KINDS, Child, command_writer, kill_and_cut_loop, load, make_state, open_checkpointer


@contextlib.contextmanager
def _tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` mounted at `path` for the block; unmounted (lazily) whatever happens."""
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True, text=True)
    if mounted.returncode != 0:
        reason = f"cannot mount a tmpfs: {mounted.stderr.strip() or 'not root'}"
        if os.environ.get(CI_ENV) == "1":
            pytest.fail(f"{reason} ({CI_ENV}=1 requires these tests)")
        pytest.skip(reason)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def _save(kind: str, directory: Path, step: int) -> None:
    """One checkpoint, durable before this returns, by a checkpointer that is closed afterwards."""
    ck = open_checkpointer(kind, directory)
    try:
        ck.save(step, make_state(step))
        ck.wait()
    finally:
        ck.close()


def _temporary_files(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if ".tmp" in p.name] if directory.is_dir() else []


def _fill(root: Path) -> None:
    """Writes a file until the file system is full."""
    with open(root / "filler", "wb", buffering=0) as f:
        with contextlib.suppress(OSError):
            while True:
                f.write(bytes(1 << 16))
    with open(root / "filler-small", "wb", buffering=0) as f:  # the last pages
        with contextlib.suppress(OSError):
            while True:
                f.write(bytes(512))


def test_tmpfs_with_the_default_durability(tmp_path: Path):
    with _tmpfs(tmp_path / "tmpfs", "64m") as root:
        with Checkpointer(root / "ckpt") as ck:
            assert ck.durability is None  # the default: "auto"
            ck.save(3, make_state(3)).wait()
        assert load("pccheck", root / "ckpt").step == 3


def test_without_o_direct_auto_falls_back_to_fdatasync(crashfs_no_direct: CrashFS):
    with Checkpointer(crashfs_no_direct.path / "ckpt") as ck:
        ck.save(1, make_state(1)).wait()
        assert ck._store.geometry["durability"] == "fdatasync"  # the resolved mode of "auto"
    crashfs_no_direct.cut(seeds(51)[0], data="durable")
    assert load("pccheck", crashfs_no_direct.path / "ckpt").step == 1


@pytest.mark.slow
def test_without_o_direct_kill_and_power_cut(crashfs_no_direct: CrashFS):
    kill_and_cut_loop(crashfs_no_direct, "pccheck", seeds(*range(200, 212)), max_changes=300)


@pytest.mark.parametrize("kind", KINDS)
def test_full_file_system_at_the_first_save(tmp_path: Path, kind: str):
    with _tmpfs(tmp_path / "tmpfs", "96k") as root:  # pccheck preallocates several slots; torch.save writes 130 kB
        with pytest.raises(CheckpointError, match=r"No space left on device|needs \d+ bytes") as failed:
            _save(kind, root / "ckpt", 1)
        print(failed.value)
        assert _temporary_files(root / "ckpt") == []
        assert load(kind, root / "ckpt") is None


@pytest.mark.parametrize("kind", KINDS)
def test_full_file_system_later(tmp_path: Path, kind: str):
    """pccheck writes into the slots it preallocated, so it goes on; torch.save fails with one clear error.
    Either way the newest commit loads."""
    with _tmpfs(tmp_path / "tmpfs", "16m") as root:
        directory = root / "ckpt"
        with Child(partial(command_writer, kind, directory)) as writer:
            writer.ask(1)
            _fill(root)
            if kind == "pccheck":
                writer.ask(2)
                newest = 2
            else:
                with pytest.raises(CheckpointError, match="No space left on device") as failed:
                    open_checkpointer(kind, directory).save(2, make_state(2))
                print(failed.value)
                newest = 1
            writer.kill()
            writer.reap()
        assert _temporary_files(directory) == []
        assert load(kind, directory).step == newest


@pytest.mark.parametrize("kind", KINDS)
def test_read_only_file_system(tmp_path: Path, kind: str):
    with _tmpfs(tmp_path / "tmpfs", "16m") as root:
        _save(kind, root / "ckpt", 1)
        subprocess.run(["mount", "-o", "remount,ro", str(root)], check=True)
        with pytest.raises(CheckpointError, match="Read-only file system") as failed:
            _save(kind, root / "ckpt", 2)
        print(failed.value)
        assert load(kind, root / "ckpt").step == 1  # the load's fsync is harmless on a read-only mount
        with pytest.raises(CheckpointError, match="Read-only file system"):
            _save(kind, root / "new", 1)


def test_make_durable_where_the_file_system_has_no_fsync():
    """Such file systems are read-only (squashfs images, procfs): loading from them must not fail."""
    make_durable(Path("/proc/self/status"))  # fsync answers EINVAL for the file and its directory
    with pytest.raises(FileNotFoundError):
        make_durable(Path("/proc/self/no-such-file"))
