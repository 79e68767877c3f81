"""The pytest side: a mounted disk double per test, and the seeds of its cuts (CRASHFS_SEED replays one)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest

from .mount import CrashFS, unavailable_reason

SEED_ENV = "CRASHFS_SEED"
CI_ENV = "PCCHECK_REQUIRE_SLURM"  # set by scripts/test.sh --all (CI): a missing FUSE fails there


def require_fuse() -> None:
    """Skips the test when FUSE cannot be used here, with the reason; on CI that is a failure instead."""
    reason = unavailable_reason()
    if reason is None:
        return
    if os.environ.get(CI_ENV) == "1":
        pytest.fail(f"power-loss tests need FUSE ({CI_ENV}=1 requires them): {reason}")
    pytest.skip(f"power-loss tests need FUSE: {reason} (scripts/install-crashfs.sh installs it)")


def seeds(*defaults: int) -> list[int]:
    """The seeds a test cuts with: `defaults`, or only $CRASHFS_SEED when set (to replay a failure)."""
    chosen = os.environ.get(SEED_ENV)
    return [int(chosen)] if chosen else list(defaults)


def mounted(workdir: Path, dirs: str = "strict", refuse_direct: bool = False) -> Iterator[CrashFS]:
    require_fuse()
    fs = CrashFS(workdir, dirs, refuse_direct)
    try:
        fs.mount()
        yield fs
    finally:
        fs.close()


@pytest.fixture
def crashfs(tmp_path: Path) -> Iterator[CrashFS]:
    """A power-loss file system (strict POSIX directory durability) mounted at crashfs.path for one test."""
    yield from mounted(tmp_path / "crashfs")


@pytest.fixture
def crashfs_ordered(tmp_path: Path) -> Iterator[CrashFS]:
    """Like crashfs, but directory operations survive a cut in the order they happened (an ext4-like journal)."""
    yield from mounted(tmp_path / "crashfs-ordered", "ordered")


@pytest.fixture
def crashfs_no_direct(tmp_path: Path) -> Iterator[CrashFS]:
    """Like crashfs, but O_DIRECT is refused (EINVAL), as on NFS and other file systems without it."""
    yield from mounted(tmp_path / "crashfs-no-direct", refuse_direct=True)
